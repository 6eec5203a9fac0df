//! Backfill checkpoints: for each (since, until) range, the `created_to` bound of the part
//! still to walk. Saved in the same transaction as each page, so an interrupted backfill
//! resumes where it stopped without re-fetching what it had finished.

use rusqlite::{params, Connection, Params, Transaction};

/// Where a backfill of one range stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    pub(crate) since: String,
    pub(crate) until: String,
    /// Started without `--until`: the range ends when it first started.
    pub(crate) open_ended: bool,
    /// Everything created at or after this is done (the `created_to` of the next page).
    pub(crate) upper: String,
    pub(crate) done: bool,
    pub pages: u64,
    /// Finished builds walked so far.
    pub(crate) builds: u64,
}

impl Checkpoint {
    /// A range not started yet.
    pub(crate) fn new(since: &str, until: &str, open_ended: bool) -> Checkpoint {
        Checkpoint {
            since: since.to_string(),
            until: until.to_string(),
            open_ended,
            upper: until.to_string(),
            done: false,
            pages: 0,
            builds: 0,
        }
    }
}

/// The saved checkpoint of a range, if it was started. With no `until`, the range that was
/// started from `since` without one.
pub(crate) fn load(
    conn: &Connection,
    since: &str,
    until: Option<&str>,
) -> rusqlite::Result<Option<Checkpoint>> {
    let only = "WHERE since = ?1 AND (until = ?2 OR (?2 IS NULL AND open_ended))
                ORDER BY until DESC LIMIT 1";
    Ok(select(conn, only, params![since, until])?.pop())
}

/// Every backfill checkpoint, newest range first.
pub(crate) fn all(conn: &Connection) -> rusqlite::Result<Vec<Checkpoint>> {
    select(conn, "ORDER BY updated_at DESC", [])
}

/// The checkpoints `rest` (the SQL after `FROM backfill`) selects.
fn select(conn: &Connection, rest: &str, params: impl Params) -> rusqlite::Result<Vec<Checkpoint>> {
    let sql =
        format!("SELECT since, until, open_ended, upper, done, pages, builds FROM backfill {rest}");
    conn.prepare(&sql)?
        .query_map(params, |r| {
            Ok(Checkpoint {
                since: r.get(0)?,
                until: r.get(1)?,
                open_ended: r.get(2)?,
                upper: r.get(3)?,
                done: r.get(4)?,
                pages: r.get(5)?,
                builds: r.get(6)?,
            })
        })?
        .collect()
}

/// Saves a checkpoint (inside the page's transaction).
pub(crate) fn save(tx: &Transaction<'_>, cp: &Checkpoint) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO backfill
             (since, until, open_ended, upper, done, pages, builds, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         ON CONFLICT (since, until) DO UPDATE SET
             upper = excluded.upper, done = excluded.done, pages = excluded.pages, builds = excluded.builds, updated_at = excluded.updated_at",
    )?
    .execute(params![
        cp.since,
        cp.until,
        cp.open_ended,
        cp.upper,
        cp.done,
        cp.pages,
        cp.builds
    ])?;
    Ok(())
}
