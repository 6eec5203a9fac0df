//! The daemon's `/metrics` (parsed by a Prometheus text parser) and `/healthz`.

mod common;

use common::*;
use kitesync_fakes::data;

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
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    until(|| h.bb.builds().len() == 5).await;

    // The counters move once the delivery loop has settled its batch.
    let (text, scrape) = scrape_until(&base, |s| {
        sample(s, "kitesync_items_delivered_total", &[]).is_some_and(|n| n >= 5.0)
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
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");
    assert!(status.success(), "{status:?}\n{}", log_text(&stderr));
}
