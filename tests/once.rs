//! End-to-end tests of `kitesync --once` against the fakes.

mod common;

use std::time::Duration;

use common::*;
use kitesync_fakes::{data, ButlerFault, Fault};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn delivers_every_page_then_an_idle_run_costs_one_request() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(250));
    // Still running: listed by nobody's finished_from, never delivered.
    h.bk.add_builds([
        data::build(ORG, 900, "web", "running", ago(3), None),
        data::build(ORG, 901, "api", "scheduled", ago(1), None),
    ]);

    let run = h.once_ok().await;
    assert_eq!(h.bk_requests(), 3, "250 builds are 3 pages of 100");
    assert_eq!(h.bb.builds().len(), 250);
    assert_eq!(h.bb.build_posts(), 250);
    assert!(!h.bb.builds().contains_key(&data::build_id(900)));
    assert!(
        run.stdout.contains("250 newly finished builds in 3 pages"),
        "{}",
        run.stdout
    );

    // Field by field, one build and its stages as BuildButler received them.
    let b = &h.bb.builds()[&data::build_id(10)];
    assert_eq!(b["jobName"], "api"); // pipelines go web, api, mobile by number % 3
    assert_eq!(b["buildNumber"], 10);
    assert_eq!(b["jenkinsInstanceId"], ORG);
    assert_eq!(b["externalRunId"], data::build_id(10));
    assert_eq!(b["status"], "SUCCESS");
    assert_eq!(b["source"], "buildkite");
    assert_eq!(b["cause"], "webhook");
    assert_eq!(
        b["duration"], 295_000,
        "started 5 s after creation, finished 5 min after"
    );
    let stages = &h.bb.stages()[&data::build_id(10)]["stages"];
    let names: Vec<_> = stages
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["stageName"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [":rspec: Specs", ":docker: Build 🐳"],
        "no waiter, no retried attempt"
    );
    assert_eq!(stages[1]["stageOrder"], 1);
    assert_eq!(h.bb.builds()[&data::build_id(14)]["status"], "FAILURE");
    assert_eq!(h.bb.builds()[&data::build_id(13)]["status"], "UNSTABLE");
    assert_eq!(h.bb.builds()[&data::build_id(22)]["status"], "ABORTED");
    assert_eq!(h.bb.builds()[&data::build_id(17)]["status"], "NOT_BUILT");

    h.bk.clear_requests();
    let run = h.once_ok().await;
    assert_eq!(h.bk_requests(), 1, "an idle run is one request");
    assert_eq!(h.bb.build_posts(), 250, "nothing delivered twice");
    assert!(
        run.stdout.contains("0 newly finished builds"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refinished_build_is_delivered_again_as_an_upsert() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(20));
    h.once_ok().await;
    let id = data::build_id(14);
    assert_eq!(h.bb.builds()[&id]["status"], "FAILURE");

    // Someone retries the failed job; the build passes a minute later.
    h.bk.update_build(&id, |b| {
        b["state"] = json!("passed");
        b["finished_at"] = json!(chrono::Utc::now().to_rfc3339());
    });
    h.once_ok().await;
    assert_eq!(h.bb.builds()[&id]["status"], "SUCCESS");
    assert_eq!(h.bb.builds().len(), 20, "upserted, not duplicated");
    assert_eq!(
        h.bb.build_posts(),
        21,
        "only the re-finished build was sent again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_created_long_ago_that_finishes_late_is_not_missed() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(5));
    let late = data::build(ORG, 77, "api", "running", ago(3 * 24 * 60), None);
    h.bk.add_builds([late]);
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 5);

    h.bk.update_build(&data::build_id(77), |b| {
        b["state"] = json!("passed");
        b["finished_at"] = json!(chrono::Utc::now().to_rfc3339());
    });
    h.once_ok().await;
    assert!(h.bb.builds().contains_key(&data::build_id(77)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_waits_for_the_reset_of_the_budget() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(150));
    h.bk.inject([Fault::RateLimited(2)]);
    h.once_ok().await;
    let reqs = h.bk.requests();
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 200], "one 429, then both pages");
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "waited {gap:?}, not the 2 s reset"
    );
    assert_eq!(h.bb.builds().len(), 150);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_low_shared_budget_slows_kitesync_down_before_any_429() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(250));
    h.bk.set_budgets(20, 50, Duration::from_secs(3));
    // Other tools already spent 18 of the organization's 20: after kitesync's first request
    // only 1 is left, under the reserve of 2 that kitesync leaves to them. A client that
    // went on would get a 429 on its third request.
    h.bk.spend_org_budget(18);
    h.once_ok().await;
    let reqs = h.bk.requests();
    assert!(
        reqs.iter().all(|r| r.status == 200),
        "no 429: {:?}",
        reqs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(reqs.len(), 3);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(1500),
        "did not wait for the reset: {gap:?}"
    );
    assert_eq!(h.bb.builds().len(), 250);
}

#[tokio::test(flavor = "multi_thread")]
async fn buildkite_faults_are_retried_without_losing_or_duplicating() {
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "debug");
    h.bk.set_builds(recent_builds(250));
    // Four faults in a row: the fifth attempt at the first page succeeds.
    h.bk.inject([
        Fault::Status(502),
        Fault::Truncated,
        Fault::Dropped,
        Fault::Malformed,
    ]);
    let run = h.once_ok().await;
    assert_eq!(h.bk_requests(), 3 + 4);
    assert_eq!(h.bb.builds().len(), 250);
    assert_eq!(h.bb.build_posts(), 250);
    assert!(
        run.stderr.contains("retrying"),
        "retries are logged:\n{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buildkite_that_stays_down_fails_the_run_clearly() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(10));
    h.bk.inject(std::iter::repeat_n(Fault::Status(503), 5));
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(
        run.stderr.contains("Buildkite is unavailable"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/v2/organizations/acme/builds"),
        "{}",
        run.stderr
    );
    assert_eq!(h.bk_requests(), 5, "gave up after 5 attempts");
    // Nothing was lost: the next run starts over from the same cursor.
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn buildbutler_503s_and_dropped_connections_are_retried_as_upserts() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(30));
    h.bb.inject([
        ButlerFault::Status(503),
        ButlerFault::DropAfterStoring,
        ButlerFault::Status(502),
        ButlerFault::DropAfterStoring,
    ]);
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 30, "every build arrived once");
    let posts = h.bb.build_posts();
    assert!(
        (30..=32).contains(&posts),
        "at most the two dropped answers were re-sent: {posts}"
    );
    assert_eq!(h.bb.stages().len(), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_buildbutler_outage_leaves_builds_pending_for_the_next_run() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__RETRY_WINDOW_SECONDS", "1");
    h.bk.set_builds(recent_builds(12));
    h.bb.set_down(true);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(run.stdout.contains("12 pending"), "{}", run.stdout);
    assert!(
        run.stderr.contains("503"),
        "the reason is given: {}",
        run.stderr
    );

    h.bb.set_down(false);
    // Pending rows wait for their backoff (a second or two) before the next try: wait until
    // the state database says they are due, then the next run delivers them all.
    until_retries_due(&h).await;
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 12);
    assert_eq!(h.bb.build_posts(), 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_buildbutler_refuses_becomes_a_dead_letter_and_the_rest_go_on() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(10));
    h.bb.reject_build_numbers([3]);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert_eq!(h.bb.builds().len(), 9);
    assert!(
        run.stderr.contains("acme/web#3"),
        "names the build: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("400"),
        "gives the error: {}",
        run.stderr
    );
    assert!(run.stdout.contains("1 dead"), "{}", run.stdout);

    // A dead letter is not retried on its own.
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(h.bb.build_posts(), 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_buildbutler_key_stops_delivery_with_a_clear_message() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__API_KEY", "bb_live_WRONG_KEY_000");
    h.bk.set_builds(recent_builds(5));
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stderr.contains("BuildButler rejected the API key"),
        "{}",
        run.stderr
    );
    assert!(h.bb.auth_seen().len() <= 5, "no retry of a 401");
    assert!(!run.output().contains("WRONG_KEY"));
    // The builds wait in the outbox for a corrected key.
    h.write_config("");
    h.set_env("KITESYNC_BUILDBUTLER__API_KEY", API_KEY);
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_token_is_not_retried_and_says_so() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDKITE__TOKEN", "bkua_WRONG_TOKEN_123");
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stderr.contains("rejected the API token (401"),
        "{}",
        run.stderr
    );
    assert_eq!(h.bk_requests(), 1);
    assert!(!run.output().contains("WRONG_TOKEN"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_read_builds_names_the_scope() {
    let h = Harness::start().await;
    h.bk.set_scopes(&["read_agents"]);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stderr.contains("lacks the read_builds scope"),
        "{}",
        run.stderr
    );
    assert_eq!(h.bk_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_deeper_than_buildkite_pages_is_walked_by_narrowing() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(250));
    h.bk.set_max_page(1);
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 250);
    assert_eq!(h.bk_requests(), 3, "every request is a first page");
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_a_page_of_builds_created_in_one_millisecond_are_all_delivered() {
    let h = Harness::start().await;
    let created = ago(20);
    let fan_out = (1..=250).map(|n| data::build(ORG, n, "deploy", "passed", created, Some(ago(5))));
    h.bk.set_builds(
        recent_builds(30)
            .into_iter()
            .map(|mut b| {
                // Renumber the ordinary builds out of the way.
                let n = b["number"].as_u64().unwrap_or(0) + 1000;
                b["number"] = json!(n);
                b["id"] = json!(data::build_id(n));
                b
            })
            .chain(fan_out)
            .collect(),
    );
    h.once_ok().await;
    assert_eq!(
        h.bb.builds().len(),
        280,
        "all 250 of the fan-out and the 30 others"
    );
    assert!(h.bk_requests() <= 6, "{} requests", h.bk_requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_created_to_fails_the_poll_instead_of_looping() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(250));
    h.bk.set_ignore_created_to(true);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(run.stderr.contains("did not narrow"), "{}", run.stderr);
    assert!(h.bk_requests() < 10, "{} requests", h.bk_requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_that_leaves_the_list_mid_poll_does_not_hide_its_neighbours() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(250));
    h.bk.set_latency(Duration::from_millis(300));
    let mut child = h.spawn(&["--once"]);
    // Page 1 has been read; now someone retries the newest build: it is running again and
    // leaves the finished list, so every later build moves up one place.
    until(|| h.bk_requests() >= 1).await;
    h.bk.update_build(&data::build_id(250), |b| {
        b["state"] = json!("running");
        b["finished_at"] = json!(null);
    });
    assert!(child.wait().await.expect("reaped").success());
    assert_eq!(
        h.bb.builds().len(),
        250,
        "no build skipped at a page boundary"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cursor_never_moves_past_the_start_of_a_slow_poll() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDKITE__OVERLAP_SECONDS", "10");
    h.bk.set_builds(recent_builds(150));
    // Page 2 is answered 5 s after it is asked for: time enough to add A and B below.
    h.bk.delay_next([Duration::ZERO, Duration::from_secs(5)]);
    let mut child = h.spawn(&["--once"]);
    until(|| h.bk_requests() >= 1).await;
    // Page 1 is read. Build A, among the newest, finishes: this poll will not see it.
    let a = data::build(ORG, 901, "web", "passed", ago(1), Some(chrono::Utc::now()));
    h.bk.add_builds([a]);
    // More than the overlap after A, build B, created long ago, finishes: page 2 shows it.
    // Its finish is stamped 11 s ahead rather than waited for: the cursor only compares
    // timestamps (B's finish against the poll's start), so the test need not sleep 11 s.
    let b = data::build(
        ORG,
        902,
        "api",
        "passed",
        ago(600),
        Some(chrono::Utc::now() + chrono::Duration::seconds(11)),
    );
    h.bk.add_builds([b]);
    assert!(child.wait().await.expect("reaped").success());
    assert!(
        h.bb.builds().contains_key(&data::build_id(902)),
        "page 2 was answered before B was added"
    );
    assert!(
        !h.bb.builds().contains_key(&data::build_id(901)),
        "page 1 was answered after A was added: this test proves nothing"
    );
    // B's late finish must not move the cursor past A: the next poll still asks for A.
    h.once_ok().await;
    assert!(
        h.bb.builds().contains_key(&data::build_id(901)),
        "build A was lost"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_branch_and_status_case_settings_come_from_the_environment() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDKITE__PIPELINES", "[web]");
    h.set_env("KITESYNC_BUILDKITE__BRANCHES", "[main]");
    h.set_env("KITESYNC_BUILDBUTLER__STATUS_CASE", "lower");
    h.bk.set_builds(recent_builds(30));
    h.once_ok().await;
    let builds = h.bb.builds();
    assert!(!builds.is_empty());
    for b in builds.values() {
        assert_eq!(b["jobName"], "web");
        assert_eq!(b["branch"], "main");
        assert!(b["status"].as_str().is_some_and(|s| s == s.to_lowercase()));
    }
    // Of 1..=30, web is n % 3 == 0 (10 builds), minus 12 and 24 on branch feature/x.
    assert_eq!(builds.len(), 8);
    assert!(h.bk.requests()[0].uri.contains("branch%5B%5D=main"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_build_is_a_dead_letter_and_does_not_block_the_page() {
    let h = Harness::start().await;
    let mut builds = recent_builds(5);
    builds[2]["number"] = json!("three");
    h.bk.set_builds(builds);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert_eq!(h.bb.builds().len(), 4);
    assert!(run.stderr.contains("cannot decode"), "{}", run.stderr);
    assert!(
        run.stderr.contains("/v2/organizations/acme/builds"),
        "names the endpoint: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_from_the_api_is_not_followed_with_the_token() {
    let h = Harness::start().await;
    let elsewhere = kitesync_fakes::FakeButler::start("unused").await;
    h.bk.inject([Fault::Redirect(format!("{}/steal", elsewhere.url))]);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(run.stderr.contains("302"), "{}", run.stderr);
    assert!(
        elsewhere.auth_seen().is_empty(),
        "the other host saw a request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_any_output_even_at_debug_level() {
    let mut h = Harness::start().await;
    h.set_env("RUST_LOG", "trace");
    h.bk.set_builds(recent_builds(120));
    h.bk.inject([Fault::Status(500), Fault::RateLimited(1)]);
    h.bb.inject([ButlerFault::Status(503)]);
    let ok = h.once_ok().await;
    h.bk.set_scopes(&[]);
    let forbidden = h.run(&["--once"]).await;
    h.set_env("KITESYNC_BUILDBUTLER__API_KEY", "bb_live_OTHER_SECRET");
    h.set_env("KITESYNC_BUILDKITE__TOKEN", "bkua_OTHER_SECRET");
    let unauthorized = h.run(&["--once"]).await;
    assert!(
        ok.stderr.contains("DEBUG") || ok.stderr.contains("TRACE"),
        "debug logs were on"
    );
    for run in [&ok, &forbidden, &unauthorized] {
        let out = run.output();
        for secret in [TOKEN, API_KEY, "OTHER_SECRET"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_odd_job_never_sends_its_build_to_the_dead_letters() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_LOGS__ENABLED", "true");
    h.bk.set_builds(recent_builds(3));
    let id = data::build_id(2);
    h.bk.update_build(&id, |b| {
        let jobs = b["jobs"].as_array_mut().expect("jobs");
        // No id, a type kitesync does not know, null names, a state nobody documented.
        jobs.push(json!({"type": "a_new_kind", "name": null, "label": null,
                         "state": "frobnicated"}));
        jobs.push(json!({"graphql_id": "Sm9i", "name": ":rocket: Deploy", "state": "failed"}));
    });
    let run = h.once_ok().await;
    assert!(
        run.stdout.contains("outbox: 0 pending, 0 dead"),
        "{}",
        run.output()
    );
    assert_eq!(
        h.bb.builds().len(),
        3,
        "the build with odd jobs is delivered"
    );
    let stages = &h.bb.stages()[&id]["stages"];
    let named: Vec<(&str, &str)> = stages
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            let name = s["stageName"].as_str().unwrap_or("");
            (name, s["status"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(
        named.contains(&("a_new_kind", "NOT_BUILT")),
        "an unknown job is a stage, not a verdict: {named:?}"
    );
    assert!(named.contains(&(":rocket: Deploy", "FAILURE")), "{named:?}");
    assert!(
        named.iter().all(|(n, _)| !n.is_empty()),
        "no empty stage name"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_too_big_to_answer_in_time_are_asked_for_again_smaller() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDKITE__TIMEOUT_SECONDS", "1");
    h.bk.set_builds(recent_builds(120));
    // Anything above 25 a page takes longer than kitesync waits.
    h.bk.set_slow_pages(25, Duration::from_secs(3));
    let run = h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 120, "{}", run.output());
    assert_eq!(h.bb.build_posts(), 120, "each build delivered once");
    let sizes: Vec<(u32, u16)> =
        h.bk.requests()
            .iter()
            .filter(|r| r.uri.contains("/builds"))
            .map(|r| {
                let url = url::Url::parse(&format!("http://x{}", r.uri)).expect("uri");
                let per_page = url
                    .query_pairs()
                    .find(|(k, _)| k == "per_page")
                    .and_then(|(_, v)| v.parse().ok())
                    .expect("per_page");
                (per_page, r.status)
            })
            .collect();
    // The client's own 5 attempts at each size, then half the size.
    let expected_start: Vec<(u32, u16)> = [(100, 504); 5]
        .into_iter()
        .chain([(50, 504); 5])
        .chain([(25, 200)])
        .collect();
    assert_eq!(sizes[..11], expected_start[..], "{sizes:?}");
    assert!(
        sizes[11..].iter().all(|s| *s == (25, 200)),
        "25 for the rest of the poll: {sizes:?}"
    );
    assert_eq!(
        sizes.len(),
        11 + 4,
        "120 builds are 5 pages of 25: {sizes:?}"
    );
    for size in [50, 25] {
        assert!(
            run.stderr.contains(&format!("per_page={size}")),
            "the shrink to {size} is logged:\n{}",
            run.stderr
        );
    }
}

/// The outbox's pending rows as (key, next attempt in ms since the epoch), oldest first.
fn pending_rows(h: &Harness) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(h.state_path()).expect("open state");
    let mut stmt = conn
        .prepare("SELECT key, next_attempt_at FROM outbox WHERE state = 'pending' ORDER BY id")
        .expect("query");
    let rows = stmt.query_map([], |r| r.try_into()).expect("rows");
    rows.collect::<Result<_, _>>().expect("read the outbox")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_once_run_after_an_outage_delivers_what_waits_whatever_its_backoff() {
    let mut h = Harness::start().await;
    // No retry within a run: only trying what waits at the start of the next run delivers.
    h.set_env("KITESYNC_BUILDBUTLER__RETRY_WINDOW_SECONDS", "0");
    h.bk.set_builds(recent_builds(12));
    // BuildButler answers 503 for a while: three runs, each retry due before the next, so
    // the backoff of each row grows to seconds (1, 2, then 2 to 4 s).
    h.bb.set_down(true);
    for run in 1..=3 {
        if run > 1 {
            until_retries_due(&h).await;
        }
        let run = h.run(&["--once"]).await;
        assert_eq!(run.code, 1, "{}", run.output());
        assert!(run.stdout.contains("12 pending"), "{}", run.stdout);
    }
    let waiting = pending_rows(&h);
    let soonest = waiting.iter().map(|(_, at)| *at).min().unwrap_or(0);
    assert!(
        soonest > chrono::Utc::now().timestamp_millis() + 1000,
        "every row still waits out its backoff, or this test proves nothing: {waiting:?}"
    );

    // BuildButler accepts again; the next run, started right away, delivers everything,
    // oldest first (one at a time, to see the order).
    h.bb.set_down(false);
    h.set_env("KITESYNC_BUILDBUTLER__CONCURRENCY", "1");
    let run = h.once_ok().await;
    assert!(
        run.stdout.contains("outbox: 0 pending, 0 dead"),
        "{}",
        run.stdout
    );
    assert_eq!(h.bb.builds().len(), 12);
    assert_eq!(h.bb.build_posts(), 12, "each build sent once");
    let arrived: Vec<String> = (h.bb.arrivals().into_iter())
        .filter_map(|a| match a {
            kitesync_fakes::Arrival::Build(id) => Some(id),
            kitesync_fakes::Arrival::Suite { .. } => None,
        })
        .collect();
    let queued: Vec<String> = waiting.into_iter().map(|(key, _)| key).collect();
    assert_eq!(arrived, queued, "oldest first");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_costs_a_once_run_one_chunk_of_attempts_not_one_per_row() {
    let mut h = Harness::start().await;
    // A chunk is two rounds of `concurrency` attempts: 4 here.
    h.set_env("KITESYNC_BUILDBUTLER__CONCURRENCY", "2");
    h.bk.set_builds(recent_builds(40));
    h.bb.set_down(true);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(run.stdout.contains("40 pending"), "{}", run.stdout);
    assert!(
        run.stderr.contains("delivery stopped early"),
        "the reason is given: {}",
        run.stderr
    );
    assert!(run.stderr.contains("503"), "{}", run.stderr);
    // A chunk of 4, and at most one more that was in flight when the fourth failed.
    let tried = h.bb.posts().len();
    assert!((4..=5).contains(&tried), "{tried} attempts for 40 builds");
}

/// Against a BuildButler that times out every request, a one-shot pass ends within
/// `retry_window_seconds` and a chunk of rounds (what the once unit's timeout counts on): its
/// sweep tries every pending row once, and no batch of retries starts after its window. Here
/// 9 rows and 8 at a time: the sweep is two rounds; the first round's rows, due again before
/// the second ends, wait for the run's next pass (they used to start a third round).
#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_pass_starts_no_retry_after_its_window_while_buildbutler_times_out() {
    const TIMEOUT: Duration = Duration::from_secs(3);
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__TIMEOUT_SECONDS", "3");
    h.set_env("KITESYNC_BUILDBUTLER__RETRY_WINDOW_SECONDS", "0");
    h.set_env("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "600");
    builds_with_a_suite_each(&mut h, 9);
    h.bb.set_latency(Duration::from_secs(60));
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(run.stdout.contains("delivered 0;"), "{}", run.stdout);
    // The first pass ends when the run turns to test results: by its first artifact listing.
    let requests = h.bk.requests();
    let polled = requests
        .iter()
        .find(|r| r.uri.contains("/builds?"))
        .expect("a poll");
    let listed = requests
        .iter()
        .find(|r| r.uri.contains("/artifacts"))
        .expect("a listing");
    let pass = listed.at - polled.at;
    let rounds = kitesync::delivery::deliver::GIVE_UP_ROUNDS as u32;
    assert!(
        pass >= TIMEOUT * rounds && pass < TIMEOUT * rounds + TIMEOUT / 2,
        "the first pass took {pass:?}"
    );
}

/// Builds 1..=`n`, each with one JUnit file holding one suite named `s<number>`.
fn builds_with_a_suite_each(h: &mut Harness, n: u64) {
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[tmp/junit-*.xml]");
    h.bk.set_builds(recent_builds(n));
    for n in 1..=n {
        let xml =
            format!(r#"<testsuite name="s{n}"><testcase classname="c" name="t"/></testsuite>"#);
        h.bk.set_artifacts(n, vec![(format!("tmp/junit-{n}.xml"), xml.into_bytes())]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_test_suite_fails_the_run_unless_buildbutler_refused_its_content() {
    let mut h = Harness::start().await;
    builds_with_a_suite_each(&mut h, 3);
    h.bb.answer_suites_named(["s1"], 413);
    // A 404 (no such route, or not its build) and a redirect refuse no content.
    h.bb.answer_suites_named(["s2"], 404);
    h.bb.answer_suites_named(["s3"], 302);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(
        run.stdout
            .contains("outbox: 0 pending, 3 dead (1 refused test suite)"),
        "{}",
        run.stdout
    );
    let status = h.run(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("JSON");
    let causes: Vec<(&str, &str)> = status["dead_letters"]
        .as_array()
        .expect("dead letters")
        .iter()
        .map(|d| {
            let label = d["label"].as_str().unwrap_or("");
            (label, d["cause"].as_str().unwrap_or("none"))
        })
        .collect();
    assert_eq!(
        causes,
        [
            ("acme/api#1", "content"),
            ("acme/mobile#2", "other"),
            ("acme/web#3", "other")
        ]
    );
    let text = h.run(&["status"]).await.stdout;
    let line = |label: &str| text.lines().find(|l| l.contains(label)).unwrap_or("");
    assert!(
        line("acme/api#1").ends_with("[refused for its content: does not fail a run]"),
        "{text}"
    );
    assert!(!line("acme/mobile#2").contains("does not fail"), "{text}");

    // BuildButler takes s2 and s3 now; s1 is still too large (and 422 is as good).
    h.bb.clear_rejections();
    h.bb.answer_suites_named(["s1"], 422);
    let replay = h.run(&["replay", "--dead"]).await;
    assert_eq!(replay.code, 0, "{}", replay.output());
    let run = h.once_ok().await;
    assert!(
        run.stdout
            .contains("outbox: 0 pending, 1 dead (1 refused test suite)"),
        "{}",
        run.stdout
    );
}
