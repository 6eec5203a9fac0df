//! The README's "first hour", as a user would do it, against the fakes: the lines between
//! `<!-- walkthrough -->` and `<!-- /walkthrough -->` are run one by one with `sh`, on the
//! packaged config copied into a temporary root. So the README and what works cannot drift
//! apart. (The `.deb` is not built and `/etc` is not touched.)
//!
//! What stands in for the machine: `/etc/kitesync` and `/var/lib/kitesync` are directories of
//! the temporary root (`/var/lib/kitesync` made as systemd's `StateDirectory=` would),
//! `sudo` is dropped (the test runs as whoever runs it), `kitesync` is the binary under test,
//! `systemctl start kitesync-once` runs the once unit's `ExecStart=` with the environment the
//! unit gives it (its credentials are the same files), the placeholders `bkua_...` and
//! `bb_live_...` are the fakes' secrets, and Buildkite's API URL (which the packaged config
//! leaves at its default) is the fake's. The packaged config's placeholders differ from what
//! the README's `sed` line writes, so that line runs on the file as shipped and the test
//! checks what it wrote; only then is the README's BuildButler URL pointed at the fake.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The README's walkthrough lines.
fn walkthrough() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let start = readme
        .find("<!-- walkthrough")
        .expect("the walkthrough's start");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("the walkthrough's end");
    let block = &readme[start..end];
    let code = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    code.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `Key=Value` of the `[Service]` section of a unit in `systemd/`, in order.
fn unit_settings(unit: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(unit),
    )
    .expect("unit");
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

struct Machine {
    root: PathBuf,
    bin: String,
}

impl Machine {
    /// `path` under the temporary root.
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.root.display())
    }

    /// A README line as it runs here (its BuildButler URL is left as written).
    fn line(&self, line: &str) -> String {
        self.paths(line)
            .replace("sudo ", "")
            .replace("bkua_...", TOKEN)
            .replace("bb_live_...", API_KEY)
            .replace("kitesync --config", &format!("{} --config", self.bin))
    }

    /// `text` with the machine's paths under the temporary root.
    fn paths(&self, text: &str) -> String {
        text.replace("/etc/kitesync", &self.at("/etc/kitesync"))
            .replace("/var/lib/kitesync", &self.at("/var/lib/kitesync"))
    }

    /// What `apt install` and systemd's StateDirectory= leave behind: the packaged config as
    /// shipped (its paths under the temporary root), and the state directory.
    fn install(&self) {
        std::fs::create_dir_all(self.at("/etc/kitesync")).expect("etc");
        std::fs::create_dir_all(self.at("/var/lib/kitesync")).expect("state directory");
        std::fs::write(self.config(), self.paths(&packaged())).expect("config");
    }

    /// The installed config file.
    fn config(&self) -> String {
        self.at("/etc/kitesync/kitesync.toml")
    }

    /// `[section] key` of the installed config.
    fn setting(&self, section: &str, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.config()).expect("config");
        let doc: toml_edit::DocumentMut = text.parse().expect("TOML");
        doc.get(section)?.get(key)?.as_str().map(str::to_string)
    }

    /// Sets `[section] key` of the installed config to `value`.
    fn set(&self, section: &str, key: &str, value: &str) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        let mut doc: toml_edit::DocumentMut = text.parse().expect("TOML");
        doc[section][key] = toml_edit::value(value);
        std::fs::write(self.config(), doc.to_string()).expect("config");
    }

    /// What `systemctl start kitesync-once` runs: the unit's command, with its environment
    /// (state path and credentials) as systemd would set it.
    fn once_unit(&self) -> (String, Vec<(String, String)>) {
        let exec = unit_settings("kitesync-once.service", "ExecStart");
        let exec = exec
            .first()
            .expect("ExecStart")
            .replace("/usr/bin/kitesync", "kitesync");
        let exec = self.line(&exec);
        let credentials: Vec<(String, String)> =
            unit_settings("kitesync-once.service", "LoadCredential")
                .iter()
                .filter_map(|c| c.split_once(':'))
                .map(|(name, path)| (name.to_string(), self.line(path)))
                .collect();
        let env = unit_settings("kitesync-once.service", "Environment")
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| {
                let mut v = v.replace("%S", &self.at("/var/lib"));
                for (name, path) in &credentials {
                    v = v.replace(&format!("%d/{name}"), path);
                }
                (k.to_string(), v)
            })
            .collect();
        (exec, env)
    }
}

/// The packaged config, as shipped.
fn packaged() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.packaged.toml"))
        .expect("packaged config")
}

/// What the README's `sed` line writes: the fakes' organization and the README's BuildButler.
const README_BUILDBUTLER: &str = "http://buildbutler:3000";

fn machine(root: &tempfile::TempDir) -> Machine {
    Machine {
        root: root.path().to_path_buf(),
        bin: env!("CARGO_BIN_EXE_kitesync").to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readmes_first_hour_works_as_written() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(5));
    let root = tempfile::tempdir().expect("root");
    let m = machine(&root);
    m.install();
    // The packaged placeholders are not what the README writes: its `sed` line must do it.
    assert_ne!(m.setting("buildkite", "organization").as_deref(), Some(ORG));
    assert_ne!(
        m.setting("buildbutler", "url").as_deref(),
        Some(README_BUILDBUTLER)
    );

    let lines = walkthrough();
    assert!(lines.len() >= 5, "{lines:?}");
    assert!(
        lines[0].contains("sed -i"),
        "the first line sets the config"
    );
    let mut said = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let (command, env) = if line.contains("systemctl start kitesync-once") {
            m.once_unit()
        } else {
            (m.line(line), Vec::new())
        };
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("KITESYNC_BUILDKITE__API_URL", &h.bk.url)
            .env("KITESYNC_SCHEDULE__AGENTS", "")
            .envs(env)
            .output()
            .await
            .expect("sh ran");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "README line failed: {line}\n{command}\n{output}"
        );
        said.push((line.clone(), output));
        if i == 0 {
            // The README's values are in the file; only now is its BuildButler the fake.
            assert_eq!(
                m.setting("buildkite", "organization").as_deref(),
                Some(ORG),
                "{line}"
            );
            assert_eq!(
                m.setting("buildbutler", "url").as_deref(),
                Some(README_BUILDBUTLER),
                "{line}"
            );
            m.set("buildbutler", "url", &h.bb.url);
        }
    }

    // The secrets are root's alone, and never printed.
    use std::os::unix::fs::PermissionsExt;
    for secret in [
        "/etc/kitesync/buildkite-token",
        "/etc/kitesync/buildbutler-key",
    ] {
        let mode = std::fs::metadata(m.at(secret))
            .expect("secret")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    for (line, output) in &said {
        assert!(
            !output.contains(TOKEN) && !output.contains(API_KEY),
            "{line}: {output}"
        );
    }
    let output = |needle: &str| {
        said.iter()
            .find(|(l, _)| l.contains(needle))
            .map(|(_, o)| o.clone())
            .unwrap_or_default()
    };
    // check passed every point, the once unit delivered, status shows it.
    let check = output(" check");
    assert!(
        !check.contains("FAIL") && check.contains("ok    the Buildkite token is valid"),
        "{check}"
    );
    assert_eq!(h.bb.builds().len(), 5, "{}", output("kitesync-once"));
    let status = output(" status");
    let row = |name: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default();
        line[name.len()..].trim().to_string()
    };
    assert_eq!(row("outbox"), "empty", "{status}");
    assert_ne!(row("last delivery ok"), "never", "{status}");
}

/// A user who skips the README's `sed` line (or half of it) gets a plain error naming the
/// placeholder and its line, from `check` and from the once unit's `--once` alike, and no
/// request leaves: not to Buildkite, not to a placeholder host.
#[tokio::test(flavor = "multi_thread")]
async fn the_packaged_placeholders_are_refused_by_name_before_any_request() {
    let h = Harness::start().await;
    let root = tempfile::tempdir().expect("root");
    let m = machine(&root);
    m.install();
    let secrets = walkthrough();
    let secrets = secrets.iter().filter(|l| l.contains("install -m 0600"));
    for line in secrets {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(m.line(line))
            .output()
            .expect("sh ran");
        assert!(out.status.success(), "{line}");
    }
    let line_of = |key: &str| {
        let at = packaged().lines().position(|l| l.starts_with(key));
        format!("line {}", at.expect("the key") + 1)
    };
    let kitesync = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&m.bin);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KITESYNC_")) {
            cmd.env_remove(k);
        }
        // Were it asked, the fake would answer: nothing must ask it.
        cmd.env("KITESYNC_BUILDKITE__API_URL", &h.bk.url)
            .arg("--config")
            .arg(m.config())
            .args(args)
            .output()
            .expect("kitesync ran")
    };
    let refused = |args: &[&str], key: &str, problem: &str| {
        let out = kitesync(args);
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(
            said.contains(&line_of(key)) && said.contains(problem),
            "{args:?}: {said}"
        );
    };
    let before = h.bk_requests();
    let organization =
        "[buildkite] organization = \"<your-organization-slug>\" is the packaged placeholder";
    refused(&["check"], "organization", organization);
    refused(&["--once"], "organization", organization);
    // Half the `sed` line: the organization set, the BuildButler URL not.
    m.set("buildkite", "organization", ORG);
    let url =
        "[buildbutler] url = \"https://your-buildbutler.invalid/\" is the packaged placeholder";
    refused(&["check"], "url", url);
    assert_eq!(h.bk_requests(), before, "no request to Buildkite");
    assert!(h.bb.posts().is_empty(), "nothing to BuildButler");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_run_never_writes_to_a_state_database_another_user_owns() {
    use std::os::unix::fs::MetadataExt;
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(2));
    h.once_ok().await;
    // As if the service's (dynamic) user owned it: only root can give a file away.
    let me = std::fs::metadata("/proc/self").expect("proc").uid();
    if me != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test needs root in CI (chown)"
        );
        return;
    }
    let service_uid = 61_234;
    for file in std::fs::read_dir(h.dir.path()).expect("dir").flatten() {
        let name = file.file_name().to_string_lossy().to_string();
        if name.starts_with("state.db") {
            std::os::unix::fs::chown(file.path(), Some(service_uid), Some(service_uid))
                .expect("chown");
        }
    }
    std::os::unix::fs::chown(h.dir.path(), Some(service_uid), Some(service_uid)).expect("chown");
    let before: Vec<String> = std::fs::read_dir(h.dir.path())
        .expect("dir")
        .flatten()
        .map(|f| f.file_name().to_string_lossy().to_string())
        .collect();

    for args in [
        &["--once"][..],
        &["replay", "--dead"],
        &["--backfill", "--since", "2026-01-01"],
    ] {
        let run = h.run(args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.output());
        assert!(
            run.stderr.contains(&format!(
                "it belongs to user {service_uid}, and this is user 0"
            )),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("sudo systemd-run --wait --pty --unit=run-kitesync")
                && run.stderr.contains("-p User=kitesync")
                && run.stderr.contains(&format!(
                    "kitesync --config {} {}",
                    h.config.display(),
                    args.join(" ")
                )),
            "{}",
            run.stderr
        );
    }
    // Nothing was created or taken over: every file still belongs to the service's user.
    for file in std::fs::read_dir(h.dir.path()).expect("dir").flatten() {
        let name = file.file_name().to_string_lossy().to_string();
        if name.starts_with("state.db") {
            assert_eq!(file.metadata().expect("meta").uid(), service_uid, "{name}");
            assert!(
                before.contains(&name),
                "{name} was created by the refused runs"
            );
        }
    }
    // Reading still works.
    let run = h.run(&["status"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
}
