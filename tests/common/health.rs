//! The daemon's metrics server as tests reach it: its address (from the log), plain GETs,
//! and `/healthz`.

use std::time::Duration;

use super::{until_some, wait_for_log, Log};

/// The status and body of a GET, or `None` if nothing answered (in time).
pub async fn get(url: &str) -> Option<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default(); // as net::client does
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = client.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Waits until `/healthz` answers `status`, and returns what it said.
pub async fn healthz_until(base: &str, status: u16) -> String {
    let url = format!("{base}/healthz");
    let url = url.as_str();
    until_some(|| async move {
        get(url)
            .await
            .and_then(|(s, body)| (s == status).then_some(body))
    })
    .await
}

/// The address the daemon's metrics server bound (it listens on port 0), from its log.
pub async fn metrics_base(stderr: &Log) -> String {
    const SAYS: &str = "metrics on http://";
    let log = wait_for_log(stderr, SAYS).await;
    let at = log.find(SAYS).expect("logged") + SAYS.len();
    let addr = &log[at..at + log[at..].find("/metrics").expect("the /metrics path")];
    let port: u16 = addr
        .strip_prefix("127.0.0.1:")
        .unwrap_or_else(|| panic!("metrics bound to {addr}, not 127.0.0.1"))
        .parse()
        .expect("a port");
    assert_ne!(port, 0, "the port actually bound is logged, not 0");
    format!("http://{addr}")
}
