//! The state database (SQLite, WAL): the cursor, the builds already seen, and the outbox.
//!
//! It is the only hand-over point between polling and delivery. Every write is one short
//! transaction, so a `kill -9` at any moment leaves either the state before or after it.

pub mod agents;
pub mod backfill;
pub mod cursor;
pub mod enrich;
pub mod outbox;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// A state-database failure, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("state database {path}: {reason}")]
pub struct StoreError {
    path: String,
    reason: String,
}

/// Schema migrations, applied in order; `PRAGMA user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: cursor, seen builds, outbox.
    "CREATE TABLE state (
         key   TEXT PRIMARY KEY,
         value TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE seen (
         build_id    TEXT NOT NULL,
         finished_at TEXT NOT NULL,
         PRIMARY KEY (build_id, finished_at)
     ) WITHOUT ROWID;
     CREATE INDEX seen_by_finish ON seen (finished_at);
     CREATE TABLE outbox (
         id              INTEGER PRIMARY KEY,
         kind            TEXT NOT NULL,
         key             TEXT NOT NULL,
         version         TEXT NOT NULL,
         label           TEXT NOT NULL,
         payload         TEXT NOT NULL,
         state           TEXT NOT NULL CHECK (state IN ('pending', 'dead')),
         attempts        INTEGER NOT NULL DEFAULT 0,
         next_attempt_at INTEGER NOT NULL DEFAULT 0,
         last_error      TEXT,
         enqueued_at     INTEGER NOT NULL,
         UNIQUE (kind, key)
     );
     CREATE INDEX outbox_due ON outbox (state, next_attempt_at);",
    // 2: backfill checkpoints, one per (since, until) range; `open_ended` when the run had
    // no --until (its until is when it first started).
    "CREATE TABLE backfill (
         since      TEXT NOT NULL,
         until      TEXT NOT NULL,
         open_ended INTEGER NOT NULL,
         upper      TEXT NOT NULL,
         done       INTEGER NOT NULL DEFAULT 0,
         pages      INTEGER NOT NULL DEFAULT 0,
         builds     INTEGER NOT NULL DEFAULT 0,
         updated_at TEXT NOT NULL,
         PRIMARY KEY (since, until)
     ) WITHOUT ROWID;",
    // 3: the agent fleet as last sent (or about to be sent) to BuildButler.
    "CREATE TABLE agents (
         id         TEXT PRIMARY KEY,
         wire       TEXT NOT NULL,
         gone_since TEXT
     ) WITHOUT ROWID;",
    // 4: builds waiting for their test results and logs; items that must follow their build.
    "CREATE TABLE enrich (
         build_id        TEXT PRIMARY KEY,
         version         TEXT NOT NULL,
         label           TEXT NOT NULL,
         payload         TEXT NOT NULL,
         attempts        INTEGER NOT NULL DEFAULT 0,
         next_attempt_at INTEGER NOT NULL DEFAULT 0,
         last_error      TEXT
     ) WITHOUT ROWID;
     ALTER TABLE outbox ADD COLUMN parent TEXT;",
    // 5: reading the outbox in id order stops after a batch instead of sorting all of it.
    "CREATE INDEX outbox_pending ON outbox (state, id);",
];

/// The state database, shared by the tasks of one process. Calls run on tokio's blocking
/// pool, one at a time.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let fail = |reason: String| StoreError {
            path: path.display().to_string(),
            reason,
        };
        let new = !path.exists();
        let mut conn = Connection::open(path).map_err(|e| fail(format!("cannot open it: {e}")))?;
        // Every write transaction takes the write lock when it begins, so that one that read
        // first waits for a backfill's or the daemon's write instead of failing at once.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.busy_timeout(Duration::from_secs(10))
            .and_then(|_| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
            .map_err(|e| fail(format!("cannot set it up: {e}")))?;
        migrate(&mut conn).map_err(fail)?;
        if new {
            tracing::info!(
                "created a new state database at {}: the first poll looks back [buildkite] first_poll_lookback_minutes",
                path.display()
            );
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    /// Opens the database at `path` only to read it (`status`): no migration, no write.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let fail = |reason: String| StoreError {
            path: path.display().to_string(),
            reason,
        };
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| fail(format!("cannot open it: {e}")))?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| fail(format!("cannot read it: {e}")))?;
        if version != MIGRATIONS.len() {
            return Err(fail(format!(
                "it has schema version {version}, this kitesync expects {}: run the matching kitesync (or let the daemon migrate it) first",
                MIGRATIONS.len()
            )));
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    /// Waits for the right to deliver. Only one process delivers from this database at a
    /// time, one batch at a time, so that a batch in flight always lands before anyone reads
    /// the outbox again: an older version of a build can never overwrite a newer one, even
    /// with a backfill running beside the daemon. Released when dropped.
    pub async fn delivery_lock(&self) -> Result<DeliveryLock, StoreError> {
        let fail = |reason: String| StoreError {
            path: self.path.display().to_string(),
            reason,
        };
        // An flock on the database file itself: read access is enough, and it is separate
        // from the fcntl locks SQLite takes on the same file.
        let file = std::fs::File::open(&self.path)
            .map_err(|e| fail(format!("cannot open it to take the delivery lock: {e}")))?;
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
        match locked {
            Ok(Ok(file)) => Ok(DeliveryLock { _file: file }),
            Ok(Err(e)) => Err(fail(format!("cannot take its delivery lock: {e}"))),
            Err(e) => Err(fail(format!("a lock task failed: {e}"))),
        }
    }

    /// Copies the database at `from` (if any) to a new file at `to`, consistently even while
    /// another process writes to it: for `--dry-run`, which must change nothing.
    pub fn copy(from: &Path, to: &Path) -> Result<(), StoreError> {
        let fail = |reason: String| StoreError {
            path: from.display().to_string(),
            reason,
        };
        if !from.exists() {
            return Ok(());
        }
        let src = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| fail(format!("cannot open it to copy: {e}")))?;
        src.backup(rusqlite::MAIN_DB, to, None)
            .map_err(|e| fail(format!("cannot copy it to {}: {e}", to.display())))
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await;
        let fail = |reason: String| StoreError {
            path: self.path.display().to_string(),
            reason,
        };
        match joined {
            Ok(result) => result.map_err(|e| fail(e.to_string())),
            Err(e) => Err(fail(format!("a database task failed: {e}"))),
        }
    }
}

/// The right to deliver from a state database (see [`Store::delivery_lock`]).
pub struct DeliveryLock {
    _file: std::fs::File,
}

/// Applies the missing migrations in one write transaction, so that two processes opening a
/// new database at once (a backfill next to the daemon) do not both migrate it.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot lock it to migrate: {e}"))?;
    let version: usize = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| format!("cannot read its schema version: {e}"))?;
    if version > MIGRATIONS.len() {
        return Err(format!(
            "it has schema version {version}, newer than this kitesync knows ({}): upgrade kitesync",
            MIGRATIONS.len()
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", i + 1))
            .map_err(|e| format!("migration {} failed: {e}", i + 1))?;
    }
    tx.commit()
        .map_err(|e| format!("cannot save its migration: {e}"))
}

/// Milliseconds since the Unix epoch, the unit of the outbox's times.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_deliverer_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let (a, b) = (
            Store::open(&path).expect("a"),
            Store::open(&path).expect("b"),
        );
        let held = a.delivery_lock().await.expect("first lock");
        let wait = tokio::time::timeout(Duration::from_millis(300), b.delivery_lock()).await;
        assert!(wait.is_err(), "a second deliverer must wait");
        drop(held);
        let second = tokio::time::timeout(Duration::from_secs(5), b.delivery_lock()).await;
        assert!(matches!(second, Ok(Ok(_))), "then it gets its turn");
    }

    #[test]
    fn migrates_once_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        drop(Store::open(&path).expect("first open"));
        drop(Store::open(&path).expect("reopen is a no-op"));
        let conn = Connection::open(&path).expect("open");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        let err = Store::open(&path).err().expect("newer schema refused");
        assert!(err.to_string().contains("upgrade kitesync"), "{err}");
    }
}
