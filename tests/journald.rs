//! Logging to the systemd journal. CI has no journald, so the test stands in for it: the real
//! binary runs in a private mount namespace (`unshare -m`, root only) where
//! `/run/systemd/journal` is a directory of the test's, whose `socket` the test reads as
//! journald would, datagram by datagram, in the journal's native protocol.

mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

/// One journal entry: its fields (a field given twice keeps the last value).
type Entry = HashMap<String, String>;

/// Decodes a datagram of the native protocol: `KEY=value\n`, or `KEY\n`, a little-endian
/// 64-bit length, the value's bytes and `\n` for values that hold newlines.
fn entry(mut data: &[u8]) -> Entry {
    let mut fields = Entry::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'\n').expect("a field ends");
        let line = &data[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            fields.insert(key, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            data = &data[end + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
            let value = &rest[8..8 + len];
            fields.insert(key, String::from_utf8_lossy(value).into_owned());
            data = &rest[8 + len + 1..];
        }
    }
    fields
}

/// Starts the daemon with stderr connected to "the journal" (`JOURNAL_STREAM` naming it, as
/// systemd sets it) and the journal socket the test's; collects entries until one at
/// `priority` or worse arrives, then stops the daemon. Returns its stderr and the entries.
async fn daemon_under_journal(h: &Harness, priority: u8) -> (String, Vec<Entry>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = UnixDatagram::bind(dir.path().join("socket")).expect("journal socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let script = r#"mkdir -p /run/systemd/journal && mount --bind "$JOURNAL_DIR" /run/systemd/journal &&
        export JOURNAL_STREAM="$(stat -L -c %d:%i /proc/self/fd/2)" && exec "$@""#;
    let mut command = tokio::process::Command::new("unshare");
    command
        .args(["--mount", "sh", "-c", script, "sh"])
        .arg(env!("CARGO_BIN_EXE_kitesync"))
        .arg("--config")
        .arg(&h.config)
        .env("JOURNAL_DIR", dir.path())
        .env("RUST_LOG", "info")
        .env("KITESYNC_SCHEDULE__AGENTS", "")
        .env("KITESYNC_SCHEDULE__BUILDS", "* * * * * *")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut daemon = command.spawn().expect("unshare ran");
    let stderr = capture_stderr(&mut daemon);
    let entries = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut entries = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        while std::time::Instant::now() < deadline {
            // An empty datagram is the layer checking that the journal is there.
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            let e = entry(&buf[..n]);
            let severe = e
                .get("PRIORITY")
                .and_then(|p| p.parse::<u8>().ok())
                .is_some_and(|p| p <= priority);
            entries.push(e);
            if severe {
                break;
            }
        }
        entries
    })
    .await
    .expect("journal reader");
    terminate(&daemon);
    let _ = daemon.wait().await;
    (log_text(&stderr), entries)
}

/// True when this test can stand in for journald here: root, with `unshare`.
fn can_fake_the_journal() -> bool {
    if !tool_available("unshare", "util-linux") {
        return false;
    }
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root && std::env::var_os("CI").is_some() {
        panic!("tests/journald.rs needs root in CI (for unshare --mount)");
    }
    root
}

#[tokio::test(flavor = "multi_thread")]
async fn under_systemd_logs_go_to_the_journal_with_priorities_and_fields_and_no_secret() {
    if !can_fake_the_journal() {
        return;
    }
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(3));
    // BuildButler down: the daemon warns that deliveries are failing.
    h.bb.set_down(true);
    let (stderr, entries) = daemon_under_journal(&h, 4).await;
    assert!(!entries.is_empty(), "nothing reached the journal: {stderr}");
    // The log lines went to the journal, not to stderr as text.
    assert!(
        !stderr.contains("INFO") && !stderr.contains("WARN"),
        "{stderr}"
    );

    for e in &entries {
        assert_eq!(
            e.get("SYSLOG_IDENTIFIER").map(String::as_str),
            Some("kitesync"),
            "{e:?}"
        );
        assert!(
            e.contains_key("MESSAGE") && e.contains_key("TARGET"),
            "{e:?}"
        );
        for (key, value) in e {
            assert!(
                !value.contains(TOKEN) && !value.contains(API_KEY),
                "{key}={value}"
            );
            assert!(!key.contains(TOKEN) && !key.contains(API_KEY), "{key}");
        }
    }
    // An event's own fields travel as fields of the entry, prefixed.
    assert!(
        entries.iter().any(|e| e.contains_key("KITESYNC_SCHEDULE")),
        "{entries:?}"
    );
    let priorities: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.get("PRIORITY"))
        .map(String::as_str)
        .collect();
    // INFO is notice (5), WARN warning (4), ERROR error (3): `journalctl -p warning` shows
    // the warnings and errors, and only them.
    assert!(priorities.contains(&"5"), "{priorities:?}");
    assert!(
        priorities.iter().any(|p| *p == "4" || *p == "3"),
        "{priorities:?}"
    );
    assert!(
        priorities
            .iter()
            .all(|p| ["3", "4", "5", "6", "7"].contains(p)),
        "{priorities:?}"
    );
    let warning = entries
        .iter()
        .find(|e| e.get("PRIORITY").is_some_and(|p| p == "4" || p == "3"))
        .expect("a warning or error");
    assert!(
        warning["MESSAGE"].contains("503") || warning["MESSAGE"].contains("BuildButler"),
        "{warning:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_stream_that_is_not_stderr_keeps_text_logs() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(1));
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kitesync"));
    // Inherited from a unit by a program whose stderr goes elsewhere (a pipe here).
    cmd.arg("--config")
        .arg(&h.config)
        .arg("--once")
        .env("JOURNAL_STREAM", "8:12345")
        .env("RUST_LOG", "info")
        .env("KITESYNC_SCHEDULE__AGENTS", "");
    let out = cmd.output().await.expect("kitesync ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(" INFO "), "{stderr}");
}
