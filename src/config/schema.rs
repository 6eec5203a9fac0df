//! The schema: every section and key, their defaults (which config.example.toml
//! shows), and what the validated [`Config`] offers its readers.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::secret::{secret_path, Secret};
use crate::run::schedule::Schedule;

/// The prefix of every environment variable kitesync reads as configuration.
pub(crate) const ENV_PREFIX: &str = "KITESYNC_";

/// The whole configuration, validated by [`Config::load`]: its secrets read, every value in
/// range, the JUnit globs compiled.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SQLite state database (cursor, seen builds, outbox), relative to the config file.
    pub(crate) state_path: PathBuf,
    pub(crate) buildkite: BuildkiteConfig,
    pub buildbutler: ButlerConfig,
    pub(crate) schedule: ScheduleConfig,
    pub(crate) tests: TestsConfig,
    pub(crate) logs: LogsConfig,
    pub(crate) enrich: EnrichConfig,
    pub(crate) metrics: MetricsConfig,
    /// `[tests] junit_artifact_globs`, compiled.
    pub(super) junit_globs: globset::GlobSet,
}

/// What the file and the environment say, before [`Config::load`] reads the secrets and
/// validates: the sections as in [`Config`], with each secret as written (or not).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default = "default_state_path")]
    pub(crate) state_path: PathBuf,
    pub(crate) buildkite: BuildkiteConfig<Option<Secret>>,
    pub buildbutler: ButlerConfig<Option<Secret>>,
    #[serde(default)]
    pub(crate) schedule: ScheduleConfig,
    #[serde(default)]
    pub(crate) tests: TestsConfig,
    #[serde(default)]
    pub(crate) logs: LogsConfig,
    #[serde(default)]
    pub(crate) enrich: EnrichConfig,
    #[serde(default)]
    pub(crate) metrics: MetricsConfig,
}

/// `[metrics]`: Prometheus metrics on `/metrics` and a health check on `/healthz`, served
/// by the daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub(crate) enabled: bool,
    /// Address and port to listen on (loopback unless you open it up).
    pub(crate) listen: String,
}

/// `[buildkite]`: the source.
///
/// `K` is the token: `Option<Secret>` as the file says it, [`Secret`] once read.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[serde(bound(deserialize = "K: Deserialize<'de> + Default"))]
pub struct BuildkiteConfig<K = Secret> {
    /// Organization slug, as in `https://buildkite.com/<slug>`.
    pub(crate) organization: String,
    /// Base URL of the REST API, without `/v2`.
    pub(crate) api_url: Url,
    /// API access token (read scopes); or use `token_file`.
    pub(crate) token: K,
    /// A file holding the token, e.g. a systemd credential.
    #[serde(deserialize_with = "secret_path")]
    pub(crate) token_file: Option<PathBuf>,
    /// kitesync's own pace, well under the token owner's 50 requests a minute.
    pub(crate) requests_per_minute: u32,
    /// The share of each Buildkite budget (organization and user) kitesync leaves to others:
    /// it pauses until the budget resets when only this much is left.
    pub(crate) reserve_percent: u32,
    /// Only these pipeline slugs (empty: every pipeline).
    pub(crate) pipelines: Vec<String>,
    /// Only these branches, wildcards allowed (empty: every branch).
    pub(crate) branches: Vec<String>,
    /// How far behind the high-water mark each poll looks again, for late and re-finished builds.
    pub(crate) overlap_seconds: u64,
    /// On the very first poll (empty state), how far back to look for finished builds.
    pub(crate) first_poll_lookback_minutes: u64,
    /// Per-request timeout, connect included.
    pub(crate) timeout_seconds: u64,
    /// Connect timeout.
    pub(crate) connect_timeout_seconds: u64,
    /// A PEM file of extra CA certificates to trust (a corporate TLS-inspecting proxy, say).
    pub(crate) ca_file: Option<PathBuf>,
    /// The daemon, after it has worked with this organization and token: the longest wait
    /// between tries while Buildkite (or something on the way) refuses it with 401, 403 or
    /// 404. Tries start 30 s apart (or this, if shorter) and double up to it.
    pub(crate) refused_retry_seconds: u64,
}

/// `[buildbutler]`: the sink.
///
/// `K` is the API key: `Option<Secret>` as the file says it, [`Secret`] once read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound(deserialize = "K: Deserialize<'de> + Default"))]
pub struct ButlerConfig<K = Secret> {
    /// Base URL of the BuildButler server, e.g. `http://buildbutler:3000`.
    pub(crate) url: Url,
    /// API key; or use `api_key_file`.
    #[serde(default)]
    pub(crate) api_key: K,
    /// A file holding the API key, e.g. a systemd credential.
    #[serde(default, deserialize_with = "secret_path")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// Which BuildButler route to deliver to.
    #[serde(default)]
    pub(crate) mode: Mode,
    /// Path prefix of the ingest routes: the Action uses `/api/v1/ingest`, the docs `/ingest`.
    #[serde(default = "default_ingest_prefix")]
    pub(crate) ingest_prefix: String,
    /// Casing of build and stage statuses: `upper` (`SUCCESS`, the Action) or `lower` (the docs).
    #[serde(default)]
    pub(crate) status_case: StatusCase,
    /// How many deliveries may be in flight at once.
    #[serde(default = "default_concurrency")]
    pub(crate) concurrency: usize,
    /// Per-request timeout, connect included.
    #[serde(default = "default_timeout_seconds")]
    pub(crate) timeout_seconds: u64,
    /// Webhook mode: sign each delivery (`X-Buildkite-Signature`, HMAC-SHA256 keyed with the
    /// API key) instead of sending the key as `X-Buildkite-Token`.
    #[serde(default)]
    pub(crate) webhook_signature: bool,
    /// Webhook mode, opt-in: add `?buildkiteToken=<Buildkite token>` so that BuildButler can
    /// call Buildkite back. This hands your Buildkite token to BuildButler.
    #[serde(default)]
    pub(crate) webhook_send_buildkite_token: bool,
    /// Connect timeout.
    #[serde(default = "default_connect_timeout_seconds")]
    pub(crate) connect_timeout_seconds: u64,
    /// A PEM file of extra CA certificates to trust (a self-hosted BuildButler, say).
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    /// How long `--once` keeps retrying failed deliveries before leaving them for the next run.
    #[serde(default = "default_retry_window_seconds")]
    pub(crate) retry_window_seconds: u64,
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
    pub(crate) builds: Schedule,
    #[serde(deserialize_with = "crate::run::schedule::optional")]
    pub(crate) agents: Option<Schedule>,
}

/// `[tests]`: JUnit results from artifacts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestsConfig {
    /// Artifact path globs read as JUnit XML (empty: off).
    pub(crate) junit_artifact_globs: Vec<String>,
    /// Larger JUnit files are skipped with a warning.
    pub(crate) max_file_bytes: u64,
    /// Which builds have their artifacts listed.
    pub(crate) list_artifacts: ListArtifacts,
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
    pub(crate) enabled: bool,
    /// How much of the end of each failed job's log to send (and of all of them together).
    pub(crate) max_bytes: u64,
}

/// `[enrich]`: how test results and logs are fetched (what is fetched is `[tests]` and
/// `[logs]`): a ceiling on their part of the pace, and their caps per build.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// A ceiling on the part of the pace in force that test results and logs may use, in
    /// percent (100: every slot the build and agent polls leave, which always go first).
    pub(crate) max_share_percent: u32,
    /// JUnit files fetched per build at most; the rest is skipped with a warning.
    pub(crate) max_files_per_build: u64,
    /// Bytes of JUnit files fetched per build at most; the rest is skipped with a warning.
    pub(crate) max_bytes_per_build: u64,
    /// Whether `--backfill` fetches test results and logs for the builds it queues
    /// (`--without-test-results` turns it off for one run).
    pub(crate) backfill: bool,
}

// The defaults, which config.example.toml shows.

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: "127.0.0.1:9187".to_string(),
        }
    }
}

impl<K: Default> Default for BuildkiteConfig<K> {
    fn default() -> Self {
        BuildkiteConfig {
            organization: String::new(),
            api_url: Url::parse("https://api.buildkite.com").expect("a valid literal URL"), // ok: constant
            token: K::default(),
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

pub(super) fn default_state_path() -> PathBuf {
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
pub(super) fn default_ingest_prefix() -> String {
    "/api/v1/ingest".to_string()
}
fn default_concurrency() -> usize {
    8
}

impl BuildkiteConfig {
    /// The token, read and checked non-empty by [`Config::load`].
    pub(crate) fn token(&self) -> Secret {
        self.token.clone()
    }
    /// The re-poll overlap.
    pub(crate) fn overlap(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.overlap_seconds as i64)
    }
    /// How far back the first poll looks.
    pub(crate) fn first_poll_lookback(&self) -> chrono::Duration {
        chrono::Duration::minutes(self.first_poll_lookback_minutes as i64)
    }
    /// Per-request timeout.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
    /// The longest wait between tries while Buildkite refuses a daemon that has worked.
    pub(crate) fn refused_retry(&self) -> Duration {
        Duration::from_secs(self.refused_retry_seconds)
    }
}

impl ButlerConfig {
    /// The API key, read and checked non-empty by [`Config::load`].
    pub(crate) fn api_key(&self) -> Secret {
        self.api_key.clone()
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

impl Config {
    /// True when JUnit results are read from artifacts (ingest mode only).
    pub(crate) fn tests_enabled(&self) -> bool {
        !self.tests.junit_artifact_globs.is_empty() && self.buildbutler.mode == Mode::Ingest
    }

    /// True when failed jobs' log tails are sent (ingest mode only).
    pub(crate) fn logs_enabled(&self) -> bool {
        self.logs.enabled && self.buildbutler.mode == Mode::Ingest
    }

    /// The JUnit artifact globs, compiled (by [`Config::load`], which refuses an invalid one).
    pub(crate) fn junit_globs(&self) -> globset::GlobSet {
        self.junit_globs.clone()
    }

    /// True when agents are synced: a schedule is set and the mode can carry them.
    pub(crate) fn agents_enabled(&self) -> bool {
        self.schedule.agents.is_some() && self.buildbutler.mode == Mode::Ingest
    }
}
