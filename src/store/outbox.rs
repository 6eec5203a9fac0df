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

/// Why a row is a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeadCause {
    /// BuildButler refused its content (400, 413 or 422, with its reason): a test suite
    /// refused so is reported but never fails a run.
    Content,
    /// Anything else: another answer (a 404, a redirect), an item that cannot be rendered or
    /// decoded, its build a dead letter.
    Other,
}

impl DeadCause {
    /// Every cause.
    pub(crate) const ALL: [DeadCause; 2] = [DeadCause::Content, DeadCause::Other];

    /// The name stored in the state database and shown by `status`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeadCause::Content => "content",
            DeadCause::Other => "other",
        }
    }
}

impl ToSql for DeadCause {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for DeadCause {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<DeadCause> {
        match value.as_str()? {
            "content" => Ok(DeadCause::Content),
            "other" => Ok(DeadCause::Other),
            name => Err(FromSqlError::Other(
                format!("unknown dead letter cause {name:?}").into(),
            )),
        }
    }
}

/// A row due for delivery.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) id: i64,
    pub(crate) kind: Kind,
    pub(crate) key: String,
    /// Which version of the item this is (for a build: its `finished_at`).
    pub(crate) version: String,
    /// For people: `org/pipeline#number`.
    pub(crate) label: String,
    pub(crate) payload: String,
    pub(crate) attempts: u32,
}

/// What became of one delivery.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Delivered,
    /// Try again at this time (ms since the epoch), after this error.
    RetryAt(i64, String),
    /// Refused for good: keep it as a dead letter, for this cause, with this error.
    Dead(DeadCause, String),
}

/// An item to queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewItem<'a> {
    pub(crate) kind: Kind,
    /// Its identity within the kind: one outbox row per key.
    pub(crate) key: &'a str,
    /// Which version of it this is; only a version at least as new replaces a queued one.
    pub(crate) version: &'a str,
    pub(crate) label: &'a str,
    pub(crate) payload: &'a str,
    /// Queue it as a dead letter straight away, with this error (e.g. undecodable; its cause
    /// is [`DeadCause::Other`]).
    pub(crate) dead: Option<&'a str>,
    /// The build this item belongs to: it is delivered only once that build is.
    pub(crate) parent: Option<&'a str>,
}

/// Queues an item, or replaces the queued version of it with a newer one.
pub(crate) fn upsert(
    tx: &Transaction<'_>,
    item: &NewItem<'_>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO outbox
             (kind, key, version, label, payload, state, last_error, enqueued_at, parent,
              dead_cause)
         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?6 IS NULL THEN 'pending' ELSE 'dead' END, ?6, ?7, ?8,
                 CASE WHEN ?6 IS NULL THEN NULL ELSE ?9 END)
         ON CONFLICT (kind, key) DO UPDATE SET
             version = excluded.version, label = excluded.label, payload = excluded.payload,
             state = excluded.state, last_error = excluded.last_error,
             attempts = 0, next_attempt_at = 0, parent = excluded.parent,
             dead_cause = excluded.dead_cause
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
        item.parent,
        DeadCause::Other
    ])?;
    Ok(())
}

/// Up to `limit` pending rows due by `now_ms`, oldest first; items whose build is still
/// waiting to be delivered wait with it.
pub(crate) fn due(conn: &Connection, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Row>> {
    pending(conn, now_ms, 0, limit)
}

/// Up to `limit` pending rows after row `after_id`, oldest first, whatever their backoff (a
/// one-shot run tries each once); items whose build is still waiting wait with it.
pub(crate) fn pending_after(
    conn: &Connection,
    after_id: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Row>> {
    pending(conn, i64::MAX, after_id, limit)
}

fn pending(
    conn: &Connection,
    due_by: i64,
    after_id: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, key, version, label, payload, attempts FROM outbox INDEXED BY outbox_pending
         WHERE state = 'pending' AND id > ?4 AND next_attempt_at <= ?1
           AND (parent IS NULL OR NOT EXISTS (
               SELECT 1 FROM outbox b WHERE b.kind = ?3 AND b.key = outbox.parent
                                        AND b.state IN ('pending', 'dead')))
         ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![due_by, limit as i64, Kind::Build, after_id], |r| {
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
pub(crate) fn settle(conn: &mut Connection, results: &[(Row, Outcome)]) -> rusqlite::Result<()> {
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
            Outcome::Dead(cause, error) => {
                // What belongs to a dead build goes with it: `replay` re-sends them together.
                if row.kind == Kind::Build {
                    tx.prepare_cached(
                        "UPDATE outbox SET state = 'dead', last_error = 'its build is a dead letter',
                                           dead_cause = ?2
                         WHERE parent = ?1 AND state = 'pending'",
                    )?
                    .execute(params![row.key, DeadCause::Other])?;
                }
                tx.prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, state = 'dead', last_error = ?3,
                                       dead_cause = ?4
                     WHERE id = ?1 AND version = ?2",
                )?
                .execute(params![row.id, row.version, error, cause])?
            }
        };
    }
    if results.iter().any(|(_, o)| matches!(o, Outcome::Delivered)) {
        let now = crate::clock::timestamp(crate::clock::now());
        state::set(&tx, Key::LastDeliveryOkAt, &now)?;
    }
    tx.commit()
}

/// Sends dead letters again: back to pending, tried at once. Returns how many.
pub(crate) fn replay_dead(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0, last_error = NULL,
                           dead_cause = NULL
         WHERE state = 'dead'",
        [],
    )
}

/// Sends a build (and what belongs to it) again, if it is in the outbox. Returns how many
/// items were re-queued.
pub(crate) fn replay_build(conn: &Connection, build_id: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0, last_error = NULL,
                           dead_cause = NULL
         WHERE (kind = ?2 AND key = ?1) OR parent = ?1",
        params![build_id, Kind::Build],
    )
}

/// One dead letter, for `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DeadLetter {
    pub(crate) kind: Kind,
    pub(crate) key: String,
    pub(crate) label: String,
    pub(crate) attempts: u32,
    pub(crate) error: String,
    /// Why it is dead; `None` when it died before kitesync recorded why (schema 8).
    pub(crate) cause: Option<DeadCause>,
}

impl DeadLetter {
    /// True when it does not fail a run: a test suite refused for its content, or one dead
    /// from before causes were recorded (as every dead suite excused a run then). The alert
    /// `KitesyncDeadLetters` (contrib/prometheus) leaves out the same ones, by the outbox
    /// gauge's `kind` and `cause` labels.
    pub(crate) fn excused(&self) -> bool {
        self.kind == Kind::Tests && self.cause != Some(DeadCause::Other)
    }
}

/// The first `limit` dead letters, oldest first.
pub(crate) fn dead_letters(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare(
        "SELECT kind, key, label, attempts, coalesce(last_error, ''), dead_cause FROM outbox
         WHERE state = 'dead' ORDER BY id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(DeadLetter {
            kind: r.get(0)?,
            key: r.get(1)?,
            label: r.get(2)?,
            attempts: r.get(3)?,
            error: r.get(4)?,
            cause: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Outbox depth by kind and state: (kind, state, count).
pub(crate) fn depth(conn: &Connection) -> rusqlite::Result<Vec<(Kind, String, u64)>> {
    conn.prepare(
        "SELECT kind, state, count(*) FROM outbox GROUP BY kind, state ORDER BY kind, state",
    )?
    .query_map([], |r| r.try_into())?
    .collect()
}

/// Dead letters by kind and cause: (kind, cause, count); no cause for those dead before
/// kitesync recorded why (schema 8).
pub(crate) fn dead_by_cause(
    conn: &Connection,
) -> rusqlite::Result<Vec<(Kind, Option<DeadCause>, u64)>> {
    conn.prepare_cached(
        "SELECT kind, dead_cause, count(*) FROM outbox WHERE state = 'dead'
         GROUP BY kind, dead_cause",
    )?
    .query_map([], |r| r.try_into())?
    .collect()
}

/// How the outbox stands.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub pending: u64,
    pub dead: u64,
    /// Of the dead letters, the test suites that do not fail a run ([`DeadLetter::excused`]).
    pub(crate) refused_tests: u64,
    /// Of those, the ones dead from before kitesync recorded why.
    pub(crate) unrecorded_tests: u64,
    /// When the earliest pending row may be tried (ms since the epoch).
    pub(crate) next_attempt_at: Option<i64>,
    /// The most recent error of a pending row, if any failed.
    pub(crate) last_error: Option<String>,
    /// The first dead letters.
    pub(crate) dead_letters: Vec<DeadLetter>,
}

/// Counts and the errors worth showing.
pub(crate) fn summary(conn: &Connection) -> rusqlite::Result<Summary> {
    // A suite is excused when refused for its content, or dead before causes were recorded.
    let sql =
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead'),
                count(*) FILTER (WHERE state = 'dead' AND kind = ?1
                                 AND coalesce(dead_cause, ?2) = ?2),
                count(*) FILTER (WHERE state = 'dead' AND kind = ?1 AND dead_cause IS NULL),
                min(next_attempt_at) FILTER (WHERE state = 'pending'),
                (SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL
                 ORDER BY next_attempt_at DESC LIMIT 1)
         FROM outbox";
    let (pending, dead, refused_tests, unrecorded_tests, next_attempt_at, last_error) = conn
        .query_row(sql, params![Kind::Tests, DeadCause::Content], |r| {
            r.try_into()
        })?;
    Ok(Summary {
        pending,
        dead,
        refused_tests,
        unrecorded_tests,
        next_attempt_at,
        last_error,
        dead_letters: dead_letters(conn, 5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> Connection {
        let mut conn = Connection::open_in_memory().expect("memory");
        super::super::migrate::run(&mut conn).expect("schema");
        conn
    }

    fn queue(
        conn: &mut Connection,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        dead: Option<&str>,
    ) {
        let tx = conn.transaction().expect("tx");
        let item = NewItem {
            kind,
            key,
            version: "v",
            label: key,
            payload: "{}",
            dead,
            parent,
        };
        upsert(&tx, &item, 0).expect("queued");
        tx.commit().expect("commit");
    }

    fn keys(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.key.as_str()).collect()
    }

    #[test]
    fn a_one_shot_sweep_takes_rows_in_backoff_oldest_first_where_the_daemon_waits() {
        let mut c = outbox();
        queue(&mut c, Kind::Build, "b1", None, None);
        queue(&mut c, Kind::Build, "b2", None, None);
        queue(&mut c, Kind::Tests, "b1/s", Some("b1"), None);
        let now = 1_000_000;
        let tried: Vec<_> = due(&c, now, 10).expect("due").into_iter().collect();
        assert_eq!(keys(&tried), ["b1", "b2"], "the suite waits for its build");
        let later = Outcome::RetryAt(now + 60_000, "503".into());
        let results: Vec<_> = tried.into_iter().map(|r| (r, later.clone())).collect();
        settle(&mut c, &results).expect("settled");

        assert!(due(&c, now, 10).expect("due").is_empty(), "backoff kept");
        let swept = pending_after(&c, 0, 10).expect("pending");
        assert_eq!(
            keys(&swept),
            ["b1", "b2"],
            "oldest first, whatever the backoff"
        );
        let rest = pending_after(&c, swept[0].id, 10).expect("pending");
        assert_eq!(keys(&rest), ["b2"]);
    }

    #[test]
    fn only_suites_refused_for_their_content_or_dead_before_causes_were_kept_are_excused() {
        let mut c = outbox();
        for key in ["b1", "b2"] {
            queue(&mut c, Kind::Build, key, None, None);
        }
        for key in ["content", "other", "legacy", "orphan"] {
            let parent = if key == "orphan" { "b2" } else { "b1" };
            queue(&mut c, Kind::Tests, key, Some(parent), None);
        }
        queue(
            &mut c,
            Kind::Build,
            "undecodable",
            None,
            Some("cannot decode"),
        );
        let outcome = |key: &str| match key {
            "b1" => Outcome::Delivered,
            "b2" => Outcome::Dead(DeadCause::Content, "400".into()),
            "content" | "legacy" => Outcome::Dead(DeadCause::Content, "413".into()),
            _ => Outcome::Dead(DeadCause::Other, "404".into()),
        };
        // The builds, then the suites of the one delivered.
        for _ in 0..2 {
            let rows = pending_after(&c, 0, 10).expect("pending");
            let results: Vec<_> = rows
                .into_iter()
                .map(|r| {
                    let o = outcome(&r.key);
                    (r, o)
                })
                .collect();
            settle(&mut c, &results).expect("settled");
        }
        // As a row dead before migration 8 is.
        c.execute(
            "UPDATE outbox SET dead_cause = NULL WHERE key = 'legacy'",
            [],
        )
        .expect("legacy");

        let s = summary(&c).expect("summary");
        assert_eq!((s.dead, s.refused_tests, s.unrecorded_tests), (6, 2, 1));
        let dead = dead_letters(&c, 10).expect("dead");
        let seen: Vec<(&str, Option<DeadCause>, bool)> = dead
            .iter()
            .map(|d| (d.key.as_str(), d.cause, d.excused()))
            .collect();
        assert_eq!(
            seen,
            [
                ("b2", Some(DeadCause::Content), false),
                ("content", Some(DeadCause::Content), true),
                ("other", Some(DeadCause::Other), false),
                ("legacy", None, true),
                ("orphan", Some(DeadCause::Other), false),
                ("undecodable", Some(DeadCause::Other), false),
            ],
            "a build is never excused; a suite of a dead build dies with it"
        );
        replay_dead(&c).expect("replayed");
        let causes: i64 = c
            .query_row("SELECT count(dead_cause) FROM outbox", [], |r| r.get(0))
            .expect("count");
        assert_eq!(
            causes, 0,
            "a row sent again has no cause until it dies again"
        );
    }
}
