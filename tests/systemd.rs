//! The systemd units pass `systemd-analyze verify` without a warning.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tool_available;
use kitesync::buildkite::budget;
use kitesync::cli::oneshot;
use kitesync::delivery::deliver;

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
        let (ok, said) = verify(&dir.path().join(unit));
        assert!(ok, "{unit}: {said}");
        assert!(said.trim().is_empty(), "{unit} has warnings: {said}");
    }
}

/// The `Key=Value` lines of a unit's `[Service]` section.
fn service_lines(unit: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(unit);
    let text = std::fs::read_to_string(&path).expect("unit");
    text.lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_services_contain_a_runaway_and_bind_only_the_metrics_port() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"))
            .expect("example");
    assert!(
        example.contains("listen = \"127.0.0.1:9187\""),
        "the default metrics port is the one kitesync.service allows"
    );
    for (unit, allowed) in [
        ("kitesync.service", Some("SocketBindAllow=tcp:9187")),
        ("kitesync@.service", None),
        ("kitesync-once.service", None),
    ] {
        let lines = service_lines(unit);
        for limit in ["MemoryHigh=", "MemoryMax=", "TasksMax=", "LimitNOFILE="] {
            assert!(
                lines.iter().any(|l| l.starts_with(limit)),
                "{unit} lacks {limit}"
            );
        }
        for needed in ["SocketBindDeny=any", "UMask=0077"] {
            assert!(lines.iter().any(|l| l == needed), "{unit} lacks {needed}");
        }
        let allows: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("SocketBindAllow="))
            .collect();
        assert_eq!(
            allows.first().map(|l| l.as_str()),
            allowed,
            "{unit}: {allows:?}"
        );
        assert!(allows.len() <= 1, "{unit}: {allows:?}");
    }
}

/// The `-p`/`--property=` settings of the backfill `systemd-run` recipe in docs/operating.md.
fn backfill_recipe() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operating.md"))
            .expect("docs/operating.md");
    let recipe = doc
        .split("```")
        .find(|block| block.starts_with("sh\n") && block.contains("systemd-run"))
        .expect("the backfill recipe")
        .replace("\\\n", " ");
    // Words, with "double quotes" keeping spaces.
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in recipe.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    words.push(word);
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        if w == "-p" {
            settings.extend(words.next());
        } else if let Some(setting) = w.strip_prefix("--property=") {
            settings.push(setting.to_string());
        }
    }
    settings
}

#[test]
fn the_backfill_recipe_carries_the_services_hardening() {
    let recipe = backfill_recipe();
    assert!(recipe.iter().any(|s| s == "UMask=0077"), "{recipe:?}");
    // The service's dynamic user (named after the unit), so both can open the 0600 files.
    assert!(recipe.iter().any(|s| s == "User=kitesync"), "{recipe:?}");
    // Everything but what makes the service a service, its environment (the recipe names
    // the paths itself) and the metrics port (a backfill serves nothing).
    let service_only = [
        "Type=",
        "NotifyAccess=",
        "WatchdogSec=",
        "ExecStart=",
        "Restart=",
        "RestartSec=",
        "RestartPreventExitStatus=",
        "TimeoutStopSec=",
        "WorkingDirectory=",
        "Environment=",
        "SocketBindAllow=",
    ];
    for line in service_lines("kitesync.service") {
        if service_only.iter().any(|k| line.starts_with(k)) {
            continue;
        }
        assert!(
            recipe.contains(&line),
            "the backfill recipe lacks {line}: {recipe:?}"
        );
    }

    // As a unit, the same settings pass systemd-analyze verify.
    if !tool_available("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("run-backfill.service");
    let body = recipe.join("\n");
    let exec = env!("CARGO_BIN_EXE_kitesync");
    std::fs::write(
        &unit,
        format!(
            "[Service]\nType=oneshot\nExecStart={exec} --backfill --since 2025-01-01\n{body}\n"
        ),
    )
    .expect("write");
    let (ok, said) = verify(&unit);
    assert!(ok, "{said}");
    assert!(said.trim().is_empty(), "the recipe's settings: {said}");
}

#[test]
fn the_packaged_config_holds_no_secret_and_stays_readable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config.packaged.toml", "config.example.toml"] {
        let text = std::fs::read_to_string(root.join(file)).expect("config");
        let doc: toml_edit::DocumentMut = text.parse().expect("TOML");
        for (section, key) in [("buildkite", "token"), ("buildbutler", "api_key")] {
            assert!(
                doc.get(section).and_then(|s| s.get(key)).is_none(),
                "{file} sets [{section}] {key}"
            );
        }
    }
    // The packaged config names the credential files the install steps write, and a state
    // path that is the units' own.
    let packaged: toml_edit::DocumentMut =
        std::fs::read_to_string(root.join("config.packaged.toml"))
            .expect("packaged")
            .parse()
            .expect("TOML");
    assert_eq!(
        packaged["buildkite"]["token_file"].as_str(),
        Some("/etc/kitesync/buildkite-token")
    );
    assert_eq!(
        packaged["buildbutler"]["api_key_file"].as_str(),
        Some("/etc/kitesync/buildbutler-key")
    );
    assert_eq!(
        packaged["state_path"].as_str(),
        Some("/var/lib/kitesync/kitesync.db")
    );
    let service = std::fs::read_to_string(root.join("systemd/kitesync.service")).expect("unit");
    assert!(service.contains("LoadCredential=buildkite-token:/etc/kitesync/buildkite-token"));
    assert!(service.contains("LoadCredential=buildbutler-key:/etc/kitesync/buildbutler-key"));
    assert!(service.contains("Environment=KITESYNC_STATE_PATH=%S/kitesync/kitesync.db"));
    // Installed world-readable: the units' dynamic user must read it.
    let cargo: toml_edit::DocumentMut = std::fs::read_to_string(root.join("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("TOML");
    let assets = cargo["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("deb assets");
    let installed = assets
        .iter()
        .filter_map(|a| a.as_array())
        .find(|a| a.get(1).and_then(|v| v.as_str()) == Some("etc/kitesync/kitesync.toml"))
        .expect("the packaged config");
    assert_eq!(installed.get(2).and_then(|v| v.as_str()), Some("644"));
    let unit = std::fs::read_to_string(root.join("systemd/kitesync.service")).expect("unit");
    assert!(
        unit.contains("install -D -m 0644 config.packaged.toml /etc/kitesync/kitesync.toml"),
        "the unit's install note keeps the config readable"
    );
}

#[test]
fn the_once_unit_leaves_room_for_fetching_test_results() {
    let unit = include_str!("../systemd/kitesync-once.service");
    let timeout_setting = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStartSec="))
        .expect("a start timeout");
    let seconds: u64 = match timeout_setting.strip_suffix("min") {
        Some(minutes) => minutes.parse::<u64>().expect("minutes") * 60,
        None => timeout_setting
            .trim_end_matches('s')
            .parse()
            .expect("seconds"),
    };
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(
        !exec.contains("--enrich-seconds"),
        "the unit relies on the default"
    );
    // What the unit runs with: the packaged config filled in as the README does, defaults
    // for the rest.
    let config = packaged_config_filled_in();
    let (window, timeout) = (
        config.buildbutler.retry_window(),
        config.buildbutler.timeout(),
    );
    // Two rate-limit resets while polling, each held at most the cap and its buffer.
    let resets = 2 * (budget::MAX_WAIT + budget::RESET_BUFFER);
    // Two delivery passes, before and after fetching test results and logs. While
    // BuildButler times out, each is its retry window and then at most a chunk of
    // GIVE_UP_ROUNDS rounds of `concurrency` requests (a round costs a timeout): the first
    // pass tries every pending row once whatever its backoff (the retries of what earlier
    // runs left) and gives up after the chunk; no batch of retries starts once the window
    // has closed, and the batch under way ends within the chunk.
    let pass = window + timeout * deliver::GIVE_UP_ROUNDS as u32;
    let enrich = Duration::from_secs(oneshot::DEFAULT_ENRICH_SECONDS);
    let needed = resets + 2 * pass + enrich;
    assert!(
        Duration::from_secs(seconds) >= needed,
        "TimeoutStartSec={timeout_setting} leaves no room: a run may need {needed:?}"
    );
}

/// The packaged config with the README's values and inline secrets, loaded.
fn packaged_config_filled_in() -> kitesync::config::Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config.packaged.toml")).expect("packaged");
    let mut doc: toml_edit::DocumentMut = text.parse().expect("TOML");
    doc["buildkite"]["organization"] = toml_edit::value("acme");
    doc["buildkite"]["token"] = toml_edit::value("bkua_test");
    doc["buildbutler"]["url"] = toml_edit::value("http://buildbutler:3000");
    doc["buildbutler"]["api_key"] = toml_edit::value("bb_live_test");
    for (section, key) in [("buildkite", "token_file"), ("buildbutler", "api_key_file")] {
        doc[section].as_table_mut().expect("a section").remove(key);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kitesync.toml");
    std::fs::write(&path, doc.to_string()).expect("config");
    kitesync::config::Config::load(&path).expect("the packaged config, filled in, loads")
}

/// `systemd-analyze verify` of a unit file: whether it passed, and everything it said.
fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .expect("systemd-analyze ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}
