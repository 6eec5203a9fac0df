//! `kitesync status`: how things stand, from the state database alone (no network).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::buildkite::budget::{Scope, Seen};
use crate::cli::exit::Error;
use crate::clock::{now_ms, timestamp};
use crate::item::Kind;
use crate::store::backfill::{self, Checkpoint};
use crate::store::enrich::{self, Totals};
use crate::store::outbox::{self, DeadLetter};
use crate::store::refusal::{self, Refusal};
use crate::store::state::{self, Key};
use crate::store::Store;

/// Everything `status` shows.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) state_path: String,
    /// The poll cursor: builds that finished from this time, less the overlap, are asked for.
    pub(crate) high_water_mark: Option<String>,
    pub(crate) last_poll_ok_at: Option<String>,
    pub(crate) last_delivery_ok_at: Option<String>,
    pub(crate) agents_polled_at: Option<String>,
    /// Items in the outbox, by kind and state.
    pub(crate) outbox: Vec<Depth>,
    pub(crate) pending: u64,
    pub(crate) dead: u64,
    /// When the next pending item may be tried (RFC 3339).
    pub(crate) next_attempt_at: Option<String>,
    pub(crate) last_error: Option<String>,
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// Builds whose test results or logs are still to be fetched.
    pub(crate) enrich_waiting: u64,
    /// Test results and logs: what waits, what was spent and skipped.
    pub(crate) enrich: Enrich,
    pub(crate) backfills: Vec<Checkpoint>,
    /// The Buildkite budgets as last seen.
    pub(crate) rate_limit: Option<Seen>,
    /// A refusal from Buildkite the daemon is riding out (polls that worked before now
    /// answered 401, 403 or 404).
    pub(crate) buildkite_refusal: Option<Refusal>,
}

/// Test results and logs, as `status` shows them.
#[derive(Debug, Serialize)]
pub(crate) struct Enrich {
    /// Builds whose test results or logs are still to be fetched.
    pub(crate) builds: u64,
    /// JUnit files listed and still to be fetched (builds not listed yet have more).
    pub(crate) files: u64,
    /// When the oldest waiting build was queued (RFC 3339), and how long ago in seconds.
    pub(crate) oldest_queued_at: Option<String>,
    pub(crate) oldest_age_seconds: Option<i64>,
    /// What enrichment has spent (Buildkite requests) and skipped since the state database
    /// was created.
    pub(crate) totals: Totals,
}

/// Outbox items of one kind in one state.
#[derive(Debug, Serialize)]
pub(crate) struct Depth {
    pub(crate) kind: Kind,
    pub(crate) state: String,
    pub(crate) count: u64,
}

/// Reads the status of the state database at `path`.
pub(crate) async fn read(path: &Path) -> Result<Status, Error> {
    if !path.exists() {
        return Err(Error::Missing(format!(
            "no state database at {}: kitesync has not run with this config yet",
            path.display()
        )));
    }
    let store = Store::open_read_only(path)?;
    let state_path = path.display().to_string();
    store
        .call(move |c| {
            let value = |k: Key| state::get(c, k);
            let summary = outbox::summary(c)?;
            let backlog = enrich::backlog(c)?;
            let oldest = backlog
                .oldest_queued_at
                .and_then(chrono::DateTime::from_timestamp_millis);
            Ok(Status {
                state_path,
                high_water_mark: value(Key::HighWaterMark)?,
                last_poll_ok_at: value(Key::LastPollOkAt)?,
                last_delivery_ok_at: value(Key::LastDeliveryOkAt)?,
                agents_polled_at: value(Key::AgentsPolledAt)?,
                outbox: outbox::depth(c)?
                    .into_iter()
                    .map(|(kind, state, count)| Depth { kind, state, count })
                    .collect(),
                pending: summary.pending,
                dead: summary.dead,
                next_attempt_at: summary
                    .next_attempt_at
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(timestamp),
                last_error: summary.last_error,
                dead_letters: outbox::dead_letters(c, u32::MAX)?,
                enrich_waiting: backlog.builds,
                enrich: Enrich {
                    builds: backlog.builds,
                    files: backlog.files,
                    oldest_queued_at: oldest.map(timestamp),
                    oldest_age_seconds: backlog
                        .oldest_queued_at
                        .map(|at| (now_ms() - at).max(0) / 1000),
                    totals: enrich::totals(c)?,
                },
                backfills: backfill::all(c)?,
                rate_limit: value(Key::RateLimit)?.and_then(|v| serde_json::from_str(&v).ok()),
                buildkite_refusal: refusal::get(c)?,
            })
        })
        .await
        .map_err(Error::from)
}

/// The status as a table for people.
pub(crate) fn render(s: &Status) -> String {
    let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_string());
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<22} {v}");
    };
    line("state database", s.state_path.clone());
    let cursor = or(&s.high_water_mark, "not set: the first poll looks back");
    line("cursor (finished at)", cursor);
    line("last poll ok", or(&s.last_poll_ok_at, "never"));
    if let Some(r) = &s.buildkite_refusal {
        let text = format!(
            "since {}, {} polls, next try {}: {}",
            r.since, r.attempts, r.next_attempt_at, r.error
        );
        line("BUILDKITE REFUSES", text);
    }
    line("last delivery ok", or(&s.last_delivery_ok_at, "never"));
    line("last agent poll", or(&s.agents_polled_at, "never"));
    let depth = if s.outbox.is_empty() {
        "empty".to_string()
    } else {
        s.outbox
            .iter()
            .map(|d| format!("{} {} {}", d.count, d.kind.as_str(), d.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    line("outbox", depth);
    if s.pending > 0 {
        line("next attempt", or(&s.next_attempt_at, "now"));
        line("last error", or(&s.last_error, "none"));
    }
    let e = &s.enrich;
    let due = match (e.builds, &e.oldest_queued_at, e.oldest_age_seconds) {
        (0, _, _) => "0 builds".to_string(),
        (n, Some(at), Some(age)) => {
            format!(
                "{n} builds ({} files listed), the oldest queued {age}s ago ({at})",
                e.files
            )
        }
        (n, _, _) => format!("{n} builds ({} files listed)", e.files),
    };
    line("test results/logs due", due);
    let t = &e.totals;
    let spent = format!(
        "{} artifact listings, {} downloads, {} logs",
        t.listings, t.downloads, t.logs
    );
    line("enrich requests", spent);
    let skipped = format!(
        "{} by cap ({} over max_files_per_build, {} over max_bytes_per_build, {} over max_file_bytes), {} given up",
        t.skipped(),
        t.skipped_files_per_build,
        t.skipped_bytes_per_build,
        t.skipped_file_bytes,
        t.given_up
    );
    line("JUnit files skipped", skipped);
    if let Some(seen) = &s.rate_limit {
        let scope = |s: Option<Scope>| s.map_or("not reported".to_string(), |s| s.to_string());
        let (org, user) = (scope(seen.budgets.org), scope(seen.budgets.user));
        let budget = format!("organization {org}, user {user} (at {})", seen.at);
        line("rate budget (last seen)", budget);
        if let Some(pace) = seen.pace {
            line("pace (last poll)", pace.to_string());
        }
    }
    for b in &s.backfills {
        let state = if b.done {
            "done".to_string()
        } else {
            format!("resumes below {}", b.upper)
        };
        let text = format!(
            "{} to {}: {state}, {} pages, {} builds",
            b.since, b.until, b.pages, b.builds
        );
        line("backfill", text);
    }
    if !s.dead_letters.is_empty() {
        let n = s.dead_letters.len();
        let _ = writeln!(
            out,
            "\ndead letters ({n}), re-send with `kitesync replay --dead`:"
        );
        for d in &s.dead_letters {
            let (kind, label, attempts) = (d.kind.as_str(), &d.label, d.attempts);
            let excused = match (d.excused(), d.cause) {
                (false, _) => "",
                (true, None) => " [dead before kitesync recorded why: does not fail a run]",
                (true, Some(_)) => " [refused for its content: does not fail a run]",
            };
            let _ = writeln!(
                out,
                "  {kind} {label} ({attempts} tries): {}{excused}",
                d.error
            );
        }
    }
    out
}
