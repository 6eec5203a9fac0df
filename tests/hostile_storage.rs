//! Hostile artifact storage: a build's `/download` redirect that points at the cloud metadata
//! service. It is refused from its URL, before anything connects to it, named in a warning,
//! and every other build and test result is still delivered.
//!
//! Nothing here may ever reach a metadata address, even if the check regressed: the daemon
//! runs with every proxy variable pointing at a trap on 127.0.0.1 (only the fakes, also on
//! 127.0.0.1, are reached directly), so a request that got past the check would end in the
//! trap, which counts it, instead of at the address.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

/// Builds whose artifact redirect points at a metadata address, and where.
const HOSTILE: [(u64, &str); 3] = [
    (
        7,
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/?X-Amz-Signature=s3cr3t",
    ),
    (11, "http://[::ffff:a9fe:a9fe]/latest/meta-data/"),
    (12, "http://[fd00:ec2::254]/latest/api/token"),
];
const BUILDS: u64 = 20;

/// A proxy on 127.0.0.1 that answers nothing and counts the connections it gets.
async fn trap() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let came = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&came);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (format!("http://{addr}"), came)
}

/// The peak resident set size of process `pid`, in bytes (`VmHWM` in `/proc/<pid>/status`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_the_metadata_service_is_refused_before_connecting() {
    let mut h = Harness::start().await;
    let (trap, came) = trap().await;
    for proxy in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
    ] {
        h.set_env(proxy, &trap);
    }
    h.set_env("no_proxy", "127.0.0.1");
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[junit/*.xml]");
    h.bk.set_budgets(1000, 1000, std::time::Duration::from_secs(60));
    h.bk.set_builds(recent_builds(BUILDS));
    let junit = std::fs::read(format!(
        "{}/tests/data/junit/junit4-surefire.xml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    for n in 1..=BUILDS {
        h.bk.set_artifacts(n, vec![(format!("junit/report-{n}.xml"), junit.clone())]);
    }
    for (n, location) in HOSTILE {
        h.bk.set_download_location(n, location);
    }

    let mut daemon = h.spawn_daemon();
    let pid = daemon.id().expect("running");
    let stderr = capture_stderr(&mut daemon);
    let normal = (BUILDS as usize) - HOSTILE.len();
    until(|| h.bb.builds().len() == BUILDS as usize && h.bb.suites().len() == normal).await;
    let log = wait_for_logs(&stderr, "JUnit file skipped: refused", HOSTILE.len()).await;

    // Each refusal names the build, the file and the address, never the presigned query.
    for (n, host) in [
        (7, "169.254.169.254"),
        (11, "[::ffff:a9fe:a9fe]"),
        (12, "[fd00:ec2::254]"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("junit/report-{n}.xml")))
            .unwrap_or_else(|| panic!("no warning for build {n}:\n{log}"));
        assert!(
            line.contains("WARN") && line.contains(host) && line.contains("metadata address"),
            "{line}"
        );
    }
    assert!(!log.contains("s3cr3t"), "{log}");

    // Nothing went anywhere but the fakes: not even through the proxy.
    assert_eq!(
        came.load(Ordering::SeqCst),
        0,
        "a request got past the check"
    );
    // Every other file came from the storage host, once, without the token.
    let fetched = h.bk.storage_authorizations();
    assert_eq!(fetched.len(), normal);
    assert!(fetched.iter().all(Option::is_none));

    let peak = peak_rss(pid);
    println!("peak RSS: {:.1} MiB", peak as f64 / (1024.0 * 1024.0));
    assert!(peak < 100_000_000, "peak RSS {peak} bytes");

    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}
