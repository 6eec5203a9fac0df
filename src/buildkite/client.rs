//! The Buildkite REST client: bearer auth, paced by the [`Budget`], `Link` pagination,
//! retries of transient faults, and errors that say what to do.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, DATE, LINK, LOCATION, RANGE};
use reqwest::StatusCode;
use serde_json::value::RawValue;
use url::Url;

use super::budget::{Budget, Lane};
use super::model::{Agent, Artifact, Build};
use super::storage::{self, Refused};
use crate::config::{BuildkiteConfig, Secret};
use crate::metrics::Metrics;
use crate::net;

/// Attempts at one request before a transient fault (5xx, timeout, reset, cut-short body,
/// unreadable JSON) is reported as an error.
const MAX_ATTEMPTS: u32 = 5;
/// 429s tolerated for one request before giving up: each one already waited for the reset.
const MAX_RATE_LIMITED: u32 = 10;
/// The wait before the first retry of a transient fault, doubling up to the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

// Caps on what is read of an answer, by what it is: a body over its cap is an error naming
// the endpoint and the cap, never an allocation.
/// A page of builds: 100 builds with every job and retried job are a few MB.
const BUILDS_PAGE_CAP: u64 = 32 * 1024 * 1024;
/// A page of agents or of a build's artifacts (100 of them, about a KB each).
const LIST_PAGE_CAP: u64 = 8 * 1024 * 1024;
/// A whole list of agents or artifacts, every page together.
const LIST_CAP: u64 = 16 * 1024 * 1024;
/// The pages of a list of agents or artifacts followed at most (10,000 items).
const MAX_LIST_PAGES: usize = 100;
/// A small answer: the access token, an artifact's `/download` redirect.
const SMALL_CAP: u64 = 64 * 1024;
/// A log tail may be this much more than the `max_bytes` asked for (headers, a server that
/// rounds its ranges); a server that ignores `Range` and sends more is refused.
const LOG_SLACK: u64 = 64 * 1024;
/// What is read of an error answer's body, which only explains the status.
const ERROR_BODY_CAP: usize = 16 * 1024;
/// What an error message quotes of a body, in characters.
const QUOTE_CHARS: usize = 200;

/// Why a Buildkite request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Buildkite rejected the API token (401 at {endpoint}): it is invalid, expired or revoked; set a valid token in [buildkite] token or token_file")]
    Unauthorized { endpoint: String },
    /// A 401 or 403 whose body is not Buildkite's JSON error (an HTML block page, say): a
    /// proxy, firewall or gateway between kitesync and Buildkite answered, not Buildkite.
    #[error("something between kitesync and Buildkite refused the request ({status} at {endpoint}, and not with Buildkite's JSON error: {quote:?}): a proxy, firewall or gateway on the way; ask whoever runs it to let kitesync reach the Buildkite API")]
    Blocked {
        endpoint: String,
        status: u16,
        /// The start of what it answered.
        quote: String,
    },
    #[error("the Buildkite API token lacks the {scope} scope needed for {endpoint} (403): add {scope} to the token at https://buildkite.com/user/api-access-tokens")]
    Forbidden { endpoint: String, scope: String },
    #[error("Buildkite answered 404 for {endpoint}: check [buildkite] organization and that the token's owner belongs to it")]
    NotFound { endpoint: String },
    /// A build's artifact, log or artifact list that no longer exists: that item alone.
    #[error("Buildkite answered 404 for {endpoint}: it no longer exists (deleted or expired)")]
    Gone { endpoint: String },
    #[error("Buildkite refused to list this deep at {endpoint} (400: {message})")]
    TooDeep { endpoint: String, message: String },
    #[error("Buildkite answered {status} at {endpoint}: {message}")]
    Rejected {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("Buildkite is unavailable at {endpoint} after {attempts} attempts: {reason}")]
    Unavailable {
        endpoint: String,
        attempts: u32,
        reason: String,
        /// The last attempt failed because no answer came in time: the client's timeout, or
        /// a gateway's 504. A smaller page may still be answered.
        timed_out: bool,
    },
    #[error("Buildkite's answer at {endpoint} points at another host ({host}) for more: refusing to send the token there")]
    ForeignLink { endpoint: String, host: String },
    /// An answer longer than kitesync reads of such an answer (an endless stream, say).
    #[error("Buildkite's answer at {endpoint} is larger than {}: not read further (a page of fewer items may fit)", net::size(*cap))]
    TooLarge { endpoint: String, cap: u64 },
    /// A successful answer that breaks the API's rules (a list that does not narrow, a link
    /// that does not parse).
    #[error("Buildkite's answer at {endpoint} cannot be followed: {problem}")]
    Protocol { endpoint: String, problem: String },
}

impl SourceError {
    /// True when no retry can help: the token, its scopes or the organization are wrong.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            SourceError::Unauthorized { .. }
                | SourceError::Blocked { .. }
                | SourceError::Forbidden { .. }
                | SourceError::NotFound { .. }
        )
    }
}

/// Why an artifact could not be fetched from its storage host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("larger than [tests] max_file_bytes")]
    TooLarge,
    /// Refused before connecting: see [`storage::check`].
    #[error("refused: {0}")]
    Refused(Refused),
    #[error("{0}")]
    Failed(String),
}

/// One page of a list: each item's raw JSON and its decoded form, the next page, the
/// server's time of the answer (its `Date` header), and the endpoint for messages.
pub struct Page<T> {
    pub items: Vec<Item<T>>,
    pub next: Option<Url>,
    pub date: Option<DateTime<Utc>>,
    pub endpoint: String,
}

/// A list item: the JSON exactly as Buildkite sent it, and the decoded value or why not.
pub struct Item<T> {
    pub raw: String,
    pub decoded: Result<T, String>,
}

/// Filters of a builds listing.
#[derive(Debug, Default, Clone)]
pub struct BuildQuery {
    pub finished_from: Option<DateTime<Utc>>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub branches: Vec<String>,
    /// A page number, only for walking the builds of one second.
    pub page: Option<u32>,
    /// Items per page (default: Buildkite's largest, 100).
    pub per_page: Option<u32>,
}

/// The precision of the time filters of a builds listing as sent: whole seconds, as in every
/// example of Buildkite's documentation and its Go client. What Buildkite does with a fraction
/// is undocumented; a server that dropped it would turn `created_to = 10:00:00.001` into
/// `10:00:00` and hide every build of that second. A walk of the listing narrows its bounds
/// in steps of this.
pub const TIME_FILTER_STEP_SECS: i64 = 1;

/// Which way [`whole_second`] rounds a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// For `created_from` and `finished_from`: the range only widens.
    Down,
    /// For `created_to`: the range only widens.
    Up,
}

/// `t` as a time filter of a builds listing: RFC 3339 in whole seconds (`2026-01-01T10:00:00Z`),
/// rounded so that the range asked for only ever widens. Reading a little more than asked is
/// harmless (the seen-set drops what was read before); reading less would lose builds.
pub fn whole_second(t: DateTime<Utc>, round: Round) -> String {
    let down = t.with_nanosecond(0).unwrap_or(t);
    let t = match round {
        // The last second chrono can hold has no next one: it stays as it is.
        Round::Up if down < t => down
            .checked_add_signed(chrono::Duration::seconds(1))
            .unwrap_or(down),
        _ => down,
    };
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A request for test results or logs: paced in [`Lane::Enrich`] and counted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrichRequest {
    /// A page of a build's artifact list.
    Listing,
    /// An artifact's `/download` (the 302 to its storage URL).
    Download,
    /// A job's log tail.
    Log,
}

impl EnrichRequest {
    /// The `kind` label of the enrichment request metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EnrichRequest::Listing => "listing",
            EnrichRequest::Download => "download",
            EnrichRequest::Log => "log",
        }
    }
}

/// The token scope a request needs (named when Buildkite answers 403).
#[derive(Debug, Clone, Copy)]
enum Scope {
    None,
    ReadBuilds,
    ReadAgents,
    ReadArtifacts,
    ReadBuildLogs,
}

impl Scope {
    /// The most a page of a list needing this scope may hold.
    fn page_cap(self) -> u64 {
        match self {
            Scope::ReadBuilds => BUILDS_PAGE_CAP,
            Scope::ReadAgents | Scope::ReadArtifacts => LIST_PAGE_CAP,
            Scope::None | Scope::ReadBuildLogs => SMALL_CAP,
        }
    }

    /// The scope's name, and the `endpoint` label of the request metrics.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Scope::None => ("(none)", "access-token"),
            Scope::ReadBuilds => ("read_builds", "builds"),
            Scope::ReadAgents => ("read_agents", "agents"),
            Scope::ReadArtifacts => ("read_artifacts", "artifacts"),
            Scope::ReadBuildLogs => ("read_build_logs", "logs"),
        }
    }

    /// True for one build's items (artifacts, logs): a 404 means only that item is gone,
    /// not that the organization is wrong.
    fn build_item(self) -> bool {
        matches!(self, Scope::ReadArtifacts | Scope::ReadBuildLogs)
    }
}

/// A Buildkite REST client for one organization.
pub struct Client {
    http: reqwest::Client,
    /// For artifact storage hosts: no token, ever.
    storage: reqwest::Client,
    api: Url,
    org: String,
    auth: HeaderValue,
    /// Only to take it out of what an error quotes (a proxy may echo the request).
    token: Secret,
    budget: Arc<Budget>,
    requests: AtomicU64,
    /// Requests for test results and logs, by [`EnrichRequest`] (as index).
    enrich_requests: [AtomicU64; 3],
    metrics: Arc<Metrics>,
}

/// One GET: the token scope it needs, the most of its answer that is read, extra headers,
/// the statuses besides 2xx that are answers rather than errors, and whether it is for test
/// results or logs.
struct Get<'a> {
    url: &'a Url,
    scope: Scope,
    cap: u64,
    headers: HeaderMap,
    also_ok: &'a [StatusCode],
    enrich: Option<EnrichRequest>,
}

impl<'a> Get<'a> {
    fn new(url: &'a Url, scope: Scope, cap: u64) -> Get<'a> {
        Get {
            url,
            scope,
            cap,
            headers: HeaderMap::new(),
            also_ok: &[],
            enrich: None,
        }
    }
}

/// The answers that point an artifact's `/download` elsewhere.
const REDIRECTS: [StatusCode; 4] = [
    StatusCode::FOUND,
    StatusCode::SEE_OTHER,
    StatusCode::TEMPORARY_REDIRECT,
    StatusCode::MOVED_PERMANENTLY,
];

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

impl Client {
    /// A client paced by `budget`.
    pub fn new(
        config: &BuildkiteConfig,
        budget: Arc<Budget>,
        metrics: Arc<Metrics>,
    ) -> Result<Client, String> {
        let connect = Duration::from_secs(config.connect_timeout_seconds);
        let build = |redirect| {
            net::client(config.timeout(), connect, config.ca_file.as_deref())?
                .redirect(redirect)
                .build()
                .map_err(|e| crate::net::describe(&e))
        };
        let storage = net::client(config.timeout(), connect, config.ca_file.as_deref())?;
        metrics.pace.set(budget.pace().per_minute.into());
        Ok(Client {
            http: build(reqwest::redirect::Policy::none())?,
            // Storage hosts get no token; their redirects are checked before they are followed.
            storage: storage::guarded(storage, config.api_url.scheme())
                .build()
                .map_err(|e| crate::net::describe(&e))?,
            api: config.api_url.clone(),
            org: config.organization.clone(),
            auth: bearer(&config.token())?,
            token: config.token(),
            budget,
            requests: AtomicU64::new(0),
            enrich_requests: Default::default(),
            metrics,
        })
    }

    /// Requests sent so far (every attempt counts, as Buildkite counts them).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests of this `kind` sent so far for test results and logs.
    pub fn enrich_requests(&self, kind: EnrichRequest) -> u64 {
        self.enrich_requests[kind as usize].load(Ordering::Relaxed)
    }

    /// The pacing budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The pacing budget, to keep beyond the client's borrow.
    pub fn shared_budget(&self) -> Arc<Budget> {
        Arc::clone(&self.budget)
    }

    /// A page of the organization-wide builds list, newest first, every attempt of every
    /// job. Builds that do not decode are returned as such, so one odd build never blocks the
    /// page.
    pub async fn builds(&self, query: &BuildQuery) -> Result<Page<Build>, SourceError> {
        let mut url = self.endpoint(&["organizations", &self.org, "builds"]);
        // Whole seconds, widened: lower bounds down, the upper bound up (see `whole_second`).
        let time = |key, t: Option<DateTime<Utc>>, round| t.map(|t| (key, whole_second(t, round)));
        url.query_pairs_mut()
            .append_pair("per_page", &query.per_page.unwrap_or(100).to_string())
            .append_pair("include_retried_jobs", "true")
            .extend_pairs(time("finished_from", query.finished_from, Round::Down))
            .extend_pairs(time("created_from", query.created_from, Round::Down))
            .extend_pairs(time("created_to", query.created_to, Round::Up))
            .extend_pairs(query.branches.iter().map(|b| ("branch[]", b)))
            .extend_pairs(query.page.map(|p| ("page", p.to_string())));
        self.list(&Get::new(
            &url,
            Scope::ReadBuilds,
            Scope::ReadBuilds.page_cap(),
        ))
        .await
    }

    /// The token's scopes (`GET /v2/access-token`, which needs none), and the budgets the
    /// answer reported.
    pub async fn token_scopes(&self) -> Result<Vec<String>, SourceError> {
        let url = self.endpoint(&["access-token"]);
        let (scopes, _) = self
            .get(&Get::new(&url, Scope::None, SMALL_CAP), |_, _, body| {
                #[derive(serde::Deserialize)]
                struct Token {
                    scopes: Vec<String>,
                }
                serde_json::from_slice::<Token>(body)
                    .map(|t| t.scopes)
                    .map_err(|e| format!("not an access-token answer ({})", quote_error(&e)))
            })
            .await?;
        Ok(scopes)
    }

    /// One build of the organization, to prove the token can list them.
    pub async fn probe_builds(&self) -> Result<(), SourceError> {
        let mut url = self.endpoint(&["organizations", &self.org, "builds"]);
        url.query_pairs_mut().append_pair("per_page", "1");
        self.list::<serde_json::Value>(&Get::new(
            &url,
            Scope::ReadBuilds,
            Scope::ReadBuilds.page_cap(),
        ))
        .await
        .map(drop)
    }

    /// Every connected agent of the organization, following the `Link` pages (on the API's
    /// own host only).
    pub async fn agents(&self) -> Result<Vec<Item<Agent>>, SourceError> {
        let url = self.endpoint(&["organizations", &self.org, "agents"]);
        self.list_all(url, Scope::ReadAgents, None).await
    }

    /// Every item of a small list (agents, a build's artifacts), following `Link` pages
    /// (on the API's own host only). It stops with an error naming the endpoint at a `Link`
    /// cycle (a page already read, or the same items again), after [`MAX_LIST_PAGES`] pages,
    /// or past [`LIST_CAP`] in all.
    async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        mut url: Url,
        scope: Scope,
        enrich: Option<EnrichRequest>,
    ) -> Result<Vec<Item<T>>, SourceError> {
        url.query_pairs_mut().append_pair("per_page", "100");
        let endpoint = endpoint_name(&url);
        let stop = |problem: String| SourceError::Protocol {
            endpoint: endpoint.clone(),
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
            let get = Get {
                enrich,
                ..Get::new(&page_url, scope, scope.page_cap())
            };
            let page = self.list(&get).await?;
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

    /// Every artifact of a build, following the `Link` pages.
    pub async fn artifacts(
        &self,
        pipeline: &str,
        number: u64,
    ) -> Result<Vec<Item<Artifact>>, SourceError> {
        let url = self.build_endpoint(pipeline, number, &["artifacts"]);
        self.list_all(url, Scope::ReadArtifacts, Some(EnrichRequest::Listing))
            .await
    }

    /// Where an artifact can be downloaded from: Buildkite answers its `/download` with a 302
    /// to a presigned storage URL (valid for about a minute). The token goes to Buildkite
    /// only; fetch the returned URL without it.
    pub async fn artifact_location(&self, download_url: &str) -> Result<Url, SourceError> {
        let url = self
            .api
            .join(download_url)
            .map_err(|e| SourceError::Protocol {
                endpoint: download_url.chars().take(100).collect(),
                problem: format!("unparseable URL from Buildkite: {e}"),
            })?;
        let url = self.on_api_host(url, &self.api)?;
        let get = Get {
            also_ok: &REDIRECTS,
            enrich: Some(EnrichRequest::Download),
            ..Get::new(&url, Scope::ReadArtifacts, SMALL_CAP)
        };
        let (location, _) = self
            .get(&get, |status, headers, body| {
                let target = if status.is_redirection() {
                    net::header(headers, LOCATION).map(str::to_string)
                } else {
                    serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .and_then(|v| v.get("url")?.as_str().map(str::to_string))
                };
                let target = target.ok_or("no Location and no url in the download answer")?;
                url.join(&target)
                    .map_err(|e| format!("bad download location: {e}"))
            })
            .await?;
        Ok(location)
    }

    /// Downloads what an artifact's `/download` pointed at, from the storage host, without
    /// the token; refuses more than `cap` bytes, and a location (or a redirect from it) that
    /// [`storage::check`] refuses, before connecting to it.
    pub async fn fetch_storage(&self, url: &Url, cap: u64) -> Result<Vec<u8>, FetchError> {
        storage::check(url, self.api.scheme(), 1).map_err(FetchError::Refused)?;
        let host = url.host_str().unwrap_or("?").to_string();
        let failed = |what: String| FetchError::Failed(format!("{host}: {what}"));
        let mut response = self.storage.get(url.clone()).send().await.map_err(|e| {
            storage::refusal(&e).map_or_else(|| failed(net::describe(&e)), FetchError::Refused)
        })?;
        if !response.status().is_success() {
            return Err(failed(format!("answered {}", response.status())));
        }
        net::read_capped(&mut response, cap)
            .await
            .map_err(|e| match e {
                net::BodyError::TooLarge { .. } => FetchError::TooLarge,
                net::BodyError::Cut(e) => failed(format!("cut short: {}", net::describe(&e))),
            })
    }

    /// The last `max_bytes` of a job's log (empty when the log is). A server that ignores
    /// `Range` may send the whole log: up to `max_bytes` and some slack its tail is kept,
    /// more is refused.
    pub async fn log_tail(
        &self,
        pipeline: &str,
        number: u64,
        job: &str,
        max_bytes: u64,
    ) -> Result<String, SourceError> {
        let url = self.build_endpoint(pipeline, number, &["jobs", job, "log"]);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("text/plain"));
        if let Ok(range) = HeaderValue::from_str(&format!("bytes=-{max_bytes}")) {
            headers.insert(RANGE, range);
        }
        let get = Get {
            headers,
            also_ok: &[StatusCode::RANGE_NOT_SATISFIABLE],
            enrich: Some(EnrichRequest::Log),
            ..Get::new(
                &url,
                Scope::ReadBuildLogs,
                max_bytes.saturating_add(LOG_SLACK),
            )
        };
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let (text, _) = self
            .get(&get, |status, _, body| {
                if status == StatusCode::RANGE_NOT_SATISFIABLE {
                    return Ok(String::new());
                }
                // A server that ignores Range sends it all: keep the tail.
                let tail = &body[body.len().saturating_sub(max)..];
                Ok(String::from_utf8_lossy(tail).into_owned())
            })
            .await?;
        Ok(text)
    }

    async fn list<T: serde::de::DeserializeOwned>(
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
    async fn get<T>(
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
        let lane = get.enrich.map_or(Lane::Poll, |_| Lane::Enrich);
        loop {
            self.budget.acquire(lane).await;
            self.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(kind) = get.enrich {
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
        let (scope, kind) = get.scope.names();
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
            match net::read_capped(&mut response, get.cap).await {
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
        let buildkite = buildkite_message(&text);
        let message = net::snippet(buildkite.as_deref().unwrap_or(&text), QUOTE_CHARS);
        Attempt::Failed(match status {
            // Buildkite answers these with its JSON error; anything else came from elsewhere.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if buildkite.is_none() => {
                SourceError::Blocked {
                    endpoint,
                    status: status.as_u16(),
                    quote: message,
                }
            }
            StatusCode::UNAUTHORIZED => SourceError::Unauthorized { endpoint },
            StatusCode::FORBIDDEN => {
                let scope = missing_scope(&message).unwrap_or(scope).to_string();
                SourceError::Forbidden { endpoint, scope }
            }
            StatusCode::NOT_FOUND if get.scope.build_item() => SourceError::Gone { endpoint },
            StatusCode::NOT_FOUND => SourceError::NotFound { endpoint },
            StatusCode::BAD_REQUEST if message.contains("this deep") => {
                SourceError::TooDeep { endpoint, message }
            }
            s => SourceError::Rejected {
                endpoint,
                status: s.as_u16(),
                message,
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
    fn on_api_host(&self, url: Url, from: &Url) -> Result<Url, SourceError> {
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
            let labels = crate::metrics::ScopeLabels {
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

    /// `/v2/organizations/{org}/pipelines/{pipeline}/builds/{number}/{rest...}`.
    fn build_endpoint(&self, pipeline: &str, number: u64, rest: &[&str]) -> Url {
        let mut url = self.endpoint(&["organizations", &self.org, "pipelines", pipeline]);
        if let Ok(mut path) = url.path_segments_mut() {
            path.push("builds").push(&number.to_string()).extend(rest);
        }
        url
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v2").extend(segments);
        }
        url
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
fn quote_error(e: &serde_json::Error) -> String {
    net::snippet(&e.to_string(), QUOTE_CHARS)
}

/// The `message` of Buildkite's JSON error (`{"message": ...}`), if `body` is one.
fn buildkite_message(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("message")?
        .as_str()
        .map(str::to_string)
}

/// "Your access token doesn't have the read_builds scope" -> `read_builds`.
fn missing_scope(message: &str) -> Option<&str> {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("read_") || w.starts_with("write_"))
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
    use super::*;

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
    fn time_filters_are_whole_seconds_that_only_widen_the_range() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        let cases = [
            (
                "2026-01-01T10:00:00.001Z",
                Round::Down,
                "2026-01-01T10:00:00Z",
            ),
            (
                "2026-01-01T10:00:00.001Z",
                Round::Up,
                "2026-01-01T10:00:01Z",
            ),
            (
                "2026-01-01T10:00:00.999Z",
                Round::Down,
                "2026-01-01T10:00:00Z",
            ),
            (
                "2026-01-01T10:00:00.999Z",
                Round::Up,
                "2026-01-01T10:00:01Z",
            ),
            ("2026-01-01T10:00:00Z", Round::Down, "2026-01-01T10:00:00Z"),
            ("2026-01-01T10:00:00Z", Round::Up, "2026-01-01T10:00:00Z"),
            ("2026-12-31T23:59:59.5Z", Round::Up, "2027-01-01T00:00:00Z"),
            (
                "2026-01-01T10:00:00.000000001Z",
                Round::Up,
                "2026-01-01T10:00:01Z",
            ),
        ];
        for (time, round, sent) in cases {
            assert_eq!(whole_second(t(time), round), sent, "{time} {round:?}");
        }
    }

    #[test]
    fn names_the_missing_scope() {
        assert_eq!(
            missing_scope("Your access token doesn't have the read_artifacts scope"),
            Some("read_artifacts")
        );
        assert_eq!(missing_scope("Forbidden"), None);
    }

    #[test]
    fn only_a_json_message_is_buildkites() {
        assert_eq!(
            buildkite_message(r#"{"message": "No way"}"#).as_deref(),
            Some("No way")
        );
        assert_eq!(buildkite_message("<html>Access denied</html>"), None);
        assert_eq!(buildkite_message(r#"{"error": "denied"}"#), None);
        assert_eq!(buildkite_message(r#"{"message": 403}"#), None);
    }

    #[test]
    fn a_json_error_quotes_little_of_the_value_that_did_not_fit() {
        let huge = format!("\"{}\"", "<html>".repeat(100_000));
        let e = serde_json::from_str::<Vec<u8>>(&huge).expect_err("not a list");
        assert!(e.to_string().len() > 100_000, "serde quotes the value");
        assert!(quote_error(&e).chars().count() <= QUOTE_CHARS + 1);
    }

    #[test]
    fn rounding_up_the_last_second_chrono_holds_does_not_panic() {
        let last = DateTime::<Utc>::MAX_UTC;
        assert_eq!(
            whole_second(last, Round::Up),
            whole_second(last, Round::Down)
        );
    }
}
