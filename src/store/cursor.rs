//! The poll cursor and the seen-set.
//!
//! A poll asks Buildkite for builds with `finished_at >= high-water mark - overlap`. Each page
//! is recorded in one transaction: its new (build id, finished_at) pairs go into `seen` and
//! the outbox. The high-water mark itself moves only when a poll has walked every page: the
//! list is ordered by creation, not by finish, so a crash after the first page must not skip
//! builds on the later ones. A crashed poll is simply walked again; `seen` makes that free
//! of duplicates.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{backfill, enrich, outbox};

/// One finished build of a page, ready for the outbox.
#[derive(Debug, Clone)]
pub struct Entry {
    pub build_id: String,
    /// Canonical RFC 3339 with milliseconds, so that text order is time order.
    pub finished_at: String,
    pub label: String,
    pub payload: String,
    /// Set when the build cannot be delivered as it is (it goes straight to dead letters).
    pub dead: Option<String>,
    /// True when its test results or logs are to be fetched too.
    pub enrich: bool,
}

/// The canonical text form of a time in the state database.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

fn set(tx: &Transaction<'_>, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO state (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn newer_seen(tx: &Transaction<'_>, build_id: &str, finished_at: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM seen WHERE build_id = ?1 AND finished_at > ?2 LIMIT 1")?
        .exists(params![build_id, finished_at])
}

/// Queues builds again whether or not they were delivered (`replay`), in one transaction.
pub fn requeue(conn: &mut Connection, entries: &[Entry], now_ms: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for e in entries {
        queue(&tx, e, now_ms, true)?;
    }
    tx.commit()
}

/// Queues one build (and its test results and logs to fetch) unless a newer finish of it
/// was seen, or — unless `again` — this very finish was already queued once. Returns
/// whether it was queued.
fn queue(tx: &Transaction<'_>, e: &Entry, now_ms: i64, again: bool) -> rusqlite::Result<bool> {
    if newer_seen(tx, &e.build_id, &e.finished_at)? {
        // Fetched before the build finished again (by another process, a moment ago):
        // never queue an older result over a newer one.
        return Ok(false);
    }
    let first = tx
        .prepare_cached("INSERT OR IGNORE INTO seen (build_id, finished_at) VALUES (?1, ?2)")?
        .execute(params![e.build_id, e.finished_at])?
        == 1;
    if !first && !again {
        return Ok(false);
    }
    let item = outbox::NewItem {
        kind: "build",
        key: &e.build_id,
        version: &e.finished_at,
        label: &e.label,
        payload: &e.payload,
        dead: e.dead.as_deref(),
        parent: None,
    };
    outbox::upsert(tx, &item, now_ms)?;
    if e.enrich && e.dead.is_none() {
        enrich::add(tx, &e.build_id, &e.finished_at, &e.label, &e.payload)?;
    }
    Ok(true)
}

/// Sets the high-water mark if there is none yet (a backfill that ends now, before the
/// daemon ever ran, hands over to it this way).
pub fn seed_high_water_mark(conn: &Connection, mark: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO state (key, value) VALUES ('high_water_mark', ?1)",
        [mark],
    )?;
    Ok(())
}

/// A value of the `state` table (cursor, last successes, last rate-limit figures).
pub fn state_value(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    get(conn, key)
}

/// Saves a value in the `state` table.
pub fn set_state_value(conn: &mut Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    set(&tx, key, value)?;
    tx.commit()
}

/// The latest `finished_at` of a fully walked poll, if any.
pub fn high_water_mark(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(get(conn, "high_water_mark")?
        .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// How far a walk has got, saved with each page.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A poll: its progress is the high-water mark, saved when it completes.
    Poll,
    /// A backfill: its checkpoint after this page.
    Backfill(&'a backfill::Checkpoint),
}

/// Records one page: new (build, finished_at) pairs go to `seen` and the outbox, and the
/// walk's progress is saved — all in one transaction. Returns how many builds were new.
pub fn record_page(
    conn: &mut Connection,
    entries: &[Entry],
    progress: Progress<'_>,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut new = 0;
    for e in entries {
        if queue(&tx, e, now_ms, false)? {
            new += 1;
        }
    }
    if let Progress::Backfill(checkpoint) = progress {
        backfill::save(&tx, checkpoint)?;
    }
    tx.commit()?;
    Ok(new)
}

/// Ends a fully walked poll: the high-water mark moves forward to `mark` (never back), and
/// seen builds that finished more than `keep` before it are forgotten (no poll asks for them).
pub fn complete_cycle(
    conn: &mut Connection,
    mark: Option<&str>,
    keep: Duration,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let current = get(&tx, "high_water_mark")?;
    let mark = match (mark, current) {
        (Some(m), Some(c)) => Some(c.max(m.to_string())),
        (m, c) => m.map(str::to_string).or(c),
    };
    if let Some(mark) = &mark {
        set(&tx, "high_water_mark", mark)?;
        if let Some(horizon) = DateTime::parse_from_rfc3339(mark)
            .ok()
            .and_then(|t| t.with_timezone(&Utc).checked_sub_signed(keep))
        {
            tx.execute(
                "DELETE FROM seen WHERE finished_at < ?1",
                [timestamp(horizon)],
            )?;
        }
    }
    set(&tx, "last_poll_ok_at", &timestamp(Utc::now()))?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const NONE: Progress<'static> = Progress::Poll;

    fn entry(id: &str, finished_at: &str) -> Entry {
        Entry {
            build_id: id.into(),
            finished_at: finished_at.into(),
            label: format!("acme/web#{id}"),
            payload: "{}".into(),
            dead: None,
            enrich: false,
        }
    }

    #[tokio::test]
    async fn refinished_build_is_new_again_and_replaces_its_outbox_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let n = store
            .call(|c| {
                let first = record_page(c, &[entry("b1", "2026-01-01T00:00:00.000Z")], NONE, 0)?;
                let again = record_page(c, &[entry("b1", "2026-01-01T00:00:00.000Z")], NONE, 0)?;
                let refinished =
                    record_page(c, &[entry("b1", "2026-01-01T01:00:00.000Z")], NONE, 0)?;
                let rows = outbox::due(c, 0, 10)?;
                Ok((first, again, refinished, rows))
            })
            .await
            .expect("db");
        assert_eq!((n.0, n.1, n.2), (1, 0, 1));
        assert_eq!(n.3.len(), 1, "one outbox row per build");
        assert_eq!(n.3[0].version, "2026-01-01T01:00:00.000Z");
    }

    #[tokio::test]
    async fn an_older_version_fetched_late_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let (queued, rows) = store
            .call(|c| {
                record_page(c, &[entry("b1", "2026-01-01T01:00:00.000Z")], NONE, 0)?;
                let late = record_page(c, &[entry("b1", "2026-01-01T00:00:00.000Z")], NONE, 0)?;
                Ok((late, outbox::due(c, 0, 10)?))
            })
            .await
            .expect("db");
        assert_eq!(queued, 0);
        assert_eq!(rows[0].version, "2026-01-01T01:00:00.000Z");
    }

    #[tokio::test]
    async fn mark_moves_only_when_a_cycle_completes_and_old_seen_rows_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let (mid, end, seen) = store
            .call(|c| {
                let page = [
                    entry("old", "2026-01-01T00:00:00.000Z"),
                    entry("new", "2026-01-02T00:00:00.000Z"),
                ];
                record_page(c, &page, NONE, 0)?;
                let mid = high_water_mark(c)?;
                complete_cycle(c, Some("2026-01-02T00:00:00.000Z"), Duration::hours(1))?;
                complete_cycle(c, Some("2026-01-01T12:00:00.000Z"), Duration::hours(1))?;
                let end = high_water_mark(c)?;
                let seen: i64 = c.query_row("SELECT count(*) FROM seen", [], |r| r.get(0))?;
                Ok((mid, end, seen))
            })
            .await
            .expect("db");
        assert_eq!(mid, None, "an unfinished cycle does not move the mark");
        assert_eq!(
            end.map(timestamp).as_deref(),
            Some("2026-01-02T00:00:00.000Z")
        );
        assert_eq!(seen, 1, "the build a day older than the mark is pruned");
    }
}
