//! End-to-end tests of the daemon (no --once): scheduled polls, continuous delivery,
//! SIGTERM, restarts, kill -9 at random moments, and how outages are logged.

mod common;

use std::time::Duration;

use common::*;
use kitesync_fakes::{data, Endpoint, Fault};
use rand::Rng;

/// A completed poll, from the daemon's `poll done` debug line (`RUST_LOG=kitesync=debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PollDone {
    pages: u64,
    queued: u64,
    /// Buildkite requests the daemon has made since it started, this poll's included.
    requests: u64,
}

/// Every `poll done` line of `log`, in order.
fn polls_done(log: &str) -> Vec<PollDone> {
    log.lines()
        .filter(|l| l.contains(" poll done "))
        .map(|line| {
            let field = |name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            };
            PollDone {
                pages: field("pages"),
                queued: field("queued"),
                requests: field("requests"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_on_schedule_delivers_new_builds_and_stops_on_sigterm() {
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "kitesync=debug");
    h.bk.set_builds(recent_builds(30));
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    until(|| h.bb.builds().len() == 30).await;

    // A build finishes while the daemon runs: the next poll queues it (or the one after, if
    // a poll had already been answered), and it is delivered without a restart. While idle,
    // a poll is one Buildkite request, so the poll that queued it made request r + 1 or
    // r + 2, r being the requests answered before the build finished.
    let answered = h.bk_requests() as u64;
    h.bk.add_builds([data::just_finished(ORG, 31, "web")]);
    until(|| h.bb.builds().len() == 31).await;
    let found = until_some(|| {
        let polls = polls_done(&log_text(&stderr));
        std::future::ready(polls.iter().position(|p| p.queued == 1))
    })
    .await;
    let polls = polls_done(&log_text(&stderr));
    assert!(
        polls[found].requests <= answered + 2,
        "build 31 was queued by the poll that made request {}, not by one of the two polls \
         after request {answered}: {polls:?}",
        polls[found].requests
    );

    // Scheduled polls keep coming, one request each while idle.
    until(|| polls_done(&log_text(&stderr)).len() >= found + 4).await;
    let polls = polls_done(&log_text(&stderr));
    for pair in polls[found..].windows(2) {
        let (before, idle) = (pair[0], pair[1]);
        assert_eq!(idle.queued, 0, "{polls:?}");
        assert_eq!(idle.pages, 1, "an idle poll reads one page: {polls:?}");
        assert_eq!(
            idle.requests,
            before.requests + 1,
            "an idle poll is one request: {polls:?}"
        );
    }

    terminate(&daemon);
    let stopping = std::time::Instant::now();
    // The deadline of the stop is generous (it is not a benchmark; docs/performance.md's
    // figure is); what matters is that it stops by itself, cleanly, with exit 0.
    let status = tokio::time::timeout(DEADLINE, daemon.wait())
        .await
        .expect("stopped by itself after SIGTERM")
        .expect("reaped");
    println!("daemon stopped {:?} after SIGTERM", stopping.elapsed());
    assert!(
        status.success(),
        "exit 0 on SIGTERM: {status:?}\n{}",
        log_text(&stderr)
    );
    wait_for_log(&stderr, "stopping: finishing the current transaction").await;
    assert_eq!(integrity(&h), "ok");

    // A restart picks up where it stopped: nothing is delivered again.
    let posts = h.bb.build_posts();
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let before = h.bk_requests();
    until(|| h.bk_requests() >= before + 2).await;
    assert_eq!(h.bb.build_posts(), posts);
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_poll_does_not_stack_up() {
    const SKIPPED: &str = "the previous poll is still running: skipping this tick";
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "kitesync=debug");
    h.bk.set_builds(recent_builds(10));
    // Every Buildkite answer takes 2.5 s, on a schedule of one poll a second.
    h.bk.set_latency(Duration::from_millis(2500));
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    // Two slow polls done, and ticks skipped while they ran.
    wait_for_logs(&stderr, " poll done ", 2).await;
    wait_for_logs(&stderr, SKIPPED, 2).await;
    terminate(&daemon);
    daemon.wait().await.expect("reaped");
    let log = log_text(&stderr);
    assert_eq!(h.bk.max_in_flight(), 1, "polls overlapped\n{log}");
    let done = polls_done(&log);
    // Every request was a poll's: the ones logged done, and perhaps one cut short by SIGTERM.
    assert!(
        h.bk_requests() <= done.len() + 1,
        "{} requests for {} polls done\n{log}",
        h.bk_requests(),
        done.len()
    );
    let skipped = log.matches(SKIPPED).count();
    assert!(
        skipped >= 2,
        "ticks are skipped, not queued: {skipped} skipped\n{log}"
    );
}

/// A poll that fails after recording a page wakes delivery at once: that page's builds do
/// not wait for the next poll (an hour away here) nor for the delivery loop's idle wake-up.
#[tokio::test(flavor = "multi_thread")]
async fn builds_of_a_poll_that_failed_halfway_are_delivered_without_waiting_for_the_next() {
    let h = Harness::start().await;
    h.write_config("\n[schedule]\nbuilds = \"0 0 * * * *\"\nagents = \"\"\n");
    h.bk.set_builds(recent_builds(250));
    // The first page answers; every later request fails (the retries of this poll and
    // any poll after it), so only the failed poll's wake-up can deliver the first page.
    h.bk.inject_at(
        Endpoint::Builds,
        std::iter::once(Fault::Pass).chain(std::iter::repeat_n(Fault::Status(500), 1000)),
    );
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    // Within two thirds of the idle wake-up (30 s), which would deliver them without the
    // failed poll's wake-up; the poll's five tries of the second page take about 5 s.
    let within = kitesync::delivery::deliver::IDLE_WAKE * 2 / 3;
    until_some_within(within, || async {
        (h.bb.build_count() >= 100).then_some(())
    })
    .await;
    terminate(&daemon);
    daemon.wait().await.expect("reaped");
    let log = log_text(&stderr);
    assert!(
        log.contains("500"),
        "the poll failed on its second page:\n{log}"
    );
    assert_eq!(h.bb.build_count(), 100, "the first page's builds:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_logged_when_it_starts_and_when_it_ends() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(5));
    h.bb.set_down(true);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    // It keeps retrying while BuildButler is down.
    until(|| h.bb.auth_seen().len() > 5).await;
    h.bb.set_down(false);
    until(|| h.bb.builds().len() == 5).await;
    wait_for_log(&stderr, "BuildButler delivery recovered").await;
    terminate(&daemon);
    daemon.wait().await.expect("reaped");
    let log = log_text(&stderr);
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
    let out = ended_by_itself(h.spawn_daemon()).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("lacks the read_builds scope"),
        "{}",
        out.stderr
    );
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
    let out = ended_by_itself(h.spawn_daemon()).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("BuildButler rejected the API key"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_cycle_is_summarized_in_one_line_an_operator_can_act_on() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(3));
    let mut daemon = h.spawn_daemon();
    let log = capture_stderr(&mut daemon);
    let text = wait_for_log(&log, "first cycle:").await;
    let line = text
        .lines()
        .find(|l| l.contains("first cycle:"))
        .unwrap_or_default()
        .to_string();
    for part in [
        "INFO",
        &format!("organization {ORG}"),
        "3 pipelines with builds (api, mobile, web)",
        "3 of 3 builds delivered",
        "a new state: the cursor starts at",
        "kitesync --backfill --since",
        "agent sync off",
        "test results off",
        "Buildkite budget left: organization",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
    // Once per start: later polls do not repeat it.
    h.bk.add_builds([data::just_finished(ORG, 4, "web")]);
    until(|| h.bb.builds().len() == 4).await;
    wait_for_logs(&log, "newly finished builds queued", 2).await;
    assert_eq!(log_text(&log).matches("first cycle:").count(), 1);
    terminate(&daemon);
    let _ = daemon.wait().await;

    // A restart resumes from the cursor, and says so.
    let mut daemon = h.spawn_daemon();
    let log = capture_stderr(&mut daemon);
    let text = wait_for_log(&log, "first cycle:").await;
    assert!(text.contains("resumed from the cursor at"), "{text}");
    terminate(&daemon);
}
