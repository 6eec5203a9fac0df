//! `--backfill`: every finished build created in a time range, walked newest first.
//!
//! Buildkite lists builds newest-first and refuses to page deep ("Listing builds this deep
//! is not supported"), so the range is walked in `created_from`/`created_to` windows. A
//! window starts at the range's lower bound and at the checkpoint's upper bound; each page
//! moves the upper bound down to just above its oldest build (builds created in that same
//! millisecond are fetched again by the next window and skipped). When a window reaches the depth limit, the next window
//! starts from there: it learns the limit from the first 400 and afterwards narrows before
//! hitting it. The checkpoint is saved with each page, so an interrupted backfill resumes
//! without re-fetching what it finished.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::builds::{select, PollError};
use crate::app::App;
use crate::buildkite::{BuildQuery, SourceError};
use crate::store::backfill::{self, Checkpoint};
use crate::store::cursor::{self, timestamp, Progress};
use crate::store::now_ms;

/// Reports progress as the walk goes; called after each page.
pub trait Observer {
    /// `fraction` of the range's time span walked, in [0, 1].
    fn page(&mut self, checkpoint: &Checkpoint, fraction: f64, requests: u64, budget_waits: u64);
    /// A new window starts below `upper`.
    fn window(&mut self, checkpoint: &Checkpoint);
}

/// What a backfill run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillReport {
    /// The checkpoint at the end (its counts include earlier, interrupted runs).
    pub checkpoint: Checkpoint,
    /// Builds newly queued by this run.
    pub queued: usize,
    /// True when this run continued an interrupted one.
    pub resumed: bool,
}

/// Just what the walk needs of a listed build, read even from builds that do not decode.
#[derive(Deserialize)]
struct Created {
    id: String,
    created_at: Option<DateTime<Utc>>,
}

/// Walks `[since, until)` and queues every finished build created in it. Without `until`,
/// the range ends when the first run from this `since` started, so running the same command
/// again resumes it (or finds it done).
pub async fn run(
    app: &App,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    observer: &mut dyn Observer,
) -> Result<BackfillReport, PollError> {
    let from = timestamp(since);
    let key = (from.clone(), until.map(timestamp));
    let saved = app
        .store
        .call(move |c| backfill::load(c, &key.0, key.1.as_deref()))
        .await?;
    let resumed = saved.as_ref().is_some_and(|cp| !cp.done && cp.pages > 0);
    let mut cp = saved.unwrap_or_else(|| {
        let to = timestamp(until.unwrap_or_else(Utc::now));
        Checkpoint::new(&from, &to, until.is_none())
    });
    let until = parse(&cp.until).unwrap_or_else(Utc::now);
    let mut report = BackfillReport {
        checkpoint: cp.clone(),
        queued: 0,
        resumed,
    };
    let span = (until - since).num_milliseconds().max(1) as f64;
    let org = &app.config.buildkite.organization;
    let mut depth: Option<u64> = None;
    let mut boundary: Vec<String> = Vec::new();
    while !cp.done {
        let window_top = cp.upper.clone();
        cp.windows += 1;
        observer.window(&cp);
        let query = BuildQuery {
            created_from: Some(since),
            created_to: Some(parse(&cp.upper).unwrap_or(until)),
            branches: app.config.buildkite.branches.clone(),
            ..BuildQuery::default()
        };
        let mut url = app.client.builds_url(&query);
        let mut page_in_window = 0;
        loop {
            page_in_window += 1;
            let page = match app.client.builds_page(&url).await {
                Ok(page) => page,
                Err(SourceError::TooDeep { .. }) if page_in_window > 1 => {
                    depth = Some(page_in_window - 1);
                    tracing::debug!(
                        depth = page_in_window - 1,
                        "learned Buildkite's depth limit"
                    );
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let created: Vec<(String, DateTime<Utc>)> = page
                .items
                .iter()
                .filter_map(|i| {
                    let c = serde_json::from_str::<Created>(&i.raw).ok()?;
                    Some((c.id, c.created_at?))
                })
                .collect();
            let oldest = created.iter().map(|(_, t)| *t).min();
            let next = page.next.clone();
            let (mut entries, _) = select(org, &app.config.buildkite.pipelines, page.items, &url);
            // The previous window's oldest builds come first again: already recorded.
            entries.retain(|e| !boundary.contains(&e.build_id));
            boundary = created
                .into_iter()
                .filter(|(_, t)| Some(*t) == oldest)
                .map(|(id, _)| id)
                .collect();
            cp.pages += 1;
            cp.builds += entries.len() as u64;
            match (oldest, &next) {
                (Some(oldest), Some(_)) => {
                    cp.upper = timestamp(oldest + chrono::Duration::milliseconds(1));
                }
                _ => {
                    cp.upper = from.clone();
                    cp.done = true;
                }
            }
            let saved = cp.clone();
            report.queued += app
                .store
                .call(move |c| {
                    cursor::record_page(c, &entries, Progress::Backfill(&saved), now_ms())
                })
                .await?;
            let walked = parse(&cp.upper).map_or(span, |u| (until - u).num_milliseconds() as f64);
            let budget = app.client.budget();
            observer.page(
                &cp,
                (walked / span).clamp(0.0, 1.0),
                app.client.requests(),
                budget.waits(),
            );
            match next {
                Some(n) if depth != Some(page_in_window) => url = n,
                _ => break,
            }
        }
        if !cp.done && cp.upper == window_top {
            // A whole window of builds created in the same millisecond: skip past them
            // rather than loop forever.
            let step = parse(&cp.upper).map(|u| timestamp(u - chrono::Duration::milliseconds(1)));
            tracing::warn!(
                upper = cp.upper,
                "cannot narrow the window further; skipping one millisecond"
            );
            cp.upper = step.unwrap_or_else(|| from.clone());
        }
    }
    report.checkpoint = cp;
    Ok(report)
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
