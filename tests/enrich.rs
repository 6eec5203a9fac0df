//! Test results and logs at scale (issue 11): fetched by a task of their own, from a queue
//! saved per file, with the pace the polls leave; the build poll keeps its schedule
//! whatever the backlog; `--once` finishes with the rest queued; caps per build; a crash
//! repeats only the unfinished files; a file that kills kitesync is given up; a refused suite
//! is reported but never fails a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use kitesync_fakes::{data, Arrival};
use serde_json::Value;

/// A JUnit file of one suite named `name` with `cases` passing cases.
fn junit(name: &str, cases: usize) -> Vec<u8> {
    let cases: String = (0..cases)
        .map(|i| format!(r#"<testcase classname="{name}" name="case{i}" time="0.01"/>"#))
        .collect();
    format!(r#"<?xml version="1.0" encoding="UTF-8"?><testsuite name="{name}">{cases}</testsuite>"#)
        .into_bytes()
}

/// Gives build `number` `files` JUnit files (`junit/NN.xml`), each one suite named
/// `b<number>-f<NN>`.
fn junit_files(h: &Harness, number: u64, files: usize) {
    let all = (0..files)
        .map(|i| {
            let name = format!("b{number}-f{i:02}");
            (format!("junit/{i:02}.xml"), junit(&name, 3))
        })
        .collect();
    h.bk.set_artifacts(number, all);
}

/// The test results config: JUnit files under `junit/`.
fn with_tests(h: &mut Harness) {
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[junit/*.xml]");
    h.bk.set_budgets(1_000_000, 1_000_000, std::time::Duration::from_secs(60));
}

/// Test results on, and `builds` recent builds with `files` JUnit files each.
fn builds_with_junit(h: &mut Harness, builds: u64, files: usize) {
    with_tests(h);
    h.bk.set_builds(recent_builds(builds));
    for n in 1..=builds {
        junit_files(h, n, files);
    }
}

/// The names of the suites BuildButler accepted.
fn suite_names(h: &Harness) -> BTreeSet<String> {
    let suites = h.bb.suites();
    suites
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect()
}

/// The state database's JUnit files still to fetch: (build number, path).
fn files_waiting(h: &Harness) -> BTreeSet<(u64, String)> {
    let conn = rusqlite::Connection::open(h.state_path()).expect("open state");
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT e.label, f.path FROM enrich_files f JOIN enrich e USING (build_id)")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("files");
    rows.into_iter()
        .map(|(label, path)| {
            let number = label.rsplit('#').next().and_then(|n| n.parse().ok());
            (number.expect("a build label"), path)
        })
        .collect()
}

fn status_json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).expect("status --json is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_build_poll_keeps_its_schedule_while_a_backlog_of_test_results_is_fetched() {
    let mut h = Harness::start().await;
    // 200 builds x 10 JUnit files: 200 listings and 2,000 downloads. At 6,000 requests a
    // minute, enrichment has up to 100 a second: the backlog lasts over 20 s.
    builds_with_junit(&mut h, 200, 10);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    until(|| h.bb.build_count() == 200).await;
    until(|| h.bb.suite_count() >= 100).await;

    // A build finishes while the backlog is being worked on.
    h.bk.add_builds([data::just_finished(ORG, 1000, "web")]);
    junit_files(&h, 1000, 10);
    let late = data::build_id(1000);
    until(|| h.bb.has_build(&late)).await;
    let polls_before =
        h.bk.requests()
            .iter()
            .filter(|r| r.uri.contains("/builds?"))
            .count();
    // Generous deadlines: each wait has its own.
    until(|| h.bb.suite_count() >= 1000).await;
    until(|| h.bb.suite_count() == 2010).await;

    let arrivals = h.bb.arrivals();
    let at = |wanted: &Arrival| arrivals.iter().position(|a| a == wanted);
    let last_backlog_build = (1..=200)
        .filter_map(|n| at(&Arrival::Build(data::build_id(n))))
        .max()
        .expect("the backlog's builds arrived");
    let suites_before = |i: usize| {
        let before = arrivals[..i].iter();
        before
            .filter(|a| matches!(a, Arrival::Suite { .. }))
            .count()
    };
    assert!(
        suites_before(last_backlog_build) < 1000,
        "the 200 builds were delivered as they were polled, not after their test results: {} suites came first",
        suites_before(last_backlog_build)
    );
    let late_at = at(&Arrival::Build(late.clone())).expect("the late build arrived");
    let backlog_after = arrivals[late_at..]
        .iter()
        .filter(|a| matches!(a, Arrival::Suite { build, .. } if *build != late))
        .count();
    assert!(
        backlog_after >= 500,
        "the late build was delivered long before the backlog was done: {backlog_after} of its suites came after it"
    );
    // Its own test results follow it, and every suite arrived.
    let late_suites = arrivals
        .iter()
        .position(|a| matches!(a, Arrival::Suite { build, .. } if *build == late));
    assert!(late_suites.is_some_and(|i| i > late_at));
    assert_eq!(suite_names(&h).len(), 2010, "each suite once");

    // The poll kept running all along: polls were answered after the late build's.
    let polls =
        h.bk.requests()
            .iter()
            .filter(|r| r.uri.contains("/builds?"))
            .count();
    assert!(
        polls > polls_before,
        "polls went on during the backlog ({polls_before} then {polls})"
    );
    let spent = h.bk.requests();
    let downloads = spent
        .iter()
        .filter(|r| r.uri.ends_with("/download"))
        .count();
    let listings = spent
        .iter()
        .filter(|r| r.uri.contains("/artifacts?"))
        .count();
    assert_eq!(
        (listings, downloads),
        (201, 2010),
        "the REST floor, nothing fetched twice"
    );
    let enriching = spent.iter().filter(|r| r.uri.contains("/artifacts"));
    let times: Vec<_> = enriching.map(|r| r.at).collect();
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let polls_during = spent
            .iter()
            .filter(|r| r.uri.contains("/builds?") && r.at > *first && r.at < *last)
            .count();
        println!(
            "backlog of {} requests fetched in {:.1} s, {polls_during} polls meanwhile",
            times.len(),
            last.duration_since(*first).as_secs_f64()
        );
    }
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_build_fetches_only_the_unfinished_files_again() {
    let mut h = Harness::start().await;
    with_tests(&mut h);
    h.bk.set_builds(recent_builds(1));
    junit_files(&h, 1, 40);
    // 600 a minute: 10 downloads a second at most, so the kill lands mid-build.
    h.set_env("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "600");
    let mut child = h.spawn(&["--once"]);
    until(|| h.bk.storage_fetches().len() >= 15).await;
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reaped");
    assert_eq!(integrity(&h), "ok");
    let fetched_before: BTreeSet<(u64, String)> = h.bk.storage_fetches().into_keys().collect();
    let waiting = files_waiting(&h);
    assert!(
        (1..40).contains(&waiting.len()),
        "killed mid-build: {} files left",
        waiting.len()
    );
    let in_flight: Vec<_> = waiting.intersection(&fetched_before).collect();
    assert!(
        in_flight.len() <= 1,
        "only the file in flight was fetched and not saved: {in_flight:?}"
    );

    h.set_env("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "6000");
    let run = h.once_ok().await;
    let fetches = h.bk.storage_fetches();
    assert_eq!(fetches.len(), 40, "every file fetched");
    for (file, count) in &fetches {
        let expected = 1 + usize::from(in_flight.contains(&file));
        assert_eq!(*count, expected, "{file:?} fetched {count} times");
    }
    let again: BTreeSet<_> = waiting
        .iter()
        .filter(|f| fetched_before.contains(f))
        .collect();
    assert_eq!(again.len(), in_flight.len());
    assert_eq!(suite_names(&h).len(), 40, "every suite delivered");
    assert!(files_waiting(&h).is_empty(), "{}", run.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_kills_kitesync_is_given_up_after_three_attempts() {
    let mut h = Harness::start().await;
    with_tests(&mut h);
    h.bk.set_builds(recent_builds(1));
    h.bk.set_artifacts(
        1,
        vec![
            ("junit/a-poison.xml".into(), junit("poison", 1)),
            ("junit/b.xml".into(), junit("b", 1)),
            ("junit/c.xml".into(), junit("c", 1)),
        ],
    );
    // The storage host never answers for it: each run is killed while fetching it.
    h.bk.hang_artifact("junit/a-poison.xml");
    let poison = (1, "junit/a-poison.xml".to_string());
    for attempt in 1..=3 {
        let mut child = h.spawn(&["--once"]);
        until(|| h.bk.storage_fetches().get(&poison) == Some(&attempt)).await;
        child.start_kill().expect("kill -9");
        child.wait().await.expect("reaped");
        if attempt == 2 {
            // Tried once already, it waited behind the files not tried yet.
            let fetched: Vec<String> = h.bk.storage_fetches().into_keys().map(|(_, p)| p).collect();
            assert_eq!(
                fetched,
                ["junit/a-poison.xml", "junit/b.xml", "junit/c.xml"]
            );
        }
    }
    let run = h.once_ok().await;
    assert_eq!(
        h.bk.storage_fetches().get(&poison),
        Some(&3),
        "not fetched a 4th time"
    );
    assert_eq!(suite_names(&h), BTreeSet::from(["b".into(), "c".into()]));
    let warned = run.stderr.lines().any(|l| {
        l.contains("JUnit file given up") && l.contains("a-poison.xml") && l.contains("acme/")
    });
    assert!(warned, "{}", run.stderr);
    assert!(files_waiting(&h).is_empty());
    let status = status_json(&h.run(&["status", "--json"]).await);
    assert_eq!(status["enrich"]["totals"]["given_up"], 1);
    assert_eq!(status["enrich"]["builds"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn once_with_a_backlog_delivers_its_builds_and_leaves_the_rest_queued() {
    let mut h = Harness::start().await;
    builds_with_junit(&mut h, 20, 10);
    // 60 a minute: enrichment gets one request every 2 s, 220 of them are needed.
    h.set_env("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "60");
    let run = h.run(&["--once", "--enrich-seconds", "3"]).await;
    assert_eq!(
        run.code,
        0,
        "a waiting enrich queue alone never fails a run:\n{}",
        run.output()
    );
    assert_eq!(h.bb.build_count(), 20, "every build delivered");
    assert!(h.bb.suite_count() < 200);
    assert!(
        run.stdout.contains("builds left queued for the next run"),
        "{}",
        run.stdout
    );
    let status = h.run(&["status"]).await;
    assert!(
        status.stdout.contains("test results/logs due"),
        "{}",
        status.stdout
    );
    let s = status_json(&h.run(&["status", "--json"]).await);
    let waiting = s["enrich"]["builds"].as_u64().expect("builds");
    assert!(waiting > 0, "{s}");
    assert!(s["enrich"]["oldest_age_seconds"].is_i64(), "{s}");
    assert!(
        s["enrich"]["totals"]["listings"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{s}"
    );

    // The next run, at full pace, fetches the rest.
    h.set_env("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "6000");
    let run = h.once_ok().await;
    assert!(!run.stdout.contains("left queued"), "{}", run.stdout);
    assert_eq!(suite_names(&h).len(), 200);
    let s = status_json(&h.run(&["status", "--json"]).await);
    assert_eq!(s["enrich"]["builds"], 0);
    assert_eq!(s["enrich"]["totals"]["listings"], 20);
    // Every file fetched once; one download the first run's `--enrich-seconds` deadline cut
    // short (counted when it starts) is fetched again, so 201 happens on a loaded machine.
    let downloads = s["enrich"]["totals"]["downloads"]
        .as_u64()
        .expect("downloads");
    assert!((200..=201).contains(&downloads), "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn caps_per_build_skip_the_rest_with_a_warning_naming_the_build() {
    let mut h = Harness::start().await;
    with_tests(&mut h);
    h.set_env("KITESYNC_ENRICH__MAX_FILES_PER_BUILD", "3");
    h.bk.set_builds(recent_builds(2));
    junit_files(&h, 1, 5);
    // Build 2: three files of which two fit in its bytes.
    let file = junit("b2-f00", 40);
    let size = file.len();
    h.set_env(
        "KITESYNC_ENRICH__MAX_BYTES_PER_BUILD",
        &(2 * size + 10).to_string(),
    );
    h.bk.set_artifacts(
        2,
        (0..3)
            .map(|i| {
                (
                    format!("junit/{i:02}.xml"),
                    junit(&format!("b2-f{i:02}"), 40),
                )
            })
            .collect(),
    );
    let run = h.once_ok().await;
    let names = suite_names(&h);
    let expected: BTreeSet<String> = ["b1-f00", "b1-f01", "b1-f02", "b2-f00", "b2-f01"]
        .map(String::from)
        .into();
    assert_eq!(
        names, expected,
        "the first files in path order, within the caps"
    );
    for (build, cap) in [
        (
            "#1\"",
            "2 JUnit files skipped: over [enrich] max_files_per_build",
        ),
        (
            "#2\"",
            "JUnit file skipped: over [enrich] max_bytes_per_build",
        ),
    ] {
        let warned = run
            .stderr
            .lines()
            .any(|l| l.contains(cap) && l.contains(build));
        assert!(warned, "no warning naming {build}:\n{}", run.stderr);
    }
    let s = status_json(&h.run(&["status", "--json"]).await);
    let totals = &s["enrich"]["totals"];
    assert_eq!(totals["skipped_files_per_build"], 2);
    assert_eq!(totals["skipped_bytes_per_build"], 1);
    assert_eq!(totals["downloads"], 5, "skipped files cost nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_test_suite_is_reported_but_never_fails_the_run() {
    let mut h = Harness::start().await;
    builds_with_junit(&mut h, 3, 1);
    h.bb.reject_suites_named(["b2-f00"]);
    let run = h.run(&["--once"]).await;
    assert_eq!(
        run.code,
        0,
        "a refused suite alone never fails a run:\n{}",
        run.output()
    );
    assert!(
        run.stdout
            .contains("outbox: 0 pending, 1 dead (1 refused test suite)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1 dead letter kept aside"),
        "{}",
        run.stderr
    );
    assert_eq!(suite_names(&h).len(), 2);
    let status = h.run(&["status"]).await;
    assert!(status.stdout.contains("1 tests dead"), "{}", status.stdout);
    assert!(
        status.stdout.contains("kitesync replay --dead"),
        "{}",
        status.stdout
    );

    // Once BuildButler takes it, `replay --dead` sends it again.
    h.bb.clear_rejections();
    let replay = h.run(&["replay", "--dead"]).await;
    assert_eq!(replay.code, 0, "{}", replay.output());
    let run = h.once_ok().await;
    assert!(run.stdout.contains("0 pending, 0 dead"), "{}", run.stdout);
    assert_eq!(suite_names(&h).len(), 3);

    // A dead build still fails the run, its suite with it.
    h.bk.add_builds([data::just_finished(ORG, 4, "web")]);
    junit_files(&h, 4, 1);
    h.bb.reject_build_numbers([4]);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_says_what_test_results_cost_and_without_them_fetches_none() {
    let mut h = Harness::start().await;
    with_tests(&mut h);
    let spacing = chrono::Duration::days(10);
    let history = data::finished_builds(ORG, 1, 300, ago(60), spacing);
    h.bk.set_builds(history);
    for n in [1, 150, 300] {
        junit_files(&h, n, 2);
    }
    let since = (chrono::Utc::now() - chrono::Duration::days(3001)).to_rfc3339();
    let run = h.run(&["--backfill", "--since", &since]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let estimate = run
        .stderr
        .lines()
        .find(|l| l.contains("test results are on for this backfill"))
        .unwrap_or_else(|| panic!("no estimate:\n{}", run.stderr));
    // 300 builds that all ran commands, 3 pages: the first page tells about as much.
    let about = |what: &str| -> u64 {
        let at = estimate
            .find(what)
            .unwrap_or_else(|| panic!("{what}: {estimate}"));
        let number = estimate[..at].trim_end().rsplit(' ').next().unwrap_or("");
        number
            .parse()
            .unwrap_or_else(|_| panic!("{what}: {estimate}"))
    };
    for what in ["finished builds", "artifact listings"] {
        assert!((270..=330).contains(&about(what)), "{what}: {estimate}");
    }
    assert!(
        estimate.contains("100 of the first page's 100"),
        "{estimate}"
    );
    assert!(estimate.contains("--without-test-results"), "{estimate}");
    assert_eq!(suite_names(&h).len(), 6);
    // One listing per build (a request retried on a busy machine may add one).
    let listings: Vec<String> =
        h.bk.requests()
            .iter()
            .filter(|r| r.uri.contains("/artifacts?"))
            .map(|r| r.uri.clone())
            .collect();
    let builds: std::collections::BTreeSet<&String> = listings.iter().collect();
    assert_eq!(builds.len(), 300, "every build listed");
    assert!(listings.len() <= 303, "{} listings", listings.len());

    // The same history again into a fresh state database, without test results.
    let fresh = Harness::start().await;
    let mut fresh = fresh;
    with_tests(&mut fresh);
    fresh
        .bk
        .set_builds(data::finished_builds(ORG, 1, 300, ago(60), spacing));
    for n in [1, 150, 300] {
        junit_files(&fresh, n, 2);
    }
    let run = fresh
        .run(&["--backfill", "--since", &since, "--without-test-results"])
        .await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        !run.stderr.contains("test results are on"),
        "{}",
        run.stderr
    );
    assert_eq!(fresh.bb.build_count(), 300);
    assert!(fresh.bb.suites().is_empty());
    let only_builds = fresh
        .bk
        .requests()
        .iter()
        .all(|r| r.uri.contains("/builds?"));
    assert!(only_builds, "no artifact listing or download");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_results_wait_for_their_build_and_die_with_it() {
    let mut h = Harness::start().await;
    with_tests(&mut h);
    h.bk.set_builds(recent_builds(2));
    junit_files(&h, 1, 2);
    junit_files(&h, 2, 2);
    h.bb.reject_build_numbers([2]);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    let names = suite_names(&h);
    assert_eq!(names, ["b1-f00", "b1-f01"].map(String::from).into());
    // Every suite that arrived came after its build.
    let arrivals = h.bb.arrivals();
    let mut seen = BTreeMap::new();
    for (i, a) in arrivals.iter().enumerate() {
        match a {
            Arrival::Build(id) => {
                seen.entry(id.clone()).or_insert(i);
            }
            Arrival::Suite { build, .. } => assert!(seen.contains_key(build), "{arrivals:?}"),
        }
    }
    let s = status_json(&h.run(&["status", "--json"]).await);
    let dead: Vec<&str> = s["dead_letters"]
        .as_array()
        .expect("dead letters")
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert_eq!(
        dead,
        ["build", "tests", "tests"],
        "the suites died with their build"
    );
}
