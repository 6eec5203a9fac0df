//! Builds waiting for their test results and logs to be fetched. A build is added in the
//! same transaction that queues it; it leaves in the same transaction that queues what was
//! fetched for it, so a crash in between only means fetching again.

use rusqlite::{params, Connection, Transaction};

use super::outbox::{self, NewItem};
use crate::item::Kind;

/// A build to enrich.
#[derive(Debug, Clone)]
pub struct Pending {
    pub build_id: String,
    pub version: String,
    pub label: String,
    pub payload: String,
    pub attempts: u32,
}

/// An item fetched for a build: its outbox kind, key within the kind, and payload.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub kind: Kind,
    pub key: String,
    pub payload: String,
}

/// Adds (or refreshes, for a re-finished build) the build queued as `item` to enrich.
pub fn add(tx: &Transaction<'_>, item: &NewItem<'_>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO enrich (build_id, version, label, payload) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (build_id) DO UPDATE SET version = excluded.version,
             label = excluded.label, payload = excluded.payload,
             attempts = 0, next_attempt_at = 0, last_error = NULL
         WHERE excluded.version >= enrich.version",
    )?
    .execute(params![item.key, item.version, item.label, item.payload])?;
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
        // Children of a build that is already a dead letter are kept with it.
        let parent_dead = tx
            .prepare_cached("SELECT 1 FROM outbox WHERE kind = ?2 AND key = ?1 AND state = 'dead'")?
            .exists(params![build.build_id, Kind::Build])?;
        let dead = parent_dead.then_some("its build is a dead letter");
        for item in fetched {
            let new = NewItem {
                kind: item.kind,
                key: &item.key,
                version: &build.version,
                label: &build.label,
                payload: &item.payload,
                dead,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox::{self, Outcome};
    use crate::store::Store;

    #[tokio::test]
    async fn what_belongs_to_a_dead_build_waits_and_dies_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let (due_before, due_after, dead) = store
            .call(|c| {
                let tx = c.transaction()?;
                let build = NewItem {
                    kind: Kind::Build,
                    key: "b1",
                    version: "v",
                    label: "acme/web#1",
                    payload: "{}",
                    dead: None,
                    parent: None,
                };
                outbox::upsert(&tx, &build, 0)?;
                tx.commit()?;
                let pending = Pending {
                    build_id: "b1".into(),
                    version: "v".into(),
                    label: "acme/web#1".into(),
                    payload: "{}".into(),
                    attempts: 0,
                };
                let tx = c.transaction()?;
                add(&tx, &build)?;
                tx.commit()?;
                let suite = Fetched {
                    kind: Kind::Tests,
                    key: "b1/a/0".into(),
                    payload: "{}".into(),
                };
                complete(c, &pending, &[suite], 0)?;
                let due_before: Vec<Kind> =
                    outbox::due(c, 0, 10)?.into_iter().map(|r| r.kind).collect();
                let row = outbox::due(c, 0, 10)?.remove(0);
                outbox::settle(c, &[(row, Outcome::Dead("400".into()))])?;
                let due_after = outbox::due(c, 0, 10)?.len();
                let dead = outbox::summary(c)?.dead;
                Ok((due_before, due_after, dead))
            })
            .await
            .expect("db");
        assert_eq!(due_before, [Kind::Build], "the suite waits for its build");
        assert_eq!(due_after, 0, "nothing of a dead build is sent");
        assert_eq!(dead, 2, "the suite is a dead letter with its build");
    }
}
