//! The daemon's `/metrics` (parsed by a Prometheus text parser) and `/healthz`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kitesync::telemetry::gauges::REFRESH;
use kitesync_fakes::{data, ButlerFault, Endpoint, Fault};

/// `/metrics`, read by a Prometheus text parser.
async fn scrape(base: &str) -> Option<(String, prometheus_parse::Scrape)> {
    let (status, text) = get(&format!("{base}/metrics")).await?;
    assert_eq!(status, 200, "{text}");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    Some((text, scrape))
}

/// Waits until `/metrics` shows what `ready` looks for, and returns that scrape.
async fn scrape_until(
    base: &str,
    ready: impl Fn(&prometheus_parse::Scrape) -> bool,
) -> (String, prometheus_parse::Scrape) {
    let ready = &ready;
    until_some(|| async move { scrape(base).await.filter(|(_, s)| ready(s)) }).await
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_work_and_healthz_turns_503_when_buildbutler_is_down() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    // Port 0: the system picks a free port, which the daemon logs (no port picked here and
    // then raced for).
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.bk.set_builds(recent_builds(5));
    // Two builds whose types drifted: counted once each, however often the overlap lists them.
    for n in [2, 3] {
        let soft_failed = serde_json::json!("true");
        h.bk.set_drift(&data::build_id(n), "/jobs/0/soft_failed", soft_failed);
    }
    let ignored = |s: &prometheus_parse::Scrape| {
        let field = [("field", "jobs.soft_failed")];
        sample(s, "kitesync_buildkite_fields_ignored_total", &field)
    };
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    until(|| h.bb.builds().len() == 5).await;

    // The counters move once the delivery loop has settled its batch; the outbox gauges
    // once the daemon has next read them from the state database (every few seconds: a
    // scrape never queries it).
    let (text, scrape) = scrape_until(&base, |s| {
        sample(s, "kitesync_items_delivered_total", &[]).is_some_and(|n| n >= 5.0)
            && sample(s, "kitesync_outbox_items", &[("state", "pending")]) == Some(0.0)
    })
    .await;
    assert_eq!(
        sample(&scrape, "kitesync_items_delivered_total", &[]),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&scrape, "kitesync_builds_queued_total", &[]),
        Some(5.0)
    );
    assert_eq!(ignored(&scrape), Some(2.0), "{text}");
    let polls = sample(
        &scrape,
        "kitesync_buildkite_requests_total",
        &[("endpoint", "builds"), ("status", "200")],
    );
    assert!(polls.is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(
        sample(&scrape, "kitesync_outbox_items", &[("state", "pending")]),
        Some(0.0)
    );
    assert!(sample(
        &scrape,
        "kitesync_buildkite_ratelimit_remaining",
        &[("scope", "user")]
    )
    .is_some());
    assert!(sample(
        &scrape,
        "kitesync_last_success_timestamp_seconds",
        &[("what", "poll")]
    )
    .is_some_and(|t| t > 1.0e9));
    assert_eq!(
        get(&format!("{base}/healthz")).await,
        Some((200, "ok\n".to_string()))
    );

    // BuildButler goes down while builds keep finishing: after three poll intervals (the
    // floor is 5 s), the health check says so, and why.
    h.bb.set_down(true);
    h.bk.add_builds([data::just_finished(ORG, 50, "web")]);
    let why = healthz_until(&base, 503).await;
    assert!(why.contains("pending") && why.contains("503"), "{why}");

    // Once it is back, the build goes out and the health check recovers.
    h.bb.set_down(false);
    until(|| h.bb.builds().len() == 6).await;
    assert_eq!(healthz_until(&base, 200).await, "ok\n");
    let (text, last) = scrape_until(&base, |_| true).await;
    assert_eq!(ignored(&last), Some(2.0), "polls since: {text}");
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}

/// Opens a connection to the metrics server that sends nothing.
async fn idle_connection(base: &str) -> tokio::net::TcpStream {
    let addr = base.strip_prefix("http://").expect("an http URL");
    tokio::net::TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_server_caps_connections_and_times_out_silent_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX_CONNECTIONS: usize = 16; // metrics_server::MAX_CONNECTIONS
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.bk.set_builds(recent_builds(3));
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    until(|| h.bb.builds().len() == 3).await;

    // Clients that connect and never send a request (or send half of one) take every
    // connection the server serves at once, and it says so.
    let mut silent = Vec::new();
    for _ in 0..MAX_CONNECTIONS - 1 {
        silent.push(idle_connection(&base).await);
    }
    let mut slow = idle_connection(&base).await;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    silent.push(slow);
    wait_for_log(&stderr, &format!("all {MAX_CONNECTIONS} connections taken")).await;

    // They are closed once the header-read timeout has passed, and a real scrape gets in.
    let (text, _) = scrape_until(&base, |s| {
        sample(s, "kitesync_items_delivered_total", &[]).is_some_and(|n| n >= 3.0)
    })
    .await;
    assert!(text.contains("kitesync_outbox_items"), "{text}");
    for mut conn in silent {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "a silent connection was left open: {read:?}"
        );
        let answer = String::from_utf8_lossy(&buf);
        assert!(!answer.contains("kitesync_"), "{answer}");
    }

    // Many scrapes at once all get their answer (in turns of at most 16).
    let scrapes = (0..40).map(|_| {
        let url = format!("{base}/healthz");
        tokio::spawn(async move { get(&url).await })
    });
    for scrape in scrapes {
        let answer = scrape.await.expect("joined");
        assert_eq!(answer, Some((200, "ok\n".to_string())));
    }
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_the_enrich_backlog_and_what_it_spends() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[junit/*.xml]");
    h.set_env("KITESYNC_ENRICH__MAX_FILES_PER_BUILD", "4");
    // 60 a minute: enrichment gets one request every 2 s, so a backlog stays a while.
    h.set_env("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "60");
    h.bk.set_builds(recent_builds(5));
    let xml = br#"<testsuite name="s"><testcase classname="c" name="n"/></testsuite>"#;
    for n in 1..=5 {
        let files = (0..5).map(|i| (format!("junit/{i}.xml"), xml.to_vec()));
        h.bk.set_artifacts(n, files.collect());
    }
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    let (text, scrape) = scrape_until(&base, |s| {
        let listed = sample(s, "kitesync_enrich_requests_total", &[("kind", "listing")]);
        listed.is_some_and(|n| n >= 1.0)
            && sample(s, "kitesync_enrich_backlog_files", &[]).is_some_and(|n| n >= 1.0)
    })
    .await;
    let backlog = sample(&scrape, "kitesync_enrich_backlog_builds", &[]);
    assert!(backlog.is_some_and(|n| (1.0..=5.0).contains(&n)), "{text}");
    let skipped = sample(
        &scrape,
        "kitesync_enrich_files_skipped_total",
        &[("cap", "files_per_build")],
    );
    assert!(
        skipped.is_some_and(|n| n >= 1.0),
        "one file over the cap per build listed: {text}"
    );
    let (text, scrape) = scrape_until(&base, |s| {
        sample(s, "kitesync_enrich_items_queued_total", &[]).is_some_and(|n| n >= 1.0)
    })
    .await;
    let downloads = sample(
        &scrape,
        "kitesync_enrich_requests_total",
        &[("kind", "download")],
    );
    assert!(downloads.is_some_and(|n| n >= 1.0), "{text}");
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}

/// BuildButler stores a build and answers 201 with an empty body, so no `id`: the build is not
/// posted again (an error would re-post it forever), its stages go under the id kitesync sent
/// (Buildkite's UUID), and the decision is logged, once at warning level, and counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_answered_without_an_id_is_logged_counted_and_its_stages_follow_the_id_sent() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.bk.set_builds(recent_builds(3));
    h.bb.inject([ButlerFault::EmptyAnswer, ButlerFault::EmptyAnswer]);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    until(|| h.bb.builds().len() == 3 && h.bb.stages().len() == 3).await;
    let (_, scrape) = scrape_until(&base, |s| {
        sample(s, "kitesync_items_delivered_total", &[]).is_some_and(|n| n >= 3.0)
    })
    .await;
    assert_eq!(
        sample(&scrape, "kitesync_butler_builds_without_id_total", &[]),
        Some(2.0)
    );
    assert_eq!(h.bb.build_posts(), 3, "no build posted again");
    for id in h.bb.builds().keys() {
        assert!(
            h.bb.stages().contains_key(id),
            "stages of {id} under its UUID"
        );
    }
    let log = log_text(&stderr);
    assert_eq!(log.matches("its answer is empty").count(), 1, "{log}");
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}

/// The outbox gauge's dead letters carry their kind and why BuildButler refused them: a suite
/// refused for its content (400), a suite answered 404, a build refused for its content.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_shown_by_kind_and_cause() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[junit/*.xml]");
    h.bk.set_builds(recent_builds(4));
    for n in 1..=2 {
        let xml =
            format!(r#"<testsuite name="s{n}"><testcase classname="c" name="t"/></testsuite>"#);
        h.bk.set_artifacts(n, vec![(format!("junit/{n}.xml"), xml.into_bytes())]);
    }
    h.bb.reject_suites_named(["s1"]);
    h.bb.answer_suites_named(["s2"], 404);
    h.bb.reject_build_numbers([3]);
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    let dead = |s: &prometheus_parse::Scrape, kind, cause| {
        let labels = [("state", "dead"), ("kind", kind), ("cause", cause)];
        sample(s, "kitesync_outbox_items", &labels)
    };
    let (text, scrape) = scrape_until(&base, |s| {
        let all: f64 = ["build", "tests", "log", "agents"]
            .iter()
            .flat_map(|k| ["content", "other", "unrecorded"].map(|c| dead(s, k, c)))
            .map(|n| n.unwrap_or(0.0))
            .sum();
        all >= 3.0
    })
    .await;
    assert_eq!(dead(&scrape, "tests", "content"), Some(1.0), "{text}");
    assert_eq!(dead(&scrape, "tests", "other"), Some(1.0), "{text}");
    assert_eq!(dead(&scrape, "build", "content"), Some(1.0), "{text}");
    assert_eq!(dead(&scrape, "build", "other"), Some(0.0), "{text}");
    assert_eq!(dead(&scrape, "tests", "unrecorded"), Some(0.0), "{text}");
    let pending = [("state", "pending")];
    let pending = scrape.samples.iter().filter(|s| {
        s.metric == "kitesync_outbox_items"
            && pending.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    });
    assert_eq!(
        pending.count(),
        1,
        "one pending series, without kind or cause: {text}"
    );
    assert_eq!(h.bb.builds().len(), 3);
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}

/// The oldest-age gauge says how long the oldest build has waited for its test results, and
/// 0 once none waits. The first artifact listing's answer claims both budgets spent for
/// [`HOLD`] seconds, so every request waits that long and the builds wait with them.
#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_age_gauge_shows_how_long_the_oldest_build_waits_and_0_once_none_does() {
    const HOLD: u64 = 20;
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[junit/*.xml]");
    h.set_env("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "600");
    h.bk.set_builds(recent_builds(3));
    let xml = br#"<testsuite name="s"><testcase classname="c" name="n"/></testsuite>"#;
    for n in 1..=3 {
        h.bk.set_artifacts(n, vec![("junit/1.xml".to_string(), xml.to_vec())]);
    }
    h.bk.inject_at(Endpoint::Artifacts, [Fault::LongReset(HOLD)]);
    let oldest =
        |s: &prometheus_parse::Scrape| sample(s, "kitesync_enrich_oldest_age_seconds", &[]);
    let started = Instant::now();
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    until(|| h.bb.builds().len() == 3).await;
    // Each build was queued for its test results before it was delivered.
    let delivered = Instant::now();
    // Two refreshes of the gauges into the hold, the oldest has waited that long at least.
    tokio::time::sleep(2 * REFRESH).await;
    let at = Instant::now();
    let (text, scrape) = scrape(&base).await.expect("a scrape");
    assert!(h.bb.suites().is_empty(), "still held: {text}");
    let age = oldest(&scrape).expect("the gauge");
    // No more than since kitesync started; no less than since the builds were delivered, less
    // one refresh of the gauges and the second the age is rounded down to.
    let most = started.elapsed().as_secs_f64();
    let least = (at - delivered).as_secs_f64() - REFRESH.as_secs_f64() - 1.0;
    assert!(
        least >= 3.0 && (least..=most).contains(&age),
        "{age} not in {least}..={most}: {text}"
    );

    // Once the hold is over, everything is fetched: nothing waits, and the gauge says 0.
    until_some_within(Duration::from_secs(HOLD) + DEADLINE, || async {
        (h.bb.suites().len() == 3).then_some(())
    })
    .await;
    let (text, scrape) = scrape_until(&base, |s| {
        sample(s, "kitesync_enrich_backlog_builds", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(oldest(&scrape), Some(0.0), "{text}");
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}

/// The log requests are counted, by `/metrics` and by `status`'s totals alike: each as many
/// as Buildkite was asked for.
#[tokio::test(flavor = "multi_thread")]
async fn log_requests_are_counted_by_metrics_and_status_as_buildkite_saw_them() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.set_env("KITESYNC_LOGS__ENABLED", "true");
    h.bk.set_builds(recent_builds(14));
    // Builds 7 and 14 failed, with two failed jobs each.
    for n in [7, 14] {
        let id = data::build_id(n);
        h.bk.set_log(&format!("{id}-j1"), &format!("specs failed in build {n}\n"));
        h.bk.set_log(&format!("{id}-j3"), "");
    }
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    until(|| h.bb.logs().len() == 2).await;
    let asked = || {
        let requests = h.bk.requests();
        requests.iter().filter(|r| r.uri.ends_with("/log")).count() as f64
    };
    let counted = |s: &prometheus_parse::Scrape| {
        sample(s, "kitesync_enrich_requests_total", &[("kind", "log")])
    };
    let (text, scrape) = scrape_until(&base, |s| {
        sample(s, "kitesync_enrich_backlog_builds", &[]) == Some(0.0)
            && counted(s).is_some_and(|n| n >= asked())
    })
    .await;
    let logs = asked();
    assert_eq!(logs, 4.0, "two failed jobs in each of two failed builds");
    assert_eq!(counted(&scrape), Some(logs), "{text}");
    assert_eq!(
        sample(
            &scrape,
            "kitesync_enrich_requests_total",
            &[("kind", "listing")]
        ),
        None,
        "test results are off: {text}"
    );
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));

    let json = h.run(&["status", "--json"]).await;
    assert_eq!(json.code, 0, "{}", json.output());
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let totals = &json["enrich"]["totals"];
    assert_eq!(totals["logs"].as_f64(), Some(logs), "{json}");
    assert_eq!(totals["listings"], 0, "{json}");
    let table = h.run(&["status"]).await;
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("enrich requests"));
    assert_eq!(
        line.map(|l| l["enrich requests".len()..].trim()),
        Some("0 artifact listings, 0 downloads, 4 logs"),
        "{}",
        table.stdout
    );
}
