//! One GET and its retries: paced by the budget, capped bodies, errors that say what to do,
//! and `Link` pages followed on the API's own host only.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, DATE, LINK};
use reqwest::StatusCode;
use serde_json::value::RawValue;
use url::Url;

use super::endpoint::{Endpoint, EnrichRequest};
use super::error::SourceError;
use super::message;
use crate::buildkite::budget::{Budget, Lane};
use crate::config::Secret;
use crate::net;
use crate::telemetry::metrics::Metrics;

/// Attempts at one request before a transient fault (5xx, timeout, reset, cut-short body,
/// unreadable JSON) is reported as an error.
const MAX_ATTEMPTS: u32 = 5;
/// 429s tolerated for one request before giving up: each one already waited for the reset.
const MAX_RATE_LIMITED: u32 = 10;
/// The wait before the first retry of a transient fault, doubling up to the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A whole list of agents or artifacts, every page together.
const LIST_CAP: u64 = 16 * 1024 * 1024;
/// The pages of a list of agents or artifacts followed at most (10,000 items).
const MAX_LIST_PAGES: usize = 100;
/// What is read of an error answer's body, which only explains the status.
const ERROR_BODY_CAP: usize = 16 * 1024;
/// What an error message quotes of a body, in characters.
const QUOTE_CHARS: usize = 200;

/// One page of a list: each item's raw JSON and its decoded form, the next page, the
/// server's time of the answer (its `Date` header), and the endpoint for messages.
pub struct Page<T> {
    pub(crate) items: Vec<Item<T>>,
    pub(crate) next: Option<Url>,
    pub(crate) date: Option<DateTime<Utc>>,
    pub(crate) endpoint: String,
}

/// A list item: the JSON exactly as Buildkite sent it, and the decoded value or why not.
pub struct Item<T> {
    pub(crate) raw: String,
    pub(crate) decoded: Result<T, String>,
}

/// One GET: the endpoint it calls (which decides its scope, label, cap, 404 and lane), extra
/// headers, and the statuses besides 2xx that are answers rather than errors.
pub(super) struct Get<'a> {
    pub(super) url: &'a Url,
    pub(super) endpoint: Endpoint,
    pub(super) headers: HeaderMap,
    pub(super) also_ok: &'a [StatusCode],
}

impl<'a> Get<'a> {
    pub(super) fn new(url: &'a Url, endpoint: Endpoint) -> Get<'a> {
        Get {
            url,
            endpoint,
            headers: HeaderMap::new(),
            also_ok: &[],
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Done(StatusCode, Vec<u8>, HeaderMap),
    /// A transport fault or a 5xx: worth another try.
    Transient {
        reason: String,
        /// No answer came in time (the client's timeout or a gateway's 504).
        timed_out: bool,
    },
    RateLimited(Duration),
    Failed(SourceError),
}

/// The way to Buildkite's API: the token, the pacing budget, and the request counts.
pub(super) struct Transport {
    http: reqwest::Client,
    api: Url,
    auth: HeaderValue,
    /// Only to take it out of what an error quotes (a proxy may echo the request).
    token: Secret,
    budget: Arc<Budget>,
    requests: AtomicU64,
    /// Requests for test results and logs, by [`EnrichRequest`] (as index).
    enrich_requests: [AtomicU64; 3],
    metrics: Arc<Metrics>,
}

impl Transport {
    /// Requests through `http` (which must not follow redirects) to the API at `api`.
    pub(super) fn new(
        http: reqwest::Client,
        api: &Url,
        token: Secret,
        budget: Arc<Budget>,
        metrics: Arc<Metrics>,
    ) -> Result<Transport, String> {
        metrics.pace.set(budget.pace().per_minute.into());
        Ok(Transport {
            http,
            api: api.clone(),
            auth: bearer(&token)?,
            token,
            budget,
            requests: AtomicU64::new(0),
            enrich_requests: Default::default(),
            metrics,
        })
    }

    /// The API's base URL.
    pub(super) fn api(&self) -> &Url {
        &self.api
    }

    /// Requests sent so far (every attempt counts, as Buildkite counts them).
    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests of this `kind` sent so far for test results and logs.
    pub(super) fn enrich_requests(&self, kind: EnrichRequest) -> u64 {
        self.enrich_requests[kind as usize].load(Ordering::Relaxed)
    }

    /// The pacing budget.
    pub(super) fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Every item of a small list (agents, a build's artifacts), following `Link` pages
    /// (on the API's own host only). It stops with an error naming the endpoint at a `Link`
    /// cycle (a page already read, or the same items again), after [`MAX_LIST_PAGES`] pages,
    /// or past [`LIST_CAP`] in all.
    pub(super) async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        mut url: Url,
        endpoint: Endpoint,
    ) -> Result<Vec<Item<T>>, SourceError> {
        url.query_pairs_mut().append_pair("per_page", "100");
        let name = endpoint_name(&url);
        let stop = |problem: String| SourceError::Protocol {
            endpoint: name.clone(),
            problem,
        };
        let mut all = Vec::new();
        let mut read: HashSet<Url> = HashSet::new();
        let mut last_page: Option<u64> = None;
        let mut bytes: u64 = 0;
        let mut next = Some(url);
        while let Some(page_url) = next {
            if read.len() >= MAX_LIST_PAGES {
                return Err(stop(format!(
                    "more than {MAX_LIST_PAGES} pages; stopped there"
                )));
            }
            if !read.insert(page_url.clone()) {
                return Err(stop(
                    "its Link header leads back to a page already read; stopped there".into(),
                ));
            }
            let page = self.list(&Get::new(&page_url, endpoint)).await?;
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            page.items.iter().for_each(|i| i.raw.hash(&mut hasher));
            let this_page = hasher.finish();
            if !page.items.is_empty() && last_page == Some(this_page) {
                return Err(stop(
                    "the next page holds the same items as the one before; stopped there".into(),
                ));
            }
            last_page = Some(this_page);
            bytes += page.items.iter().map(|i| i.raw.len() as u64).sum::<u64>();
            if bytes > LIST_CAP {
                let cap = net::size(LIST_CAP);
                return Err(stop(format!("the list is larger than {cap} in all")));
            }
            all.extend(page.items);
            next = page.next;
        }
        Ok(all)
    }

    pub(super) async fn list<T: serde::de::DeserializeOwned>(
        &self,
        get: &Get<'_>,
    ) -> Result<Page<T>, SourceError> {
        let url = get.url;
        let (items, headers) = self
            .get(get, |_, _, body| {
                serde_json::from_slice::<Vec<Box<RawValue>>>(body)
                    .map_err(|e| format!("the answer is not a JSON list ({})", quote_error(&e)))
            })
            .await?;
        let next = self.next_link(url, &headers)?;
        let date = net::header(&headers, DATE)
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&Utc));
        Ok(Page {
            items: items
                .into_iter()
                .map(|raw| Item {
                    // A value that does not fit the model may be huge: quote little of it.
                    decoded: serde_json::from_str(raw.get()).map_err(|e| quote_error(&e)),
                    raw: String::from(Box::<str>::from(raw)),
                })
                .collect(),
            next,
            date,
            endpoint: endpoint_name(url),
        })
    }

    /// GETs until the answer succeeds and `parse` accepts it, or fails for good.
    pub(super) async fn get<T>(
        &self,
        get: &Get<'_>,
        parse: impl Fn(StatusCode, &HeaderMap, &[u8]) -> Result<T, String>,
    ) -> Result<(T, HeaderMap), SourceError> {
        let endpoint = endpoint_name(get.url);
        let unavailable = |attempts, reason, timed_out| SourceError::Unavailable {
            endpoint: endpoint.clone(),
            attempts,
            reason,
            timed_out,
        };
        let mut failures = 0;
        let mut rate_limited = 0;
        let enrich = get.endpoint.enrich();
        let lane = enrich.map_or(Lane::Poll, |_| Lane::Enrich);
        loop {
            self.budget.acquire(lane).await;
            self.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(kind) = enrich {
                self.count_enrich(kind);
            }
            let (reason, malformed, timed_out) = match self.attempt(get, &endpoint).await {
                Attempt::Done(status, body, headers) => match parse(status, &headers, &body) {
                    Ok(value) => return Ok((value, headers)),
                    Err(e) => (format!("malformed answer: {e}"), true, false),
                },
                Attempt::Failed(e) => return Err(e),
                Attempt::RateLimited(wait) => {
                    rate_limited += 1;
                    tracing::info!(
                        endpoint,
                        "Buildkite answered 429 (rate limited): waiting {}s for the budget to reset",
                        wait.as_secs()
                    );
                    if rate_limited >= MAX_RATE_LIMITED {
                        let reason = "still rate limited after waiting for each reset";
                        return Err(unavailable(rate_limited, reason.into(), false));
                    }
                    continue;
                }
                Attempt::Transient { reason, timed_out } => (reason, false, timed_out),
            };
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                return Err(unavailable(failures, reason, timed_out));
            }
            let wait = net::backoff(failures, FIRST_BACKOFF, MAX_BACKOFF);
            // A malformed answer is worth a warning each time; transport faults are summed up
            // by the caller if they last.
            if malformed {
                tracing::warn!(
                    endpoint,
                    attempt = failures,
                    "Buildkite sent a {reason}; retrying in {}ms",
                    wait.as_millis()
                );
            } else {
                tracing::debug!(
                    endpoint,
                    attempt = failures,
                    "Buildkite request failed ({reason}); retrying in {}ms",
                    wait.as_millis()
                );
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, get: &Get<'_>, endpoint: &str) -> Attempt {
        let sent = self
            .http
            .get(get.url.clone())
            .headers(get.headers.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await;
        let kind = get.endpoint.label();
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                self.metrics.request(kind, "error");
                return Attempt::Transient {
                    reason: net::describe(&e),
                    timed_out: e.is_timeout(),
                };
            }
        };
        let status = response.status();
        self.metrics.request(kind, status.as_str());
        let headers = response.headers().clone();
        let answer = status.is_success() || get.also_ok.contains(&status);
        let body = if answer {
            match net::read_capped(&mut response, get.endpoint.cap()).await {
                Ok(body) => body,
                Err(net::BodyError::TooLarge { cap }) => {
                    let endpoint = endpoint.to_string();
                    return Attempt::Failed(SourceError::TooLarge { endpoint, cap });
                }
                Err(net::BodyError::Cut(e)) => {
                    return Attempt::Transient {
                        reason: format!("body cut short: {}", net::describe(&e)),
                        timed_out: e.is_timeout(),
                    }
                }
            }
        } else {
            net::read_prefix(&mut response, ERROR_BODY_CAP).await
        };
        if answer {
            self.budget.observe(&headers);
            self.report_budget();
            return Attempt::Done(status, body, headers);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.metrics.rate_limited.inc();
            let wait = self.budget.rate_limited(&headers, &body);
            self.report_budget();
            return Attempt::RateLimited(wait);
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            self.budget.observe(&headers);
            return Attempt::Transient {
                reason: status.to_string(),
                timed_out: status == StatusCode::GATEWAY_TIMEOUT,
            };
        }
        let endpoint = endpoint.to_string();
        let text = self.redacted(String::from_utf8_lossy(&body).into_owned());
        let buildkite = message::buildkite_message(&text);
        let quoted = net::snippet(buildkite.as_deref().unwrap_or(&text), QUOTE_CHARS);
        Attempt::Failed(match status {
            // Buildkite answers these with its JSON error; anything else came from elsewhere.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if buildkite.is_none() => {
                SourceError::Blocked {
                    endpoint,
                    status: status.as_u16(),
                    quote: quoted,
                }
            }
            StatusCode::UNAUTHORIZED => SourceError::Unauthorized { endpoint },
            StatusCode::FORBIDDEN => {
                let named = buildkite.as_deref().and_then(message::missing_scope);
                let scope = named.unwrap_or(get.endpoint.scope()).to_string();
                SourceError::Forbidden { endpoint, scope }
            }
            StatusCode::NOT_FOUND => get.endpoint.not_found(endpoint),
            StatusCode::BAD_REQUEST if buildkite.as_deref().is_some_and(message::too_deep) => {
                SourceError::TooDeep {
                    endpoint,
                    message: quoted,
                }
            }
            s => SourceError::Rejected {
                endpoint,
                status: s.as_u16(),
                message: quoted,
            },
        })
    }

    /// The `rel="next"` link, followed exactly as given, but only on the API's own host.
    fn next_link(&self, current: &Url, headers: &HeaderMap) -> Result<Option<Url>, SourceError> {
        match next_url(current, headers)? {
            Some(next) => self.on_api_host(next, current).map(Some),
            None => Ok(None),
        }
    }

    /// `url` if it is on the API's own host, since the token goes with it; else an error
    /// naming `from`, where Buildkite gave it.
    pub(super) fn on_api_host(&self, url: Url, from: &Url) -> Result<Url, SourceError> {
        if url.origin() != self.api.origin() {
            return Err(SourceError::ForeignLink {
                endpoint: endpoint_name(from),
                host: url.host_str().unwrap_or("?").to_string(),
            });
        }
        Ok(url)
    }

    /// `text` without the token in it (a proxy's error page may echo the request).
    fn redacted(&self, text: String) -> String {
        let token = self.token.expose();
        if token.is_empty() || !text.contains(token) {
            return text;
        }
        text.replace(token, "***")
    }

    /// Counts one request for test results or logs, by kind.
    fn count_enrich(&self, kind: EnrichRequest) {
        self.enrich_requests[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.metrics.enrich_request(kind.as_str());
    }

    /// Copies the budgets Buildkite last reported into the metrics.
    fn report_budget(&self) {
        let m = &self.metrics;
        for (owner, s) in self.budget.last_seen().scopes() {
            let labels = crate::telemetry::metrics::ScopeLabels {
                scope: owner.as_str().into(),
            };
            if let Some(remaining) = s.remaining {
                m.remaining.get_or_create(&labels).set(remaining.into());
            }
            if let Some(limit) = s.limit {
                m.limit.get_or_create(&labels).set(limit.into());
                let reserve = self.budget.reserve_of(limit);
                m.reserve.get_or_create(&labels).set(reserve.into());
            }
        }
        m.pace.set(self.budget.pace().per_minute.into());
    }
}

/// `Authorization: Bearer <token>`, marked sensitive so no debug output shows it.
fn bearer(token: &Secret) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        "the Buildkite token contains characters that cannot go in an HTTP header".to_string()
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The URL without credentials or query, for messages: `api.buildkite.com/v2/organizations/acme/builds`.
fn endpoint_name(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{host}{port}{}", url.path())
}

/// A JSON error as a message may quote it: serde's "invalid type" errors hold the value
/// that did not fit, which may be a whole answer.
pub(super) fn quote_error(e: &serde_json::Error) -> String {
    net::snippet(&e.to_string(), QUOTE_CHARS)
}

/// The `rel="next"` target of any of the `Link` header fields, resolved against the page
/// it came with (`current`): a relative link is followed from there.
fn next_url(current: &Url, headers: &HeaderMap) -> Result<Option<Url>, SourceError> {
    let Some(next) = headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_next_link)
    else {
        return Ok(None);
    };
    current
        .join(&next)
        .map(Some)
        .map_err(|_| SourceError::Protocol {
            endpoint: endpoint_name(current),
            problem: format!("unparseable next-page link {next:?}"),
        })
}

/// The target of the `rel="next"` entry of an RFC 8288 `Link` header value. Entries are
/// split at commas outside `<…>` and quotes (a URL may hold one), and relation types are
/// compared without regard to case, as RFC 8288 has them.
pub fn parse_next_link(header: &str) -> Option<String> {
    split_outside(header, ',').into_iter().find_map(|entry| {
        let (target, params) = entry.trim().strip_prefix('<')?.split_once('>')?;
        let is_next = split_outside(params, ';')
            .into_iter()
            .filter_map(|p| p.split_once('='))
            .any(|(k, v)| {
                let mut rels = v.trim().trim_matches('"').split_whitespace();
                k.trim().eq_ignore_ascii_case("rel") && rels.any(|r| r.eq_ignore_ascii_case("next"))
            });
        is_next.then(|| target.to_string())
    })
}

/// `s` split at each `sep` that is neither inside `<…>` nor inside double quotes.
fn split_outside(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut angle, mut quoted) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !angle && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    /// A transport to the fake Buildkite at 127.0.0.1, paced far above what it sends.
    fn transport(bk: &kitesync_fakes::FakeBuildkite) -> (Transport, Url) {
        let api = Url::parse(&bk.url).expect("fake's url");
        let budget = Arc::new(Budget::new(6_000, 0, 100));
        let metrics = Arc::new(Metrics::new());
        let secs = Duration::from_secs(10);
        let http = net::client(secs, secs, None).expect("client");
        let http = http.build().expect("client");
        let t = Transport::new(http, &api, Secret::new("tok"), budget, metrics).expect("transport");
        (t, api)
    }

    /// Regression: Buildkite's refusals as the fake sends them (`fakes/src/buildkite.rs`: its
    /// 400 is the depth-limit text Buildkite documents, its 403 the missing-scope text of
    /// `../shared/reference/buildkite-api.md`) come back as the errors their message and
    /// endpoint mean.
    #[tokio::test]
    async fn regression_buildkites_refusals_become_the_errors_they_mean() {
        let bk = kitesync_fakes::FakeBuildkite::start("acme", "tok").await;
        let (t, api) = transport(&bk);
        let url = |path: &str| api.join(path).expect("url");
        let t = &t;
        let list = |u: Url, endpoint| async move {
            let get = Get::new(&u, endpoint);
            t.list::<serde_json::Value>(&get).await.err()
        };

        bk.set_max_page(1);
        let err = list(
            url("/v2/organizations/acme/builds?page=2"),
            Endpoint::Builds,
        )
        .await;
        assert!(matches!(err, Some(SourceError::TooDeep { .. })), "{err:?}");

        let log = url("/v2/organizations/acme/pipelines/p/builds/1/jobs/j/log");
        let err = t
            .get(
                &Get::new(&log, Endpoint::Log { max_bytes: 1024 }),
                |_, _, _| Ok(()),
            )
            .await
            .err();
        assert!(
            matches!(err, Some(SourceError::Gone { .. })),
            "a log: {err:?}"
        );
        let err = list(url("/v2/organizations/other/builds"), Endpoint::Builds).await;
        assert!(
            matches!(err, Some(SourceError::NotFound { .. })),
            "an organization: {err:?}"
        );

        bk.set_scopes(&["read_agents"]);
        let err = list(url("/v2/organizations/acme/builds"), Endpoint::Builds).await;
        assert!(
            matches!(&err, Some(SourceError::Forbidden { scope, .. }) if scope == "read_builds"),
            "{err:?}"
        );
    }

    #[test]
    fn finds_next_among_other_links() {
        let h = r#"<https://api.buildkite.com/v2/organizations/acme/builds?page=3&per_page=100>; rel="last", <https://api.buildkite.com/v2/organizations/acme/builds?page=2&per_page=100>; rel="next""#;
        assert_eq!(
            parse_next_link(h).as_deref(),
            Some("https://api.buildkite.com/v2/organizations/acme/builds?page=2&per_page=100")
        );
        assert_eq!(parse_next_link(r#"<https://x/?page=1>; rel="first""#), None);
        assert_eq!(parse_next_link(""), None);
        assert_eq!(parse_next_link("garbage; rel=next"), None);
        assert_eq!(
            parse_next_link("<u>; rel=\"prev next\"").as_deref(),
            Some("u")
        );
    }

    /// Links as Buildkite sends them (the Shopify/buildkit VCR cassettes in
    /// `../shared/realdata/buildkite_real/shopify-buildkit-vcr`, see its SOURCES.md) and as
    /// RFC 8288 allows them.
    fn next_of(headers: &[&str]) -> Option<String> {
        let mut map = HeaderMap::new();
        for h in headers {
            map.append(LINK, HeaderValue::from_str(h).expect("header"));
        }
        let current =
            Url::parse("https://api.buildkite.com/v2/organizations/acme/agents?per_page=100")
                .expect("url");
        next_url(&current, &map).expect("parsed").map(String::from)
    }

    #[test]
    fn regression_links_as_they_come_first_last_empty_and_relative() {
        let cases: [(&str, &[&str], Option<&str>); 7] = [
            (
                // organization_builds.yml: a first page, `next` and `last` only.
                "first page",
                &[
                    r#"<https://api.buildkite.com/v2/organizations/shopify/builds?page=2&per_page=2>; rel="next", <https://api.buildkite.com/v2/organizations/shopify/builds?page=268&per_page=2>; rel="last""#,
                ],
                Some("https://api.buildkite.com/v2/organizations/shopify/builds?page=2&per_page=2"),
            ),
            (
                // pipelines.yml: the last page, `last` only.
                "last page, recorded",
                &[
                    r#"<https://api.buildkite.com/v2/organizations/shopify/pipelines?page=2>; rel="last""#,
                ],
                None,
            ),
            (
                "last page, first and prev only",
                &[
                    r#"<https://api.buildkite.com/v2/organizations/acme/agents?page=1&per_page=100>; rel="first", <https://api.buildkite.com/v2/organizations/acme/agents?page=2&per_page=100>; rel="prev""#,
                ],
                None,
            ),
            // organizations.yml: a one-page list answered with an empty `Link:`.
            ("empty", &[""], None),
            (
                "relative to the host",
                &[r#"</v2/organizations/acme/agents?page=2&per_page=100>; rel="next""#],
                Some("https://api.buildkite.com/v2/organizations/acme/agents?page=2&per_page=100"),
            ),
            (
                "relative to the page",
                &[r#"<?page=2&per_page=100>; rel="next""#],
                Some("https://api.buildkite.com/v2/organizations/acme/agents?page=2&per_page=100"),
            ),
            (
                "one link per header field",
                &[
                    r#"<https://api.buildkite.com/v2/organizations/acme/agents?page=1>; rel="first""#,
                    r#"<https://api.buildkite.com/v2/organizations/acme/agents?page=2>; rel="next""#,
                ],
                Some("https://api.buildkite.com/v2/organizations/acme/agents?page=2"),
            ),
        ];
        for (case, headers, next) in cases {
            assert_eq!(next_of(headers).as_deref(), next, "{case}");
        }
    }

    #[test]
    fn rel_is_compared_without_regard_to_case() {
        for h in [
            r#"<https://x/?page=2>; rel="Next""#,
            "<https://x/?page=2>; REL=NEXT",
            r#"<https://x/?page=1>; rel="First", <https://x/?page=2>; Rel="prev NEXT""#,
        ] {
            assert_eq!(
                parse_next_link(h).as_deref(),
                Some("https://x/?page=2"),
                "{h}"
            );
        }
    }

    #[test]
    fn a_comma_inside_a_link_target_or_a_quoted_parameter_does_not_split_it() {
        let h = r#"<https://api.buildkite.com/v2/organizations/acme/builds?branch=a,b&page=1>; rel="first"; title="a, b", <https://api.buildkite.com/v2/organizations/acme/builds?branch=a,b&page=2>; rel="next""#;
        assert_eq!(
            parse_next_link(h).as_deref(),
            Some("https://api.buildkite.com/v2/organizations/acme/builds?branch=a,b&page=2")
        );
        let h = r#"<https://x/?state[]=passed,failed&page=2>; rel="next""#;
        assert_eq!(
            parse_next_link(h).as_deref(),
            Some("https://x/?state[]=passed,failed&page=2")
        );
    }

    #[test]
    fn a_json_error_quotes_little_of_the_value_that_did_not_fit() {
        let huge = format!("\"{}\"", "<html>".repeat(100_000));
        let e = serde_json::from_str::<Vec<u8>>(&huge).expect_err("not a list");
        assert!(e.to_string().len() > 100_000, "serde quotes the value");
        assert!(quote_error(&e).chars().count() <= QUOTE_CHARS + 1);
    }
}
