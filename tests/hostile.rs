//! Hostile and broken answers (issue 12): the real binary against fakes that stream endless
//! bodies from every kind of endpoint, loop their `Link` headers, ignore every filter, claim a
//! rate-limit reset, or answer with a proxy's block page after kitesync has worked.
//! For each: the process's peak RSS (`VmHWM`) stays under 100 MiB, it ends or recovers, and
//! every normal build is still delivered.
//!
//! (The JUnit bomb is `tests/hostile_junit.rs`, redirects to storage `tests/hostile_storage.rs`.)

mod common;

use std::time::Duration;

use common::*;
use kitesync_fakes::{data, ButlerFault, Endpoint, Fault, Paging};
use serde_json::json;
use tokio::process::Child;

/// DESIGN.md's ceiling for the peak memory under hostile input.
const PEAK_RSS_MIB: f64 = 100.0;

/// The reset the fake claims in the rate-limit test, and how long kitesync then waits: the
/// reset and half a second. (That a day-long claim waits two minutes at most is proven in
/// paused time, in `buildkite::budget`'s tests.)
const CLAIMED_RESET_SECS: u64 = 6;
const BUDGET_WAIT: Duration = Duration::from_millis(CLAIMED_RESET_SECS * 1000 + 500);

/// Both fakes with `builds` recent builds, the first `reports` of which uploaded a JUnit
/// file that kitesync reads; budgets nothing here runs out of; kitesync's debug log.
async fn with_reports(builds: u64, reports: u64) -> Harness {
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "info,kitesync=debug");
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[tmp/junit-*.xml]");
    h.bk.set_budgets(100_000, 100_000, Duration::from_secs(60));
    h.bk.set_builds(recent_builds(builds));
    let path = format!("{}/tests/data/junit/rspec.xml", env!("CARGO_MANIFEST_DIR"));
    let junit = std::fs::read(path).expect("fixture");
    for n in 1..=reports {
        h.bk.set_artifacts(n, vec![(format!("tmp/junit-{n}.xml"), junit.clone())]);
    }
    h
}

/// Stops `daemon` with SIGTERM: it must end cleanly.
async fn stop(mut daemon: Child, stderr: &Log) {
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(stderr));
}

/// True when builds `numbers` wait in the outbox for BuildButler.
fn queued(h: &Harness, numbers: &[u64]) -> bool {
    let Ok(conn) = rusqlite::Connection::open(h.state_path()) else {
        return false;
    };
    numbers.iter().all(|n| {
        let pending: Result<i64, _> = conn.query_row(
            "SELECT count(*) FROM outbox WHERE state = 'pending' AND kind = 'build' AND key = ?1",
            [data::build_id(*n)],
            |r| r.get(0),
        );
        pending.is_ok_and(|count| count == 1)
    })
}

/// True when builds `numbers` reached BuildButler.
fn delivered(h: &Harness, numbers: std::ops::RangeInclusive<u64>) -> bool {
    let builds = h.bb.builds();
    numbers
        .into_iter()
        .all(|n| builds.contains_key(&data::build_id(n)))
}

/// Asserts that `log` says each of `said`.
fn assert_logged(log: &str, said: &[&str]) {
    for s in said {
        assert!(log.contains(s), "{s:?} not logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_pages_and_error_bodies_are_cut_at_their_caps_and_the_daemon_goes_on() {
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "info,kitesync=debug");
    h.set_env("KITESYNC_SCHEDULE__AGENTS", "* * * * * *");
    h.bk.set_budgets(100_000, 100_000, Duration::from_secs(60));
    h.bk.set_builds(recent_builds(5));
    h.bk.set_agents(vec![data::agent(ORG, 1, "connected", None)]);
    // A page of builds that never ends, then a 500 whose body never ends; a page of agents
    // that never ends; BuildButler storing a build and answering without end, then a 503
    // whose body never ends.
    h.bk.inject_at(Endpoint::Builds, [Fault::Endless, Fault::EndlessError(500)]);
    h.bk.inject_at(Endpoint::Agents, [Fault::Endless]);
    h.bb.inject([ButlerFault::EndlessAnswer, ButlerFault::EndlessError(503)]);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    until(|| {
        h.bb.builds().len() == 5
            && h.bb.stages().len() == 5
            && !h.bb.fleets().is_empty()
            && h.bk.faults_left() + h.bb.faults_left() == 0
    })
    .await;
    assert_logged(
        &log_text(&stderr),
        &[
            "acme/builds is larger than 32 MiB",
            "asking for 50 at a time",
            "acme/agents is larger than 8 MiB",
            "ingest/builds: its answer is larger than 1 MiB",
        ],
    );
    assert_peak_rss_under(&daemon, PEAK_RSS_MIB, "endless pages and error bodies");
    stop(daemon, &stderr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_artifact_lists_and_logs_cost_only_a_retry_of_their_builds_extras() {
    let mut h = with_reports(7, 3).await;
    h.set_env("KITESYNC_LOGS__ENABLED", "true");
    h.set_env("KITESYNC_LOGS__MAX_BYTES", "1000");
    // Build 7 failed. Its log server ignores Range: a log within the slack still gives its
    // tail; the first answer never ends.
    let job = format!("{}-j1", data::build_id(7));
    h.bk.set_log(&job, &format!("{}\nFINAL LINE\n", "noise ".repeat(2000)));
    h.bk.set_log(&format!("{}-j3", data::build_id(7)), "");
    h.bk.set_ignore_range(true);
    h.bk.inject_at(Endpoint::Artifacts, [Fault::Endless]);
    h.bk.inject_at(Endpoint::Log, [Fault::Endless]);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    // The builds go at once; their test results and logs after a retry (15 to 30 s later).
    until(|| h.bb.builds().len() == 7).await;
    until(|| h.bb.suites().len() == 3 && h.bb.logs().len() == 1).await;
    let log = h.bb.logs()[0]["logContent"].clone();
    let log = log.as_str().expect("log text");
    assert!(log.len() <= 1000 && log.contains("FINAL LINE"), "{log}");
    assert_eq!(h.bk.faults_left(), 0);
    assert_logged(
        &log_text(&stderr),
        &[
            "artifacts is larger than 8 MiB",
            &format!("{job}/log is larger than 66536 bytes"),
        ],
    );
    assert_peak_rss_under(&daemon, PEAK_RSS_MIB, "endless artifact lists and logs");
    stop(daemon, &stderr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_cuts_an_endless_access_token_answer() {
    let h = Harness::start().await;
    h.bk.inject_at(Endpoint::AccessToken, [Fault::Endless]);
    // The request after it (listing one build) is held a while, so that the process is
    // still there to be measured once the endless answer is behind it.
    h.bk.delay_next([Duration::ZERO, Duration::from_secs(3)]);
    let check = h.spawn(&["check"]);
    until(|| {
        let token_read =
            h.bk.requests()
                .iter()
                .any(|r| r.uri.contains("access-token"));
        token_read && h.bk.in_flight() == 1
    })
    .await;
    assert_peak_rss_under(
        &check,
        PEAK_RSS_MIB,
        "check against an endless access token",
    );
    let out = ended_by_itself(check).await;
    let stdout = &out.stdout;
    assert_eq!(out.code, 2, "{}", out.output());
    assert!(
        stdout.contains("v2/access-token is larger than 64 KiB"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    can list the builds of acme"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn link_loops_in_the_agents_and_artifacts_lists_are_stopped_and_outlived() {
    let mut h = with_reports(3, 3).await;
    h.set_env("KITESYNC_SCHEDULE__AGENTS", "* * * * * *");
    h.bk.set_agents(
        (1..=3)
            .map(|n| data::agent(ORG, n, "connected", None))
            .collect(),
    );
    // Every page names itself as the next one.
    h.bk.set_paging(Paging::LinkToSelf);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    wait_for_log(
        &stderr,
        "acme/agents cannot be followed: its Link header leads back to a page already read",
    )
    .await;
    // Every page is the first one, whatever the `Link` header says.
    h.bk.set_paging(Paging::IgnorePage);
    wait_for_log(
        &stderr,
        "acme/agents cannot be followed: the next page holds the same items as the one before",
    )
    .await;
    let agent_pages = |h: &Harness| {
        let requests = h.bk.requests();
        requests
            .iter()
            .filter(|r| r.uri.contains("/agents"))
            .count()
    };
    let polls = log_text(&stderr)
        .matches("acme/agents cannot be followed")
        .count();
    assert!(
        agent_pages(&h) <= 2 * polls + 2,
        "each looping agent poll stops within two pages: {} pages for {polls} polls",
        agent_pages(&h)
    );
    h.bk.set_paging(Paging::Normal);
    until(|| {
        h.bb.builds().len() == 3
            && h.bb.suites().len() == 3
            && h.bb
                .fleets()
                .iter()
                .any(|f| f["agents"].as_array().is_some_and(|a| a.len() == 3))
    })
    .await;
    assert_peak_rss_under(&daemon, PEAK_RSS_MIB, "Link loops");
    stop(daemon, &stderr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_list_of_agents_stops_at_100_pages_and_at_16_mib_in_all() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_SCHEDULE__AGENTS", "* * * * * *");
    h.bk.set_budgets(100_000, 100_000, Duration::from_secs(60));
    h.bk.set_max_page(1_000);
    let agent_pages = |h: &Harness| {
        let requests = h.bk.requests();
        requests
            .iter()
            .filter(|r| r.uri.contains("/agents"))
            .count()
    };
    // 10,001 agents, small ones: 101 pages of 100, about 1 MB in all.
    h.bk.set_agents(
        (1..=10_001)
            .map(|n| json!({"id": format!("agent-{n}"), "name": format!("ci-{n}"), "connection_state": "connected"}))
            .collect(),
    );
    let run = h.run(&["--once"]).await;
    assert_logged(
        &run.stderr,
        &["acme/agents cannot be followed: more than 100 pages; stopped there"],
    );
    assert_eq!(agent_pages(&h), 100, "{}", run.output());
    assert!(h.bb.fleets().is_empty(), "no fleet from a list cut short");

    // 2,000 agents of about 10 KB each (a long tag): 20 pages of about 1 MB. It stops at
    // the page that takes the list past 16 MiB.
    h.bk.clear_requests();
    let agents: Vec<_> = (1..=2_000)
        .map(|n| {
            let mut agent = data::agent(ORG, n, "connected", None);
            agent["meta_data"] = json!([format!("note={}", "x".repeat(10_000))]);
            agent
        })
        .collect();
    let mut bytes = 0;
    let over = agents
        .chunks(100)
        .position(|page| {
            bytes += page.iter().map(|a| a.to_string().len()).sum::<usize>();
            bytes > 16 << 20
        })
        .expect("more than 16 MiB");
    h.bk.set_agents(agents);
    let run = h.run(&["--once"]).await;
    assert_logged(
        &run.stderr,
        &["acme/agents cannot be followed: the list is larger than 16 MiB in all"],
    );
    assert_eq!(agent_pages(&h), over + 1, "{}", run.output());
    assert!(h.bb.fleets().is_empty(), "no fleet from a list cut short");
}

/// What kitesync says of a list that ignores `finished_from`.
const IGNORES: &str = "before the finished_from asked for";

/// Lists `old` builds that finished days ago, numbered from 1, and five that just finished,
/// to a `--once` from a fake that ignores `finished_from`: it ends after one request naming
/// the list, and of its first page delivers the five and none of the others.
async fn once_stops_after_the_first_page(h: &Harness, old: u64) {
    h.bk.set_budgets(100_000, 100_000, Duration::from_secs(60));
    let spacing = chrono::Duration::hours(2);
    let builds = data::finished_builds(ORG, 1, old, ago(3 * 24 * 60), spacing);
    let new = (old + 1..=old + 5).map(|n| data::just_finished(ORG, n, "web"));
    h.bk.set_builds(builds.into_iter().chain(new).collect());
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert_logged(
        &run.stderr,
        &["acme/builds cannot be followed: it lists build", IGNORES],
    );
    assert_eq!(
        builds_requests(h),
        1,
        "not a walk through every build there is"
    );
    assert!(
        delivered(h, old + 1..=old + 5),
        "the new builds, on the first page"
    );
    assert_eq!(h.bb.builds().len(), 5, "and none of the old ones");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_builds_list_that_ignores_every_filter_ends_each_poll_and_delivers_every_build() {
    let h = Harness::start().await;
    // A month of history the poll never asks for, and five builds that just finished.
    h.bk.set_ignore_filters(true);
    once_stops_after_the_first_page(&h, 300).await;

    // The daemon: every poll ends the same way, and what finishes meanwhile still arrives.
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    h.bk.add_builds([data::just_finished(ORG, 306, "api")]);
    until(|| delivered(&h, 301..=306)).await;
    wait_for_logs(&stderr, IGNORES, 1).await;
    assert_eq!(h.bb.builds().len(), 6, "none of the old builds");
    assert_peak_rss_under(&daemon, PEAK_RSS_MIB, "a list that ignores every filter");
    // Mended, the server's next poll walks to its end again.
    h.bk.set_ignore_filters(false);
    wait_for_log(&stderr, "Buildkite poll recovered").await;
    h.bk.add_builds([data::just_finished(ORG, 307, "web")]);
    until(|| delivered(&h, 301..=307)).await;
    stop(daemon, &stderr).await;
}

/// `count` builds numbered from 1, all created within one second ten minutes ago (a
/// trigger step fanning out, say) and finished over the last minute.
fn builds_of_one_second(count: u64) -> Vec<serde_json::Value> {
    let now = chrono::Utc::now();
    let second = chrono::DurationRound::duration_trunc(ago(10), chrono::Duration::seconds(1))
        .expect("a whole second");
    (1..=count)
        .map(|n| {
            let ms = chrono::Duration::milliseconds(n as i64);
            let finished = now - chrono::Duration::seconds(60) + ms * 100;
            data::build(ORG, n, "web", "passed", second + ms, Some(finished))
        })
        .collect()
}

/// Builds-list requests made so far.
fn builds_requests(h: &Harness) -> usize {
    let requests = h.bk.requests();
    requests
        .iter()
        .filter(|r| r.uri.contains("/builds"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_page_and_reshuffles_a_seconds_ties_ends_each_poll_with_an_error() {
    const IGNORES_PAGE: &str = "holds no build not read before: the server ignores `page`";
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "info,kitesync=debug");
    h.bk.set_budgets(100_000, 100_000, Duration::from_secs(60));
    // 150 builds of one second: more than a page, so the walk pages through that second.
    h.bk.set_builds(builds_of_one_second(150));
    h.bk.set_reshuffle_pages(true);

    // --once ends after the second's first page, read again, and its page 2.
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert_logged(
        &run.stderr,
        &[
            "acme/builds cannot be followed: page 2 of the builds created at",
            IGNORES_PAGE,
        ],
    );
    assert_eq!(builds_requests(&h), 4, "not a walk without end");

    // The daemon: every poll ends the same way, and the next one still runs.
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    wait_for_logs(&stderr, IGNORES_PAGE, 3).await;
    let polls = log_text(&stderr).matches(IGNORES_PAGE).count();
    assert!(
        builds_requests(&h) <= 4 * (polls + 2),
        "{} builds requests for {polls} polls",
        builds_requests(&h)
    );
    // Mended, the next poll walks that second to its end: every build, once.
    h.bk.set_reshuffle_pages(false);
    wait_for_log(&stderr, "Buildkite poll recovered").await;
    until(|| h.bb.builds().len() == 150).await;
    assert_eq!(h.bb.build_posts(), 150, "each build delivered once");
    assert_peak_rss_under(&daemon, PEAK_RSS_MIB, "a server that reshuffles ties");
    stop(daemon, &stderr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_finished_from_ends_each_poll_after_its_first_page() {
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "info,kitesync=debug");
    // Builds that finished days ago, and five that just finished: one page.
    h.bk.set_ignore_finished_from(true);
    once_stops_after_the_first_page(&h, 50).await;

    // The daemon: every poll ends the same way after one request, and the next one runs;
    // mended, the next poll walks to its end.
    let before = builds_requests(&h);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    wait_for_logs(&stderr, IGNORES, 3).await;
    let polls = log_text(&stderr).matches(IGNORES).count();
    assert!(
        builds_requests(&h) - before <= polls + 1,
        "one request a poll"
    );
    h.bk.set_ignore_finished_from(false);
    wait_for_log(&stderr, "Buildkite poll recovered").await;
    assert_eq!(h.bb.builds().len(), 5, "none of the old builds");
    stop(daemon, &stderr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_reset_holds_every_task_until_it_passes_then_it_recovers() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_SCHEDULE__AGENTS", "* * * * * *");
    h.bk.set_budgets(100_000, 100_000, Duration::from_secs(60));
    h.bk.set_agents(vec![data::agent(ORG, 1, "connected", None)]);
    h.bk.set_builds(recent_builds(5));
    // The first builds page says both budgets are spent until the reset (they are not).
    h.bk.inject_at(Endpoint::Builds, [Fault::LongReset(CLAIMED_RESET_SECS)]);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    // What that page brought is delivered while kitesync waits.
    until(|| h.bb.builds().len() == 5).await;
    wait_for_log(
        &stderr,
        &format!("waiting {CLAIMED_RESET_SECS}s for it to reset"),
    )
    .await;
    h.bk.add_builds((6..=8).map(|n| data::just_finished(ORG, n, "web")));
    until_some_within(BUDGET_WAIT + DEADLINE, || async {
        (h.bb.builds().len() == 8 && !h.bb.fleets().is_empty()).then_some(())
    })
    .await;
    let requests = h.bk.requests();
    let claimed = requests
        .iter()
        .find(|r| r.uri.contains("/builds"))
        .expect("the first poll")
        .at;
    // No task went through: neither the build poll nor the agent poll (every second). A
    // request already under way when the answer came may land just after it.
    let early: Vec<_> = requests
        .iter()
        .filter(|r| r.at > claimed + Duration::from_secs(2))
        .filter(|r| r.at < claimed + BUDGET_WAIT - Duration::from_millis(500))
        .map(|r| r.uri.clone())
        .collect();
    assert!(early.is_empty(), "sent during the wait: {early:?}");
    assert!(requests.iter().any(|r| r.at >= claimed + BUDGET_WAIT));
    assert_peak_rss_under(&daemon, PEAK_RSS_MIB, "a claimed reset");
    stop(daemon, &stderr).await;
}

/// What kitesync says about a block page, and must not say.
const IN_BETWEEN: &str = "something between kitesync and Buildkite refused the request (403 at";

/// A daemon (riding out refusals with retries a second apart, metrics on) that delivered
/// builds 1..=3, with builds 4 and 5 waiting in the outbox while BuildButler is down: the
/// harness, the daemon, its log and its metrics' base URL.
async fn waiting_while_buildbutler_is_down() -> (Harness, Child, Log, String) {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDKITE__REFUSED_RETRY_SECONDS", "1");
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.bk.set_budgets(100_000, 100_000, Duration::from_secs(60));
    h.bk.set_builds(recent_builds(3));
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    until(|| h.bb.builds().len() == 3).await;
    // BuildButler goes down; two more builds finish and wait in the outbox.
    h.bb.set_down(true);
    h.bk.add_builds([
        data::just_finished(ORG, 4, "web"),
        data::just_finished(ORG, 5, "api"),
    ]);
    until(|| queued(&h, &[4, 5])).await;
    (h, daemon, stderr, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_page_after_success_is_ridden_out_while_deliveries_go_on() {
    let (h, mut daemon, stderr, base) = waiting_while_buildbutler_is_down().await;

    // Then a proxy answers every Buildkite request with its block page.
    h.bk.set_blocked(true);
    let log = wait_for_log(&stderr, IN_BETWEEN).await;
    assert_logged(
        &log,
        &[
            "has worked with this organization and token before",
            "Access Denied",
        ],
    );
    assert!(!log.contains("lacks the"), "not a missing scope:\n{log}");
    let why = healthz_until(&base, 503).await;
    assert!(why.contains("refuses") && why.contains(IN_BETWEEN), "{why}");
    let status = h.run(&["status"]).await;
    assert_logged(&status.stdout, &["BUILDKITE REFUSES", IN_BETWEEN]);
    // --once keeps its exit code 2 for it.
    let once = h.run(&["--once"]).await;
    assert_eq!(once.code, 2, "{}", once.output());
    assert_logged(&once.stderr, &[IN_BETWEEN]);

    // The daemon goes on delivering what it has, and keeps trying.
    h.bb.set_down(false);
    until(|| h.bb.builds().len() == 5).await;
    wait_for_logs(&stderr, IN_BETWEEN, 3).await;
    assert!(daemon.try_wait().expect("wait").is_none(), "still running");

    // The proxy lets it through again: it recovers, and new builds flow.
    h.bk.set_blocked(false);
    h.bk.add_builds([data::just_finished(ORG, 6, "web")]);
    until(|| h.bb.builds().len() == 6).await;
    wait_for_log(&stderr, "Buildkite accepts kitesync again").await;
    assert_eq!(healthz_until(&base, 200).await, "ok\n");
    let status = h.run(&["status"]).await;
    assert!(
        !status.stdout.contains("BUILDKITE REFUSES"),
        "{}",
        status.stdout
    );
    assert_peak_rss_under(&daemon, PEAK_RSS_MIB, "a block page after success");
    stop(daemon, &stderr).await;
}

/// What kitesync says about Buildkite's 404 for the organization.
const NO_ORGANIZATION: &str =
    "check [buildkite] organization and that the token's owner belongs to it";

/// The organization is renamed (or the token's owner removed from it) under a daemon that
/// has polled it: the 404 is ridden out like any refusal after success — said each time with
/// what to check, shown by `/healthz` and `status`, exit 2 for `--once` — while what waits in
/// the outbox is delivered; with the new slug set, it goes on from where it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_404_for_the_organization_after_success_is_ridden_out_and_loses_nothing() {
    const RENAMED: &str = "acme-platform";
    let (mut h, mut daemon, stderr, base) = waiting_while_buildbutler_is_down().await;

    h.bk.rename_organization(RENAMED);
    let log = wait_for_log(&stderr, NO_ORGANIZATION).await;
    assert_logged(
        &log,
        &[
            &format!("/v2/organizations/{ORG}/builds: {NO_ORGANIZATION}"),
            "has worked with this organization and token before",
        ],
    );
    let why = healthz_until(&base, 503).await;
    assert!(
        why.contains("refuses") && why.contains(NO_ORGANIZATION),
        "{why}"
    );
    let status = h.run(&["status"]).await;
    assert_logged(&status.stdout, &["BUILDKITE REFUSES", NO_ORGANIZATION]);
    let once = h.run(&["--once"]).await;
    assert_eq!(once.code, 2, "{}", once.output());
    assert_logged(&once.stderr, &[NO_ORGANIZATION]);

    // Nothing is lost: what waited is delivered, what was delivered stays, and it keeps trying.
    assert!(queued(&h, &[4, 5]), "still in the outbox");
    h.bb.set_down(false);
    until(|| delivered(&h, 1..=5)).await;
    wait_for_logs(&stderr, NO_ORGANIZATION, 3).await;
    assert!(daemon.try_wait().expect("wait").is_none(), "still running");
    stop(daemon, &stderr).await;

    // With the new slug set, the next run picks up from the cursor.
    h.bk.add_builds([data::just_finished(ORG, 6, "web")]);
    h.set_env("KITESYNC_BUILDKITE__ORGANIZATION", RENAMED);
    h.once_ok().await;
    assert!(delivered(&h, 1..=6), "{:?}", h.bb.builds().keys());
    assert_eq!(h.bb.builds().len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_page_before_any_success_stops_with_exit_2_naming_what_is_in_between() {
    let h = Harness::start().await;
    h.bk.set_blocked(true);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert_logged(&run.stderr, &[IN_BETWEEN, "Access Denied"]);
    assert!(!run.stderr.contains("scope"), "{}", run.stderr);
    let out = ended_by_itself(h.spawn_daemon()).await;
    assert_eq!(out.code, 2, "{}", out.output());
    assert_logged(&out.stderr, &[IN_BETWEEN]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_during_a_token_rotation_rides_out_the_401_but_a_new_token_never_worked() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDKITE__REFUSED_RETRY_SECONDS", "1");
    h.bk.set_budgets(100_000, 100_000, Duration::from_secs(60));
    h.bk.set_builds(recent_builds(2));
    h.once_ok().await;
    // Buildkite takes only the next token now; kitesync restarts with the one that worked.
    h.bk.set_token("bkua_NEXT_TOKEN_5e1d07");
    h.bk.add_builds([data::just_finished(ORG, 3, "web")]);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    wait_for_logs(&stderr, "rejected the API token (401", 2).await;
    assert!(daemon.try_wait().expect("wait").is_none(), "still running");
    // The old token works again (the rotation was rolled back): it picks up where it was.
    h.bk.set_token(TOKEN);
    until(|| h.bb.builds().len() == 3).await;
    wait_for_log(&stderr, "Buildkite accepts kitesync again").await;
    assert_peak_rss_under(&daemon, PEAK_RSS_MIB, "a 401 after success");
    stop(daemon, &stderr).await;

    // A token that never worked is a configuration to fix: exit 2, as before.
    h.set_env("KITESYNC_BUILDKITE__TOKEN", "bkua_NEVER_WORKED_0b9a");
    let out = ended_by_itself(h.spawn_daemon()).await;
    assert_eq!(out.code, 2, "{}", out.output());
    assert_logged(&out.stderr, &["rejected the API token (401"]);
    assert!(!out.output().contains("NEVER_WORKED"), "{}", out.output());
}
