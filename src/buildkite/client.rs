//! The Buildkite REST client: bearer auth, paced by the [`Budget`], `Link` pagination,
//! retries of transient faults, and errors that say what to do. This file holds the client
//! and its endpoints; the files under `client/` hold its errors, the builds query, what
//! differs by endpoint, Buildkite's messages and the transport.

mod endpoint;
mod error;
mod message;
mod query;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, LOCATION, RANGE};
use reqwest::StatusCode;
use url::Url;

use super::budget::Budget;
use super::model::{Agent, Artifact, Build};
use super::storage;
use crate::config::BuildkiteConfig;
use crate::net;
use crate::telemetry::metrics::Metrics;
use endpoint::Endpoint;
use transport::{quote_error, Get, Transport};

pub(crate) use endpoint::EnrichRequest;
pub(crate) use error::{FetchError, SourceError};
pub(crate) use query::{BuildQuery, TIME_FILTER_STEP_SECS};
pub use transport::{parse_next_link, Item, Page};

/// A Buildkite REST client for one organization.
pub(crate) struct Client {
    /// To Buildkite's API, with the token.
    transport: Transport,
    /// For artifact storage hosts: no token, ever.
    storage: reqwest::Client,
    org: String,
}

/// The answers that point an artifact's `/download` elsewhere.
const REDIRECTS: [StatusCode; 4] = [
    StatusCode::FOUND,
    StatusCode::SEE_OTHER,
    StatusCode::TEMPORARY_REDIRECT,
    StatusCode::MOVED_PERMANENTLY,
];

impl Client {
    /// A client paced by `budget`.
    pub(crate) fn new(
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
        let http = build(reqwest::redirect::Policy::none())?;
        Ok(Client {
            transport: Transport::new(http, &config.api_url, config.token(), budget, metrics)?,
            // Storage hosts get no token; their redirects are checked before they are followed.
            storage: storage::guarded(storage, config.api_url.scheme())
                .build()
                .map_err(|e| crate::net::describe(&e))?,
            org: config.organization.clone(),
        })
    }

    /// Requests sent so far (every attempt counts, as Buildkite counts them).
    pub(crate) fn requests(&self) -> u64 {
        self.transport.requests()
    }

    /// Requests of this `kind` sent so far for test results and logs.
    pub(crate) fn enrich_requests(&self, kind: EnrichRequest) -> u64 {
        self.transport.enrich_requests(kind)
    }

    /// The pacing budget.
    pub(crate) fn budget(&self) -> &Budget {
        self.transport.budget()
    }

    /// The pacing budget, to keep beyond the client's borrow.
    pub(crate) fn shared_budget(&self) -> Arc<Budget> {
        Arc::clone(self.transport.budget())
    }

    /// A page of the organization-wide builds list, newest first, every attempt of every
    /// job. Builds that do not decode are returned as such, so one odd build never blocks the
    /// page.
    pub(crate) async fn builds(&self, query: &BuildQuery) -> Result<Page<Build>, SourceError> {
        let mut url = self.endpoint(&["organizations", &self.org, "builds"]);
        query.append_to(&mut url);
        self.transport.list(&Get::new(&url, Endpoint::Builds)).await
    }

    /// The token's scopes (`GET /v2/access-token`, which needs none), and the budgets the
    /// answer reported.
    pub(crate) async fn token_scopes(&self) -> Result<Vec<String>, SourceError> {
        let url = self.endpoint(&["access-token"]);
        let (scopes, _) = self
            .transport
            .get(&Get::new(&url, Endpoint::AccessToken), |_, _, body| {
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
    pub(crate) async fn probe_builds(&self) -> Result<(), SourceError> {
        let mut url = self.endpoint(&["organizations", &self.org, "builds"]);
        url.query_pairs_mut().append_pair("per_page", "1");
        self.transport
            .list::<serde_json::Value>(&Get::new(&url, Endpoint::Builds))
            .await
            .map(drop)
    }

    /// Every connected agent of the organization, following the `Link` pages (on the API's
    /// own host only).
    pub(crate) async fn agents(&self) -> Result<Vec<Item<Agent>>, SourceError> {
        let url = self.endpoint(&["organizations", &self.org, "agents"]);
        self.transport.list_all(url, Endpoint::Agents).await
    }

    /// Every artifact of a build, following the `Link` pages.
    pub(crate) async fn artifacts(
        &self,
        pipeline: &str,
        number: u64,
    ) -> Result<Vec<Item<Artifact>>, SourceError> {
        let url = self.build_endpoint(pipeline, number, &["artifacts"]);
        self.transport.list_all(url, Endpoint::Artifacts).await
    }

    /// Where an artifact can be downloaded from: Buildkite answers its `/download` with a 302
    /// to a presigned storage URL (valid for about a minute). The token goes to Buildkite
    /// only; fetch the returned URL without it.
    pub(crate) async fn artifact_location(&self, download_url: &str) -> Result<Url, SourceError> {
        let url = self
            .transport
            .api()
            .join(download_url)
            .map_err(|e| SourceError::Protocol {
                endpoint: download_url.chars().take(100).collect(),
                problem: format!("unparseable URL from Buildkite: {e}"),
            })?;
        let url = self.transport.on_api_host(url, self.transport.api())?;
        let get = Get {
            also_ok: &REDIRECTS,
            ..Get::new(&url, Endpoint::ArtifactDownload)
        };
        let (location, _) = self
            .transport
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
    pub(crate) async fn fetch_storage(&self, url: &Url, cap: u64) -> Result<Vec<u8>, FetchError> {
        storage::check(url, self.transport.api().scheme(), 1).map_err(FetchError::Refused)?;
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
    pub(crate) async fn log_tail(
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
            ..Get::new(&url, Endpoint::Log { max_bytes })
        };
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let (text, _) = self
            .transport
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

    /// `/v2/organizations/{org}/pipelines/{pipeline}/builds/{number}/{rest...}`.
    fn build_endpoint(&self, pipeline: &str, number: u64, rest: &[&str]) -> Url {
        let mut url = self.endpoint(&["organizations", &self.org, "pipelines", pipeline]);
        if let Ok(mut path) = url.path_segments_mut() {
            path.push("builds").push(&number.to_string()).extend(rest);
        }
        url
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.transport.api().clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v2").extend(segments);
        }
        url
    }
}
