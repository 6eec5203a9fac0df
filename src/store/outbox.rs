//! The outbox: what must still reach BuildButler. A row leaves only after a 2xx; a row that
//! BuildButler refuses becomes a dead letter, kept with its error.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, Transaction};

use super::state::{self, Key};
use crate::item::Kind;

impl ToSql for Kind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for Kind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Kind> {
        let name = value.as_str()?;
        Kind::from_name(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown item kind {name:?}").into()))
    }
}

/// A row due for delivery.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub kind: Kind,
    pub key: String,
    /// Which version of the item this is (for a build: its `finished_at`).
    pub version: String,
    /// For people: `org/pipeline#number`.
    pub label: String,
    pub payload: String,
    pub attempts: u32,
}

/// What became of one delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered,
    /// Try again at this time (ms since the epoch), after this error.
    RetryAt(i64, String),
    /// Refused for good: keep it as a dead letter with this error.
    Dead(String),
}

/// An item to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewItem<'a> {
    pub kind: Kind,
    /// Its identity within the kind: one outbox row per key.
    pub key: &'a str,
    /// Which version of it this is; only a version at least as new replaces a queued one.
    pub version: &'a str,
    pub label: &'a str,
    pub payload: &'a str,
    /// Queue it as a dead letter straight away, with this error (e.g. undecodable).
    pub dead: Option<&'a str>,
    /// The build this item belongs to: it is delivered only once that build is.
    pub parent: Option<&'a str>,
}

/// Queues an item, or replaces the queued version of it with a newer one.
pub fn upsert(tx: &Transaction<'_>, item: &NewItem<'_>, now_ms: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO outbox
             (kind, key, version, label, payload, state, last_error, enqueued_at, parent)
         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?6 IS NULL THEN 'pending' ELSE 'dead' END, ?6, ?7, ?8)
         ON CONFLICT (kind, key) DO UPDATE SET
             version = excluded.version, label = excluded.label, payload = excluded.payload,
             state = excluded.state, last_error = excluded.last_error,
             attempts = 0, next_attempt_at = 0, parent = excluded.parent
         WHERE excluded.version >= outbox.version",
    )?
    .execute(params![
        item.kind,
        item.key,
        item.version,
        item.label,
        item.payload,
        item.dead,
        now_ms,
        item.parent
    ])?;
    Ok(())
}

/// Up to `limit` pending rows due by `now_ms`, oldest first; items whose build is still
/// waiting to be delivered wait with it.
pub fn due(conn: &Connection, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, key, version, label, payload, attempts FROM outbox INDEXED BY outbox_pending
         WHERE state = 'pending' AND next_attempt_at <= ?1
           AND (parent IS NULL OR NOT EXISTS (
               SELECT 1 FROM outbox b WHERE b.kind = ?3 AND b.key = outbox.parent
                                        AND b.state IN ('pending', 'dead')))
         ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms, limit as i64, Kind::Build], |r| {
        Ok(Row {
            id: r.get(0)?,
            kind: r.get(1)?,
            key: r.get(2)?,
            version: r.get(3)?,
            label: r.get(4)?,
            payload: r.get(5)?,
            attempts: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Records what became of a batch of deliveries, in one transaction. A row replaced by a
/// newer version meanwhile is left alone: the newer version still has to go.
pub fn settle(conn: &mut Connection, results: &[(Row, Outcome)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (row, outcome) in results {
        match outcome {
            Outcome::Delivered => tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND version = ?2")?
                .execute(params![row.id, row.version])?,
            Outcome::RetryAt(at, error) => tx
                .prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4
                     WHERE id = ?1 AND version = ?2",
                )?
                .execute(params![row.id, row.version, at, error])?,
            Outcome::Dead(error) => {
                // What belongs to a dead build goes with it: `replay` re-sends them together.
                if row.kind == Kind::Build {
                    tx.prepare_cached(
                        "UPDATE outbox SET state = 'dead', last_error = 'its build is a dead letter'
                         WHERE parent = ?1 AND state = 'pending'",
                    )?
                    .execute([&row.key])?;
                }
                tx.prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, state = 'dead', last_error = ?3
                     WHERE id = ?1 AND version = ?2",
                )?
                .execute(params![row.id, row.version, error])?
            }
        };
    }
    if results.iter().any(|(_, o)| matches!(o, Outcome::Delivered)) {
        let now = super::timestamp(chrono::Utc::now());
        state::set(&tx, Key::LastDeliveryOkAt, &now)?;
    }
    tx.commit()
}

/// Sends dead letters again: back to pending, tried at once. Returns how many.
pub fn replay_dead(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0, last_error = NULL
         WHERE state = 'dead'",
        [],
    )
}

/// Sends a build (and what belongs to it) again, if it is in the outbox. Returns how many
/// items were re-queued.
pub fn replay_build(conn: &Connection, build_id: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0, last_error = NULL
         WHERE (kind = ?2 AND key = ?1) OR parent = ?1",
        params![build_id, Kind::Build],
    )
}

/// One dead letter, for `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub kind: Kind,
    pub key: String,
    pub label: String,
    pub attempts: u32,
    pub error: String,
}

/// The first `limit` dead letters, oldest first.
pub fn dead_letters(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare(
        "SELECT kind, key, label, attempts, coalesce(last_error, '') FROM outbox
         WHERE state = 'dead' ORDER BY id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(DeadLetter {
            kind: r.get(0)?,
            key: r.get(1)?,
            label: r.get(2)?,
            attempts: r.get(3)?,
            error: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Outbox depth by kind and state: (kind, state, count).
pub fn depth(conn: &Connection) -> rusqlite::Result<Vec<(Kind, String, u64)>> {
    conn.prepare(
        "SELECT kind, state, count(*) FROM outbox GROUP BY kind, state ORDER BY kind, state",
    )?
    .query_map([], |r| r.try_into())?
    .collect()
}

/// How the outbox stands.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub pending: u64,
    pub dead: u64,
    /// Of the dead letters, the test suites.
    pub dead_tests: u64,
    /// When the earliest pending row may be tried (ms since the epoch).
    pub next_attempt_at: Option<i64>,
    /// The most recent error of a pending row, if any failed.
    pub last_error: Option<String>,
    /// The first dead letters.
    pub dead_letters: Vec<DeadLetter>,
}

/// Counts and the errors worth showing.
pub fn summary(conn: &Connection) -> rusqlite::Result<Summary> {
    let (pending, dead, dead_tests, next_attempt_at, last_error) = conn.query_row(
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead'),
                count(*) FILTER (WHERE state = 'dead' AND kind = ?1),
                min(next_attempt_at) FILTER (WHERE state = 'pending'),
                (SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL
                 ORDER BY next_attempt_at DESC LIMIT 1)
         FROM outbox",
        [Kind::Tests],
        |r| r.try_into(),
    )?;
    Ok(Summary {
        pending,
        dead,
        dead_tests,
        next_attempt_at,
        last_error,
        dead_letters: dead_letters(conn, 5)?,
    })
}
