//! The BuildButler client. In `ingest` mode a build is a `POST builds`, then its stages with
//! the `buildId` from the answer; both auth headers go with every request, since
//! BuildButler's docs (`Authorization: Bearer`) and its Action (`X-API-Key`) disagree. In
//! `webhook` mode a build is one `POST /webhooks/buildkite`, as Buildkite's own webhook.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{webhook, wire};
use crate::buildkite::Build;
use crate::config::{Config, Mode, Secret, StatusCase};
use crate::item::{AgentTags, Fleet, Item, Kind, Log, TestResults};
use crate::net;
use crate::telemetry::metrics::Metrics;

/// The most kitesync reads of a BuildButler answer it uses (the stored build, with its id).
const ANSWER_CAP: u64 = 1024 * 1024;
/// What is read of an error answer, which only explains the status.
const ERROR_BODY_CAP: usize = 16 * 1024;
/// What an error message quotes of an answer, in characters.
const QUOTE_CHARS: usize = 300;

/// Why a delivery did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: 5xx, 429, timeouts, dropped connections.
    #[error(transparent)]
    Retry(Retry),
    /// This item is refused for good (BuildButler answered `status`, e.g. 400, or it cannot
    /// be rendered): it becomes a dead letter.
    #[error("{message}")]
    Reject {
        status: Option<StatusCode>,
        message: String,
    },
    /// Nothing can be delivered until the operator acts (bad API key, wrong URL).
    #[error(transparent)]
    Fatal(Fatal),
    /// The builds (or webhook) route answered 404: a wrong URL, mode or ingest prefix.
    /// Fatal too, unless BuildButler answers at the other known prefix ([`Sink::probe`]).
    #[error(transparent)]
    NoRoute(NoRoute),
}

/// Why a delivery is worth trying again later; `route` as shown (prefix and route).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Retry {
    /// No answer: a connection refused or dropped, a timeout.
    #[error("BuildButler {route}: {reason}")]
    Unanswered { route: String, reason: String },
    /// The answer (a 2xx) broke off.
    #[error("BuildButler {route}: answer cut short: {reason}")]
    Cut { route: String, reason: String },
    /// The answer (a 2xx) is longer than kitesync reads.
    #[error("BuildButler {route}: its answer is larger than {}: not read further", net::size(*cap))]
    TooLarge { route: String, cap: u64 },
    /// A 5xx, 429 or 408.
    #[error("BuildButler {route} answered {status}")]
    Status { route: String, status: StatusCode },
}

/// Why nothing can be delivered until the operator acts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fatal {
    /// A 401 or 403 at `path` (server and route).
    #[error("BuildButler rejected the API key ({status} at {path}): check [buildbutler] api_key or api_key_file")]
    KeyRejected { status: StatusCode, path: String },
    /// A secret that cannot be a header value.
    #[error(
        "a BuildButler or Buildkite secret contains characters that cannot go in an HTTP header"
    )]
    Header,
}

/// Why BuildButler's builds (or webhook) route is not where the configuration says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    /// A 404 at `path` (server and route).
    #[error("BuildButler answered 404 at {path}: check [buildbutler] url, mode and ingest_prefix (its docs use \"/ingest\", its Action \"/api/v1/ingest\")")]
    NotFound { path: String },
    /// `check`: the configured prefix answered 404, the `other` known one answers.
    #[error("BuildButler at {shown} has no ingest route at {configured} (404) but answers at {other}: set ingest_prefix = \"{other}\" in [buildbutler]")]
    ElsewhereAt {
        shown: String,
        configured: String,
        other: &'static str,
    },
    /// `check`: every known prefix answered 404.
    #[error("BuildButler at {shown} answered 404 at {}: check [buildbutler] url", INGEST_PREFIXES.join(" and at "))]
    Nowhere { shown: String },
}

/// A route of BuildButler's, which decides what its 404 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Builds,
    Stages,
    Tests,
    Logs,
    Agents,
    Webhook,
}

impl Route {
    /// Its path, after the ingest prefix (ingest mode) or the server (webhook).
    fn path(self) -> &'static str {
        match self {
            Route::Builds => "builds",
            Route::Stages => "pipeline-stages",
            Route::Tests => "tests",
            Route::Logs => "build-logs",
            Route::Agents => "agents",
            Route::Webhook => "webhooks/buildkite",
        }
    }

    /// True when a 404 here means there is no such route (a wrong URL, mode or prefix);
    /// elsewhere it may be the item's build BuildButler does not know.
    fn is_entry(self) -> bool {
        matches!(self, Route::Builds | Route::Webhook)
    }
}

/// The ingest prefixes BuildButler is known by: its GitHub Action's and its docs'.
pub(crate) const INGEST_PREFIXES: [&str; 2] = ["/api/v1/ingest", "/ingest"];

/// What one ingest prefix of BuildButler answered to an empty build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The route exists and the API key was accepted (the empty build refused, 400/422).
    Answers,
    /// 404: no such route there.
    Missing,
    /// Anything else: the key refused, BuildButler down, a network error.
    Failed(SendError),
}

impl SendError {
    /// An item that cannot be rendered: it can never be delivered as it is.
    fn unrenderable(what: &str, e: impl std::fmt::Display) -> SendError {
        SendError::Reject {
            status: None,
            message: format!("cannot render the queued {what}: {e}"),
        }
    }
}

/// A queued item's JSON, decoded; `what` names it if it cannot be.
fn decode<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, SendError> {
    serde_json::from_str(json).map_err(|e| SendError::unrenderable(what, e))
}

/// A BuildButler client.
pub(crate) struct Sink {
    http: reqwest::Client,
    /// The server's base URL, without a trailing slash.
    server: String,
    /// The server as it may appear in messages: host, port and path, no credentials.
    shown: String,
    /// The ingest prefix in use: the configured one, or the other one found to answer.
    prefix: std::sync::RwLock<String>,
    mode: Mode,
    org: String,
    case: StatusCase,
    /// Webhook mode: the API key, sent as `X-Buildkite-Token` or used to sign.
    key: Secret,
    sign: bool,
    /// Webhook mode, opt-in: the Buildkite token for the `buildkiteToken` query parameter.
    buildkite_token: Option<Secret>,
    /// `--dry-run`: print each request body as an NDJSON line instead of sending it.
    print: bool,
    metrics: Arc<Metrics>,
    /// Whether a build answered without an id was warned about yet.
    warned_without_id: AtomicBool,
}

impl Sink {
    /// A client for the `[buildbutler]` settings of `config`, counting in `metrics`.
    pub(crate) fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Sink, String> {
        let bb = &config.buildbutler;
        let key = bb.api_key();
        let mut headers = HeaderMap::new();
        if bb.mode == Mode::Ingest {
            let bearer = format!("Bearer {}", key.expose());
            headers.insert(AUTHORIZATION, sensitive(&bearer)?);
            headers.insert("x-api-key", sensitive(key.expose())?);
        }
        let connect = std::time::Duration::from_secs(bb.connect_timeout_seconds);
        let http = crate::net::client(bb.timeout(), connect, bb.ca_file.as_deref())?
            .default_headers(headers)
            .build()
            .map_err(|e| crate::net::describe(&e))?;
        let url = &bb.url;
        let server = url.as_str().trim_end_matches('/').to_string();
        let shown = format!(
            "{}{}{}",
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default(),
            url.path().trim_end_matches('/')
        );
        Ok(Sink {
            http,
            server,
            shown,
            prefix: std::sync::RwLock::new(bb.ingest_prefix.trim_end_matches('/').to_string()),
            mode: bb.mode,
            org: config.buildkite.organization.clone(),
            case: bb.status_case,
            key,
            sign: bb.webhook_signature,
            buildkite_token: bb
                .webhook_send_buildkite_token
                .then(|| config.buildkite.token()),
            print: false,
            metrics,
            warned_without_id: AtomicBool::new(false),
        })
    }

    /// This sink, printing `{"route", "body"}` lines on stdout instead of sending: no
    /// headers, so no secret, ever.
    pub(crate) fn printing(mut self) -> Sink {
        self.print = true;
        self
    }

    /// Renders one item ([`wire`]) and delivers it.
    pub(crate) async fn deliver(&self, item: Item<'_>) -> Result<(), SendError> {
        let payload = item.payload;
        match (self.mode, item.kind) {
            (Mode::Ingest, Kind::Build) => {
                let build = decode("build", payload)?;
                self.ingest_build(build, item.agent_tags).await
            }
            (Mode::Webhook, Kind::Build) => {
                let body =
                    webhook::payload(payload).map_err(|e| SendError::unrenderable("build", e))?;
                let token = self.buildkite_token.as_ref();
                self.webhook("build.finished", body, token).await.map(drop)
            }
            (Mode::Ingest, Kind::Tests) => {
                let results: TestResults = decode("test results", payload)?;
                self.ingest(Route::Tests, &wire::suite(&results))
                    .await
                    .map(drop)
            }
            (Mode::Ingest, Kind::Log) => {
                let log: Log = decode("log", payload)?;
                let build: Build = decode("log's build", log.build.get())?;
                let body = wire::log(&self.org, &build, &log.content, self.case);
                self.ingest(Route::Logs, &body).await.map(drop)
            }
            (Mode::Ingest, Kind::Agents) => {
                let fleet: Fleet = decode("fleet", payload)?;
                let body = wire::fleet(&self.org, &fleet);
                self.ingest(Route::Agents, &body).await.map(drop)
            }
            (Mode::Webhook, kind) => Err(SendError::Reject {
                status: None,
                message: format!("webhook mode carries builds only, not {}", kind.as_str()),
            }),
        }
    }

    /// The ingest prefix in use.
    pub(crate) fn prefix(&self) -> String {
        self.prefix
            .read()
            .map_or_else(|e| e.into_inner().clone(), |p| p.clone())
    }

    /// Uses `prefix` from now on (the other known one, found to answer).
    pub(crate) fn use_prefix(&self, prefix: &str) {
        match self.prefix.write() {
            Ok(mut p) => *p = prefix.to_string(),
            Err(e) => *e.into_inner() = prefix.to_string(),
        }
    }

    /// Whether BuildButler answers at ingest `prefix`, with an empty build it refuses for its
    /// content (so nothing is stored).
    pub(crate) async fn probe(&self, prefix: &str) -> Probe {
        let url = format!("{}{prefix}/builds", self.server);
        let shown = format!("{}/builds", prefix.trim_start_matches('/'));
        match self
            .post(
                &url,
                &shown,
                Route::Builds,
                b"{}".to_vec(),
                HeaderMap::new(),
            )
            .await
        {
            Ok(_) => Probe::Answers,
            // Refused for its (empty) content, as a validating API does: the key was accepted.
            Err(SendError::Reject {
                status: Some(StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY),
                ..
            }) => Probe::Answers,
            Err(SendError::NoRoute(_)) => Probe::Missing,
            Err(e) => Probe::Failed(e),
        }
    }

    /// Checks that BuildButler answers and accepts the API key, storing nothing: an empty
    /// build (ingest) is refused for its content, a `ping` event (webhook) is skipped. In
    /// ingest mode a configured prefix that answers 404 is checked against the other known
    /// one, and the line to set is named.
    pub(crate) async fn check(&self) -> Result<String, SendError> {
        let accepted = format!("{} answered and accepted the API key", self.shown);
        if self.mode == Mode::Webhook {
            let ping = self.webhook("ping", br#"{"event":"ping"}"#.to_vec(), None);
            return ping.await.map(|_| accepted);
        }
        let configured = self.prefix();
        let refused = "(the empty test build was refused, as it should be)";
        match self.probe(&configured).await {
            Probe::Answers => return Ok(format!("{accepted} at {configured} {refused}")),
            Probe::Failed(e) => return Err(e),
            Probe::Missing => {}
        }
        let shown = &self.shown;
        let other = INGEST_PREFIXES.into_iter().find(|p| *p != configured);
        let found = match other {
            Some(other) => (self.probe(other).await == Probe::Answers).then_some(other),
            None => None,
        };
        let shown = shown.clone();
        Err(SendError::NoRoute(match found {
            Some(other) => NoRoute::ElsewhereAt {
                shown,
                configured,
                other,
            },
            None => NoRoute::Nowhere { shown },
        }))
    }

    async fn ingest_build(&self, build: Build, tags: &AgentTags) -> Result<(), SendError> {
        let body = wire::build(&self.org, &build, self.case, Some(tags));
        let answer = self.ingest(Route::Builds, &body).await?;
        let build_id = match answer.id() {
            Some(Ok(id)) => id,
            // A dry run: nothing was answered.
            None => &build.id,
            // Stored (a 2xx) but not named: under the id kitesync sent, Buildkite's UUID, which
            // BuildButler stores a build under, as its Action's. An error would post the build
            // again forever.
            Some(Err(without)) => {
                self.without_id(&build, &without);
                &build.id
            }
        };
        let stages = wire::stages(build_id, &build, self.case);
        if !stages.stages.is_empty() {
            self.ingest(Route::Stages, &stages).await?;
        }
        Ok(())
    }

    /// Logs (at warning level once, then at debug) and counts a build whose answer gave no id.
    fn without_id(&self, build: &Build, answer: &str) {
        self.metrics.builds_without_id.inc();
        let first = !self.warned_without_id.swap(true, Ordering::Relaxed);
        let (id, n) = (&build.id, build.number);
        let why = format!(
            "BuildButler stored build {n} ({id}) but its answer {answer}: its stages go under the id kitesync sent, {id} (counted in kitesync_butler_builds_without_id)"
        );
        match first {
            true => tracing::warn!("{why}; further such answers are logged at debug level"),
            false => tracing::debug!("{why}"),
        }
    }

    /// POSTs the webhook `event` with the API key as `X-Buildkite-Token`, or a signature of
    /// `body` with it; with `token`, Buildkite's token as the `buildkiteToken` query parameter.
    async fn webhook(
        &self,
        event: &'static str,
        body: Vec<u8>,
        token: Option<&Secret>,
    ) -> Result<Answer, SendError> {
        let (auth, value) = if self.sign {
            let signature = webhook::signature(&self.key, crate::clock::now().timestamp(), &body);
            ("x-buildkite-signature", sensitive(&signature))
        } else {
            ("x-buildkite-token", sensitive(self.key.expose()))
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-buildkite-event", HeaderValue::from_static(event));
        headers.insert(auth, value.map_err(|_| SendError::Fatal(Fatal::Header))?);
        let mut url = format!("{}/webhooks/buildkite", self.server);
        if let Some(token) = token {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("buildkiteToken", token.expose())
                .finish();
            url = format!("{url}?{query}");
        }
        let shown = Route::Webhook.path();
        self.post(&url, shown, Route::Webhook, body, headers).await
    }

    /// POSTs JSON to `{url}{ingest_prefix}/{route}`; what it answered.
    async fn ingest<T: Serialize>(&self, route: Route, body: &T) -> Result<Answer, SendError> {
        let (prefix, path) = (self.prefix(), route.path());
        let url = format!("{}{prefix}/{path}", self.server);
        let shown = format!("{}/{path}", prefix.trim_start_matches('/'));
        let bytes = serde_json::to_vec(body).map_err(|e| SendError::unrenderable(path, e))?;
        self.post(&url, &shown, route, bytes, HeaderMap::new())
            .await
    }

    /// POSTs a JSON `body` to `url`, BuildButler's `to` (named `route` in messages and
    /// dry-run lines, never with its query).
    async fn post(
        &self,
        url: &str,
        route: &str,
        to: Route,
        body: Vec<u8>,
        headers: HeaderMap,
    ) -> Result<Answer, SendError> {
        if self.print {
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            println!("{}", serde_json::json!({"route": route, "body": body}));
            return Ok(Answer::Printed);
        }
        let shown = || route.to_string();
        let mut response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let reason = net::describe(&e);
                SendError::Retry(Retry::Unanswered {
                    route: shown(),
                    reason,
                })
            })?;
        let status = response.status();
        if status.is_success() {
            // Stored, most likely; sent again it is an upsert.
            let text = match net::read_capped(&mut response, ANSWER_CAP).await {
                Ok(text) => text,
                Err(net::BodyError::Cut(e)) => {
                    let reason = net::describe(&e);
                    return Err(SendError::Retry(Retry::Cut {
                        route: shown(),
                        reason,
                    }));
                }
                Err(net::BodyError::TooLarge { cap }) => {
                    return Err(SendError::Retry(Retry::TooLarge {
                        route: shown(),
                        cap,
                    }))
                }
            };
            return Ok(Answer::read(&text));
        }
        let text = net::read_prefix(&mut response, ERROR_BODY_CAP).await;
        let path = format!("{}/{route}", self.shown);
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                SendError::Fatal(Fatal::KeyRejected { status, path })
            }
            // No builds or webhook route: the URL is wrong. Any other: the item's route or build.
            StatusCode::NOT_FOUND if to.is_entry() => SendError::NoRoute(NoRoute::NotFound { path }),
            StatusCode::NOT_FOUND => SendError::Reject {
                status: Some(status),
                message: format!(
                    "BuildButler answered 404 at {path}: it has no such route, or not the build this belongs to"
                ),
            },
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                SendError::Retry(Retry::Status {
                    route: shown(),
                    status: s,
                })
            }
            s => {
                let detail = net::snippet(&String::from_utf8_lossy(&text), QUOTE_CHARS);
                SendError::Reject {
                    status: Some(s),
                    message: format!("BuildButler refused it ({s} at {route}): {detail}"),
                }
            }
        })
    }
}

/// What BuildButler answered to a POST it accepted (2xx).
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Json(serde_json::Value),
    /// Not JSON (an empty body, say): this many bytes.
    NotJson(usize),
    /// Nothing was sent: `--dry-run` printed it.
    Printed,
}

impl Answer {
    fn read(body: &[u8]) -> Answer {
        match serde_json::from_slice(body) {
            Ok(json) => Answer::Json(json),
            Err(_) => Answer::NotJson(body.len()),
        }
    }

    /// The stored record's `id`, or what the answer was instead (for a message); `None` for
    /// a dry run, which was not answered.
    fn id(&self) -> Option<Result<&str, String>> {
        Some(match self {
            Answer::Json(json) => match json.get("id") {
                Some(serde_json::Value::String(id)) => Ok(id),
                Some(_) => Err("has an `id` that is not a string".into()),
                None => Err("has no `id`".into()),
            },
            Answer::NotJson(0) => Err("is empty".into()),
            Answer::NotJson(n) => Err(format!("is not JSON ({n} bytes)")),
            Answer::Printed => return None,
        })
    }
}

/// A header value that debug output never shows.
fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value).map_err(|_| Fatal::Header.to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_means_no_route_only_at_the_builds_and_webhook_routes() {
        let table = [
            (Route::Builds, true),
            (Route::Webhook, true),
            (Route::Stages, false),
            (Route::Tests, false),
            (Route::Logs, false),
            (Route::Agents, false),
        ];
        for (route, entry) in table {
            assert_eq!(route.is_entry(), entry, "{route:?}");
        }
    }

    #[test]
    fn regression_the_typed_errors_say_what_the_strings_said() {
        let path = "127.0.0.1:9/api/v1/ingest/builds".to_string();
        let table = [
            (
                SendError::Retry(Retry::Status {
                    route: "api/v1/ingest/tests".into(),
                    status: StatusCode::BAD_GATEWAY,
                }),
                "BuildButler api/v1/ingest/tests answered 502 Bad Gateway",
            ),
            (
                SendError::Retry(Retry::TooLarge {
                    route: "api/v1/ingest/builds".into(),
                    cap: ANSWER_CAP,
                }),
                "BuildButler api/v1/ingest/builds: its answer is larger than 1 MiB: not read further",
            ),
            (
                SendError::Fatal(Fatal::KeyRejected {
                    status: StatusCode::UNAUTHORIZED,
                    path: path.clone(),
                }),
                "BuildButler rejected the API key (401 Unauthorized at 127.0.0.1:9/api/v1/ingest/builds): check [buildbutler] api_key or api_key_file",
            ),
            (
                SendError::NoRoute(NoRoute::Nowhere {
                    shown: "127.0.0.1:9".into(),
                }),
                "BuildButler at 127.0.0.1:9 answered 404 at /api/v1/ingest and at /ingest: check [buildbutler] url",
            ),
            (
                SendError::NoRoute(NoRoute::ElsewhereAt {
                    shown: "127.0.0.1:9".into(),
                    configured: "/api/v1/ingest".into(),
                    other: "/ingest",
                }),
                "BuildButler at 127.0.0.1:9 has no ingest route at /api/v1/ingest (404) but answers at /ingest: set ingest_prefix = \"/ingest\" in [buildbutler]",
            ),
        ];
        for (error, said) in table {
            assert_eq!(error.to_string(), said);
        }
    }

    #[test]
    fn an_answer_without_an_id_says_what_it_was() {
        let table = [
            (&br#"{"id": "bb-1", "ok": true}"#[..], Some(Ok("bb-1"))),
            (b"", Some(Err("is empty"))),
            (b"<html>stored</html>", Some(Err("is not JSON (19 bytes)"))),
            (br#"{"ok": true}"#, Some(Err("has no `id`"))),
            (
                br#"{"id": 7}"#,
                Some(Err("has an `id` that is not a string")),
            ),
        ];
        for (body, want) in table {
            let answer = Answer::read(body);
            let got = answer.id().map(|r| r.map_err(|e| e.to_string()));
            let want = want.map(|r| r.map_err(str::to_string));
            assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(Answer::Printed.id(), None);
    }
}
