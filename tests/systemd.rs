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
