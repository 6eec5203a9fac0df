//! The state database (SQLite, WAL): the cursor, the builds already seen, the outbox, the
//! enrich queue, backfill checkpoints and the agent fleet.
//!
//! It is the only hand-over point between polling and delivery. Every write is one short
//! transaction, so a `kill -9` at any moment leaves either the state before or after it. It
//! knows nothing of BuildButler: what it keeps is Buildkite's facts ([`crate::item`]).

pub mod agents;
pub mod backfill;
pub mod builds;
pub mod cursor;
pub mod enrich;
mod migrate;
pub mod outbox;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Connection;

/// A state-database failure: the file, what kitesync was doing, and why it failed.
#[derive(Debug, thiserror::Error)]
#[error("state database {}: {doing}: {cause}", path.display())]
pub struct StoreError {
    pub path: PathBuf,
    pub doing: &'static str,
    #[source]
    pub cause: Cause,
}

/// Why a state-database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Its schema is not the one this kitesync knows.
    #[error("it has schema version {found}, this kitesync knows {known}: {}",
        if found > known { "upgrade kitesync" } else { "let kitesync (the daemon or --once) migrate it first" })]
    Schema { found: usize, known: usize },
    #[error("the task running it failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

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
        let new = !path.exists();
        let mut conn = Connection::open(path).map_err(failing(path, "cannot open it"))?;
        // Every write transaction takes the write lock when it begins, so that one that read
        // first waits for a backfill's or the daemon's write instead of failing at once.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.busy_timeout(Duration::from_secs(10))
            .and_then(|_| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
            .map_err(failing(path, "cannot set it up"))?;
        let found = migrate::run(&mut conn).map_err(failing(path, "cannot migrate it"))?;
        schema(path, found, false)?;
        if new {
            tracing::info!(
                "created a new state database at {}: the first poll looks back [buildkite] first_poll_lookback_minutes",
                path.display()
            );
        }
        Ok(Store::with(conn, path))
    }

    /// Opens the database at `path` only to read it (`status`): no migration, no write.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(failing(path, "cannot open it"))?;
        let found = migrate::version(&conn).map_err(failing(path, "cannot read it"))?;
        schema(path, found, true)?;
        Ok(Store::with(conn, path))
    }

    fn with(conn: Connection, path: &Path) -> Store {
        Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        }
    }

    /// Waits for the right to deliver. Only one process delivers from this database at a
    /// time, one batch at a time, so that a batch in flight always lands before anyone reads
    /// the outbox again: an older version of a build can never overwrite a newer one, even
    /// with a backfill running beside the daemon. Released when dropped.
    pub async fn delivery_lock(&self) -> Result<Lock, StoreError> {
        // An flock on the database file itself: read access is enough, and it is separate
        // from the fcntl locks SQLite takes on the same file.
        let doing = "cannot take its delivery lock";
        let file = std::fs::File::open(&self.path).map_err(failing(&self.path, doing))?;
        self.flock(file, doing).await
    }

    /// Waits for the right to fetch test results and logs: one build at a time, by one
    /// process at a time, so that a backfill beside the daemon never fetches a file twice.
    /// An flock on a file beside the database (`<state_path>.enrich-lock`); released when
    /// dropped, or when the process dies.
    pub async fn enrich_lock(&self) -> Result<Lock, StoreError> {
        let doing = "cannot take its enrichment lock";
        let mut path = self.path.clone().into_os_string();
        path.push(".enrich-lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(failing(&self.path, doing))?;
        self.flock(file, doing).await
    }

    async fn flock(&self, file: std::fs::File, doing: &'static str) -> Result<Lock, StoreError> {
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
        let file = locked.map_err(failing(&self.path, doing))?;
        let file = file.map_err(failing(&self.path, doing))?;
        Ok(Lock { _file: file })
    }

    /// Copies the database at `from` (if any) to a new file at `to`, consistently even while
    /// another process writes to it: for `--dry-run`, which must change nothing.
    pub fn copy(from: &Path, to: &Path) -> Result<(), StoreError> {
        if !from.exists() {
            return Ok(());
        }
        let src = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(failing(from, "cannot open it to copy"))?;
        src.backup(rusqlite::MAIN_DB, to, None)
            .map_err(failing(from, "cannot copy it for the dry run"))
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
        let doing = "cannot read or write it";
        let result = joined.map_err(failing(&self.path, doing))?;
        result.map_err(failing(&self.path, doing))
    }
}

/// Refuses a schema this kitesync cannot use: newer than it knows or, when only reading
/// (nothing may be migrated), older.
fn schema(path: &Path, found: usize, read_only: bool) -> Result<(), StoreError> {
    let known = migrate::LATEST;
    if found > known || (read_only && found < known) {
        let cause = Cause::Schema { found, known };
        return Err(failing(path, "cannot use it")(cause));
    }
    Ok(())
}

/// Turns a failure while `doing` something to the database at `path` into a [`StoreError`].
fn failing<E: Into<Cause>>(path: &Path, doing: &'static str) -> impl FnOnce(E) -> StoreError {
    let path = path.to_path_buf();
    move |cause| StoreError {
        path,
        doing,
        cause: cause.into(),
    }
}

/// The right to deliver from a state database, or to enrich its builds (see
/// [`Store::delivery_lock`], [`Store::enrich_lock`]).
pub struct Lock {
    _file: std::fs::File,
}

/// Milliseconds since the Unix epoch, the unit of the outbox's times.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The canonical text form of a time in the state database: RFC 3339 with milliseconds, so
/// that text order is time order.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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
