//! End-to-end tests of `--backfill`: past the depth limit, resuming after a crash without
//! re-fetching, side by side with the daemon, and the budget reserve.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use kitesync_fakes::data;

/// `count` finished builds spread evenly over the last two years (created ten minutes
/// before they finished).
fn history(count: u64) -> Vec<serde_json::Value> {
    let spacing = chrono::Duration::days(730) / i32::try_from(count).expect("small");
    data::finished_builds(ORG, 1, count, ago(60), spacing)
}

fn two_years_ago() -> String {
    (Utc::now() - chrono::Duration::days(731)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread")]
async fn walks_past_the_depth_limit_and_delivers_only_finished_builds_in_range() {
    let h = Harness::start().await;
    h.bk.set_builds(history(1200));
    h.bk.set_max_page(3);
    // Outside the range, or not finished: never delivered.
    h.bk.add_builds([
        data::build(
            ORG,
            5000,
            "web",
            "passed",
            ago(800 * 24 * 60),
            Some(ago(800 * 24 * 60 - 5)),
        ),
        data::build(ORG, 5001, "web", "running", ago(24 * 60), None),
    ]);
    let since = two_years_ago();
    let run = h.run(&["--backfill", "--since", &since]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let builds = h.bb.builds();
    assert_eq!(builds.len(), 1200);
    assert!(
        !builds.contains_key(&data::build_id(5000)) && !builds.contains_key(&data::build_id(5001))
    );
    assert_eq!(h.bb.build_posts(), 1200);

    let reqs = h.bk.requests();
    assert!(
        reqs.iter().all(|r| r.status == 200),
        "never too deep, never limited"
    );
    // One window, narrowed page by page: about one request per 100 builds.
    let budget = (1.05 * 12.0_f64).floor() as usize + 1;
    println!(
        "backfill of 1200 builds: {} requests (budget {budget})",
        reqs.len()
    );
    assert!(
        reqs.len() <= budget,
        "{} requests, budget {budget}",
        reqs.len()
    );
    assert!(
        run.stdout.contains("1200 finished builds"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("backfill 100%"),
        "progress lines: {}",
        run.stderr
    );

    // Running it again finds the range done: no Buildkite request at all.
    h.bk.clear_requests();
    let again = h.run(&["--backfill", "--since", &since]).await;
    assert_eq!(again.code, 0, "{}", again.output());
    assert_eq!(h.bk_requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_backfill_resumes_without_refetching() {
    // The same history, walked once without interruption, gives the reference count.
    let reference = Harness::start().await;
    reference.bk.set_builds(history(900));
    reference.bk.set_max_page(3);
    let since = two_years_ago();
    let end = Utc::now().to_rfc3339();
    let args = ["--backfill", "--since", &since, "--until", &end];
    assert_eq!(reference.run(&args).await.code, 0);
    let uninterrupted = reference.bk_requests();

    let h = Harness::start().await;
    h.bk.set_builds(history(900));
    h.bk.set_max_page(3);
    for kill_after in [3, 7] {
        h.bk.set_latency(Duration::from_millis(150));
        let mut child = h.spawn(&args);
        let start = h.bk_requests();
        until(|| h.bk_requests() >= start + kill_after).await;
        child.start_kill().expect("kill -9");
        child.wait().await.expect("reaped");
        assert_eq!(integrity(&h), "ok");
    }
    h.bk.set_latency(Duration::ZERO);
    let run = h.run(&args).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(run.stdout.contains("(resumed)"), "{}", run.stdout);
    assert_eq!(h.bb.builds().len(), 900, "nothing lost");
    // Each interruption may cost the page that was in flight, no more.
    let total = h.bk_requests();
    assert!(
        total <= uninterrupted + 2,
        "{total} requests vs {uninterrupted} uninterrupted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_beside_a_running_daemon_delivers_each_build_once_in_effect() {
    let h = Harness::start().await;
    // Recent builds, so the daemon's polls and the backfill see the same ones.
    h.bk.set_builds(recent_builds(400));
    h.bb.set_latency(Duration::from_millis(2));
    let mut daemon = h.spawn_daemon();
    let since = ago(120).to_rfc3339();
    let run = h.run(&["--backfill", "--since", &since]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    until(|| h.bb.builds().len() == 400).await;
    terminate(&daemon);
    assert!(daemon.wait().await.expect("reaped").success());
    let builds = h.bb.builds();
    for (key, b) in &builds {
        assert_eq!(b["externalRunId"].as_str(), Some(key.as_str()));
    }
    let posts = h.bb.build_posts();
    assert!(
        posts < 2 * 400,
        "re-sends are upserts of the same ids, and rare: {posts}"
    );
    assert_eq!(integrity(&h), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_keeps_the_reserve_of_a_busy_organization() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDKITE__RESERVE_PERCENT", "50");
    h.bk.set_builds(history(1000));
    h.bk.set_max_page(100);
    // A small budget of 16 a window of 2 s, 4 of them already spent by other tools.
    h.bk.set_budgets(16, 50, Duration::from_secs(2));
    h.bk.spend_org_budget(4);
    let run = h.run(&["--backfill", "--since", &two_years_ago()]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert_eq!(h.bb.builds().len(), 1000);
    let reqs = h.bk.requests();
    assert!(reqs.iter().all(|r| r.status == 200), "no 429");
    let lowest = reqs.iter().map(|r| r.org_remaining).min().unwrap_or(0);
    assert!(
        lowest >= 8,
        "half of the organization's budget stays free: lowest {lowest}"
    );
    assert!(
        run.stderr.contains("waiting"),
        "budget waits are logged: {}",
        run.stderr
    );
    assert!(!run.stdout.contains(" 0 budget waits"), "{}", run.stdout);
}

/// The time filters of every builds listing requested so far, as sent.
/// Builds of the documented shape (several jobs each, each with its agent), test results off:
/// the allocator's own memory (glibc arenas, one per thread of the blocking pool that ever
/// allocated) outweighed the live heap two to one (this run's sampled peak was 17 MiB). The
/// heap now stays in one arena: its resident peak stays near what is alive at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_of_documented_builds_keeps_its_heap_near_what_is_alive() {
    let h = Harness::start().await;
    h.bk.set_builds(history(3000));
    let since = two_years_ago();
    let child = h.spawn(&["--backfill", "--since", &since]);
    let pid = child.id().expect("running");
    let mut anon: f64 = 0.0;
    let ended = tokio::spawn(ended_by_itself(child));
    while !ended.is_finished() {
        anon = anon.max(status_mib(pid, "RssAnon").unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let run = ended.await.expect("joined");
    assert_eq!(run.code, 0, "{}", run.output());
    assert_eq!(h.bb.builds().len(), 3000);
    println!("backfill of 3,000 documented builds: peak anonymous RSS (sampled) {anon:.1} MiB");
    assert!(anon < 12.0, "peak anonymous RSS {anon:.1} MiB");
}

fn time_filters(h: &Harness) -> Vec<(String, String)> {
    h.bk.requests()
        .iter()
        .filter(|r| r.uri.contains("/builds?"))
        .flat_map(|r| {
            let url = url::Url::parse(&format!("http://fake{}", r.uri)).expect("uri");
            url.query_pairs()
                .filter(|(k, _)| {
                    ["finished_from", "created_from", "created_to"].contains(&k.as_ref())
                })
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_a_page_created_in_one_second_is_delivered_once_in_whole_second_requests() {
    use chrono::Timelike;
    let ms = chrono::Duration::milliseconds;
    // A whole second ten minutes ago.
    let s = ago(10).with_nanosecond(0).expect("whole second");
    let build = |number: u64, created: chrono::DateTime<Utc>| {
        data::build(
            ORG,
            number,
            "web",
            "passed",
            created,
            Some(created + ms(60_123)),
        )
    };
    // 150 builds in second `s`, more than a page of 100.
    let mut builds: Vec<_> = (0..150)
        .map(|i| build(1 + i, s + ms(5 * i as i64)))
        .collect();
    // Neighbours: five in the second before, five in the second after.
    builds.extend((0..5).map(|i| build(151 + i, s - ms(900 - 100 * i as i64))));
    builds.extend((0..5).map(|i| build(156 + i, s + ms(1_050 + 50 * i as i64))));
    // In the range but in the seconds of its fractional ends: a created_to cut to the second
    // (`until` truncated) would lose 162.
    builds.push(build(161, s - ms(1_300)));
    builds.push(build(162, s + ms(2_200)));
    // Outside the range, whole seconds away from it: only the polls deliver them.
    builds.push(build(163, s - ms(3_100)));
    builds.push(build(164, s + ms(3_100)));
    let (since, until) = (s - ms(1_400), s + ms(2_500));
    let stamp = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ids = |range: std::ops::RangeInclusive<u64>| -> Vec<String> {
        range.map(data::build_id).collect()
    };

    for truncate in [false, true] {
        let h = Harness::start().await;
        h.bk.set_truncate_params(truncate);
        h.bk.set_builds(builds.clone());
        let run = h
            .run(&[
                "--backfill",
                "--since",
                &stamp(since),
                "--until",
                &stamp(until),
            ])
            .await;
        assert_eq!(run.code, 0, "truncate {truncate}: {}", run.output());
        let delivered: Vec<String> = h.bb.builds().into_keys().collect();
        let mut expected = ids(1..=162);
        expected.sort();
        assert_eq!(
            delivered, expected,
            "truncate {truncate}: every build in range"
        );
        assert_eq!(h.bb.build_posts(), 162, "truncate {truncate}: each once");
        assert!(
            h.bk.requests().iter().any(|r| r.uri.contains("page=2")),
            "truncate {truncate}: the second of 150 builds was paged through"
        );

        // Polls see the same builds again (their finished_from has milliseconds): only the
        // two outside the backfill's range are new.
        for _ in 0..2 {
            let once = h.run(&["--once"]).await;
            assert_eq!(once.code, 0, "truncate {truncate}: {}", once.output());
        }
        assert_eq!(h.bb.builds().len(), 164, "truncate {truncate}");
        assert_eq!(
            h.bb.build_posts(),
            164,
            "truncate {truncate}: none sent twice"
        );

        let filters = time_filters(&h);
        for key in ["finished_from", "created_from", "created_to"] {
            assert!(
                filters.iter().any(|(k, _)| k == key),
                "truncate {truncate}: {key} sent"
            );
        }
        for (key, value) in &filters {
            let t = chrono::DateTime::parse_from_rfc3339(value).expect("RFC 3339");
            assert!(
                t.nanosecond() == 0 && !value.contains('.'),
                "truncate {truncate}: {key}={value} is not a whole second"
            );
        }
        // The fractional ends were widened, never narrowed.
        assert!(filters.contains(&("created_from".into(), stamp_secs(s - ms(2_000)))));
        assert!(filters.contains(&("created_to".into(), stamp_secs(s + ms(3_000)))));
    }
}

fn stamp_secs(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_ends_by_trying_what_an_outage_left_pending_whatever_its_backoff() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__RETRY_WINDOW_SECONDS", "0");
    h.bk.set_builds(recent_builds(6));
    h.bb.set_down(true);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    // A longer outage leaves each row minutes from its next try, as the backoff grows.
    let conn = rusqlite::Connection::open(h.state_path()).expect("open state");
    let later = Utc::now().timestamp_millis() + 300_000;
    let waiting = conn
        .execute(
            "UPDATE outbox SET attempts = 9, next_attempt_at = ?1 WHERE state = 'pending'",
            [later],
        )
        .expect("backoff");
    assert_eq!(waiting, 6);
    drop(conn);

    // BuildButler is back; a backfill of a range with nothing new delivers what waits.
    h.bb.set_down(false);
    h.bk.set_builds(Vec::new());
    let run = h.run(&["--backfill", "--since", &two_years_ago()]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert_eq!(h.bb.builds().len(), 6);
    assert!(run.stdout.contains("outbox: 0 pending"), "{}", run.stdout);
}
