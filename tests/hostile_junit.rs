//! JUnit that cannot explode (issue 12): a file built to expand — a 4 MB suite name over
//! 100,000 unnamed child suites, each with one case without a class name, 8 MB in all — is
//! parsed or refused within the file's size + 16 MB, and the real binary skips it with a
//! warning while delivering everything else, its peak RSS under 100 MB. Each runs under an
//! address-space limit, so that a regression fails the test instead of exhausting the machine.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kitesync::sync::junit;

const MIB: u64 = 1024 * 1024;
/// Set in the child process of [`the_bomb_is_parsed_or_refused_within_its_size_plus_16_mb`].
const CHILD: &str = "KITESYNC_TEST_JUNIT_BOMB";

/// The bomb: a 4 MB suite name over 100,000 unnamed child suites of one case each.
fn bomb() -> Vec<u8> {
    let mut xml = String::with_capacity(9 * MIB as usize);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites><testsuite name=\"");
    xml.push_str(&"B".repeat(4 * MIB as usize));
    xml.push_str("\">");
    for _ in 0..100_000 {
        xml.push_str("<testsuite><testcase name=\"t\"/></testsuite>");
    }
    xml.push_str("</testsuite></testsuites>\n");
    xml.into_bytes()
}

/// Peak resident memory (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Limits a running process's address space (`prlimit --as`).
fn limit_address_space(pid: u32, bytes: u64) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--as={bytes}"))
        .status()
        .expect("prlimit ran");
    assert!(status.success(), "prlimit --as failed");
}

/// In the child: parses the file named by [`CHILD`] and prints the outcome and its peak RSS.
fn child(path: &str) {
    let bytes = std::fs::read(path).expect("bomb file");
    let outcome = match junit::parse(&bytes, "bomb") {
        Ok(suites) => format!("parsed {} suites", suites.len()),
        Err(e) => format!("refused: {e}"),
    };
    drop(bytes);
    let peak = peak_rss(std::process::id()).expect("VmHWM");
    println!("OUTCOME {outcome}\nPEAK {peak}");
}

#[test]
fn the_bomb_is_parsed_or_refused_within_its_size_plus_16_mb() {
    if let Ok(path) = std::env::var(CHILD) {
        child(&path);
        return;
    }
    if !tool_available("prlimit", "util-linux") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bomb.xml");
    let bytes = bomb();
    let size = bytes.len() as u64;
    assert!((8 * MIB..9 * MIB).contains(&size), "an 8 MB bomb: {size}");
    std::fs::write(&path, &bytes).expect("write bomb");
    drop(bytes);
    // This very test, alone, in a child process whose address space is limited: without the
    // caps, the copies of the name would need hundreds of GB.
    let out = Command::new("prlimit")
        .arg(format!("--as={}", size + 512 * MIB))
        .arg(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "the_bomb_is_parsed_or_refused_within_its_size_plus_16_mb",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .expect("child ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, value)| value.to_string()))
            .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"))
    };
    let outcome = field("OUTCOME ");
    let peak: u64 = field("PEAK ").parse().expect("a number");
    println!(
        "bomb of {:.1} MiB: {outcome}; peak RSS {:.1} MiB",
        size as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert!(
        peak <= size + 16 * MIB,
        "peak RSS {peak} over the file's size {size} + 16 MiB ({outcome})"
    );
}

/// A build whose artifact is the bomb, among builds with ordinary reports: the daemon skips the
/// bomb with a warning naming build and path, delivers every build and every other build's
/// test results, and its peak RSS stays under 100 MB.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_skips_a_junit_bomb_and_delivers_everything_else() {
    if !tool_available("prlimit", "util-linux") {
        return;
    }
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[reports/*.xml]");
    h.set_env("MALLOC_ARENA_MAX", "2");
    h.bk.set_budgets(1000, 1000, std::time::Duration::from_secs(60));
    h.bk.set_builds(recent_builds(6));
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit/real");
    let report = std::fs::read(real.join("surefire-rerun-flaky.xml")).expect("report");
    for n in 1..=6u64 {
        let mut files = vec![("reports/junit.xml".to_string(), report.clone())];
        if n == 3 {
            files.push(("reports/bomb.xml".to_string(), bomb()));
        }
        h.bk.set_artifacts(n, files);
    }
    let mut daemon = h.spawn_daemon();
    let pid = daemon.id().expect("running");
    limit_address_space(pid, 2048 * MIB);
    let log = capture_stderr(&mut daemon);
    let warning = wait_for_log(&log, "path=\"reports/bomb.xml\"").await;
    until(|| h.bb.builds().len() == 6 && h.bb.suites().len() == 6).await;
    // Later polls do not download the bomb again (build 3 has two files).
    let downloads = || {
        h.bk.requests()
            .iter()
            .filter(|r| r.uri.contains("/builds/3/artifacts/") && r.uri.ends_with("/download"))
            .count()
    };
    let seen = h.bk_requests();
    until(|| h.bk_requests() >= seen + 3).await;
    assert_eq!(downloads(), 2, "each of build 3's files downloaded once");
    let peak = peak_rss(pid).expect("VmHWM of the daemon");
    terminate(&daemon);
    let line = warning
        .lines()
        .find(|l| l.contains("reports/bomb.xml"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("JUnit file skipped") && line.contains("#3\""),
        "the warning names the build and the path: {line}"
    );
    println!(
        "daemon peak RSS with a JUnit bomb: {:.1} MiB",
        peak as f64 / MIB as f64
    );
    assert!(peak < 100 * 1000 * 1000, "peak RSS {peak} bytes");
    for suite in h.bb.suites() {
        assert_eq!(
            suite["name"], "com.acme.CartTest",
            "only the ordinary reports"
        );
    }
}
