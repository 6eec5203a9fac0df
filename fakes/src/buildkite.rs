//! A fake Buildkite REST API (v2) for one organization.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Value};

use crate::http;

/// Buildkite's answer when a listing pages too deep.
pub const TOO_DEEP: &str = "Listing builds this deep is not supported. Please narrow your query using filters such as branch or created_from.";

/// A fault injected into the next request (see [`FakeBuildkite::inject`] and
/// [`FakeBuildkite::inject_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a JSON error body.
    Status(u16),
    /// A 429 as if the organization's budget ran out, resetting in this many seconds.
    RateLimited(u64),
    /// The right answer, cut off halfway.
    Truncated,
    /// The connection dropped before the answer.
    Dropped,
    /// A 200 whose body is not JSON.
    Malformed,
    /// A 302 to this URL (another host, say).
    Redirect(String),
    /// A 200 whose body never ends: a JSON list that never closes (endless text to a log
    /// reader), sent as fast as the client reads.
    Endless,
    /// This status with an HTML body that never ends.
    EndlessError(u16),
    /// A 403 with an HTML page, as a proxy or firewall on the way sends it.
    BlockPage,
    /// The right answer, but its `RateLimit-*` headers say both budgets are spent until
    /// this many seconds from now (the budgets are in fact untouched).
    LongReset(u64),
    /// The right answer: lets the faults queued after it wait for a later request (the
    /// second page of a listing, say).
    Pass,
}

/// The endpoint a fault injected with [`FakeBuildkite::inject_at`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    AccessToken,
    Builds,
    Agents,
    Artifacts,
    /// An artifact's `/download` (the 302 to storage).
    Download,
    Log,
}

/// How the agents and artifacts lists page (see [`FakeBuildkite::set_paging`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Paging {
    /// As Buildkite does.
    #[default]
    Normal,
    /// Every page's `Link` names the page itself as the next one.
    LinkToSelf,
    /// `page` is ignored (the first page every time), yet `Link` goes on to page 2, 3, ...
    IgnorePage,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Path and query, as sent.
    pub uri: String,
    pub at: Instant,
    pub status: u16,
    pub authorization: Option<String>,
    /// The organization's budget left after this request, as the headers said.
    pub org_remaining: u32,
    /// The token owner's budget left after this request, as the headers said.
    pub user_remaining: u32,
    /// The budgets' window this request counted in (0 from [`FakeBuildkite::set_budgets`]).
    pub window: u32,
}

/// One rate budget: `limit` requests per `window`.
#[derive(Debug, Clone)]
struct Budget {
    limit: u32,
    used: u32,
    /// Requests another client spends in every window, half as the window opens and half
    /// at its middle (see [`FakeBuildkite::set_other_client`]).
    others: u32,
}

impl Budget {
    fn new(limit: u32) -> Budget {
        Budget {
            limit,
            used: 0,
            others: 0,
        }
    }

    /// What the other client has spent `elapsed` into a `window`.
    fn others_by(&self, elapsed: Duration, window: Duration) -> u32 {
        let first = self.others / 2;
        if elapsed * 2 >= window {
            self.others
        } else {
            first
        }
    }
}

#[derive(Debug)]
struct Inner {
    org: String,
    token: String,
    scopes: Vec<String>,
    builds: Vec<Value>,
    agents: Vec<Value>,
    /// Artifacts by build number.
    artifacts: BTreeMap<u64, Vec<FakeArtifact>>,
    /// Job logs by job id.
    logs: BTreeMap<String, String>,
    /// Base URL of the artifact storage host (another port: another host).
    storage_url: String,
    /// Whether the API is served over TLS.
    tls: bool,
    /// A broken server: `created_to` is ignored.
    ignore_created_to: bool,
    /// A server that drops the fraction of a time filter (`10:00:00.999` → `10:00:00`).
    truncate_params: bool,
    /// Pages past this answer 400 "too deep".
    max_page: u32,
    window: Duration,
    window_start: Instant,
    org_budget: Budget,
    user_budget: Budget,
    /// Windows begun since the budgets were set.
    window_number: u32,
    /// What the other client had spent of each budget by the last request.
    others_spent: (u32, u32),
    faults: VecDeque<Fault>,
    /// Faults for one endpoint's next requests, before any of `faults`.
    targeted: BTreeMap<Endpoint, VecDeque<Fault>>,
    /// Every request answered with a proxy's 403 HTML page.
    blocked: bool,
    paging: Paging,
    /// A broken builds listing: every filter (times, branches) is ignored.
    ignore_filters: bool,
    /// A broken builds listing: `finished_from` is ignored.
    ignore_finished_from: bool,
    /// A broken builds listing: `page` is ignored, each page number reshuffling the first.
    reshuffle_pages: bool,
    /// A log server that sends the whole log whatever `Range` asks.
    ignore_range: bool,
    /// Set by [`Fault::LongReset`] for the answer being made.
    claimed_reset: Option<u64>,
    latency: Duration,
    delays: VecDeque<Duration>,
    requests: Vec<RecordedRequest>,
    in_flight: u32,
    max_in_flight: u32,
    /// Builds pages of more than this many items are too big to answer in time: after the
    /// delay, a gateway's 504 (long after a client with a shorter timeout gave up).
    slow_pages: Option<(usize, Duration)>,
    /// Values changed in builds as served (by build id: JSON pointer and value).
    drift: BTreeMap<String, Vec<(String, Value)>>,
}

/// A running fake Buildkite API. Cheap to clone; all clones share the state.
#[derive(Clone)]
pub struct FakeBuildkite {
    /// Base URL, without `/v2`.
    pub url: String,
    /// The certificate (PEM) a client must trust, for a fake started with TLS.
    pub ca_pem: Option<String>,
    inner: Arc<Mutex<Inner>>,
}

type Shared = Arc<Mutex<Inner>>;

impl FakeBuildkite {
    /// Starts a fake for organization `org` accepting `token` with every read scope. Budgets
    /// are Buildkite's defaults: 200 a minute for the organization, 50 for the user.
    pub async fn start(org: &str, token: &str) -> FakeBuildkite {
        Self::start_with(org, token, false).await
    }

    /// Like [`FakeBuildkite::start`], with the API and the storage host served over TLS (one
    /// certificate for 127.0.0.1 and localhost, in `ca_pem`), as Buildkite and S3 are.
    pub async fn start_tls(org: &str, token: &str) -> FakeBuildkite {
        Self::start_with(org, token, true).await
    }

    async fn start_with(org: &str, token: &str, tls: bool) -> FakeBuildkite {
        let inner = Arc::new(Mutex::new(Inner {
            org: org.to_string(),
            token: token.to_string(),
            scopes: [
                "read_builds",
                "read_artifacts",
                "read_agents",
                "read_build_logs",
            ]
            .map(String::from)
            .to_vec(),
            builds: Vec::new(),
            agents: Vec::new(),
            artifacts: BTreeMap::new(),
            logs: BTreeMap::new(),
            storage_url: String::new(),
            tls,
            max_page: 10,
            ignore_created_to: false,
            truncate_params: false,
            window: Duration::from_secs(60),
            window_start: Instant::now(),
            org_budget: Budget::new(200),
            user_budget: Budget::new(50),
            window_number: 0,
            others_spent: (0, 0),
            faults: VecDeque::new(),
            targeted: BTreeMap::new(),
            blocked: false,
            paging: Paging::Normal,
            ignore_filters: false,
            ignore_finished_from: false,
            reshuffle_pages: false,
            ignore_range: false,
            claimed_reset: None,
            latency: Duration::ZERO,
            delays: VecDeque::new(),
            requests: Vec::new(),
            drift: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: 0,
            slow_pages: None,
        }));
        let app = Router::new()
            .route("/v2/organizations/{org}/builds", get(list_builds))
            .route(
                "/v2/organizations/{org}/pipelines/{pipeline}/builds",
                get(list_pipeline_builds),
            )
            .route("/v2/organizations/{org}/agents", get(list_agents))
            .route("/v2/access-token", get(access_token))
            .route(
                "/v2/organizations/{org}/pipelines/{pipeline}/builds/{number}/artifacts",
                get(list_artifacts),
            )
            .route(
                "/v2/organizations/{org}/pipelines/{pipeline}/builds/{number}/artifacts/{id}/download",
                get(download_artifact),
            )
            .route(
                "/v2/organizations/{org}/pipelines/{pipeline}/builds/{number}/jobs/{job}/log",
                get(job_log),
            )
            .with_state(Arc::clone(&inner));
        let storage = Router::new()
            .route("/artifacts/{id}", get(storage_get))
            .with_state(Arc::clone(&inner));
        let (url, storage_url, ca_pem) = if tls {
            let (acceptor, pem) = http::tls_certificate();
            let url = http::serve_tls_with(app, acceptor.clone()).await;
            let storage_url = http::serve_tls_with(storage, acceptor).await;
            (url, storage_url, Some(pem))
        } else {
            (http::serve(app).await, http::serve(storage).await, None)
        };
        inner.lock().unwrap_or_else(|e| e.into_inner()).storage_url = storage_url;
        FakeBuildkite { url, ca_pem, inner }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names the storage host `host` (e.g. `localhost`) in the redirects to it, instead of
    /// 127.0.0.1: a host of its own for proxy rules.
    pub fn set_storage_host(&self, host: &str) {
        let mut inner = self.lock();
        inner.storage_url = inner.storage_url.replacen("127.0.0.1", host, 1);
    }

    /// Replaces every build.
    pub fn set_builds(&self, builds: Vec<Value>) {
        let mut inner = self.lock();
        inner.builds = builds;
        sort_newest_first(&mut inner.builds);
    }

    /// Gives build `number` these artifacts (path, content), as uploaded by its first job.
    pub fn set_artifacts(&self, number: u64, files: Vec<(String, Vec<u8>)>) {
        let mut inner = self.lock();
        let next = inner.artifacts.values().map(Vec::len).sum::<usize>();
        let artifacts = files
            .into_iter()
            .enumerate()
            .map(|(i, (path, content))| FakeArtifact {
                id: format!("artifact-{}", next + i),
                path,
                content,
                storage_requests: Vec::new(),
                expired: false,
                location: None,
                hangs: false,
            })
            .collect();
        inner.artifacts.insert(number, artifacts);
    }

    /// Expires the artifacts of build `number`: still listed, but `/download` answers 404.
    pub fn expire_artifacts(&self, number: u64) {
        if let Some(artifacts) = self.lock().artifacts.get_mut(&number) {
            artifacts.iter_mut().for_each(|a| a.expired = true);
        }
    }

    /// Points the `/download` 302 of build `number`'s artifacts at `location` instead of the
    /// storage host (as a hostile or broken answer might).
    pub fn set_download_location(&self, number: u64, location: &str) {
        if let Some(artifacts) = self.lock().artifacts.get_mut(&number) {
            artifacts
                .iter_mut()
                .for_each(|a| a.location = Some(location.to_string()));
        }
    }

    /// Makes the storage host never answer for the artifact at `path` (of any build).
    pub fn hang_artifact(&self, path: &str) {
        let mut inner = self.lock();
        let all = inner.artifacts.values_mut().flatten();
        all.filter(|a| a.path == path).for_each(|a| a.hangs = true);
    }

    /// How many times the storage host was asked for each artifact, by build number and path
    /// (artifacts never asked for are left out).
    pub fn storage_fetches(&self) -> BTreeMap<(u64, String), usize> {
        let inner = self.lock();
        let all = inner.artifacts.iter();
        all.flat_map(|(n, files)| {
            files
                .iter()
                .map(move |a| ((*n, a.path.clone()), a.storage_requests.len()))
        })
        .filter(|(_, count)| *count > 0)
        .collect()
    }

    /// The Authorization header (if any) of every request the storage host received.
    pub fn storage_authorizations(&self) -> Vec<Option<String>> {
        self.lock()
            .artifacts
            .values()
            .flatten()
            .flat_map(|a| a.storage_requests.clone())
            .collect()
    }

    /// Sets the log of job `job`.
    pub fn set_log(&self, job: &str, text: &str) {
        self.lock().logs.insert(job.to_string(), text.to_string());
    }

    /// Replaces every agent (the list shows only the connected and stopping ones).
    pub fn set_agents(&self, agents: Vec<Value>) {
        self.lock().agents = agents;
    }

    /// Adds builds.
    pub fn add_builds(&self, builds: impl IntoIterator<Item = Value>) {
        let mut inner = self.lock();
        inner.builds.extend(builds);
        sort_newest_first(&mut inner.builds);
    }

    /// Serves the build with this UUID with `value` at the JSON `pointer` (`/jobs/0/agent`),
    /// after the filters chose it by what the build holds: an answer whose types drifted
    /// from the server's own data (Buildkite filters by its own times, whatever the JSON
    /// says).
    pub fn set_drift(&self, id: &str, pointer: &str, value: Value) {
        let mut inner = self.lock();
        let drift = inner.drift.entry(id.to_string()).or_default();
        drift.push((pointer.to_string(), value));
    }

    /// Changes the build with this UUID in place (e.g. to re-finish it).
    pub fn update_build(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut inner = self.lock();
        if let Some(b) = inner.builds.iter_mut().find(|b| b["id"] == id) {
            f(b);
        }
        sort_newest_first(&mut inner.builds);
    }

    /// The token's scopes.
    pub fn set_scopes(&self, scopes: &[&str]) {
        self.lock().scopes = scopes.iter().map(|s| s.to_string()).collect();
    }

    /// Makes the server ignore `created_to`, as a broken proxy or API change might.
    pub fn set_ignore_created_to(&self, ignore: bool) {
        self.lock().ignore_created_to = ignore;
    }

    /// Makes the server truncate `created_from`, `created_to` and `finished_from` to the
    /// second before comparing, as a server that drops milliseconds would. A client that sends
    /// `created_to = oldest + 1 ms` loses the unread builds of that second against it.
    pub fn set_truncate_params(&self, truncate: bool) {
        self.lock().truncate_params = truncate;
    }

    /// The deepest page that may be listed.
    pub fn set_max_page(&self, page: u32) {
        self.lock().max_page = page;
    }

    /// Budgets: `org` and `user` requests per `window`, starting afresh now.
    pub fn set_budgets(&self, org: u32, user: u32, window: Duration) {
        let mut inner = self.lock();
        inner.org_budget = Budget::new(org);
        inner.user_budget = Budget::new(user);
        inner.window = window;
        inner.window_start = Instant::now();
        inner.window_number = 0;
        inner.others_spent = (0, 0);
    }

    /// Another client (a dashboard, a script) spends `org` of the organization's budget and
    /// `user` of the token owner's in every window: half as it opens, half at its middle.
    pub fn set_other_client(&self, org: u32, user: u32) {
        let mut inner = self.lock();
        inner.org_budget.others = org;
        inner.user_budget.others = user;
    }

    /// Marks `n` requests of the organization's current window as spent by other tools.
    pub fn spend_org_budget(&self, n: u32) {
        self.lock().org_budget.used += n;
    }

    /// Queues faults for the next list requests, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Queues faults for the next requests to `endpoint`, in order (before any queued with
    /// [`FakeBuildkite::inject`]).
    pub fn inject_at(&self, endpoint: Endpoint, faults: impl IntoIterator<Item = Fault>) {
        self.lock()
            .targeted
            .entry(endpoint)
            .or_default()
            .extend(faults);
    }

    /// Faults queued and not yet served.
    pub fn faults_left(&self) -> usize {
        let inner = self.lock();
        inner.faults.len() + inner.targeted.values().map(VecDeque::len).sum::<usize>()
    }

    /// While `blocked`, every request is answered by something on the way: a 403 HTML page.
    pub fn set_blocked(&self, blocked: bool) {
        self.lock().blocked = blocked;
    }

    /// How the agents and artifacts lists page.
    pub fn set_paging(&self, paging: Paging) {
        self.lock().paging = paging;
    }

    /// Makes the builds listing ignore every filter (`finished_from`, `created_from`,
    /// `created_to`, branches), as a broken server or proxy might; paging still works.
    pub fn set_ignore_filters(&self, ignore: bool) {
        self.lock().ignore_filters = ignore;
    }

    /// Makes the builds listing ignore `finished_from`, as a broken server or proxy might:
    /// builds that finished long before it are listed too.
    pub fn set_ignore_finished_from(&self, ignore: bool) {
        self.lock().ignore_finished_from = ignore;
    }

    /// Makes the builds listing ignore `page` and serve the first page for every page
    /// number, its builds in another order for each (rotated by the page number less one),
    /// as a server that orders the builds of one second (ties) anew on each request would.
    /// Paging through a second with more builds than a page brings no build not read before,
    /// and never the page before again; `Link` still names the next page.
    pub fn set_reshuffle_pages(&self, reshuffle: bool) {
        self.lock().reshuffle_pages = reshuffle;
    }

    /// Makes the log endpoint send the whole log whatever `Range` asks.
    pub fn set_ignore_range(&self, ignore: bool) {
        self.lock().ignore_range = ignore;
    }

    /// Delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Delays for the next requests, in order, instead of the latency.
    pub fn delay_next(&self, delays: impl IntoIterator<Item = Duration>) {
        self.lock().delays.extend(delays);
    }

    /// Builds requests with `per_page` above `above` wait `delay`, then answer 504 (as a
    /// gateway that gave up on a page too big to answer in time). Each is recorded when it
    /// arrives, with status 504, since a client that times out first never sees the answer.
    pub fn set_slow_pages(&self, above: usize, delay: Duration) {
        self.lock().slow_pages = Some((above, delay));
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Renames the organization to `slug` (as its admins can, in its settings): requests for
    /// the old slug now get Buildkite's 404 `{"message": "No organization found"}`, as they do
    /// for a token whose owner was removed from the organization (the message as the
    /// Buildkite CLI showed it: github.com/buildkite/cli/issues/953).
    pub fn rename_organization(&self, slug: &str) {
        self.lock().org = slug.to_string();
    }

    /// Accepts `token` instead (as after a rotation: the old one now gets 401).
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_string();
    }

    /// Requests being answered now (waiting out a latency or delay).
    pub fn in_flight(&self) -> u32 {
        self.lock().in_flight
    }

    /// The most requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> u32 {
        self.lock().max_in_flight
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}

async fn list_builds(
    State(s): State<Shared>,
    Path(org): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    list(s, org, Listing::Builds(None), headers, uri).await
}

async fn list_agents(
    State(s): State<Shared>,
    Path(org): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    list(s, org, Listing::Agents, headers, uri).await
}

async fn access_token(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let org = s.lock().unwrap_or_else(|e| e.into_inner()).org.clone();
    list(s, org, Listing::AccessToken, headers, uri).await
}

/// What a request asks for.
enum Listing {
    /// The token itself (needs no scope).
    AccessToken,
    /// Builds, of one pipeline or of all.
    Builds(Option<String>),
    Agents,
    /// The artifacts of a build.
    Artifacts(u64),
    /// The 302 to an artifact's storage URL.
    Download(u64, String),
    /// A job's log.
    Log(String),
}

impl Listing {
    fn endpoint(&self) -> Endpoint {
        match self {
            Listing::AccessToken => Endpoint::AccessToken,
            Listing::Builds(_) => Endpoint::Builds,
            Listing::Agents => Endpoint::Agents,
            Listing::Artifacts(_) => Endpoint::Artifacts,
            Listing::Download(..) => Endpoint::Download,
            Listing::Log(_) => Endpoint::Log,
        }
    }

    fn scope(&self) -> &'static str {
        match self {
            Listing::Builds(_) => "read_builds",
            Listing::Agents => "read_agents",
            Listing::Artifacts(_) | Listing::Download(..) => "read_artifacts",
            Listing::Log(_) => "read_build_logs",
            Listing::AccessToken => "",
        }
    }
}

/// An uploaded artifact.
#[derive(Debug, Clone)]
struct FakeArtifact {
    id: String,
    path: String,
    content: Vec<u8>,
    /// The Authorization header of each request for it at the storage host.
    storage_requests: Vec<Option<String>>,
    /// Expired: its `/download` answers 404.
    expired: bool,
    /// Where its `/download` points instead of the storage host.
    location: Option<String>,
    /// The storage host never answers for it (as a download that hangs, or that kills the
    /// client).
    hangs: bool,
}

type BuildPath = Path<(String, String, u64)>;

async fn list_artifacts(
    State(s): State<Shared>,
    Path((org, _pipeline, number)): BuildPath,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    list(s, org, Listing::Artifacts(number), headers, uri).await
}

async fn download_artifact(
    State(s): State<Shared>,
    Path((org, _pipeline, number, id)): Path<(String, String, u64, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    list(s, org, Listing::Download(number, id), headers, uri).await
}

async fn job_log(
    State(s): State<Shared>,
    Path((org, _pipeline, _number, job)): Path<(String, String, u64, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    list(s, org, Listing::Log(job), headers, uri).await
}

/// The storage host: serves artifact bytes to anyone with the (presigned) URL, and notes
/// whether a token came along.
async fn storage_get(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = {
        let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
        let found = inner.artifacts.values_mut().flatten().find(|a| a.id == id);
        match found {
            Some(a) => {
                a.storage_requests.push(auth);
                (!a.hangs).then(|| {
                    Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", "application/xml")
                        .body(axum::body::Body::from(a.content.clone()))
                        .expect("valid response")
                })
            }
            None => Some(http::json(
                StatusCode::NOT_FOUND,
                &json!({"error": "NoSuchKey"}),
            )),
        }
    };
    match answer {
        Some(answer) => answer,
        None => std::future::pending().await,
    }
}

/// The 302 Buildkite answers for an artifact download.
fn download(inner: &Inner, number: u64, id: &str) -> Response {
    let found = inner
        .artifacts
        .get(&number)
        .and_then(|a| a.iter().find(|a| a.id == id && !a.expired));
    let Some(artifact) = found else {
        return http::json(StatusCode::NOT_FOUND, &json!({"message": "Not Found"}));
    };
    let location = artifact.location.clone().unwrap_or_else(|| {
        format!(
            "{}/artifacts/{id}?X-Amz-Signature=presigned",
            inner.storage_url
        )
    });
    let mut r = http::json(StatusCode::FOUND, &json!({"url": location}));
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert("location", v);
    }
    r
}

/// A job's log: plain text with `Accept: text/plain` (a suffix `Range` gives its tail, 416
/// when it is empty), else JSON.
fn log(inner: &Inner, job: &str, headers: &HeaderMap) -> Response {
    let Some(text) = inner.logs.get(job) else {
        return http::json(StatusCode::NOT_FOUND, &json!({"message": "Not Found"}));
    };
    let plain = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/plain"));
    if !plain {
        return http::json(
            StatusCode::OK,
            &json!({"content": text, "size": text.len()}),
        );
    }
    let bytes = text.as_bytes();
    let suffix = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes=-"))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| !inner.ignore_range);
    let (status, body) = match suffix {
        Some(_) if bytes.is_empty() => (StatusCode::RANGE_NOT_SATISFIABLE, &bytes[..0]),
        Some(n) => (
            StatusCode::PARTIAL_CONTENT,
            &bytes[bytes.len().saturating_sub(n)..],
        ),
        None => (StatusCode::OK, bytes),
    };
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(axum::body::Body::from(body.to_vec()))
        .expect("valid response")
}

async fn list_pipeline_builds(
    State(s): State<Shared>,
    Path((org, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    list(s, org, Listing::Builds(Some(pipeline)), headers, uri).await
}

async fn list(s: Shared, org: String, listing: Listing, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(delay) = slow_page(&s, &listing, &headers, &uri) {
        tokio::time::sleep(delay).await;
        return http::json(
            StatusCode::GATEWAY_TIMEOUT,
            &json!({"message": "The server did not answer in time"}),
        );
    }
    let latency = {
        let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        let latency = inner.latency;
        inner.delays.pop_front().unwrap_or(latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    inner.in_flight -= 1;
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut response = answer(
        &mut inner,
        &org,
        &listing,
        &headers,
        &uri,
        authorization.as_deref(),
    );
    let status = response.status().as_u16();
    let org_remaining = inner.org_budget.limit.saturating_sub(inner.org_budget.used);
    let user_remaining = inner
        .user_budget
        .limit
        .saturating_sub(inner.user_budget.used);
    let window = inner.window_number;
    inner.requests.push(RecordedRequest {
        uri: uri.to_string(),
        at: Instant::now(),
        status,
        authorization,
        org_remaining,
        user_remaining,
        window,
    });
    rate_headers(&inner, response.headers_mut());
    if let Some(reset) = inner.claimed_reset.take() {
        let headers = response.headers_mut();
        for prefix in ["ratelimit", "ratelimit-user"] {
            for (name, value) in [("remaining", "0".to_string()), ("reset", reset.to_string())] {
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::try_from(format!("{prefix}-{name}")),
                    HeaderValue::from_str(&value),
                ) {
                    headers.insert(name, value);
                }
            }
        }
    }
    response
}

/// What a proxy or firewall on the way answers: a 403 that is not Buildkite's JSON.
fn block_page() -> Response {
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header("content-type", "text/html")
        .body(axum::body::Body::from(
            "<!DOCTYPE html>\n<html><head><title>Access Denied</title></head>\n<body><h1>Access Denied</h1>\n<p>The request was blocked by the corporate web gateway (policy: uncategorized-api).</p></body></html>\n",
        ))
        .expect("valid response")
}

/// The delay of a builds page too big to answer in time (see
/// [`FakeBuildkite::set_slow_pages`]), recorded as it arrives; `None` for any other request.
fn slow_page(s: &Shared, listing: &Listing, headers: &HeaderMap, uri: &Uri) -> Option<Duration> {
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    let (above, delay) = inner.slow_pages?;
    if !matches!(listing, Listing::Builds(_)) || Query::parse(uri).per_page <= above {
        return None;
    }
    let org_remaining = inner.org_budget.limit.saturating_sub(inner.org_budget.used);
    let user_remaining = inner
        .user_budget
        .limit
        .saturating_sub(inner.user_budget.used);
    let window = inner.window_number;
    inner.requests.push(RecordedRequest {
        user_remaining,
        window,
        uri: uri.to_string(),
        at: Instant::now(),
        status: StatusCode::GATEWAY_TIMEOUT.as_u16(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        org_remaining,
    });
    Some(delay)
}

fn answer(
    inner: &mut Inner,
    org: &str,
    listing: &Listing,
    headers: &HeaderMap,
    uri: &Uri,
    authorization: Option<&str>,
) -> Response {
    if inner.blocked {
        return block_page();
    }
    if authorization != Some(format!("Bearer {}", inner.token).as_str()) {
        return http::json(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "Authentication required. Please supply a valid API Access Token: https://buildkite.com/docs/apis/rest-api#authentication"}),
        );
    }
    // Every authenticated request counts against both budgets, 429s included.
    if inner.window_start.elapsed() >= inner.window {
        inner.window_start = Instant::now();
        inner.org_budget.used = 0;
        inner.user_budget.used = 0;
        inner.window_number += 1;
        inner.others_spent = (0, 0);
    }
    // What the other client spent since the last request.
    let (elapsed, window) = (inner.window_start.elapsed(), inner.window);
    let others = (
        inner.org_budget.others_by(elapsed, window),
        inner.user_budget.others_by(elapsed, window),
    );
    inner.org_budget.used += others.0 - inner.others_spent.0;
    inner.user_budget.used += others.1 - inner.others_spent.1;
    inner.others_spent = others;
    inner.org_budget.used += 1;
    inner.user_budget.used += 1;
    // The body's `scope` names the budget that ran out as Buildkite does: `rest` for the
    // organization's, `rest_user` for the token owner's (`rate-limited-429*.json`).
    let over = [
        ("rest", &inner.org_budget),
        ("rest_user", &inner.user_budget),
    ]
    .into_iter()
    .find(|(_, b)| b.used > b.limit)
    .map(|(scope, b)| (scope, b.limit, b.used));
    if let Some((scope, limit, current)) = over {
        let reset = reset_secs(inner);
        return http::json(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"message": rate_limited(reset), "scope": scope, "limit": limit,
                    "current": current, "reset": reset}),
        );
    }
    let scope = listing.scope();
    if !scope.is_empty() && !inner.scopes.iter().any(|s| s == scope) {
        return http::json(
            StatusCode::FORBIDDEN,
            &json!({"message": format!("Your access token doesn't have the {scope} scope")}),
        );
    }
    if org != inner.org {
        return http::json(
            StatusCode::NOT_FOUND,
            &json!({"message": "No organization found"}),
        );
    }
    let fault = inner
        .targeted
        .get_mut(&listing.endpoint())
        .and_then(VecDeque::pop_front)
        .or_else(|| inner.faults.pop_front());
    match fault {
        Some(Fault::Endless) => {
            let item = r#"{"id": "endless", "note": "and on and on"},"#;
            return http::endless(StatusCode::OK, "application/json", "[", item);
        }
        Some(Fault::EndlessError(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return http::endless(status, "text/html", "<html><body>", "<p>and on and on</p>");
        }
        Some(Fault::BlockPage) => return block_page(),
        Some(Fault::LongReset(reset)) => inner.claimed_reset = Some(reset),
        _ => {}
    }
    if let Some(Fault::RateLimited(reset)) = fault {
        // As if other tools spent the organization's budget: exhausted until `reset`.
        inner.org_budget.used = inner.org_budget.limit;
        inner.window_start = Instant::now() + Duration::from_secs(reset) - inner.window;
        return http::json(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"message": rate_limited(reset), "scope": "rest",
                    "limit": inner.org_budget.limit, "current": inner.org_budget.used, "reset": reset}),
        );
    }
    if let Some(Fault::Status(code)) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return http::json(status, &json!({"message": "Injected fault"}));
    }
    if let Some(Fault::Redirect(to)) = &fault {
        let mut r = http::json(StatusCode::FOUND, &json!({"url": to}));
        if let Ok(v) = HeaderValue::from_str(to) {
            r.headers_mut().insert("location", v);
        }
        return r;
    }
    if fault == Some(Fault::Malformed) {
        return http::json(StatusCode::OK, &json!("<html>502 Bad Gateway</html>"));
    }
    match listing {
        Listing::AccessToken => {
            return http::json(StatusCode::OK, &access_token_body(&inner.scopes))
        }
        Listing::Download(number, id) => return download(inner, *number, id),
        Listing::Log(job) => return log(inner, job, headers),
        _ => {}
    }
    let mut query = Query::parse(uri);
    if inner.truncate_params {
        query.truncate_times();
    }
    if inner.ignore_created_to {
        query.created_to = None;
    }
    if inner.ignore_filters {
        query.ignore_filters();
    }
    if inner.ignore_finished_from {
        query.finished_from = None;
    }
    // What the agents and artifacts pages link to, and which page they serve.
    let asked_page = query.page;
    if inner.paging == Paging::IgnorePage {
        query.page = 1;
    }
    if query.page > inner.max_page {
        return http::json(StatusCode::BAD_REQUEST, &json!({"message": TOO_DEEP}));
    }
    let (page, more): (Vec<&Value>, bool) = match listing {
        Listing::Builds(pipeline) => {
            // Kept newest first by creation time: start below `created_to`, stop at
            // `created_from`, and read only as far as the page (and one more) needs.
            let builds = &inner.builds;
            let page_number = if inner.reshuffle_pages { 1 } else { query.page };
            let first = query.created_to.map_or(0, |to| {
                builds.partition_point(|b| second(&b["created_at"]).is_none_or(|t| t >= to))
            });
            let mut matches = builds[first..]
                .iter()
                .take_while(|b| {
                    query
                        .created_from
                        .is_none_or(|from| second(&b["created_at"]).is_some_and(|t| t >= from))
                })
                .filter(|b| {
                    pipeline
                        .as_deref()
                        .is_none_or(|p| b["pipeline"]["slug"] == p)
                        && query.matches(b)
                })
                .skip(((page_number - 1) as usize).saturating_mul(query.per_page));
            let mut page: Vec<&Value> = matches.by_ref().take(query.per_page).collect();
            let more = matches.next().is_some();
            if inner.reshuffle_pages && !page.is_empty() {
                let by = (asked_page as usize - 1) % page.len();
                page.rotate_left(by);
            }
            (page, more)
        }
        Listing::Artifacts(number) => {
            return artifacts_page(inner, *number, &query, asked_page, headers, uri);
        }
        Listing::Download(..) | Listing::Log(_) | Listing::AccessToken => (Vec::new(), false),
        // Only connected and stopping agents are listed.
        Listing::Agents => {
            let connected: Vec<&Value> = inner
                .agents
                .iter()
                .filter(|a| {
                    matches!(
                        a["connection_state"].as_str(),
                        Some("connected" | "stopping")
                    )
                })
                .collect();
            let start = ((query.page - 1) as usize).saturating_mul(query.per_page);
            let page = connected
                .iter()
                .skip(start)
                .take(query.per_page)
                .copied()
                .collect();
            (page, connected.len() > start + query.per_page)
        }
    };
    let body = match listing {
        Listing::Builds(_) if !inner.drift.is_empty() => {
            let served: Vec<Value> = page.iter().map(|b| drifted(inner, b)).collect();
            serde_json::to_string(&served)
        }
        _ => serde_json::to_string(&page),
    }
    .expect("serializable");
    let more = more || (inner.paging == Paging::IgnorePage && matches!(listing, Listing::Agents));
    let last_page = if more { asked_page + 1 } else { asked_page };
    let mut response = match fault {
        Some(Fault::Truncated) => http::broken(body.clone(), body.len() / 2),
        Some(Fault::Dropped) => http::broken(body, 0),
        _ => http::json(StatusCode::OK, &serde_json::from_str(&body).expect("json")),
    };
    let link = match (inner.paging, listing) {
        (Paging::LinkToSelf, Listing::Agents) => self_link(&origin(inner, headers), uri),
        _ => links(&origin(inner, headers), uri, asked_page, last_page),
    };
    if let Ok(v) = HeaderValue::from_str(&link) {
        response.headers_mut().insert("link", v);
    }
    response
}

/// `GET /v2/access-token` as documented (`access-token.json`): times in the `... UTC` form.
pub fn access_token_body(scopes: &[String]) -> Value {
    json!({"uuid": "b63254c0-3271-4a98-8270-7cfbd6c2f14e", "scopes": scopes,
           "description": "kitesync", "created_at": "2026-01-01 00:00:00 UTC",
           "expires_at": "2027-01-01 00:00:00 UTC",
           "user": {"email": "ci@example.com", "name": "CI Bot"}})
}

/// A 429's `message`, which repeats its `reset` as Buildkite's does.
fn rate_limited(reset: u64) -> String {
    format!(
        "You have exceeded your API rate limit. Please wait {reset} seconds before making more requests."
    )
}

fn reset_secs(inner: &Inner) -> u64 {
    let left = inner.window.saturating_sub(inner.window_start.elapsed());
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

fn rate_headers(inner: &Inner, headers: &mut HeaderMap) {
    let reset = reset_secs(inner).to_string();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    let left = |b: &Budget| b.limit.saturating_sub(b.used).to_string();
    set("ratelimit-scope", "rest".into());
    set("ratelimit-remaining", left(&inner.org_budget));
    set("ratelimit-limit", inner.org_budget.limit.to_string());
    set("ratelimit-reset", reset.clone());
    set("ratelimit-user-scope", "rest_user".into());
    set("ratelimit-user-remaining", left(&inner.user_budget));
    set("ratelimit-user-limit", inner.user_budget.limit.to_string());
    set("ratelimit-user-reset", reset);
    // Only while that budget is spent.
    let warning = "You have exceeded your API rate limit.";
    if inner.org_budget.used >= inner.org_budget.limit {
        set("ratelimit-warning", warning.into());
    }
    if inner.user_budget.used >= inner.user_budget.limit {
        set("ratelimit-user-warning", warning.into());
    }
}

/// A `Link` naming the page asked for as the next one.
fn self_link(origin: &str, uri: &Uri) -> String {
    format!("<{origin}{uri}>; rel=\"next\"")
}

/// RFC 8288 links to the first, previous, next and last pages, as absolute URLs.
fn links(origin: &str, uri: &Uri, page: u32, last: u32) -> String {
    let to = |p: u32| {
        let mut url = url::Url::parse(&format!("{origin}{}", uri.path())).expect("url");
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
                if k != "page" {
                    q.append_pair(&k, &v);
                }
            }
            q.append_pair("page", &p.to_string());
        }
        url.to_string()
    };
    let mut parts = vec![format!("<{}>; rel=\"first\"", to(1))];
    if page > 1 {
        parts.push(format!("<{}>; rel=\"prev\"", to(page - 1)));
    }
    if page < last {
        parts.push(format!("<{}>; rel=\"next\"", to(page + 1)));
    }
    parts.push(format!("<{}>; rel=\"last\"", to(last)));
    parts.join(", ")
}

/// `build` as served, with the values [`FakeBuildkite::set_drift`] set for it.
fn drifted(inner: &Inner, build: &Value) -> Value {
    let mut served = build.clone();
    let changes = build["id"].as_str().and_then(|id| inner.drift.get(id));
    for (pointer, value) in changes.into_iter().flatten() {
        let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
        if let Some(object) = served.pointer_mut(parent).and_then(Value::as_object_mut) {
            object.insert(key.to_string(), value.clone());
        }
    }
    served
}

/// A build's time in either form Buildkite has sent: RFC 3339, or `"2015-04-23 16:55:52 UTC"`
/// (older answers, `Shopify/buildkit`'s cassettes in `../shared/realdata/buildkite_real`).
fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

/// A build's time as the time filters compare it: truncated to its second.
///
/// Buildkite documents `created_from` as "builds created on or after this time",
/// `created_to` as "builds created before this time" and `finished_from` as "builds finished
/// on or after this time", and every example gives whole seconds. Read at second precision,
/// "created before 10:00:01" is every build whose creation second is before it: 10:00:00.999
/// is, 10:00:01.000 is not. So the fake truncates the builds' times (which carry milliseconds)
/// and compares them with the parameter as sent. For the whole-second parameters kitesync
/// sends this is the same as comparing at full precision (`floor(t) < T` ⇔ `t < T` for a whole
/// `T`); what it does with a fraction is undocumented, which is what
/// [`FakeBuildkite::set_truncate_params`] plays the worst case of.
fn second(v: &Value) -> Option<DateTime<Utc>> {
    time(v).map(|t| t.with_nanosecond(0).unwrap_or(t))
}

/// The list filters kitesync uses.
struct Query {
    page: u32,
    per_page: usize,
    finished_from: Option<DateTime<Utc>>,
    created_from: Option<DateTime<Utc>>,
    created_to: Option<DateTime<Utc>>,
    branches: Vec<String>,
}

impl Query {
    fn parse(uri: &Uri) -> Query {
        let mut q = Query {
            page: 1,
            per_page: 30,
            finished_from: None,
            created_from: None,
            created_to: None,
            branches: Vec::new(),
        };
        for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            let t = || time(&Value::String(v.to_string()));
            match k.as_ref() {
                "page" => q.page = v.parse().unwrap_or(1).max(1),
                "per_page" => q.per_page = v.parse().unwrap_or(30).clamp(1, 100),
                "finished_from" => q.finished_from = t(),
                "created_from" => q.created_from = t(),
                "created_to" => q.created_to = t(),
                "branch" | "branch[]" => q.branches.push(v.to_string()),
                _ => {}
            }
        }
        q
    }

    /// Forgets every filter, as a broken server that ignores them would.
    fn ignore_filters(&mut self) {
        self.finished_from = None;
        self.created_from = None;
        self.created_to = None;
        self.branches.clear();
    }

    /// Drops the fraction of every time filter, as a server that ignores milliseconds would.
    fn truncate_times(&mut self) {
        for t in [
            &mut self.finished_from,
            &mut self.created_from,
            &mut self.created_to,
        ] {
            *t = t.map(|t| t.with_nanosecond(0).unwrap_or(t));
        }
    }

    fn matches(&self, b: &Value) -> bool {
        let created = second(&b["created_at"]);
        let finished = second(&b["finished_at"]);
        self.finished_from
            .is_none_or(|f| finished.is_some_and(|t| t >= f))
            && self
                .created_from
                .is_none_or(|f| created.is_some_and(|t| t >= f))
            && self
                .created_to
                .is_none_or(|f| created.is_some_and(|t| t < f))
            && (self.branches.is_empty()
                || self
                    .branches
                    .iter()
                    .any(|p| glob(p, b["branch"].as_str().unwrap_or(""))))
    }
}

/// Buildkite's branch wildcards: `*` matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

/// The scheme and host the client used to reach the API (its `Host` header), for the URLs
/// in answers, as Buildkite gives URLs on the host that was asked.
fn origin(inner: &Inner, headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = if inner.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// A page of a build's artifacts (page `query.page`), with `Link` headers as for page
/// `asked` (they differ when the server ignores `page`).
fn artifacts_page(
    inner: &Inner,
    number: u64,
    query: &Query,
    asked: u32,
    headers: &HeaderMap,
    uri: &Uri,
) -> Response {
    let org = &inner.org;
    let host = origin(inner, headers);
    let all: Vec<Value> = inner
        .artifacts
        .get(&number)
        .into_iter()
        .flatten()
        .map(|a| {
            let (dirname, filename) = a.path.rsplit_once('/').unwrap_or(("", &a.path));
            json!({
                "id": a.id, "job_id": format!("{}-j1", crate::data::build_id(number)), "path": a.path,
                "dirname": dirname, "filename": filename, "mime_type": "application/xml",
                "state": "finished", "file_size": a.content.len(), "glob_path": null,
                "original_path": null, "sha1sum": "0000000000000000000000000000000000000000",
                "url": format!("{host}/v2/organizations/{org}/pipelines/p/builds/{number}/artifacts/{}", a.id),
                "download_url": format!("{host}/v2/organizations/{org}/pipelines/p/builds/{number}/artifacts/{}/download", a.id),
            })
        })
        .collect();
    let start = ((query.page - 1) as usize).saturating_mul(query.per_page);
    let page: Vec<&Value> = all.iter().skip(start).take(query.per_page).collect();
    let mut response = http::json(StatusCode::OK, &json!(page));
    let last_page = all.len().div_ceil(query.per_page).max(1) as u32;
    let link = match inner.paging {
        Paging::Normal => links(&host, uri, asked, last_page),
        Paging::LinkToSelf => self_link(&host, uri),
        Paging::IgnorePage => links(&host, uri, asked, asked + 1),
    };
    if let Ok(v) = HeaderValue::from_str(&link) {
        response.headers_mut().insert("link", v);
    }
    response
}

/// Newest first by creation time (then by number), as Buildkite lists builds.
fn sort_newest_first(builds: &mut [Value]) {
    builds
        .sort_by_cached_key(|b| std::cmp::Reverse((time(&b["created_at"]), b["number"].as_u64())));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(params: &str) -> Query {
        let uri: Uri = format!("/v2/organizations/acme/builds?{params}")
            .parse()
            .expect("uri");
        Query::parse(&uri)
    }

    fn created(at: &str) -> Value {
        json!({"created_at": at, "finished_at": at, "branch": "main"})
    }

    #[test]
    fn time_filters_compare_builds_at_their_second() {
        let q = query("created_from=2026-01-01T10:00:00Z&created_to=2026-01-01T10:00:01Z");
        assert!(q.matches(&created("2026-01-01T10:00:00.000Z")));
        assert!(q.matches(&created("2026-01-01T10:00:00.999Z")));
        assert!(!q.matches(&created("2026-01-01T10:00:01.000Z")));
        assert!(!q.matches(&created("2026-01-01T09:59:59.999Z")));
        let q = query("finished_from=2026-01-01T10:00:00Z");
        assert!(q.matches(&created("2026-01-01T10:00:00.500Z")));
        assert!(!q.matches(&created("2026-01-01T09:59:59.500Z")));
    }

    #[test]
    fn truncating_fractional_parameters_hides_the_rest_of_their_second() {
        // `created_to = oldest + 1 ms`, as kitesync once sent it.
        let mut q = query("created_to=2026-01-01T10:00:00.001Z");
        let unread = created("2026-01-01T10:00:00.000Z");
        assert!(q.matches(&unread), "as sent");
        q.truncate_times();
        assert!(!q.matches(&unread), "truncated to 10:00:00: lost");
        // A fractional lower bound truncated only widens.
        let mut q =
            query("created_from=2026-01-01T10:00:00.700Z&finished_from=2026-01-01T10:00:00.700Z");
        let early = created("2026-01-01T10:00:00.200Z");
        assert!(!q.matches(&early), "as sent");
        q.truncate_times();
        assert!(q.matches(&early), "truncated");
    }
}
