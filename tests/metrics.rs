//! The daemon's `/metrics` (parsed by a Prometheus text parser) and `/healthz`.

mod common;

use std::time::Duration;

use common::*;
use kitesync_fakes::data;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn get(url: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default(); // as net::client does
    let r = reqwest::get(url).await.expect("answered");
    (r.status().as_u16(), r.text().await.expect("body"))
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
    let port = free_port();
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", &format!("127.0.0.1:{port}"));
    h.bk.set_builds(recent_builds(5));
    let mut daemon = h.spawn_daemon();
    until(|| h.bb.builds().len() == 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let base = format!("http://127.0.0.1:{port}");
    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    assert_eq!(
        sample(&scrape, "kitesync_items_delivered_total", &[]),
        Some(5.0)
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
        (200, "ok\n".to_string())
    );

    // BuildButler goes down while builds keep finishing: after three poll intervals (the
    // floor is 5 s), the health check says so.
    h.bb.set_down(true);
    h.bk.add_builds([data::just_finished(ORG, 50, "web")]);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (status, why) = get(&format!("{base}/healthz")).await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("pending") && why.contains("503"), "{why}");

    h.bb.set_down(false);
    until(|| h.bb.builds().len() == 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    terminate(&daemon);
    assert!(daemon.wait().await.expect("reaped").success());
}
