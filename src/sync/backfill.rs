//! `--backfill`: every finished build created in a time range.
//!
//! The range is walked newest first with [`Walk`]: each request is the first page of
//! `created_from=since&created_to=<just above the oldest build read so far>`, so Buildkite's
//! depth limit never applies and about one request is spent per 100 builds. The walk's upper
//! bound is the checkpoint, saved in the same transaction as each page: an interrupted
//! backfill resumes where it stopped without re-fetching what it finished.
//!
//! Time filters go out in whole seconds, widened (`since` down, the upper bound up): a
//! range with fractional ends may also list builds of the second before `since` or of the
//! rest of `until`'s second. The checkpoint is a whole second once the walk has narrowed
//! (below it nothing was skipped), or the range's own end before that.

use chrono::{DateTime, Utc};

use super::builds::select;
use super::walk::Walk;
use super::SyncError;
use crate::app::App;
use crate::buildkite::BuildQuery;
use crate::store::backfill::{self, Checkpoint};
use crate::store::builds::{record_page, requeue, Progress};
use crate::store::{cursor, now_ms, timestamp};

/// Reports progress as the walk goes; called after each page.
pub trait Observer {
    /// `fraction` of the range's time span walked, in [0, 1].
    fn page(&mut self, checkpoint: &Checkpoint, fraction: f64, requests: u64, budget_waits: u64);
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

/// Walks `[since, until)` and queues every finished build created in it. Without `until`,
/// the range ends when the first run from this `since` started, so running the same command
/// again resumes it (or finds it done).
pub async fn run(
    app: &App,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    observer: &mut dyn Observer,
) -> Result<BackfillReport, SyncError> {
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
    let mut report = BackfillReport {
        checkpoint: cp.clone(),
        queued: 0,
        resumed,
    };
    let end = parse(&cp.until).unwrap_or_else(Utc::now);
    let span = (end - since).num_milliseconds().max(1) as f64;
    let bk = &app.config.buildkite;
    let mut walk = Walk::buildkite(BuildQuery {
        created_from: Some(since),
        created_to: parse(&cp.upper).or(Some(end)),
        branches: bk.branches.clone(),
        ..BuildQuery::default()
    });
    while !cp.done {
        let Some(page) = walk.next(&app.client).await? else {
            break;
        };
        let (entries, _) = select(&app.config, page.items, &page.endpoint);
        cp.pages += 1;
        cp.builds += entries.len() as u64;
        cp.done = walk.is_done();
        cp.upper = if cp.done {
            from.clone()
        } else {
            walk.upper().map_or_else(|| from.clone(), timestamp)
        };
        let saved = cp.clone();
        report.queued += app
            .store
            .call(move |c| record_page(c, &entries, Progress::Backfill(&saved), now_ms()))
            .await?;
        let walked = parse(&cp.upper).map_or(span, |u| (end - u).num_milliseconds() as f64);
        observer.page(
            &cp,
            (walked / span).clamp(0.0, 1.0),
            app.client.requests(),
            app.client.budget().waits(),
        );
    }
    if cp.done && cp.open_ended {
        // Everything created up to `until` is queued: a daemon that never ran yet takes
        // over from there rather than from its first-poll lookback.
        let until = cp.until.clone();
        app.store
            .call(move |c| cursor::seed_high_water_mark(c, &until))
            .await?;
    }
    report.checkpoint = cp;
    Ok(report)
}

/// `replay --since`: queues again every finished build created in `[since, until)`,
/// whether or not it was delivered before (a re-send is an upsert). Returns how many.
pub async fn replay(
    app: &App,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<usize, SyncError> {
    let bk = &app.config.buildkite;
    let mut walk = Walk::buildkite(BuildQuery {
        created_from: Some(since),
        created_to: Some(until),
        branches: bk.branches.clone(),
        ..BuildQuery::default()
    });
    let mut queued = 0;
    while let Some(page) = walk.next(&app.client).await? {
        let (entries, _) = select(&app.config, page.items, &page.endpoint);
        queued += entries.len();
        app.store
            .call(move |c| requeue(c, &entries, now_ms()))
            .await?;
    }
    Ok(queued)
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
