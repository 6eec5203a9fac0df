//! The pace (issue 18): with a backlog of test results the daemon spends its whole pace, the
//! polls first; `--pace free` spends what Buildkite's budgets leave free above the reserve.
//! Each test runs the real binary against the fakes and reads the order and the times of
//! the requests as the fake Buildkite received them.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use kitesync_fakes::buildkite::RecordedRequest;
use kitesync_fakes::data;

/// A JUnit file of one suite of three passing cases (generated, as in `tests/enrich.rs`:
/// only the number of requests matters here).
fn junit(name: &str) -> Vec<u8> {
    let cases: String = (0..3)
        .map(|i| format!(r#"<testcase classname="{name}" name="case{i}" time="0.01"/>"#))
        .collect();
    format!(r#"<?xml version="1.0" encoding="UTF-8"?><testsuite name="{name}">{cases}</testsuite>"#)
        .into_bytes()
}

/// Test results on, and builds `numbers` with `files` JUnit files each.
fn junit_builds(h: &mut Harness, numbers: std::ops::RangeInclusive<u64>, files: usize) {
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[junit/*.xml]");
    for n in numbers {
        let all = (0..files)
            .map(|i| (format!("junit/{i:02}.xml"), junit(&format!("b{n}-f{i:02}"))))
            .collect();
        h.bk.set_artifacts(n, all);
    }
}

fn is_poll(r: &RecordedRequest) -> bool {
    r.uri.contains("/builds?")
}

/// How far into its second (of a cron schedule on whole seconds) each request arrived.
fn into_the_second(requests: &[RecordedRequest]) -> Vec<Duration> {
    let (now, wall) = (Instant::now(), SystemTime::now());
    requests
        .iter()
        .map(|r| {
            let at = wall - now.duration_since(r.at);
            let since = at.duration_since(UNIX_EPOCH).expect("after 1970");
            Duration::from_nanos(u64::from(since.subsec_nanos()))
        })
        .collect()
}

/// Runs a daemon at `per_minute` polling every 5 s over a backlog of test results; a build
/// that finishes meanwhile must be delivered within the poll interval and a second, each
/// poll's request must reach Buildkite within a second of its tick (no poll waits behind
/// enrichment). Returns the requests from the late build on, for `watch`.
async fn daemon_with_a_backlog(per_minute: u32, watch: Duration) -> Vec<RecordedRequest> {
    let mut h = Harness::start().await;
    h.bk.set_budgets(1_000_000, 1_000_000, Duration::from_secs(60));
    h.bk.set_builds(recent_builds(40));
    junit_builds(&mut h, 1..=40, 10);
    h.set_env(
        "KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE",
        &per_minute.to_string(),
    );
    h.set_env("KITESYNC_SCHEDULE__BUILDS", "*/5 * * * * *");
    let mut daemon = h.spawn(&[]);
    let stderr = capture_stderr(&mut daemon);
    until(|| h.bb.build_count() == 40).await;
    until(|| h.bb.suite_count() >= 1).await;
    let start = Instant::now();
    // A build finishes while the backlog (440 requests) is being worked on.
    h.bk.add_builds([data::just_finished(ORG, 1000, "web")]);
    let late = data::build_id(1000);
    until(|| h.bb.has_build(&late)).await;
    let took = start.elapsed();
    assert!(
        took <= Duration::from_secs(6),
        "finished → delivered took {took:?}, more than the poll interval (5 s) + 1 s"
    );
    tokio::time::sleep(watch.saturating_sub(start.elapsed())).await;
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
    let requests = h.bk.requests();
    let polls: Vec<_> = requests.iter().filter(|r| is_poll(r)).cloned().collect();
    let late_polls: Vec<_> = polls.iter().filter(|r| r.at >= start).cloned().collect();
    assert!(
        late_polls.len() >= 2,
        "{} polls while watched",
        late_polls.len()
    );
    for (i, into) in into_the_second(&late_polls).into_iter().enumerate() {
        assert!(
            into < Duration::from_secs(1),
            "poll {i} reached Buildkite {into:?} after its tick: it waited for the pace"
        );
    }
    assert_eq!(
        requests.iter().filter(|r| r.status == 429).count(),
        0,
        "no 429"
    );
    requests.into_iter().filter(|r| r.at >= start).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_spends_the_whole_pace_and_the_polls_still_go_first_at_120_a_minute() {
    let requests = daemon_with_a_backlog(120, Duration::from_secs(12)).await;
    // After the first burst (10 requests, 5 s at 120 a minute), the rate is the pace: 2 a
    // second. Enrichment held to half the pace sent about 1.2.
    let first = requests.first().expect("requests").at;
    let from = first + Duration::from_secs(5);
    let to = from + Duration::from_secs(6);
    let n = requests
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .count();
    println!("{n} requests in 6 s at 120 a minute");
    assert!(
        (11..=13).contains(&n),
        "{n} requests in 6 s at 120 a minute (12 expected)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_never_delays_a_poll_and_gets_the_rest_at_the_default_30_a_minute() {
    let requests = daemon_with_a_backlog(30, Duration::from_secs(11)).await;
    // 11 s at 30 a minute is 5 or 6 requests, 2 or 3 of them polls: enrichment has the rest
    // (held to half the pace, its burst spent on the first builds, it had none).
    let enrich = requests.iter().filter(|r| !is_poll(r)).count();
    assert!(enrich >= 3, "enrichment had {enrich} requests");
}

/// A free-pace backfill with test results against budgets of different sizes that another
/// client spends part of in every 20 s window: no 429, the reserve held, and in each whole
/// window between 90 % and 100 % of what the budgets left free.
#[tokio::test(flavor = "multi_thread")]
async fn a_free_pace_backfill_spends_what_the_budgets_leave_free_and_no_more() {
    const WINDOW: Duration = Duration::from_secs(20);
    // Token owner: 40 a window, 10 spent by the other client, a reserve of 4: 26 free.
    // Organization: 70, 30 by the other, reserve 7: 33 free. The lower is the user's.
    let (user, org, user_others, org_others) = (40, 70, 10, 30);
    let free = user - user_others - 4;
    let mut h = Harness::start().await;
    // 14 builds with 3 JUnit files each: about 1 + 14 + 42 requests, 2.2 windows' worth.
    h.bk.set_builds(recent_builds(14));
    junit_builds(&mut h, 1..=14, 3);
    h.set_env("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "30");
    h.set_env("KITESYNC_BUILDKITE__RESERVE_PERCENT", "10");
    h.bk.set_budgets(org, user, WINDOW);
    h.bk.set_other_client(org_others, user_others);
    let since = ago(120).to_rfc3339();
    let started = Instant::now();
    let run = h
        .run(&["--backfill", "--since", &since, "--pace", "free"])
        .await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert_eq!(h.bb.suite_count(), 42, "{}", run.output());

    let requests = h.bk.requests();
    assert_eq!(
        requests.iter().filter(|r| r.status == 429).count(),
        0,
        "no 429"
    );
    for r in &requests {
        assert!(
            r.user_remaining >= 4 && r.org_remaining >= 7,
            "the reserve was spent: {} of the user's, {} of the organization's left after {}",
            r.user_remaining,
            r.org_remaining,
            r.uri
        );
    }
    let last = requests.iter().map(|r| r.window).max().expect("requests");
    assert!(
        last >= 2,
        "the run lasted {} windows: the budget went unspent",
        last + 1
    );
    let counts: Vec<_> = (0..=last)
        .map(|w| requests.iter().filter(|r| r.window == w).count() as u32)
        .collect();
    println!(
        "free pace: {} requests in {:.1} s, by window {counts:?} ({free} free in each)",
        requests.len(),
        started.elapsed().as_secs_f64()
    );
    // Every window but the last, which the run ended in.
    for (window, &n) in counts.iter().enumerate().take(last as usize) {
        assert!(
            n * 10 >= free * 9 && n <= free,
            "window {window}: {n} requests where {free} were free"
        );
    }
}
