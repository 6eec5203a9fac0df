//! The harness of the end-to-end tests: both fakes on loopback, a temporary state
//! directory and config, and the real `kitesync` binary run against them.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod health;
pub mod memory;

#[allow(unused_imports)] // as above: not every test file needs these
pub use health::*;
#[allow(unused_imports)]
pub use memory::*;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kitesync_fakes::{data, FakeBuildkite, FakeButler};
use serde_json::Value;
use tempfile::TempDir;

pub const ORG: &str = "acme";
pub const TOKEN: &str = "bkua_SECRET_TOKEN_d6a1f0";
pub const API_KEY: &str = "bb_live_SECRET_KEY_93c2e7";

/// What a finished run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Everything it printed.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub struct Harness {
    pub bk: FakeBuildkite,
    pub bb: FakeButler,
    pub dir: TempDir,
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Harness {
    /// Both fakes and a config pointing at them (fast pace, short retry window).
    pub async fn start() -> Harness {
        Harness::with_buildkite(FakeBuildkite::start(ORG, TOKEN).await).await
    }

    /// Like [`Harness::start`], with this fake of Buildkite (one over TLS, say).
    pub async fn with_buildkite(bk: FakeBuildkite) -> Harness {
        let bb = FakeButler::start(API_KEY).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("kitesync.toml");
        let h = Harness {
            bk,
            bb,
            dir,
            config,
            env: Vec::new(),
        };
        h.write_config("");
        h
    }

    /// Writes the standard config; `extra` is appended verbatim (new sections only).
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            r#"state_path = "{state}"

[buildkite]
organization = "{ORG}"
api_url = "{bk}"
token = "{TOKEN}"
requests_per_minute = 6000

[buildbutler]
url = "{bb}"
api_key = "{API_KEY}"
retry_window_seconds = 5
{extra}"#,
            state = self.state_path().display(),
            bk = self.bk.url,
            bb = self.bb.url,
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// Sets an environment variable for the runs.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kitesync"));
        cmd.arg("--config").arg(&self.config).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("KITESYNC_") || k.to_ascii_lowercase().ends_with("_proxy") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        // The agent sync has tests of its own; elsewhere it would add a request per run.
        cmd.env("KITESYNC_SCHEDULE__AGENTS", "");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kitesync to completion.
    pub async fn run(&self, args: &[&str]) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(120), self.command(args).output())
            .await
            .expect("kitesync finished within 120 s")
            .expect("kitesync ran");
        Run::from(out)
    }

    /// `--once`, expected to deliver everything.
    pub async fn once_ok(&self) -> Run {
        let run = self.run(&["--once"]).await;
        assert_eq!(run.code, 0, "kitesync --once failed:\n{}", run.output());
        run
    }

    /// Starts kitesync without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.command(args).spawn().expect("kitesync started")
    }

    /// Starts the daemon (polling every second).
    pub fn spawn_daemon(&self) -> tokio::process::Child {
        let mut cmd = self.command(&[]);
        cmd.env("KITESYNC_SCHEDULE__BUILDS", "* * * * * *");
        cmd.spawn().expect("kitesync started")
    }

    /// Starts the daemon (polling every second) under the file-creation mask `umask`, as
    /// `sh -c 'umask UMASK && exec kitesync ...'`.
    pub fn spawn_daemon_with_umask(&self, umask: &str) -> tokio::process::Child {
        let mut daemon = self.command(&[]);
        daemon.env("KITESYNC_SCHEDULE__BUILDS", "* * * * * *");
        let daemon = daemon.as_std();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(daemon.get_program())
            .args(daemon.get_args());
        for (key, value) in daemon.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn().expect("kitesync started")
    }

    /// Buildkite requests made so far.
    pub fn bk_requests(&self) -> usize {
        self.bk.requests().len()
    }
}

/// `count` finished builds numbered from 1, finishing evenly over the last 40 minutes (well
/// inside the first poll's hour).
pub fn recent_builds(count: u64) -> Vec<Value> {
    let spacing = chrono::Duration::milliseconds((2_400_000 / count.max(1)) as i64);
    data::finished_builds(
        ORG,
        1,
        count,
        Utc::now() - chrono::Duration::seconds(5),
        spacing,
    )
}

/// Waits (up to [`DEADLINE`]) for `child`, which must end by itself (a daemon that stops
/// on a configuration error, say); its exit code and what it wrote to stderr and stdout.
pub async fn ended_by_itself(child: tokio::process::Child) -> Run {
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("exited by itself")
        .expect("reaped");
    Run::from(out)
}

/// Sends SIGTERM to `child`.
pub fn terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("still running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill ran");
    assert!(status.success());
}

/// How long a wait on a condition may take before the test fails: generous, so that a slow
/// or busy machine cannot make a test fail, while a condition that never comes still does.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `done()` holds (checking every 10 ms), up to [`DEADLINE`].
pub async fn until(mut done: impl FnMut() -> bool) {
    until_some(|| std::future::ready(done().then_some(()))).await;
}

/// Waits until the future `done()` makes answers true (for conditions that need an HTTP
/// request, say), up to [`DEADLINE`].
pub async fn until_async<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    until_some(|| {
        let check = done();
        async move { check.await.then_some(()) }
    })
    .await;
}

/// Waits until the future `check()` makes answers `Some`, and returns what it holds (checking
/// every 10 ms), up to [`DEADLINE`].
pub async fn until_some<T, F, Fut>(check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    until_some_within(DEADLINE, check).await
}

/// [`until_some`] with a deadline of `limit`: for a condition that cannot come before a wait
/// kitesync must make (a rate budget's reset, say), `limit` is that wait plus [`DEADLINE`].
pub async fn until_some_within<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("condition not reached in {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `PRAGMA integrity_check` of the state database.
pub fn integrity(h: &Harness) -> String {
    let conn = rusqlite::Connection::open(h.state_path()).expect("open state");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// A child's stderr, collected as it comes (see [`capture_stderr`]).
pub type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// Collects a child's stderr in the background.
pub fn capture_stderr(child: &mut tokio::process::Child) -> Log {
    use tokio::io::AsyncReadExt;
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let sink = std::sync::Arc::clone(&out);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    out
}

/// A time `minutes` ago.
pub fn ago(minutes: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(minutes)
}

/// What the child has written to stderr so far.
pub fn log_text(log: &Log) -> String {
    log.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Waits until `needle` appears in the captured stderr, up to [`DEADLINE`]; returns the log.
pub async fn wait_for_log(log: &Log, needle: &str) -> String {
    wait_for_logs(log, needle, 1).await
}

/// Waits until `needle` appears `count` times in the captured stderr, up to [`DEADLINE`];
/// returns the log. Fails with the log if it does not.
pub async fn wait_for_logs(log: &Log, needle: &str, count: usize) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = log_text(log);
        if text.matches(needle).count() >= count {
            return text;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{needle:?} not logged {count} times in {} s:\n{text}",
                DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When the last pending outbox row may be tried (ms since the epoch); `None` when nothing
/// is pending (or there is no state database yet).
pub fn last_retry_at_ms(h: &Harness) -> Option<i64> {
    if !h.state_path().exists() {
        return None;
    }
    let conn = rusqlite::Connection::open(h.state_path()).expect("open state");
    conn.query_row(
        "SELECT max(next_attempt_at) FROM outbox WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )
    .expect("read the outbox")
}

/// Waits until the retry backoff of every pending delivery has passed (as the state database
/// records it), so that the next run tries them all.
pub async fn until_retries_due(h: &Harness) {
    until(|| last_retry_at_ms(h).is_none_or(|at| at <= Utc::now().timestamp_millis())).await;
}

/// True when the external tool `tool` (from the apt package `package`) is on the PATH.
///
/// A test that needs one runs it only when it is there. Without it, the test is skipped with
/// a message — unless the environment variable `CI` is set (`.ci/run` installs every tool),
/// where a missing tool fails the test rather than letting it pass without checking anything.
pub fn tool_available(tool: &str, package: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{tool} is needed for this test in CI (CI is set): apt-get install {package}");
    }
    eprintln!("skipping: {tool} not installed (set CI=1 to make this a failure)");
    false
}

/// A free port on 127.0.0.1, for a server that cannot be told to pick its own (port 0) and
/// say which it took.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// `../shared/realdata/<sub>` (real reports and recorded answers from public repositories,
/// kept outside the repository; `SOURCES.md` there names each file's origin): from
/// `KITESYNC_REALDATA`, else beside the repository, else `/work/shared/realdata`. Absent, the
/// test is skipped with a message — unless `CI` is set, where it must be there.
pub fn realdata(sub: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KITESYNC_REALDATA").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata")),
        Some(PathBuf::from("/work/shared/realdata")),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .map(|dir| dir.join(sub))
        .find(|dir| dir.is_dir());
    if found.is_none() {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("../shared/realdata/{sub} is needed for this test in CI (CI is set)");
        }
        eprintln!("skipping: ../shared/realdata/{sub} not found (set CI=1 to make this a failure)");
    }
    found
}
