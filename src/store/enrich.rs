//! Builds waiting for their test results and logs to be fetched. A build is added in the
//! same transaction that queues it; it leaves in the same transaction that queues what was
//! fetched for it, so a crash in between only means fetching again.

use rusqlite::{params, Connection, Transaction};

use super::outbox::{self, NewItem};

/// A build to enrich.
#[derive(Debug, Clone)]
pub struct Pending {
    pub build_id: String,
    pub version: String,
    pub label: String,
    pub payload: String,
    pub attempts: u32,
}

/// An item fetched for a build: its outbox kind, key within the kind, and body.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub kind: &'static str,
    pub key: String,
    pub payload: String,
}

/// Adds (or refreshes, for a re-finished build) a build to enrich.
pub fn add(
    tx: &Transaction<'_>,
    build_id: &str,
    version: &str,
    label: &str,
    payload: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO enrich (build_id, version, label, payload) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (build_id) DO UPDATE SET version = excluded.version,
             label = excluded.label, payload = excluded.payload,
             attempts = 0, next_attempt_at = 0, last_error = NULL
         WHERE excluded.version >= enrich.version",
    )?
    .execute(params![build_id, version, label, payload])?;
    Ok(())
}

/// Up to `limit` builds due by `now_ms`.
pub fn due(conn: &Connection, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Pending>> {
    let mut stmt = conn.prepare_cached(
        "SELECT build_id, version, label, payload, attempts FROM enrich
         WHERE next_attempt_at <= ?1 ORDER BY next_attempt_at, build_id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
        Ok(Pending {
            build_id: r.get(0)?,
            version: r.get(1)?,
            label: r.get(2)?,
            payload: r.get(3)?,
            attempts: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Queues what was fetched for a build (after the build) and forgets the build, unless it
/// finished again meanwhile.
pub fn complete(
    conn: &mut Connection,
    build: &Pending,
    fetched: &[Fetched],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let removed = tx.execute(
        "DELETE FROM enrich WHERE build_id = ?1 AND version = ?2",
        params![build.build_id, build.version],
    )?;
    if removed == 1 {
        for item in fetched {
            let new = NewItem {
                kind: item.kind,
                key: &item.key,
                version: &build.version,
                label: &build.label,
                payload: &item.payload,
                dead: None,
                parent: Some(&build.build_id),
            };
            outbox::upsert(&tx, &new, now_ms)?;
        }
    }
    tx.commit()
}

/// Tries a build again at `at_ms` after `error`.
pub fn retry_at(
    conn: &Connection,
    build: &Pending,
    at_ms: i64,
    error: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE enrich SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4
         WHERE build_id = ?1 AND version = ?2",
        params![build.build_id, build.version, at_ms, error],
    )?;
    Ok(())
}

/// How many builds wait to be enriched.
pub fn count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM enrich", [], |r| r.get(0))
}
