//! End-to-end tests of the daemon (no --once): scheduled polls, continuous delivery,
//! SIGTERM, restarts, kill -9 at random moments, and how outages are logged.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kitesync_fakes::data;
use rand::Rng;

#[tokio::test(flavor = "multi_thread")]
async fn polls_on_schedule_delivers_new_builds_and_stops_on_sigterm() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(30));
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    until(|| h.bb.builds().len() == 30).await;

    // A build finishes while the daemon runs: delivered within a poll interval or two.
    h.bk.add_builds([data::just_finished(ORG, 31, "web")]);
    let added = Instant::now();
    until(|| h.bb.builds().len() == 31).await;
    assert!(
        added.elapsed() < Duration::from_secs(5),
        "took {:?}",
        added.elapsed()
    );

    // Scheduled cycles keep coming, one request each while idle.
    let before = h.bk_requests();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let cycles = h.bk_requests() - before;
    assert!(
        (2..=5).contains(&cycles),
        "{cycles} polls in 3.5 s on a 1 s schedule"
    );

    terminate(&daemon);
    let stopping = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.wait())
        .await
        .expect("stopped within 10 s")
        .expect("reaped");
    let took = stopping.elapsed();
    assert!(
        status.success(),
        "exit 0 on SIGTERM: {status:?}\n{}",
        stderr.lock().map(|s| s.clone()).unwrap_or_default()
    );
    println!("daemon stopped {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(5),
        "a clean stop takes a few seconds at most: {took:?}"
    );
    assert_eq!(integrity(&h), "ok");

    // A restart picks up where it stopped: nothing is delivered again.
    let posts = h.bb.build_posts();
    let mut daemon = h.spawn_daemon();
    let before = h.bk_requests();
    until(|| h.bk_requests() >= before + 2).await;
    assert_eq!(h.bb.build_posts(), posts);
    terminate(&daemon);
    assert!(daemon.wait().await.expect("reaped").success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_poll_does_not_stack_up() {
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "kitesync=debug");
    h.bk.set_builds(recent_builds(10));
    h.bk.set_latency(Duration::from_millis(2500));
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    tokio::time::sleep(Duration::from_secs(6)).await;
    terminate(&daemon);
    daemon.wait().await.expect("reaped");
    assert_eq!(h.bk.max_in_flight(), 1, "polls overlapped");
    assert!(
        h.bk_requests() <= 3,
        "ticks during a slow poll are skipped: {}",
        h.bk_requests()
    );
    let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
    let skipped = log
        .matches("the previous poll is still running: skipping this tick")
        .count();
    assert!(
        skipped >= 2,
        "ticks are skipped, not queued: {skipped} skipped\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_logged_when_it_starts_and_when_it_ends() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(5));
    h.bb.set_down(true);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(h.bb.auth_seen().len() > 5, "it kept retrying");
    h.bb.set_down(false);
    until(|| h.bb.builds().len() == 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&daemon);
    daemon.wait().await.expect("reaped");
    let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        log.matches("BuildButler delivery failing").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("BuildButler delivery recovered").count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_stops_the_daemon_with_exit_2() {
    let h = Harness::start().await;
    h.bk.set_scopes(&[]);
    let daemon = h.spawn_daemon();
    let out = tokio::time::timeout(Duration::from_secs(10), daemon.wait_with_output())
        .await
        .expect("exited by itself")
        .expect("reaped");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lacks the read_builds scope"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_nothing() {
    let h = Harness::start().await;
    h.bb.set_latency(Duration::from_millis(3));
    let mut rng = rand::rng();
    let mut next = 1;
    for round in 0..6 {
        // New builds keep finishing between (and during) the crashes.
        let now = chrono::Utc::now();
        h.bk.add_builds(data::finished_builds(
            ORG,
            next,
            60,
            now,
            chrono::Duration::milliseconds(500),
        ));
        next += 60;
        let mut daemon = h.spawn_daemon();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1500))).await;
        daemon.start_kill().expect("kill -9");
        daemon.wait().await.expect("reaped");
        assert_eq!(integrity(&h), "ok", "round {round}");
    }
    h.bb.set_latency(Duration::ZERO);
    h.once_ok().await;
    let total = (next - 1) as usize;
    assert_eq!(h.bb.builds().len(), total, "nothing lost");
    let posts = h.bb.build_posts() as usize;
    assert!(
        posts <= total + 6 * 72,
        "re-sends bounded by what was in flight: {posts}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_buildbutler_key_at_start_stops_the_daemon_with_exit_2() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__API_KEY", "bb_live_WRONG");
    h.bk.set_builds(recent_builds(3));
    let daemon = h.spawn_daemon();
    let out = tokio::time::timeout(Duration::from_secs(20), daemon.wait_with_output())
        .await
        .expect("exited by itself")
        .expect("reaped");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BuildButler rejected the API key"),
        "{stderr}"
    );
}
