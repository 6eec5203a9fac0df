//! Fetches what goes with a finished build besides the build itself: test results and
//! logs. Builds wait in the store's `enrich` table; each is done in one transaction, retried
//! with backoff when Buildkite or the storage host fails, and given up (with a warning) after
//! a few tries: the build itself is delivered regardless.

use std::time::Duration;

use super::{logs, test_results, SyncError};
use crate::app::App;
use crate::buildkite::{Build, SourceError};
use crate::net;
use crate::store::enrich::{self, Pending};
use crate::store::now_ms;

/// Tries per build before its test results and logs are given up.
const MAX_ATTEMPTS: u32 = 5;

/// What an enrichment pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EnrichReport {
    pub builds: usize,
    /// Test suites and logs queued.
    pub items: usize,
    /// Builds to be tried again later.
    pub retried: usize,
}

/// Enriches every build that is due. Stops at a configuration error (token, scope).
pub async fn run(app: &App) -> Result<EnrichReport, SyncError> {
    let mut report = EnrichReport::default();
    loop {
        let due = app.store.call(|c| enrich::due(c, now_ms(), 16)).await?;
        if due.is_empty() {
            return Ok(report);
        }
        for pending in due {
            match fetch(app, &pending).await {
                Ok(fetched) => {
                    report.builds += 1;
                    report.items += fetched.len();
                    app.store
                        .call(move |c| enrich::complete(c, &pending, &fetched, now_ms()))
                        .await?;
                }
                Err(e) if e.is_configuration() => return Err(e),
                Err(e) if pending.attempts + 1 >= MAX_ATTEMPTS => {
                    tracing::warn!(
                        build = pending.label,
                        "giving up its test results and logs after {MAX_ATTEMPTS} tries: {e}"
                    );
                    app.store
                        .call(move |c| enrich::complete(c, &pending, &[], now_ms()))
                        .await?;
                }
                Err(e) => {
                    let e = e.to_string();
                    report.retried += 1;
                    let wait = net::backoff(
                        pending.attempts + 1,
                        Duration::from_secs(30),
                        Duration::from_secs(1800),
                    );
                    let at = now_ms() + wait.as_millis() as i64;
                    tracing::debug!(
                        build = pending.label,
                        "test results or logs not fetched, retrying later: {e}"
                    );
                    app.store
                        .call(move |c| enrich::retry_at(c, &pending, at, &e))
                        .await?;
                }
            }
        }
    }
}

async fn fetch(app: &App, pending: &Pending) -> Result<Vec<enrich::Fetched>, SyncError> {
    let Ok(build) = serde_json::from_str::<Build>(&pending.payload) else {
        return Ok(Vec::new());
    };
    // A 404 belongs to this build alone (deleted, expired artifacts, a log that is gone):
    // go on without what is missing.
    let gone = |result: Result<Vec<enrich::Fetched>, SyncError>, what: &str| match result {
        Err(SyncError::Source(e @ SourceError::Gone { .. })) => {
            tracing::warn!(build = pending.label, "{what} skipped: {e}");
            Ok(Vec::new())
        }
        other => other,
    };
    let mut fetched = Vec::new();
    if super::builds::lists_artifacts(&app.config, &build) {
        let tests = test_results::collect(app, &build, &pending.label).await;
        fetched.extend(gone(tests, "test results")?);
    }
    if app.config.logs_enabled() {
        let log = logs::collect(app, &build, &pending.payload).await;
        fetched.extend(gone(log.map(Vec::from_iter), "logs")?);
    }
    Ok(fetched)
}
