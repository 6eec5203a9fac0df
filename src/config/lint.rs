//! The ignored-settings lint: settings changed from their defaults that the rest of the
//! config makes useless, each with what to change.

use super::schema::{
    default_ingest_prefix, Config, EnrichConfig, LogsConfig, MetricsConfig, Mode, ScheduleConfig,
    StatusCase, TestsConfig,
};
use crate::run::schedule::Schedule;

/// A setting that has no effect with the rest of the config, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// `[section] key`.
    pub(crate) key: &'static str,
    /// Why it does nothing, and what to change.
    pub(crate) fix: &'static str,
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
}
