//! The systemd units pass `systemd-analyze verify` without a warning.

mod common;

use std::path::Path;
use std::process::Command;

use common::tool_available;

#[test]
fn units_verify_cleanly() {
    // Skipped without systemd-analyze, except in CI (CI set), where that is a failure.
    if !tool_available("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for entry in std::fs::read_dir(&units).expect("systemd/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("unit");
        // verify checks that ExecStart exists: point it at the binary under test.
        let text = text.replace("/usr/bin/kitesync", env!("CARGO_BIN_EXE_kitesync"));
        std::fs::write(dir.path().join(path.file_name().expect("name")), text).expect("copy");
    }
    for unit in [
        "kitesync.service",
        "kitesync@acme.service",
        "kitesync-once.service",
        "kitesync-once.timer",
    ] {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.path().join(unit))
            .output()
            .expect("systemd-analyze ran");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{unit}: {said}");
        assert!(said.trim().is_empty(), "{unit} has warnings: {said}");
    }
}

#[test]
fn the_once_unit_leaves_room_for_fetching_test_results() {
    let unit = include_str!("../systemd/kitesync-once.service");
    let timeout = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStartSec="))
        .expect("a start timeout");
    let seconds: u64 = match timeout.strip_suffix("min") {
        Some(minutes) => minutes.parse::<u64>().expect("minutes") * 60,
        None => timeout.trim_end_matches('s').parse().expect("seconds"),
    };
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(
        !exec.contains("--enrich-seconds"),
        "the unit relies on the default"
    );
    // Two rate-limit resets while polling (2 min each at most), the delivery retry window
    // (30 s by default) before and after enrichment, and enrichment itself.
    let needed = 2 * 120 + 2 * 30 + kitesync::oneshot::DEFAULT_ENRICH_SECONDS;
    assert!(
        seconds >= needed,
        "TimeoutStartSec={timeout} leaves no room: a run may need {needed} s"
    );
}
