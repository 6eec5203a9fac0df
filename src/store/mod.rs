//! The state database (SQLite, WAL): the cursor, the builds already seen, the outbox, the
//! enrich queue, backfill checkpoints and the agent fleet.
//!
//! It is the only hand-over point between polling and delivery. Every write is one short
//! transaction, so a `kill -9` at any moment leaves either the state before or after it. It
//! knows nothing of BuildButler: what it keeps is Buildkite's facts ([`crate::item`]).

pub(crate) mod agents;
pub(crate) mod backfill;
pub(crate) mod builds;
pub(crate) mod cursor;
pub(crate) mod enrich;
mod migrate;
pub(crate) mod outbox;
pub(crate) mod refusal;
pub(crate) mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// SQLite's page cache, in KiB (as a negative `cache_size`). Its default, 2 MiB, was the
/// largest block of a backfill's heap; a quarter of it cost no measured throughput, as the
/// outbox is written at its end and read from its start, and the rest is in the OS's cache.
const CACHE_KIB: i64 = -512;

/// A state-database failure: the file, what kitesync was doing, and why it failed.
#[derive(Debug, thiserror::Error)]
#[error("state database {}: {doing}: {cause}", path.display())]
pub struct StoreError {
    pub(crate) path: PathBuf,
    pub(crate) doing: &'static str,
    #[source]
    pub(crate) cause: Cause,
}

/// Why a state-database operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Cause {
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
    /// It (or the directory it would be created in) belongs to another user: files written
    /// now would belong to this one, and its owner (the service) could no longer open them.
    #[error("it belongs to user {owner}, and this is user {me}: writing to it would leave files its owner (the service) cannot open; run the command as the service, or use `kitesync status`, which only reads")]
    OtherOwner { owner: u32, me: u32 },
}

/// The state database, shared by the tasks of one process. Calls run on tokio's blocking
/// pool, one at a time.
#[derive(Clone)]
pub(crate) struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    gate: Arc<Gate>,
}

/// What the delivery lock takes: within the process a mutex, across processes an flock on
/// the database file. That file is opened once and stays open as long as the store: closing
/// *any* descriptor of a file drops every POSIX lock the process holds on it, SQLite's shared
/// lock included, and a process whose lock is gone lets another one's connection think it is
/// the last, checkpoint, and delete the WAL this process still writes to.
#[derive(Default)]
struct Gate {
    turn: Arc<tokio::sync::Mutex<()>>,
    file: tokio::sync::OnceCell<Arc<std::fs::File>>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Store, StoreError> {
        Store::check_owner(path)?;
        let new = make_private(path).map_err(failing(path, "cannot create it"))?;
        let mut conn = Connection::open(path).map_err(failing(path, "cannot open it"))?;
        // Every write transaction takes the write lock when it begins, so that one that read
        // first waits for a backfill's or the daemon's write instead of failing at once.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.busy_timeout(Duration::from_secs(10))
            .and_then(|_| set_up(&conn))
            .and_then(|_| conn.pragma_update(None, "cache_size", CACHE_KIB))
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
    pub(crate) fn open_read_only(path: &Path) -> Result<Store, StoreError> {
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
            gate: Arc::default(),
        }
    }

    /// Waits for the right to deliver. Only one process delivers from this database at a
    /// time, one batch at a time, so that a batch in flight always lands before anyone reads
    /// the outbox again: an older version of a build can never overwrite a newer one, even
    /// with a backfill running beside the daemon. Released when dropped.
    pub(crate) async fn delivery_lock(&self) -> Result<DeliveryLock, StoreError> {
        // One task of this process at a time; then an flock on the database file itself (read
        // access is enough; flock is separate from the fcntl locks SQLite takes), through the
        // one descriptor the store keeps open (see `Gate`).
        let doing = "cannot take its delivery lock";
        let turn = Arc::clone(&self.gate.turn).lock_owned().await;
        let file = self
            .gate
            .file
            .get_or_try_init(|| async { std::fs::File::open(&self.path).map(Arc::new) })
            .await
            .map_err(failing(&self.path, doing))?;
        let file = Arc::clone(file);
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
        let file = locked.map_err(failing(&self.path, doing))?;
        let file = file.map_err(failing(&self.path, doing))?;
        Ok(DeliveryLock { file, _turn: turn })
    }

    /// Waits for the right to fetch test results and logs: one build at a time, by one
    /// process at a time, so that a backfill beside the daemon never fetches a file twice.
    /// An flock on a file beside the database (`<state_path>.enrich-lock`); released when
    /// dropped, or when the process dies.
    pub(crate) async fn enrich_lock(&self) -> Result<EnrichLock, StoreError> {
        let doing = "cannot take its enrichment lock";
        let mut path = self.path.clone().into_os_string();
        path.push(".enrich-lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(failing(&self.path, doing))?;
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
        let file = locked.map_err(failing(&self.path, doing))?;
        let file = file.map_err(failing(&self.path, doing))?;
        Ok(EnrichLock { _file: file })
    }

    /// Marks a daemon running on this state database for as long as the mark lives: a shared
    /// flock on `<state_path>.daemon`, which `--pace free` runs look for to leave the daemon
    /// its pace.
    pub(crate) fn daemon_mark(&self) -> Result<DaemonMark, StoreError> {
        let doing = "cannot mark the daemon running";
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.daemon_path())
            .map_err(failing(&self.path, doing))?;
        file.try_lock_shared()
            .map_err(std::io::Error::from)
            .map_err(failing(&self.path, doing))?;
        Ok(DaemonMark { _file: file })
    }

    /// Whether a daemon runs on this state database (holds its [`DaemonMark`]).
    pub(crate) fn daemon_running(&self) -> bool {
        let Ok(file) = std::fs::File::open(self.daemon_path()) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => false,
        }
    }

    fn daemon_path(&self) -> PathBuf {
        let mut path = self.path.clone().into_os_string();
        path.push(".daemon");
        path.into()
    }

    /// Copies the database at `from` (if any) to a new file at `to`, consistently even while
    /// another process writes to it: for `--dry-run`, which must change nothing.
    pub(crate) fn copy(from: &Path, to: &Path) -> Result<(), StoreError> {
        if !from.exists() {
            return Ok(());
        }
        let src = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(failing(from, "cannot open it to copy"))?;
        src.backup(rusqlite::MAIN_DB, to, None)
            .map_err(failing(from, "cannot copy it for the dry run"))
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
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

impl Store {
    /// Refuses a database (or, for a new one, its directory) that belongs to another user
    /// than the one running: a hand run as root beside a service with a user of its own, say.
    pub(crate) fn check_owner(path: &Path) -> Result<(), StoreError> {
        same_owner(path)
    }
}

/// Puts a connection in WAL mode. SQLite answers "locked" at once, without its busy
/// handler, while another process holds the database in a way that blocks the switch (a
/// daemon writing while a backfill starts, say): that is retried for up to 10 s.
fn set_up(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = conn
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"));
        match done {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

fn same_owner(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let uid = |p: &Path| std::fs::metadata(p).ok().map(|m| m.uid());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let exists = uid(path).is_some();
    let Some(owner) = uid(path).or_else(|| uid(dir)) else {
        return Ok(());
    };
    // /proc/self belongs to the process's effective user.
    let me = uid(Path::new("/proc/self")).unwrap_or(owner);
    // A database in a shared directory is created by whoever runs first: one anyone may
    // create files in (the sticky bit, as /tmp), or one whose group is meant to write there
    // (group-writable with the setgid bit, as a Kubernetes volume with an `fsGroup`).
    let shared = !exists && (sticky(dir) || group_shared(dir));
    if owner == me || shared {
        return Ok(());
    }
    Err(StoreError {
        path: path.to_path_buf(),
        doing: "cannot write to it",
        cause: Cause::OtherOwner { owner, me },
    })
}

/// True for a directory anyone may create files in (the sticky bit, as /tmp).
fn sticky(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o1000 != 0)
}

/// True for a directory its group writes to: group-writable, with the setgid bit that gives
/// new files the directory's group.
fn group_shared(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o2020 == 0o2020)
}

/// Creates the database file readable and writable by its owner only (0600), whatever the
/// umask, or takes group and other access away from an existing one and its `-wal` and
/// `-shm` files: they hold build data, log tails and stack traces. SQLite gives the `-wal`
/// and `-shm` files it creates the database file's mode. True when the file is new.
fn make_private(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => {
            // The umask may have taken the owner's bits too.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(true);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let sidecar = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    for file in [path.to_path_buf(), sidecar("-wal"), sidecar("-shm")] {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tracing::info!(
                "{} was readable by others (mode {mode:o}): made it private (mode {:o})",
                file.display(),
                mode & 0o700
            ),
            Err(e) => tracing::warn!(
                "{} is readable by others (mode {mode:o}) and cannot be made private: {e}",
                file.display()
            ),
        }
    }
    Ok(false)
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

/// The right to deliver from a state database (see [`Store::delivery_lock`]).
pub(crate) struct DeliveryLock {
    file: Arc<std::fs::File>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for DeliveryLock {
    fn drop(&mut self) {
        // Unlocked, never closed: the store keeps the descriptor (see `Gate`).
        let _ = self.file.unlock();
    }
}

/// A daemon's mark on its state database (see [`Store::daemon_mark`]).
pub(crate) struct DaemonMark {
    _file: std::fs::File,
}

/// The right to enrich a state database's builds (see [`Store::enrich_lock`]).
pub(crate) struct EnrichLock {
    _file: std::fs::File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_may_be_created_in_a_directory_its_group_shares() {
        use std::os::unix::fs::{chown, PermissionsExt};
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("volume");
        std::fs::create_dir(&dir).expect("dir");
        // Another user's directory (as a volume mounted by root): only root can make one.
        if chown(&dir, Some(4242), Some(4242)).is_err() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            return;
        }
        let path = dir.join("state.db");
        let set_mode = |mode| {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("mode")
        };
        set_mode(0o755);
        let refused = Store::check_owner(&path).expect_err("another user's directory");
        assert!(matches!(
            refused.cause,
            Cause::OtherOwner { owner: 4242, .. }
        ));
        set_mode(0o2775);
        Store::check_owner(&path).expect("a directory its group shares (fsGroup)");
        std::fs::write(&path, b"").expect("db");
        chown(&path, Some(4242), Some(4242)).expect("chown db");
        assert!(
            Store::check_owner(&path).is_err(),
            "an existing database still belongs to its owner"
        );
    }

    #[test]
    fn a_daemon_is_seen_while_its_mark_lives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let (daemon, backfill) = (
            Store::open(&path).expect("daemon"),
            Store::open(&path).expect("backfill"),
        );
        assert!(!backfill.daemon_running(), "no daemon yet");
        let mark = daemon.daemon_mark().expect("marked");
        assert!(backfill.daemon_running());
        assert!(backfill.daemon_running(), "looking does not take the mark");
        drop(mark);
        assert!(!backfill.daemon_running(), "the daemon stopped");
    }

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

    #[tokio::test]
    async fn one_deliverer_at_a_time_within_a_process_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        let held = store.delivery_lock().await.expect("first lock");
        let wait = tokio::time::timeout(Duration::from_millis(300), store.delivery_lock()).await;
        assert!(wait.is_err(), "a second task must wait");
        drop(held);
        let second = tokio::time::timeout(Duration::from_secs(5), store.delivery_lock()).await;
        assert!(matches!(second, Ok(Ok(_))), "then it gets its turn");
    }

    #[test]
    fn the_database_and_its_wal_and_shm_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let store = Store::open(&path).expect("open");
        let (wal, shm) = (
            dir.path().join("state.db-wal"),
            dir.path().join("state.db-shm"),
        );
        // Open, in WAL mode, both sidecars exist (the connection keeps them).
        assert_eq!(
            [mode(&path), mode(&wal), mode(&shm)],
            [0o600; 3],
            "whatever this process's umask"
        );
        drop(store);
        // An older database that others could read is made private when opened.
        let conn = Connection::open(&path).expect("open");
        let _: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .expect("a read opens the WAL");
        for p in [&path, &wal, &shm] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!([mode(&path), mode(&wal), mode(&shm)], [0o600; 3]);
        drop((conn, store));
    }

    #[tokio::test]
    async fn its_page_cache_is_held_to_half_a_mebibyte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        let size: i64 = store
            .call(|c| c.pragma_query_value(None, "cache_size", |r| r.get(0)))
            .await
            .expect("cache_size");
        assert_eq!(size, -512, "KiB, not SQLite's default 2 MiB");
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
