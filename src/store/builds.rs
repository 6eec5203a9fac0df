//! The builds of a page: the seen-set decides which are new, and those go to the outbox
//! (and, when their test results or logs are wanted, to the enrich queue) in the page's
//! transaction, together with the walk's progress.

use rusqlite::{params, Connection, Transaction};

use super::{backfill, enrich, outbox};
use crate::item::Kind;

/// One finished build of a page, ready for the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) build_id: String,
    /// Canonical RFC 3339 with milliseconds, so that text order is time order.
    pub(crate) finished_at: String,
    pub(crate) label: String,
    pub(crate) payload: String,
    /// Set when the build cannot be delivered as it is (it goes straight to dead letters).
    pub(crate) dead: Option<String>,
    /// True when its test results or logs are to be fetched too.
    pub(crate) enrich: bool,
}

/// Queues builds again whether or not they were delivered (`replay`), in one transaction.
pub(crate) fn requeue(
    conn: &mut Connection,
    entries: &[Entry],
    now_ms: i64,
) -> rusqlite::Result<()> {
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
    let newer = tx
        .prepare_cached("SELECT 1 FROM seen WHERE build_id = ?1 AND finished_at > ?2 LIMIT 1")?
        .exists(params![e.build_id, e.finished_at])?;
    if newer {
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
        kind: Kind::Build,
        key: &e.build_id,
        version: &e.finished_at,
        label: &e.label,
        payload: &e.payload,
        dead: e.dead.as_deref(),
        parent: None,
    };
    outbox::upsert(tx, &item, now_ms)?;
    if e.enrich && e.dead.is_none() {
        enrich::add(tx, &item, now_ms)?;
    }
    Ok(true)
}

/// True when this finish of the build was seen (queued once) before.
pub(crate) fn seen(conn: &Connection, build_id: &str, finished_at: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM seen WHERE build_id = ?1 AND finished_at = ?2")?
        .exists(params![build_id, finished_at])
}

/// How far a walk has got, saved with each page.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Progress<'a> {
    /// A poll: its progress is the high-water mark, saved when it completes.
    Poll,
    /// A backfill: its checkpoint after this page.
    Backfill(&'a backfill::Checkpoint),
}

/// Records one page: new (build, finished_at) pairs go to `seen` and the outbox, and the
/// walk's progress is saved — all in one transaction. Returns how many builds were new.
pub(crate) fn record_page(
    conn: &mut Connection,
    entries: &[Entry],
    progress: Progress<'_>,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut new = 0;
    for e in entries {
        new += usize::from(queue(&tx, e, now_ms, false)?);
    }
    if let Progress::Backfill(checkpoint) = progress {
        backfill::save(&tx, checkpoint)?;
    }
    tx.commit()?;
    Ok(new)
}
