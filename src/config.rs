//! Configuration: built-in defaults, then the TOML file, then `KITESYNC_SECTION__KEY`
//! environment variables (figment), validated once at start-up.
//!
//! Every error is one sentence naming the file, the key and (when the key is in the file)
//! its line, so an operator can fix it without reading the source.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::error::Kind;
use figment::providers::{Env, Format, Toml};
use figment::{Figment, Provider};
use serde::Deserialize;
use url::Url;

use crate::schedule::Schedule;

/// The prefix of every environment variable kitesync reads as configuration.
pub const ENV_PREFIX: &str = "KITESYNC_";

/// The top-level keys and sections of the config.
const SECTIONS: [&str; 8] = [
    "metrics",
    "state_path",
    "buildkite",
    "buildbutler",
    "schedule",
    "tests",
    "logs",
    "enrich",
];

/// A configuration problem, worded for the operator. Its `Display` is the whole message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// A message, with the password of any URL in it (`scheme://user:password@host`) hidden.
    fn new(message: String) -> ConfigError {
        let mut shown = String::with_capacity(message.len());
        let mut rest = message.as_str();
        while let Some(at) = rest.find("://") {
            let (head, tail) = rest.split_at(at + 3);
            shown.push_str(head);
            rest = tail;
            let authority_end = tail.find(['/', '"', '`', ' ', '\'']).unwrap_or(tail.len());
            if let Some(userinfo_end) = tail[..authority_end].rfind('@') {
                let user = tail[..userinfo_end].split(':').next().unwrap_or_default();
                shown.push_str(&format!("{user}:***"));
                rest = &tail[userinfo_end..];
            }
        }
        shown.push_str(rest);
        ConfigError(shown)
    }
}

/// A secret (API token or key). It never prints: `Debug` shows `***`, and it is read from any
/// scalar, so that a token that happens to look like a number is not echoed in a type error.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_json::Value;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Secret(s)),
            v @ (Value::Number(_) | Value::Bool(_)) => Ok(Secret(v.to_string())),
            _ => Err(serde::de::Error::custom("must be a string")),
        }
    }
}

/// The path of a secret file. Anything but a string is refused without being echoed: it may
/// be the secret itself, pasted where its path belongs.
fn secret_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    match serde_json::Value::deserialize(d) {
        Ok(serde_json::Value::String(s)) => Ok(Some(PathBuf::from(s))),
        _ => Err(serde::de::Error::custom(
            "must be the path of a file, as a string",
        )),
    }
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for an HTTP header. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A fingerprint that tells one secret from another without revealing it: 16 hex digits
    /// of a SHA-256 of the secret (domain-separated), for the state database.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"kitesync secret fingerprint\0")
            .chain_update(self.0.as_bytes())
            .finalize();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The SQLite state database (cursor, seen builds, outbox).
    #[serde(default = "default_state_path")]
    pub state_path: PathBuf,
    pub buildkite: BuildkiteConfig,
    pub buildbutler: ButlerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub tests: TestsConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub enrich: EnrichConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[metrics]`: Prometheus metrics on `/metrics` and a health check on `/healthz`, served
/// by the daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Address and port to listen on (loopback unless you open it up).
    pub listen: String,
}

/// `[buildkite]`: the source.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildkiteConfig {
    /// Organization slug, as in `https://buildkite.com/<slug>`.
    pub organization: String,
    /// Base URL of the REST API, without `/v2`.
    pub api_url: Url,
    /// API access token (read scopes); or use `token_file`.
    pub token: Option<Secret>,
    /// A file holding the token, e.g. a systemd credential.
    #[serde(deserialize_with = "secret_path")]
    pub token_file: Option<PathBuf>,
    /// kitesync's own pace, well under the token owner's 50 requests a minute.
    pub requests_per_minute: u32,
    /// The share of each Buildkite budget (organization and user) kitesync leaves to others:
    /// it pauses until the budget resets when only this much is left.
    pub reserve_percent: u32,
    /// Only these pipeline slugs (empty: every pipeline).
    pub pipelines: Vec<String>,
    /// Only these branches, wildcards allowed (empty: every branch).
    pub branches: Vec<String>,
    /// How far behind the high-water mark each poll looks again, for late and re-finished builds.
    pub overlap_seconds: u64,
    /// On the very first poll (empty state), how far back to look for finished builds.
    pub first_poll_lookback_minutes: u64,
    /// Per-request timeout, connect included.
    pub timeout_seconds: u64,
    /// Connect timeout.
    pub connect_timeout_seconds: u64,
    /// A PEM file of extra CA certificates to trust (a corporate TLS-inspecting proxy, say).
    pub ca_file: Option<PathBuf>,
    /// The daemon, after it has worked with this organization and token: the longest wait
    /// between tries while Buildkite (or something on the way) refuses it with 401, 403 or
    /// 404. Tries start 30 s apart (or this, if shorter) and double up to it.
    pub refused_retry_seconds: u64,
}

/// `[buildbutler]`: the sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButlerConfig {
    /// Base URL of the BuildButler server, e.g. `http://buildbutler:3000`.
    pub url: Url,
    /// API key; or use `api_key_file`.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// A file holding the API key, e.g. a systemd credential.
    #[serde(default, deserialize_with = "secret_path")]
    pub api_key_file: Option<PathBuf>,
    /// Which BuildButler route to deliver to.
    #[serde(default)]
    pub mode: Mode,
    /// Path prefix of the ingest routes: the Action uses `/api/v1/ingest`, the docs `/ingest`.
    #[serde(default = "default_ingest_prefix")]
    pub ingest_prefix: String,
    /// Casing of build and stage statuses: `upper` (`SUCCESS`, the Action) or `lower` (the docs).
    #[serde(default)]
    pub status_case: StatusCase,
    /// How many deliveries may be in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Per-request timeout, connect included.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Webhook mode: sign each delivery (`X-Buildkite-Signature`, HMAC-SHA256 keyed with the
    /// API key) instead of sending the key as `X-Buildkite-Token`.
    #[serde(default)]
    pub webhook_signature: bool,
    /// Webhook mode, opt-in: add `?buildkiteToken=<Buildkite token>` so that BuildButler can
    /// call Buildkite back. This hands your Buildkite token to BuildButler.
    #[serde(default)]
    pub webhook_send_buildkite_token: bool,
    /// Connect timeout.
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// A PEM file of extra CA certificates to trust (a self-hosted BuildButler, say).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long `--once` keeps retrying failed deliveries before leaving them for the next run.
    #[serde(default = "default_retry_window_seconds")]
    pub retry_window_seconds: u64,
}

/// The BuildButler route kitesync delivers to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The ingest REST API: builds, then their stages (and tests, agents, logs).
    #[default]
    Ingest,
    /// The Buildkite webhook receiver: each finished build as a `build.finished` event.
    Webhook,
}

/// Casing of status values on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusCase {
    #[default]
    Upper,
    Lower,
}

/// `[schedule]`: cron expressions with a seconds field. An empty `agents` turns the agent
/// sync off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub builds: Schedule,
    #[serde(deserialize_with = "crate::schedule::optional")]
    pub agents: Option<Schedule>,
}

/// `[tests]`: JUnit results from artifacts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestsConfig {
    /// Artifact path globs read as JUnit XML (empty: off).
    pub junit_artifact_globs: Vec<String>,
    /// Larger JUnit files are skipped with a warning.
    pub max_file_bytes: u64,
    /// Which builds have their artifacts listed.
    pub list_artifacts: ListArtifacts,
}

/// Which finished builds have their artifacts listed for test results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListArtifacts {
    /// Every build that ran a command step: reports uploaded by a script
    /// (`buildkite-agent artifact upload`) or a plugin declare no `artifact_paths`.
    #[default]
    All,
    /// Only builds with a step that declares `artifact_paths`: cheaper, but blind to uploads.
    Declared,
}

/// `[logs]`: the tail of each failed job's log, for failed builds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    pub enabled: bool,
    /// How much of the end of each failed job's log to send (and of all of them together).
    pub max_bytes: u64,
}

/// `[enrich]`: how test results and logs are fetched (what is fetched is `[tests]` and
/// `[logs]`): a ceiling on their part of the pace, and their caps per build.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// A ceiling on the part of the pace in force that test results and logs may use, in
    /// percent (100: every slot the build and agent polls leave, which always go first).
    pub max_share_percent: u32,
    /// JUnit files fetched per build at most; the rest is skipped with a warning.
    pub max_files_per_build: u64,
    /// Bytes of JUnit files fetched per build at most; the rest is skipped with a warning.
    pub max_bytes_per_build: u64,
    /// Whether `--backfill` fetches test results and logs for the builds it queues
    /// (`--without-test-results` turns it off for one run).
    pub backfill: bool,
}

// The defaults, which README.md and config.example.toml show.

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: "127.0.0.1:9187".to_string(),
        }
    }
}

impl Default for BuildkiteConfig {
    fn default() -> Self {
        BuildkiteConfig {
            organization: String::new(),
            api_url: Url::parse("https://api.buildkite.com").expect("a valid literal URL"), // ok: constant
            token: None,
            token_file: None,
            requests_per_minute: 30,
            reserve_percent: 10,
            pipelines: Vec::new(),
            branches: Vec::new(),
            overlap_seconds: 300,
            first_poll_lookback_minutes: 60,
            timeout_seconds: default_timeout_seconds(),
            connect_timeout_seconds: default_connect_timeout_seconds(),
            ca_file: None,
            refused_retry_seconds: 300,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        let parse = |s| Schedule::parse(s).expect("a valid literal schedule"); // ok: constant
        ScheduleConfig {
            builds: parse("*/30 * * * * *"),
            agents: Some(parse("0 */5 * * * *")),
        }
    }
}

impl Default for TestsConfig {
    fn default() -> Self {
        TestsConfig {
            junit_artifact_globs: Vec::new(),
            max_file_bytes: 10 * 1024 * 1024,
            list_artifacts: ListArtifacts::All,
        }
    }
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            max_share_percent: 100,
            max_files_per_build: 50,
            max_bytes_per_build: 64 * 1024 * 1024,
            backfill: true,
        }
    }
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            enabled: false,
            max_bytes: 64 * 1024,
        }
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("kitesync.db")
}
fn default_timeout_seconds() -> u64 {
    30
}
fn default_connect_timeout_seconds() -> u64 {
    10
}
fn default_retry_window_seconds() -> u64 {
    30
}
fn default_ingest_prefix() -> String {
    "/api/v1/ingest".to_string()
}
fn default_concurrency() -> usize {
    8
}

impl BuildkiteConfig {
    /// The resolved token (validated non-empty by [`Config::load`]).
    pub fn token(&self) -> Secret {
        self.token.clone().unwrap_or_default()
    }
    /// The re-poll overlap.
    pub fn overlap(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.overlap_seconds as i64)
    }
    /// How far back the first poll looks.
    pub fn first_poll_lookback(&self) -> chrono::Duration {
        chrono::Duration::minutes(self.first_poll_lookback_minutes as i64)
    }
    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
    /// The longest wait between tries while Buildkite refuses a daemon that has worked.
    pub fn refused_retry(&self) -> Duration {
        Duration::from_secs(self.refused_retry_seconds)
    }
}

impl ButlerConfig {
    /// The resolved API key (validated non-empty by [`Config::load`]).
    pub fn api_key(&self) -> Secret {
        self.api_key.clone().unwrap_or_default()
    }
    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
    /// How long `--once` keeps retrying failed deliveries.
    pub fn retry_window(&self) -> Duration {
        Duration::from_secs(self.retry_window_seconds)
    }
}

/// A setting that has no effect with the rest of the config, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// `[section] key`.
    pub key: &'static str,
    /// Why it does nothing, and what to change.
    pub fix: &'static str,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is set but has no effect: {}", self.key, self.fix)
    }
}

impl Config {
    /// The settings changed from their defaults that the rest of the config makes useless
    /// (a key at its default, as the example config shows it, is never named).
    pub fn ignored(&self) -> Vec<Ignored> {
        let (bb, tests, logs) = (&self.buildbutler, &self.tests, &self.logs);
        let (metrics, schedule) = (&self.metrics, &self.schedule);
        let (d_tests, d_logs) = (TestsConfig::default(), LogsConfig::default());
        let (enrich, d_enrich) = (&self.enrich, EnrichConfig::default());
        let d_agents = ScheduleConfig::default().agents;
        let ingest = bb.mode == Mode::Ingest;
        let tests_on = !tests.junit_artifact_globs.is_empty();
        // Enrichment fetches test results and logs, which only ingest mode sends.
        let enriching = ingest && (tests_on || logs.enabled);
        #[rustfmt::skip]
        let rules = [
            (!metrics.enabled && metrics.listen != MetricsConfig::default().listen,
             "[metrics] listen", "metrics are off; set [metrics] enabled = true"),
            (!logs.enabled && logs.max_bytes != d_logs.max_bytes,
             "[logs] max_bytes", "logs are off; set [logs] enabled = true"),
            (!tests_on && tests.max_file_bytes != d_tests.max_file_bytes,
             "[tests] max_file_bytes", "test results are off; set [tests] junit_artifact_globs"),
            (!tests_on && tests.list_artifacts != d_tests.list_artifacts,
             "[tests] list_artifacts", "test results are off; set [tests] junit_artifact_globs"),
            (!ingest && tests_on,
             "[tests] junit_artifact_globs", "webhook mode carries builds only; set [buildbutler] mode = \"ingest\" for test results"),
            (!ingest && logs.enabled,
             "[logs] enabled", "webhook mode carries builds only; set [buildbutler] mode = \"ingest\" for logs"),
            (!ingest && schedule.agents.is_some() && schedule.agents.as_ref().map(Schedule::as_str) != d_agents.as_ref().map(Schedule::as_str),
             "[schedule] agents", "webhook mode carries builds only; set [buildbutler] mode = \"ingest\" for the agent sync"),
            (!ingest && bb.ingest_prefix != default_ingest_prefix(),
             "[buildbutler] ingest_prefix", "it is for ingest mode; webhook mode posts to /webhooks/buildkite"),
            (!ingest && bb.status_case != StatusCase::default(),
             "[buildbutler] status_case", "it is for ingest mode; webhook mode sends Buildkite's own states"),
            (!enriching && enrich.max_share_percent != d_enrich.max_share_percent,
             "[enrich] max_share_percent", "neither test results nor logs are fetched; set [tests] junit_artifact_globs or [logs] enabled = true"),
            (!enriching && enrich.backfill != d_enrich.backfill,
             "[enrich] backfill", "neither test results nor logs are fetched; set [tests] junit_artifact_globs or [logs] enabled = true"),
            (!(ingest && tests_on) && enrich.max_files_per_build != d_enrich.max_files_per_build,
             "[enrich] max_files_per_build", "test results are off; set [tests] junit_artifact_globs"),
            (!(ingest && tests_on) && enrich.max_bytes_per_build != d_enrich.max_bytes_per_build,
             "[enrich] max_bytes_per_build", "test results are off; set [tests] junit_artifact_globs"),
            (ingest && bb.webhook_signature,
             "[buildbutler] webhook_signature", "it is for webhook mode; set [buildbutler] mode = \"webhook\" or remove it"),
            (ingest && bb.webhook_send_buildkite_token,
             "[buildbutler] webhook_send_buildkite_token", "it is for webhook mode; set [buildbutler] mode = \"webhook\" or remove it"),
        ];
        rules
            .into_iter()
            .filter(|(applies, ..)| *applies)
            .map(|(_, key, fix)| Ignored { key, fix })
            .collect()
    }

    /// True when JUnit results are read from artifacts (ingest mode only).
    pub fn tests_enabled(&self) -> bool {
        !self.tests.junit_artifact_globs.is_empty() && self.buildbutler.mode == Mode::Ingest
    }

    /// True when anything is fetched besides builds: test results or logs.
    pub fn enrich_enabled(&self) -> bool {
        self.tests_enabled() || self.logs_enabled()
    }

    /// True when failed jobs' log tails are sent (ingest mode only).
    pub fn logs_enabled(&self) -> bool {
        self.logs.enabled && self.buildbutler.mode == Mode::Ingest
    }

    /// The JUnit artifact globs, compiled (validated by [`Config::load`]).
    pub fn junit_globs(&self) -> globset::GlobSet {
        let mut set = globset::GlobSetBuilder::new();
        for glob in &self.tests.junit_artifact_globs {
            if let Ok(g) = globset::Glob::new(glob) {
                set.add(g);
            }
        }
        set.build().unwrap_or_else(|_| globset::GlobSet::empty())
    }

    /// True when agents are synced: a schedule is set and the mode can carry them.
    pub fn agents_enabled(&self) -> bool {
        self.schedule.agents.is_some() && self.buildbutler.mode == Mode::Ingest
    }

    /// Loads defaults, then `path` (which must exist), then `KITESYNC_*` variables; reads the
    /// secret files; validates everything.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = ConfigFile::read(path)?;
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                // Only kitesync's own sections: an unrelated KITESYNC_* variable is not
                // a typo in the config. Typos inside a section still are.
                .filter(|k| {
                    let section = k.as_str().split('.').next().unwrap_or("");
                    SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
                }),
        );
        let mut config: Config = figment.extract().map_err(|e| file.explain(&e))?;
        let (bk, bb) = (&mut config.buildkite, &mut config.buildbutler);
        file.resolve_secret("buildkite", "token", &mut bk.token, &bk.token_file)?;
        file.resolve_secret("buildbutler", "api_key", &mut bb.api_key, &bb.api_key_file)?;
        config.validate(&file)?;
        // Relative to the config file, not to wherever cron or systemd happens to start (an
        // absolute state_path stays as it is).
        if let Some(dir) = path.parent() {
            config.state_path = dir.join(&config.state_path);
        }
        Ok(config)
    }

    fn validate(&self, file: &ConfigFile) -> Result<(), ConfigError> {
        let (bk, bb) = (&self.buildkite, &self.buildbutler);
        if bk.organization.trim().is_empty() {
            let problem = "is missing: set it to your organization's slug (as in https://buildkite.com/<slug>)";
            return Err(file.error("buildkite", "organization", problem));
        }
        file.check_http_url("buildkite", "api_url", &bk.api_url)?;
        if bk.api_url.path().trim_end_matches('/').ends_with("/v2") {
            let problem = "must be the base URL without /v2, e.g. \"https://api.buildkite.com\"";
            return Err(file.error("buildkite", "api_url", problem));
        }
        file.check_http_url("buildbutler", "url", &bb.url)?;
        let sends_token = bb.mode == Mode::Webhook && bb.webhook_send_buildkite_token;
        if sends_token && bb.url.scheme() == "http" && !is_loopback(&bb.url) {
            let host = bb.url.host_str().unwrap_or_default();
            let problem = format!(
                "= true with a plain http:// [buildbutler] url would send your Buildkite token in clear \
                 text to {host} (and into the access log of every proxy on the way): use an https:// \
                 url, or turn it off (http:// is allowed only to a loopback host)"
            );
            return Err(file.error("buildbutler", "webhook_send_buildkite_token", &problem));
        }
        if !bb.ingest_prefix.is_empty() && !bb.ingest_prefix.starts_with('/') {
            let problem = "must start with '/', e.g. \"/api/v1/ingest\"";
            return Err(file.error("buildbutler", "ingest_prefix", problem));
        }
        #[rustfmt::skip]
        let ranges = [
            ("buildkite", "requests_per_minute", u64::from(bk.requests_per_minute), 1, 10_000),
            ("buildkite", "reserve_percent", u64::from(bk.reserve_percent), 0, 90),
            ("buildkite", "overlap_seconds", bk.overlap_seconds, 10, 86_400),
            ("buildkite", "first_poll_lookback_minutes", bk.first_poll_lookback_minutes, 1, 525_600),
            ("buildkite", "timeout_seconds", bk.timeout_seconds, 1, 3_600),
            ("buildkite", "connect_timeout_seconds", bk.connect_timeout_seconds, 1, 600),
            ("buildkite", "refused_retry_seconds", bk.refused_retry_seconds, 1, 3_600),
            ("buildbutler", "connect_timeout_seconds", bb.connect_timeout_seconds, 1, 600),
            ("buildbutler", "concurrency", bb.concurrency as u64, 1, 256),
            ("buildbutler", "timeout_seconds", bb.timeout_seconds, 1, 3_600),
            ("buildbutler", "retry_window_seconds", bb.retry_window_seconds, 0, 86_400),
            ("buildbutler", "ingest_prefix", bb.ingest_prefix.len() as u64, 0, 200),
            ("tests", "max_file_bytes", self.tests.max_file_bytes, 1, 1 << 30),
            ("logs", "max_bytes", self.logs.max_bytes, 1, 1 << 30),
            ("enrich", "max_share_percent", u64::from(self.enrich.max_share_percent), 1, 100),
            ("enrich", "max_files_per_build", self.enrich.max_files_per_build, 1, 100_000),
            ("enrich", "max_bytes_per_build", self.enrich.max_bytes_per_build, 1, 1 << 40),
        ];
        for (section, key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                let problem = format!("= {value} is out of range: it must be from {min} to {max}");
                return Err(file.error(section, key, &problem));
            }
        }
        for (section, ca) in [("buildkite", &bk.ca_file), ("buildbutler", &bb.ca_file)] {
            let Some(path) = ca else { continue };
            let pem =
                std::fs::read(path).map_err(|e| file.unreadable(section, "ca_file", path, &e))?;
            if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) {
                let problem = format!("names {}, which holds no PEM certificate", path.display());
                return Err(file.error(section, "ca_file", &problem));
            }
        }
        for glob in &self.tests.junit_artifact_globs {
            if let Err(e) = globset::Glob::new(glob) {
                let problem = format!("has an invalid glob {glob:?}: {}", e.kind());
                return Err(file.error("tests", "junit_artifact_globs", &problem));
            }
        }
        let listen = &self.metrics.listen;
        if listen.parse::<std::net::SocketAddr>().is_err() {
            let problem =
                format!("= {listen:?} is not an address and port, e.g. \"127.0.0.1:9187\"");
            return Err(file.error("metrics", "listen", &problem));
        }
        Ok(())
    }
}

/// True when `url`'s host is this machine: `localhost` or a loopback address.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// A URL as it may be shown: without a password.
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// The config file's text, kept to point errors at a line; its methods word those errors.
struct ConfigFile {
    path: PathBuf,
    doc: toml_edit::ImDocument<String>,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let why = io_reason(&e);
            ConfigError::new(format!("cannot read config file {shown}: {why}"))
        })?;
        let doc = toml_edit::ImDocument::parse(text.clone()).map_err(|e| {
            let at = e.span().map_or(1, |s| line_of(&text, s.start));
            let reason = e.message().trim().trim_end_matches('.').replace('\n', "; ");
            ConfigError::new(format!("{shown} line {at}: TOML syntax error: {reason}"))
        })?;
        let path = path.to_path_buf();
        Ok(ConfigFile { path, doc })
    }

    /// "FILE line N: [section] key <problem>", or without the line when the key is not in the file.
    fn error(&self, section: &str, key: &str, problem: &str) -> ConfigError {
        let whence = self.locate(&[section, key]);
        ConfigError::new(format!("{whence}: [{section}] {key} {problem}"))
    }

    /// The error for a file that `[section] key` names and that cannot be read.
    fn unreadable(&self, section: &str, key: &str, path: &Path, e: &std::io::Error) -> ConfigError {
        let (shown, why) = (path.display(), io_reason(e));
        let problem = format!("names {shown}, which cannot be read: {why}");
        self.error(section, key, &problem)
    }

    /// The error for a secret file that cannot be read. Its path is shown only when it names
    /// a file that exists or one in an existing directory (other than `/`): anything else may
    /// be the secret itself, pasted where its path belongs.
    fn unreadable_secret_file(
        &self,
        section: &str,
        key: &str,
        path: &Path,
        e: &std::io::Error,
    ) -> ConfigError {
        let in_a_directory = path
            .parent()
            .is_some_and(|dir| dir.parent().is_some() && dir.is_dir());
        if path.exists() || in_a_directory {
            return self.unreadable(section, key, path, e);
        }
        let why = io_reason(e);
        let problem = format!(
            "names a file that cannot be read ({why}), in no directory that exists; the value is not shown, \
             as it may be the secret itself: put the secret in a file and its path here"
        );
        self.error(section, key, &problem)
    }

    fn check_http_url(&self, section: &str, key: &str, url: &Url) -> Result<(), ConfigError> {
        if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
            return Ok(());
        }
        let problem = format!("= \"{}\" is not an http:// or https:// URL", redacted(url));
        Err(self.error(section, key, &problem))
    }

    /// Moves a secret into `value`: from the config value or from the file `from_file`, never
    /// both, never empty.
    fn resolve_secret(
        &self,
        section: &str,
        key: &str,
        value: &mut Option<Secret>,
        from_file: &Option<PathBuf>,
    ) -> Result<(), ConfigError> {
        let file_key = format!("{key}_file");
        let (secret, which) = match (value.take(), from_file) {
            (Some(_), Some(_)) => {
                let problem = format!("and `{file_key}` are both set: keep only one");
                return Err(self.error(section, key, &problem));
            }
            (Some(v), None) => (v, key),
            (None, Some(p)) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| self.unreadable_secret_file(section, &file_key, p, &e))?;
                (Secret(text.trim().to_string()), file_key.as_str())
            }
            (None, None) => {
                let var = format!("{ENV_PREFIX}{section}__{key}").to_uppercase();
                let problem = format!("is missing: set `{key}` or `{file_key}` (or {var})");
                return Err(self.error(section, key, &problem));
            }
        };
        if secret.0.trim().is_empty() {
            return Err(self.error(section, which, "is empty"));
        }
        *value = Some(secret);
        Ok(())
    }

    /// The file, and the line of `path` in it when the key is written there.
    fn locate(&self, path: &[&str]) -> String {
        let file = self.path.display();
        self.line_of_key(path)
            .map_or(file.to_string(), |line| format!("{file} line {line}"))
    }

    fn line_of_key(&self, path: &[&str]) -> Option<usize> {
        let mut item = self.doc.as_item();
        let mut span = None;
        for part in path {
            let (key, value) = item.as_table_like()?.get_key_value(part)?;
            span = key.span().or_else(|| value.span());
            item = value;
        }
        span.map(|s| line_of(self.doc.raw(), s.start))
    }

    /// Rewords a figment error: what is wrong, with which key, where.
    fn explain(&self, e: &figment::Error) -> ConfigError {
        let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
        let key = match path.split_last() {
            None => String::new(),
            Some((last, [])) => format!("{last} "),
            Some((last, parents)) => format!("[{}] {last} ", parents.join(".")),
        };
        // The environment provider's values carry its metadata, named by its prefix alone.
        let env = Env::prefixed(ENV_PREFIX).metadata();
        let whence = if e.metadata.as_ref().is_some_and(|m| m.name == env.name) {
            let var = path.join("__").to_uppercase();
            format!("environment variable {ENV_PREFIX}{var}")
        } else {
            self.locate(&path)
        };
        let kind = match &e.kind {
            Kind::MissingField(field) if path.is_empty() => {
                format!("the [{field}] section is missing")
            }
            Kind::MissingField(field) => format!("`{field}` is missing"),
            kind => kind.to_string(),
        };
        ConfigError::new(format!("{whence}: {key}{}", kind.trim_end_matches('.')))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kitesync.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&path)
    }

    const GOOD: &str = r#"
[buildkite]
organization = "acme"
token = "bk-token"

[buildbutler]
url = "http://127.0.0.1:3000"
api_key = "bb-key"
"#;

    #[test]
    fn defaults_fill_everything_else() {
        let c = load(GOOD).expect("valid");
        assert_eq!(c.buildkite.api_url.as_str(), "https://api.buildkite.com/");
        assert_eq!(c.buildkite.requests_per_minute, 30);
        assert_eq!(c.buildbutler.ingest_prefix, "/api/v1/ingest");
        assert_eq!(c.buildbutler.mode, Mode::Ingest);
        assert_eq!(c.schedule.builds.as_str(), "*/30 * * * * *");
        assert_eq!(c.buildkite.token().expose(), "bk-token");
    }

    #[test]
    fn example_config_loads_and_shows_the_defaults() {
        let example = include_str!("../config.example.toml")
            .replace("# token = \"bkua_...\"", "token = \"bk-token\"")
            .replace("# api_key = \"bb_live_...\"", "api_key = \"bb-key\"")
            .replace(
                "url = \"http://buildbutler:3000\"",
                "url = \"http://127.0.0.1:3000\"",
            );
        let mut shown = load(&example).expect("the example is valid");
        let defaults = load(GOOD).expect("valid");
        // Relative to each config file's (temporary) directory.
        assert!(shown.state_path.ends_with("kitesync.db"));
        shown.state_path = defaults.state_path.clone();
        // Every value the example shows is the default (only the required keys differ).
        assert_eq!(format!("{:?}", shown), format!("{:?}", defaults));
        // So a copy of it warns about nothing.
        assert_eq!(shown.ignored(), Vec::new());
    }

    #[test]
    fn settings_without_effect_are_named_with_what_to_change() {
        let keys = |c: &Config| c.ignored().iter().map(|i| i.key).collect::<Vec<_>>();
        assert!(keys(&load(GOOD).expect("valid")).is_empty());
        let text =
            format!("{GOOD}\n[metrics]\nlisten = \"0.0.0.0:9187\"\n\n[logs]\nmax_bytes = 1000\n");
        let c = load(&text).expect("valid");
        assert_eq!(keys(&c), ["[metrics] listen", "[logs] max_bytes"]);
        let said = c.ignored()[0].to_string();
        assert!(said.contains("set [metrics] enabled = true"), "{said}");
        // Enrichment tuned while it fetches nothing.
        let tuned = format!("{GOOD}\n[enrich]\nmax_files_per_build = 10\nmax_share_percent = 20\n");
        assert_eq!(
            keys(&load(&tuned).expect("valid")),
            ["[enrich] max_share_percent", "[enrich] max_files_per_build"]
        );
        let fetching = format!("{tuned}\n[tests]\njunit_artifact_globs = [\"*.xml\"]\n");
        assert!(keys(&load(&fetching).expect("valid")).is_empty());
        // Turned on, the same values are used: nothing to say.
        let on = text
            .replace("[metrics]\n", "[metrics]\nenabled = true\n")
            .replace("[logs]\n", "[logs]\nenabled = true\n");
        assert!(keys(&load(&on).expect("valid")).is_empty());
        // Webhook mode carries builds only.
        let webhook = GOOD.replace(
            "[buildbutler]\n",
            "[buildbutler]\nmode = \"webhook\"\nstatus_case = \"lower\"\n",
        );
        let webhook = format!("{webhook}\n[tests]\njunit_artifact_globs = [\"*.xml\"]\n");
        assert_eq!(
            keys(&load(&webhook).expect("valid")),
            ["[tests] junit_artifact_globs", "[buildbutler] status_case"]
        );
    }

    #[test]
    fn numeric_secrets_are_secrets_too() {
        let text = GOOD.replace("token = \"bk-token\"", "token = 987654321");
        let c = load(&text).expect("a numeric token is still a token");
        assert_eq!(c.buildkite.token().expose(), "987654321");
    }

    #[test]
    fn out_of_range_values_are_refused_not_overflowed() {
        for (key, value) in [
            ("overlap_seconds", "10000000000000"),
            ("first_poll_lookback_minutes", "1000000000000"),
            ("overlap_seconds", "0"),
            ("reserve_percent", "95"),
        ] {
            let text = GOOD.replace(
                "organization = \"acme\"",
                &format!("organization = \"acme\"\n{key} = {value}"),
            );
            let m = load(&text).unwrap_err().to_string();
            assert!(
                m.contains(&format!("[buildkite] {key} = {value} is out of range")),
                "{m}"
            );
        }
        let text = GOOD.replace(
            "api_key = \"bb-key\"",
            "api_key = \"bb-key\"\nretry_window_seconds = 999999999999",
        );
        assert!(load(&text)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    #[test]
    fn enrich_keys_have_defaults_and_ranges() {
        let c = load(GOOD).expect("valid");
        assert_eq!(
            c.enrich.max_share_percent, 100,
            "no ceiling: every slot the polls leave"
        );
        assert_eq!(c.enrich.max_files_per_build, 50);
        assert_eq!(c.enrich.max_bytes_per_build, 64 << 20);
        assert!(c.enrich.backfill);
        for (key, value) in [("max_share_percent", "0"), ("max_share_percent", "101")] {
            let text = format!("{GOOD}\n[enrich]\n{key} = {value}\n");
            let m = load(&text).unwrap_err().to_string();
            assert!(
                m.contains(&format!(
                    "line 11: [enrich] {key} = {value} is out of range"
                )),
                "{m}"
            );
        }
    }

    #[test]
    fn api_url_with_v2_and_url_passwords() {
        let text = GOOD.replace(
            "organization = \"acme\"",
            "organization = \"acme\"\napi_url = \"https://api.buildkite.com/v2\"",
        );
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("without /v2"), "{m}");
        let text = GOOD.replace("http://127.0.0.1:3000", "ftp://user:hunter2@host");
        let m = load(&text).unwrap_err().to_string();
        assert!(!m.contains("hunter2"), "{m}");
    }

    #[test]
    fn passwords_in_urls_never_reach_config_errors() {
        let text = GOOD.replace(
            "http://127.0.0.1:3000",
            "http://user:hunter2@bb.example:99999",
        );
        let m = load(&text).unwrap_err().to_string();
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("[buildbutler] url"), "{m}");
    }

    #[test]
    fn state_path_is_relative_to_the_config_file() {
        let c = load(GOOD).expect("valid");
        assert!(c.state_path.is_absolute(), "{:?}", c.state_path);
    }

    #[test]
    fn secret_never_prints() {
        let c = load(GOOD).expect("valid");
        let shown = format!("{c:?}");
        assert!(!shown.contains("bk-token"), "{shown}");
        assert!(!shown.contains("bb-key"), "{shown}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let e = load("[buildkite]\norganization = \"acme\"\ntoken = bk\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("kitesync.toml line 3"), "{m}");
        assert!(m.contains("TOML syntax error"), "{m}");
    }

    #[test]
    fn unknown_mode_names_key_and_line() {
        let text = GOOD.replace(
            "api_key = \"bb-key\"",
            "api_key = \"bb-key\"\nmode = \"push\"",
        );
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("line 9"), "{m}");
        assert!(m.contains("[buildbutler] mode"), "{m}");
        assert!(m.contains("push"), "{m}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let text = GOOD.replace(
            "token = \"bk-token\"",
            "token = \"bk-token\"\ntokne = \"x\"",
        );
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("tokne"), "{m}");
    }

    #[test]
    fn token_and_token_file_conflict() {
        let text = GOOD.replace(
            "token = \"bk-token\"",
            "token = \"bk-token\"\ntoken_file = \"/x\"",
        );
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("both set"), "{m}");
        assert!(!m.contains("bk-token"), "{m}");
    }

    #[test]
    fn secret_from_file_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("token");
        std::fs::write(&secret, "from-file\n").expect("write");
        let text = GOOD.replace(
            "token = \"bk-token\"",
            &format!("token_file = \"{}\"", secret.display()),
        );
        let c = load(&text).expect("valid");
        assert_eq!(c.buildkite.token().expose(), "from-file");
    }

    #[test]
    fn the_buildkite_token_goes_over_plain_http_only_to_loopback() {
        let with = |url: &str| {
            let text = GOOD.replace("http://127.0.0.1:3000", url).replace(
                "api_key = \"bb-key\"",
                "api_key = \"bb-key\"\nmode = \"webhook\"\nwebhook_send_buildkite_token = true",
            );
            load(&text)
        };
        for refused in [
            "http://buildbutler:3000",
            "http://10.0.0.7",
            "http://[fd00::1]:80",
        ] {
            let m = with(refused).unwrap_err().to_string();
            assert!(
                m.contains("line 10: [buildbutler] webhook_send_buildkite_token"),
                "{m}"
            );
            assert!(m.contains("clear text") && m.contains("https://"), "{m}");
            assert!(!m.contains("bk-token"), "{m}");
        }
        for allowed in [
            "https://buildbutler:3000",
            "http://127.0.0.1:3000",
            "http://127.1:3000",
            "http://localhost:3000",
            "http://[::1]:3000",
            "http://[::ffff:127.0.0.1]:3000",
        ] {
            assert!(with(allowed).is_ok(), "{allowed}");
        }
        // Without the opt-in, or in ingest mode (where it sends nothing), plain http is fine.
        let text = GOOD.replace("http://127.0.0.1:3000", "http://buildbutler:3000");
        assert!(load(&text).is_ok());
        let ingest = text.replace(
            "api_key = \"bb-key\"",
            "api_key = \"bb-key\"\nwebhook_send_buildkite_token = true",
        );
        assert!(load(&ingest).is_ok());
    }

    #[test]
    fn a_secret_pasted_into_a_file_key_is_not_echoed() {
        for (key, value) in [
            (
                "token_file",
                "\"bkua_0123456789abcdef0123456789abcdef01234567\"",
            ),
            ("token_file", "\"ab/cd+ef/0123456789\""),
            ("token_file", "\"/bkua_0123456789\""),
            ("token_file", "9876543210987654"),
            ("token_file", "true"),
        ] {
            let text = GOOD.replace("token = \"bk-token\"", &format!("{key} = {value}"));
            let m = load(&text).unwrap_err().to_string();
            assert!(m.contains("line 4: [buildkite] token_file"), "{m}");
            let shown = value.trim_matches('"').trim_start_matches('/');
            assert!(!m.contains(shown), "{value} echoed: {m}");
        }
        let text = GOOD.replace("api_key = \"bb-key\"", "api_key_file = \"bb_live_SECRET\"");
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("[buildbutler] api_key_file"), "{m}");
        assert!(!m.contains("SECRET"), "{m}");
        // A path in a directory that exists is shown: it helps, and is no secret.
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("buildkite-token");
        let text = GOOD.replace(
            "token = \"bk-token\"",
            &format!("token_file = \"{}\"", missing.display()),
        );
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains(&missing.display().to_string()), "{m}");
        assert!(m.contains("no such file"), "{m}");
    }

    #[test]
    fn bad_cron_and_url_are_explained() {
        let text = format!("{GOOD}\n[schedule]\nbuilds = \"every minute\"\n");
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("[schedule] builds"), "{m}");
        assert!(m.contains("line 11"), "{m}");
        let text = GOOD.replace("http://127.0.0.1:3000", "ftp://example");
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("[buildbutler] url"), "{m}");
        assert!(m.contains("line 7"), "{m}");
    }

    #[test]
    fn wrong_type_names_key() {
        let text = GOOD.replace(
            "organization = \"acme\"",
            "organization = \"acme\"\nrequests_per_minute = \"lots\"",
        );
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("[buildkite] requests_per_minute"), "{m}");
        assert!(m.contains("line 4"), "{m}");
    }
}
