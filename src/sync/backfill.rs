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

use std::fmt;

use chrono::{DateTime, Utc};

use super::builds::{note_ignored, select};
use super::walk::Walk;
use super::{Parts, SyncError};
use crate::buildkite::BuildQuery;
use crate::clock::{self, now_ms, timestamp};
use crate::store::backfill::{self, Checkpoint};
use crate::store::builds::{self as page, record_page, requeue};
use crate::store::cursor;
use crate::store::enrich::{self, Backlog};

/// How far a backfill has got, after a page.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub(crate) checkpoint: &'a Checkpoint,
    /// The share of the range's time span walked, in [0, 1].
    pub(crate) fraction: f64,
    /// Buildkite requests and budget waits so far.
    pub(crate) requests: u64,
    pub(crate) budget_waits: u64,
    /// Test results and logs still to fetch.
    pub(crate) backlog: Backlog,
}

/// Reports progress as the walk goes.
pub trait Observer {
    /// After each page.
    fn page(&mut self, progress: &Progress<'_>);
    /// Once, after the first page, when test results are fetched for the range: what they
    /// will cost.
    fn estimate(&mut self, _estimate: &Estimate) {}
    /// Every second or so after the walk, while the rest of the test results and logs are
    /// fetched (`requests` so far).
    fn enriching(&mut self, _backlog: &Backlog, _requests: u64) {}
}

/// What a backfill with test results will cost, estimated from its first page: about one
/// request per 100 builds for the walk, one artifact listing per build that ran a command
/// step, and one request per JUnit file (and per failed job's log, with logs on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Finished builds on the first page, and how many of them will have their artifacts
    /// listed.
    pub(crate) page_builds: u64,
    pub(crate) page_listed: u64,
    /// Finished builds estimated for the range (what is left of it, when resumed).
    pub(crate) builds: u64,
    /// Requests estimated for the walk, and for the artifact listings.
    pub(crate) walk_requests: u64,
    pub(crate) listings: u64,
    /// Whether failed jobs' logs are fetched too.
    pub(crate) logs: bool,
    /// Requests a minute test results and logs may use at the configured pace (every slot
    /// the polls leave, up to `[enrich] max_share_percent`).
    pub(crate) per_minute: u64,
    /// The same under `--pace free`, from the budgets Buildkite reported last (`None` when
    /// it reports none).
    pub(crate) free_per_minute: Option<u64>,
}

/// How long `requests` take at `per_minute`, in words.
fn duration(requests: u64, per_minute: u64) -> String {
    match requests.div_ceil(per_minute.max(1)) {
        0 | 1 => "about a minute".to_string(),
        m if m < 120 => format!("about {m} minutes"),
        m => format!("about {} hours", m.div_ceil(60)),
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = duration(self.listings, self.per_minute);
        let free = match self.free_per_minute {
            Some(free) => format!(
                "; under --pace free, at what Buildkite's budgets show free now ({free} a minute), {}",
                duration(self.listings, free)
            ),
            None => String::new(),
        };
        let logs = if self.logs {
            ", and one per failed job's log"
        } else {
            ""
        };
        write!(
            f,
            "test results are on for this backfill: about {} finished builds in the range cost about {} requests to walk, plus about {} artifact listings (one per build that ran a command step: {} of the first page's {}) and one request per JUnit file{logs}; at the configured pace, {} requests a minute, the listings alone take {took}{free}. --without-test-results (or [enrich] backfill = false) skips test results and logs for the range",
            self.builds, self.walk_requests, self.listings, self.page_listed, self.page_builds, self.per_minute
        )
    }
}

/// What a backfill run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillReport {
    /// The checkpoint at the end (its counts include earlier, interrupted runs).
    pub checkpoint: Checkpoint,
    /// Builds newly queued by this run.
    pub(crate) queued: usize,
    /// True when this run continued an interrupted one.
    pub(crate) resumed: bool,
}

/// Walks `[since, until)` and queues every finished build created in it, with its test
/// results and logs to fetch when `enrich_range`. Without `until`, the range ends when the
/// first run from this `since` started, so running the same command again resumes it (or
/// finds it done).
pub(crate) async fn run(
    app: Parts<'_>,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    enrich_range: bool,
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
        let to = timestamp(until.unwrap_or_else(clock::now));
        Checkpoint::new(&from, &to, until.is_none())
    });
    let mut report = BackfillReport {
        checkpoint: cp.clone(),
        queued: 0,
        resumed,
    };
    let end = parse(&cp.until).unwrap_or_else(clock::now);
    let span = (end - since).num_milliseconds().max(1) as f64;
    let bk = &app.config.buildkite;
    let mut walk = Walk::buildkite(BuildQuery {
        created_from: Some(since),
        created_to: parse(&cp.upper).or(Some(end)),
        branches: bk.branches.clone(),
        ..BuildQuery::default()
    });
    // Where this run starts: the estimate scales its first page to what is left from here.
    let start = parse(&cp.upper).unwrap_or(end).min(end);
    let mut first = true;
    while !cp.done {
        let Some(page) = walk.next(app.client).await? else {
            break;
        };
        let selection = select(app.config, page.items, &page.endpoint, enrich_range);
        // Named in the log; a backfill serves no metrics.
        note_ignored(&selection.ignored, &mut Default::default());
        let entries = selection.entries;
        cp.pages += 1;
        cp.builds += entries.len() as u64;
        cp.done = walk.is_done();
        cp.upper = if cp.done {
            from.clone()
        } else {
            walk.upper().map_or_else(|| from.clone(), timestamp)
        };
        let page_builds = entries.len() as u64;
        let page_listed = entries.iter().filter(|e| e.enrich).count() as u64;
        let saved = cp.clone();
        let (queued, backlog) = app
            .store
            .call(move |c| {
                let queued = record_page(c, &entries, page::Progress::Backfill(&saved), now_ms())?;
                Ok((queued, enrich::backlog(c)?))
            })
            .await?;
        report.queued += queued;
        let walked = parse(&cp.upper).map_or(span, |u| (end - u).num_milliseconds() as f64);
        let fraction = (walked / span).clamp(0.0, 1.0);
        if std::mem::take(&mut first) && enrich_range && app.config.tests_enabled() {
            // The first page covers this share of what is left of the range.
            let covered = |upper: &str| parse(upper).map_or(since, |u| u.max(since));
            let (left, walked) = (start - since, start - covered(&cp.upper));
            let share = match left.num_milliseconds() {
                ms if ms > 0 => (walked.num_milliseconds() as f64 / ms as f64).clamp(1e-6, 1.0),
                _ => 1.0,
            };
            let scale = |n: u64| (n as f64 / share).round() as u64;
            observer.estimate(&Estimate {
                page_builds,
                page_listed,
                builds: scale(page_builds),
                walk_requests: scale(1),
                listings: scale(page_listed),
                logs: app.config.logs_enabled(),
                per_minute: enrich_per_minute(app.config),
                free_per_minute: app
                    .client
                    .budget()
                    .free_pace_now()
                    .map(|free| free * u64::from(app.config.enrich.max_share_percent) / 100),
            });
        }
        observer.page(&Progress {
            checkpoint: &cp,
            fraction,
            requests: app.client.requests(),
            budget_waits: app.client.budget().waits(),
            backlog,
        });
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
pub(crate) async fn replay(
    app: Parts<'_>,
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
    while let Some(page) = walk.next(app.client).await? {
        let entries = select(app.config, page.items, &page.endpoint, true).entries;
        queued += entries.len();
        app.store
            .call(move |c| requeue(c, &entries, now_ms()))
            .await?;
    }
    Ok(queued)
}

/// Requests a minute that test results and logs may use at the configured pace: every slot,
/// up to their ceiling.
fn enrich_per_minute(config: &crate::config::Config) -> u64 {
    let rpm = u64::from(config.buildkite.requests_per_minute);
    (rpm * u64::from(config.enrich.max_share_percent) / 100).max(1)
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
