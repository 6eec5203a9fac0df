//! The poll cursor: the high-water mark.
//!
//! A poll asks Buildkite for builds with `finished_at >= high-water mark - overlap`. Each page
//! is recorded in one transaction ([`super::builds::record_page`]). The high-water mark
//! itself moves only when a poll has walked every page: the list is ordered by creation, not
//! by finish, so a crash after the first page must not skip builds on the later ones. A
//! crashed poll is simply walked again; the seen-set makes that free of duplicates.

use chrono::{DateTime, Duration, Utc};
use rusqlite::Connection;

use super::state::{self, Key};
use crate::clock::{self, timestamp};

/// Sets the high-water mark if there is none yet (a backfill that ends now, before the
/// daemon ever ran, hands over to it this way).
pub(crate) fn seed_high_water_mark(conn: &Connection, mark: &str) -> rusqlite::Result<()> {
    state::set_if_unset(conn, Key::HighWaterMark, mark)
}

/// The latest `finished_at` of a fully walked poll, if any.
pub(crate) fn high_water_mark(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(state::get(conn, Key::HighWaterMark)?
        .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// Ends a fully walked poll: the high-water mark moves forward to `mark` (never back), and
/// seen builds that finished more than `keep` before it are forgotten (no poll asks for them).
pub(crate) fn complete_cycle(
    conn: &mut Connection,
    mark: Option<&str>,
    keep: Duration,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let current = state::get(&tx, Key::HighWaterMark)?;
    if let Some(mark) = current.into_iter().chain(mark.map(str::to_string)).max() {
        state::set(&tx, Key::HighWaterMark, &mark)?;
        if let Some(horizon) = DateTime::parse_from_rfc3339(&mark)
            .ok()
            .and_then(|t| t.with_timezone(&Utc).checked_sub_signed(keep))
        {
            tx.execute(
                "DELETE FROM seen WHERE finished_at < ?1",
                [timestamp(horizon)],
            )?;
        }
    }
    state::set(&tx, Key::LastPollOkAt, &timestamp(clock::now()))?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::builds::{record_page, Entry, Progress};
    use crate::store::{outbox, Store};

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
