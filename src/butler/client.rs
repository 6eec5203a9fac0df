//! The BuildButler ingest client: one build is a `POST builds`, then its stages with the
//! `buildId` from the answer. Both auth headers go with every request, since BuildButler's
//! docs (`Authorization: Bearer`) and its Action (`X-API-Key`) disagree.

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde::Serialize;

use super::wire;
use crate::buildkite::Build;
use crate::config::{ButlerConfig, StatusCase};
use crate::retry;
use crate::store::outbox::Row;

/// Why a delivery did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: 5xx, 429, timeouts, dropped connections.
    #[error("{0}")]
    Retry(String),
    /// BuildButler refused this item for good (e.g. 400): it becomes a dead letter.
    #[error("{0}")]
    Reject(String),
    /// Nothing can be delivered until the operator acts (bad API key, wrong URL).
    #[error("{0}")]
    Fatal(String),
}

/// A BuildButler ingest client.
pub struct Sink {
    http: reqwest::Client,
    base: String,
    /// `base` as it may appear in messages: host, port and path, no credentials.
    shown: String,
    org: String,
    case: StatusCase,
}

impl Sink {
    /// A client for `config`, delivering builds of the organization `org`.
    pub fn new(config: &ButlerConfig, org: &str) -> Result<Sink, String> {
        let key = config.api_key();
        let header = |value: String| {
            let mut v = HeaderValue::from_str(&value).map_err(|_| {
                "the BuildButler API key contains characters that cannot go in an HTTP header"
                    .to_string()
            })?;
            v.set_sensitive(true);
            Ok::<_, String>(v)
        };
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, header(format!("Bearer {}", key.expose()))?);
        headers.insert("x-api-key", header(key.expose().to_string())?);
        let http = reqwest::Client::builder()
            .user_agent(concat!("kitesync/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(config.timeout())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        let base = format!(
            "{}{}",
            config.url.as_str().trim_end_matches('/'),
            config.ingest_prefix.trim_end_matches('/')
        );
        let url = &config.url;
        let shown = format!(
            "{}{}{}",
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default(),
            &base[base.find(url.path()).unwrap_or(base.len())..]
        );
        Ok(Sink {
            http,
            base,
            shown,
            org: org.to_string(),
            case: config.status_case,
        })
    }

    /// Delivers one outbox row.
    pub async fn deliver(&self, row: &Row) -> Result<(), SendError> {
        match row.kind.as_str() {
            "build" => self.deliver_build(&row.payload).await,
            other => Err(SendError::Reject(format!(
                "unknown outbox item kind {other:?}"
            ))),
        }
    }

    async fn deliver_build(&self, payload: &str) -> Result<(), SendError> {
        let build: Build = serde_json::from_str(payload)
            .map_err(|e| SendError::Reject(format!("cannot decode the queued build: {e}")))?;
        let answer = self
            .post("builds", &wire::build(&self.org, &build, self.case))
            .await?;
        let build_id = answer
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or(&build.id);
        let stages = wire::stages(build_id, &build, self.case);
        if !stages.stages.is_empty() {
            self.post("pipeline-stages", &stages).await?;
        }
        Ok(())
    }

    /// POSTs `body` to `{url}{ingest_prefix}/{route}`; the answer's JSON (or null).
    async fn post<T: Serialize>(
        &self,
        route: &str,
        body: &T,
    ) -> Result<serde_json::Value, SendError> {
        let url = format!("{}/{route}", self.base);
        let response = self.http.post(&url).json(body).send().await.map_err(|e| {
            SendError::Retry(format!("BuildButler {route}: {}", retry::describe(&e)))
        })?;
        let status = response.status();
        let text = response.bytes().await.map_err(|e| {
            SendError::Retry(format!(
                "BuildButler {route}: answer cut short: {}",
                retry::describe(&e)
            ))
        })?;
        if status.is_success() {
            return Ok(serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null));
        }
        let path = format!("{}/{route}", self.shown);
        let detail = || {
            let s = String::from_utf8_lossy(&text[..text.len().min(300)]);
            s.trim().replace('\n', " ")
        };
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => SendError::Fatal(format!(
                "BuildButler rejected the API key ({status} at {path}): check [buildbutler] api_key or api_key_file"
            )),
            StatusCode::NOT_FOUND if route == "pipeline-stages" => SendError::Reject(format!(
                "BuildButler has no pipeline-stages route (404 at {path}); the build itself was delivered without its stages"
            )),
            StatusCode::NOT_FOUND => SendError::Fatal(format!(
                "BuildButler answered 404 at {path}: check [buildbutler] url and ingest_prefix (its docs use \"/ingest\", its Action \"/api/v1/ingest\")"
            )),
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                SendError::Retry(format!("BuildButler {route} answered {s}"))
            }
            s => SendError::Reject(format!("BuildButler refused it ({s} at {route}): {}", detail())),
        })
    }
}
