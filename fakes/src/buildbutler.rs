//! A fake BuildButler ingest API, at one prefix: `/api/v1/ingest/...` (the prefix its GitHub
//! Action uses) by default, or `/ingest/...` (its docs'); the other answers 404, as a server
//! without that route does.
//!
//! Builds are upserted by `externalRunId`, as the real server does; the fake also counts
//! every POST so tests can tell upserts from duplicates. It checks the fields BuildButler
//! requires and answers 400 when one is missing or of the wrong type.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::http;

/// Statuses BuildButler takes: its docs' lower case and its Action's upper case.
const STATUSES: [&str; 10] = [
    "success",
    "failure",
    "unstable",
    "aborted",
    "in_progress",
    "SUCCESS",
    "FAILURE",
    "UNSTABLE",
    "ABORTED",
    "NOT_BUILT",
];

/// A fault injected into the next ingest request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButlerFault {
    /// Answer with this status, storing nothing.
    Status(u16),
    /// Store the item, then drop the connection before the answer arrives.
    DropAfterStoring,
    /// Store the item, then answer 201 with a body that never ends.
    EndlessAnswer,
    /// Store the build, then answer 201 with an empty body (no JSON, no `id`).
    EmptyAnswer,
    /// Answer with this status and an HTML body that never ends, storing nothing.
    EndlessError(u16),
}

#[derive(Debug, Default)]
struct Inner {
    api_key: String,
    builds: BTreeMap<String, Value>,
    build_posts: u64,
    stages: BTreeMap<String, Value>,
    stage_posts: u64,
    faults: VecDeque<ButlerFault>,
    /// Build numbers answered with 400.
    reject: HashSet<u64>,
    down: bool,
    latency: Duration,
    auth_seen: Vec<(Option<String>, Option<String>)>,
    webhooks: Vec<Webhook>,
    fleets: Vec<Value>,
    /// When each build (by `externalRunId`) first arrived.
    first_seen: BTreeMap<String, std::time::Instant>,
    suites: Vec<Value>,
    logs: Vec<Value>,
    /// The ingest prefix this server answers (`/api/v1/ingest` when empty).
    prefix: String,
    /// The path of every POST, answered or not.
    posts: Vec<String>,
    /// Suite names answered with an error status, by name.
    reject_suites: HashMap<String, u16>,
    /// Every item accepted, in order of arrival.
    arrivals: Vec<Arrival>,
}

/// An item BuildButler accepted, in order of arrival (see [`FakeButler::arrivals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// A build, by `externalRunId`.
    Build(String),
    /// A test suite, by `buildId` and name.
    Suite { build: String, name: String },
}

/// The two ingest prefixes BuildButler is known by.
const PREFIXES: [&str; 2] = ["/api/v1/ingest", "/ingest"];

/// A webhook delivery the fake received.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Path and query, as sent.
    pub uri: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

/// A running fake BuildButler. Cheap to clone; all clones share the state.
#[derive(Clone)]
pub struct FakeButler {
    /// Base URL (`http://127.0.0.1:PORT`, or `https://` when started with TLS).
    pub url: String,
    /// With TLS: the server's certificate (PEM), for the client to trust.
    pub ca_pem: Option<String>,
    inner: Arc<Mutex<Inner>>,
}

type Shared = Arc<Mutex<Inner>>;

impl FakeButler {
    /// Starts a fake that accepts `api_key`.
    pub async fn start(api_key: &str) -> FakeButler {
        Self::start_with(api_key, false).await
    }

    /// Starts a fake that accepts `api_key`, over TLS with a certificate of its own.
    pub async fn start_tls(api_key: &str) -> FakeButler {
        Self::start_with(api_key, true).await
    }

    async fn start_with(api_key: &str, tls: bool) -> FakeButler {
        let inner = Arc::new(Mutex::new(Inner {
            api_key: api_key.to_string(),
            ..Inner::default()
        }));
        let mut app = Router::new().route("/webhooks/buildkite", post(webhook));
        for prefix in PREFIXES {
            app = app
                .route(&format!("{prefix}/builds"), post(ingest_build))
                .route(&format!("{prefix}/pipeline-stages"), post(ingest_stages))
                .route(&format!("{prefix}/agents"), post(ingest_agents))
                .route(&format!("{prefix}/tests"), post(ingest_tests))
                .route(&format!("{prefix}/build-logs"), post(ingest_logs));
        }
        let app = app
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&inner),
                one_prefix,
            ))
            .with_state(Arc::clone(&inner));
        let (url, ca_pem) = if tls {
            let (url, pem) = http::serve_tls(app).await;
            (url, Some(pem))
        } else {
            (http::serve(app).await, None)
        };
        FakeButler { url, ca_pem, inner }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stored builds, by `externalRunId`.
    pub fn builds(&self) -> BTreeMap<String, Value> {
        self.lock().builds.clone()
    }

    /// Stored stage lists, by `buildId`.
    pub fn stages(&self) -> BTreeMap<String, Value> {
        self.lock().stages.clone()
    }

    /// Build POSTs accepted (upserts included).
    pub fn build_posts(&self) -> u64 {
        self.lock().build_posts
    }

    /// Stage POSTs accepted.
    pub fn stage_posts(&self) -> u64 {
        self.lock().stage_posts
    }

    /// Queues faults for the next requests, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = ButlerFault>) {
        self.lock().faults.extend(faults);
    }

    /// Faults queued and not yet served.
    pub fn faults_left(&self) -> usize {
        self.lock().faults.len()
    }

    /// Answers 400 for builds with these numbers.
    pub fn reject_build_numbers(&self, numbers: impl IntoIterator<Item = u64>) {
        self.lock().reject.extend(numbers);
    }

    /// Accepts every build and suite again.
    pub fn clear_rejections(&self) {
        let mut inner = self.lock();
        inner.reject.clear();
        inner.reject_suites.clear();
    }

    /// Answers 400 for test suites with these names, as BuildButler does for a suite it
    /// refuses for its content.
    pub fn reject_suites_named(&self, names: impl IntoIterator<Item = &'static str>) {
        self.answer_suites_named(names, 400);
    }

    /// Answers test suites with these names with `status` (a 404, a 413, a redirect without
    /// a `Location`) and a JSON error, storing nothing.
    pub fn answer_suites_named(&self, names: impl IntoIterator<Item = &'static str>, status: u16) {
        let names = names.into_iter().map(|n| (n.to_string(), status));
        self.lock().reject_suites.extend(names);
    }

    /// Every build and test suite accepted, in order of arrival (upserts included).
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.lock().arrivals.clone()
    }

    /// True when the build with this `externalRunId` is stored (cheaper than
    /// [`FakeButler::builds`]).
    pub fn has_build(&self, id: &str) -> bool {
        self.lock().builds.contains_key(id)
    }

    /// How many test suites were accepted (cheaper than [`FakeButler::suites`]).
    pub fn suite_count(&self) -> usize {
        self.lock().suites.len()
    }

    /// While down, every request gets a 503.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Answers ingest requests at `prefix` only (`/api/v1/ingest` or `/ingest`); the other
    /// prefix answers 404.
    pub fn set_ingest_prefix(&self, prefix: &str) {
        self.lock().prefix = prefix.to_string();
    }

    /// The path of every POST received, in order (404s included).
    pub fn posts(&self) -> Vec<String> {
        self.lock().posts.clone()
    }

    /// Delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Every test suite received, in order.
    pub fn suites(&self) -> Vec<Value> {
        self.lock().suites.clone()
    }

    /// Every build log received, in order.
    pub fn logs(&self) -> Vec<Value> {
        self.lock().logs.clone()
    }

    /// When each build (by `externalRunId`) first arrived.
    pub fn first_seen(&self) -> BTreeMap<String, std::time::Instant> {
        self.lock().first_seen.clone()
    }

    /// How many builds are stored (cheaper than [`FakeButler::builds`]).
    pub fn build_count(&self) -> usize {
        self.lock().builds.len()
    }

    /// Every agent fleet snapshot received, in order.
    pub fn fleets(&self) -> Vec<Value> {
        self.lock().fleets.clone()
    }

    /// Every webhook delivery received.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.lock().webhooks.clone()
    }

    /// The (Authorization, X-API-Key) headers of every request.
    pub fn auth_seen(&self) -> Vec<(Option<String>, Option<String>)> {
        self.lock().auth_seen.clone()
    }
}

/// Notes every POST, and answers 404 under the ingest prefix this server does not have.
async fn one_prefix(
    State(s): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let other = {
        let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
        inner.posts.push(path.clone());
        let ours = if inner.prefix.is_empty() {
            PREFIXES[0]
        } else {
            inner.prefix.as_str()
        };
        PREFIXES
            .iter()
            .any(|p| *p != ours && path.starts_with(&format!("{p}/")))
    };
    if other {
        return http::json(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
    }
    next.run(request).await
}

/// Checks auth, latency and injected faults common to every route. `Err` is the answer.
async fn gate(s: &Shared, headers: &HeaderMap) -> Result<Option<ButlerFault>, Response> {
    let latency = s.lock().unwrap_or_else(|e| e.into_inner()).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (auth, key) = (header("authorization"), header("x-api-key"));
    inner.auth_seen.push((auth.clone(), key.clone()));
    if inner.down {
        return Err(http::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "down"}),
        ));
    }
    let expected = inner.api_key.clone();
    let ok = key.as_deref() == Some(expected.as_str())
        || auth.as_deref() == Some(format!("Bearer {expected}").as_str());
    if !ok {
        return Err(http::json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "unauthorized"}),
        ));
    }
    let status = |code| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match inner.faults.pop_front() {
        Some(ButlerFault::Status(code)) => Err(http::json(
            status(code),
            &json!({"error": "injected fault"}),
        )),
        Some(ButlerFault::EndlessError(code)) => Err(http::endless(
            status(code),
            "text/html",
            "<html><body>",
            "<p>and on and on</p>",
        )),
        other => Ok(other),
    }
}

fn bad_request(why: &str) -> Response {
    http::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": "bad_request", "message": why}),
    )
}

/// The first required build field that is missing or mistyped.
fn invalid_build(b: &Value) -> Option<String> {
    let strings = ["jobName", "startedAt", "completedAt", "jenkinsInstanceId"];
    if let Some(k) = strings.iter().find(|k| !b[**k].is_string()) {
        return Some(format!("{k} is required"));
    }
    if !b["buildNumber"].is_u64() {
        return Some("buildNumber must be an integer".into());
    }
    if !b["duration"].is_i64() {
        return Some("duration must be an integer".into());
    }
    match b["status"].as_str() {
        Some(s) if STATUSES.contains(&s) => None,
        _ => Some(format!("status {} is not valid", b["status"])),
    }
}

async fn ingest_build(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let fault = match gate(&s, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(why) = invalid_build(&body) {
        return bad_request(&why);
    }
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    if body["buildNumber"]
        .as_u64()
        .is_some_and(|n| inner.reject.contains(&n))
    {
        return bad_request("this build is refused by the test");
    }
    let key = body["externalRunId"]
        .as_str()
        .or(body["id"].as_str())
        .unwrap_or("")
        .to_string();
    let id = body["id"]
        .as_str()
        .map_or_else(|| format!("bb-{key}"), str::to_string);
    let mut stored = body;
    stored["id"] = json!(id);
    inner
        .first_seen
        .entry(key.clone())
        .or_insert_with(std::time::Instant::now);
    inner.arrivals.push(Arrival::Build(key.clone()));
    inner.builds.insert(key, stored.clone());
    inner.build_posts += 1;
    match fault {
        Some(ButlerFault::DropAfterStoring) => http::broken(stored.to_string(), 0),
        Some(ButlerFault::EndlessAnswer) => endless_answer(),
        Some(ButlerFault::EmptyAnswer) => StatusCode::CREATED.into_response(),
        _ => http::json(StatusCode::CREATED, &stored),
    }
}

/// A 201 whose JSON never ends.
fn endless_answer() -> Response {
    let head = r#"{"ok": true, "padding": ["#;
    http::endless(
        StatusCode::CREATED,
        "application/json",
        head,
        r#""and on and on","#,
    )
}

/// Buildkite's webhook receiver: `X-Buildkite-Token` must be the API key, or
/// `X-Buildkite-Signature` an HMAC-SHA256 keyed with it over `"<timestamp>.<body>"`. Only
/// `build.finished` is stored (as a build, by its id); other events are "skipped".
async fn webhook(
    State(s): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use hmac::{Hmac, Mac};
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let key = inner.api_key.clone();
    let signed = header("x-buildkite-signature").and_then(|sig| {
        let (ts, hex) = sig.split_once(",signature=")?;
        let ts = ts.strip_prefix("timestamp=")?;
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).ok()?;
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(want == hex)
    });
    let ok =
        signed.unwrap_or(false) || header("x-buildkite-token").as_deref() == Some(key.as_str());
    if inner.down {
        return http::json(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "down"}));
    }
    if !ok {
        return http::json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid webhook token"}),
        );
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("body is not JSON");
    };
    let headers: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    inner.webhooks.push(Webhook {
        uri: uri.to_string(),
        headers: headers.clone(),
        body: value.clone(),
    });
    if headers.get("x-buildkite-event").map(String::as_str) != Some("build.finished") {
        return http::json(StatusCode::OK, &json!({"status": "skipped"}));
    }
    let id = value["build"]["id"].as_str().unwrap_or("").to_string();
    inner.builds.insert(id, value["build"].clone());
    inner.build_posts += 1;
    http::json(StatusCode::OK, &json!({"status": "stored"}))
}

async fn ingest_agents(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = gate(&s, &headers).await {
        return r;
    }
    let valid = body["jenkinsInstanceId"].is_string()
        && body["agents"].as_array().is_some_and(|agents| {
            agents.iter().all(|a| {
                a["name"].is_string()
                    && matches!(
                        a["status"].as_str(),
                        Some("ONLINE" | "OFFLINE" | "BUILDING" | "UNKNOWN")
                    )
                    && a["executors"].is_u64()
            })
        });
    if !valid {
        return bad_request("agents need jenkinsInstanceId, and name, status and executors each");
    }
    s.lock()
        .unwrap_or_else(|e| e.into_inner())
        .fleets
        .push(body);
    http::json(StatusCode::OK, &json!({"ok": true}))
}

async fn ingest_tests(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = gate(&s, &headers).await {
        return r;
    }
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    let known = inner.builds.values().any(|b| b["id"] == body["buildId"]);
    let counts = [
        "totalCount",
        "passCount",
        "failCount",
        "skipCount",
        "duration",
    ]
    .iter()
    .all(|k| body[*k].is_u64());
    // BuildButler refuses empty names as it refuses missing ones.
    let named = |v: &Value| v.as_str().is_some_and(|s| !s.trim().is_empty());
    let cases = body["testCases"].as_array().is_some_and(|cases| {
        cases.iter().all(|c| {
            named(&c["testName"])
                && named(&c["className"])
                && matches!(
                    c["status"].as_str(),
                    Some("PASSED" | "FAILED" | "SKIPPED" | "ERROR")
                )
        })
    });
    if !known || !counts || !cases || !named(&body["name"]) {
        return bad_request("tests need a known buildId, name, counts and testCases");
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    if let Some(&code) = inner.reject_suites.get(&name) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        let why = "this test suite is refused by the test";
        return http::json(status, &json!({"error": "refused", "message": why}));
    }
    let build = body["buildId"].as_str().unwrap_or_default().to_string();
    inner.arrivals.push(Arrival::Suite { build, name });
    inner.suites.push(body);
    http::json(StatusCode::CREATED, &json!({"ok": true}))
}

async fn ingest_logs(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = gate(&s, &headers).await {
        return r;
    }
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    let known = inner.builds.values().any(|b| b["id"] == body["buildId"]);
    if !known || !body["logContent"].is_string() || !body["buildNumber"].is_u64() {
        return bad_request("build-logs need a known buildId, buildNumber and logContent");
    }
    inner.logs.push(body);
    http::json(StatusCode::CREATED, &json!({"ok": true}))
}

async fn ingest_stages(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let fault = match gate(&s, &headers).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    let Some(build_id) = body["buildId"].as_str().map(str::to_string) else {
        return bad_request("buildId is required");
    };
    if !inner.builds.values().any(|b| b["id"] == build_id.as_str()) {
        return bad_request("unknown buildId");
    }
    let stages_ok = body["stages"].as_array().is_some_and(|stages| {
        stages
            .iter()
            .all(|st| st["stageName"].is_string() && st["stageOrder"].is_u64())
    });
    if !stages_ok {
        return bad_request("stages need stageName and stageOrder");
    }
    inner.stages.insert(build_id, body.clone());
    inner.stage_posts += 1;
    match fault {
        Some(ButlerFault::DropAfterStoring) => http::broken(body.to_string(), 0),
        Some(ButlerFault::EndlessAnswer) => endless_answer(),
        _ => http::json(StatusCode::CREATED, &json!({"ok": true})),
    }
}
