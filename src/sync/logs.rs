//! Logs: for a failed build, the tail of each failed job's log (a suffix `Range` request),
//! joined under a header per job and capped at `[logs] max_bytes` in all.

use crate::app::App;
use crate::buildkite::{Build, SourceError};
use crate::butler::wire;
use crate::store::enrich::Fetched;

/// The build-logs item for a failed build, if it has failed steps.
pub async fn collect(app: &App, build: &Build) -> Result<Option<Fetched>, SourceError> {
    let max = app.config.logs.max_bytes;
    let mut content = String::new();
    for job in build.failed_steps() {
        let tail = app
            .client
            .log_tail(build.pipeline_slug(), build.number, &job.id, max)
            .await?;
        content.push_str(&format!("--- {} ({}) ---\n", job.display_name(), job.id));
        content.push_str(&tail);
        if !tail.ends_with('\n') {
            content.push('\n');
        }
    }
    if content.is_empty() {
        return Ok(None);
    }
    let keep = usize::try_from(max).unwrap_or(usize::MAX);
    if content.len() > keep {
        let mut cut = content.len() - keep;
        while !content.is_char_boundary(cut) {
            cut += 1;
        }
        content.drain(..cut);
    }
    let org = &app.config.buildkite.organization;
    let body = wire::log(org, build, &content, app.config.buildbutler.status_case);
    Ok(Some(Fetched {
        kind: "log",
        key: build.id.clone(),
        payload: serde_json::to_string(&body).unwrap_or_default(),
    }))
}
