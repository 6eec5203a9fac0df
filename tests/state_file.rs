//! The state database is private: the file and its `-wal` and `-shm` files are created 0600
//! whatever the umask (they hold build data, log tails and stack traces).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn mode(path: &Path) -> u32 {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_database_is_private_whatever_the_umask() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(5));
    // A umask that takes nothing away: what SQLite would otherwise create world-writable.
    let mut daemon = h.spawn_daemon_with_umask("000");
    let stderr = capture_stderr(&mut daemon);
    until(|| h.bb.builds().len() == 5).await;

    // While the daemon runs, SQLite keeps the write-ahead log and the shared memory file.
    let state = h.state_path();
    let sidecar = |suffix: &str| state.with_file_name(format!("state.db{suffix}"));
    until(|| sidecar("-wal").exists() && sidecar("-shm").exists()).await;
    for file in [state.clone(), sidecar("-wal"), sidecar("-shm")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}
