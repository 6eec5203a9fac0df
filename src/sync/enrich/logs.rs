//! Logs: for a failed build, the tail of each failed job's log (a suffix `Range` request),
//! joined under a header per job and capped at `[logs] max_bytes` in all.

use serde_json::value::RawValue;

use crate::buildkite::{Build, SourceError};
use crate::item::{Kind, Log};
use crate::store::enrich::Fetched;
use crate::sync::Parts;
use crate::sync::SyncError;

/// The log item for a failed build (listed as `raw`), if it has failed steps.
pub(crate) async fn collect(
    app: Parts<'_>,
    build: &Build,
    raw: &str,
) -> Result<Option<Fetched>, SyncError> {
    let max = app.config.logs.max_bytes;
    let mut content = String::new();
    // A job whose log is gone (Buildkite's 404: deleted or expired) costs only its own tail;
    // when every failed job's log is gone, the step is gone as a whole.
    let (mut fetched, mut gone) = (0usize, None);
    for job in build.failed_steps() {
        let header = format!("--- {} ({}) ---\n", job.display_name(), job.id);
        let tail = app
            .client
            .log_tail(build.pipeline_slug(), build.number, &job.id, max)
            .await;
        let tail = match tail {
            Ok(tail) => tail,
            Err(e @ SourceError::Gone { .. }) => {
                tracing::warn!(build = build.id, job = job.id, "job log skipped: {e}");
                content.push_str(&header);
                content.push_str("(log no longer available at Buildkite: deleted or expired)\n");
                gone = Some(e);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        fetched += 1;
        content.push_str(&header);
        content.push_str(&tail);
        if !tail.ends_with('\n') {
            content.push('\n');
        }
    }
    if let (0, Some(e)) = (fetched, gone) {
        return Err(e.into());
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
    let build_json = RawValue::from_string(raw.to_string()).map_err(SyncError::encode("a log"))?;
    let log = Log {
        build: build_json,
        content,
    };
    Ok(Some(Fetched {
        kind: Kind::Log,
        key: build.id.clone(),
        payload: serde_json::to_string(&log).map_err(SyncError::encode("a log"))?,
    }))
}
