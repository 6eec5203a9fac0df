//! Soak test, run on demand (ten minutes by default):
//!
//!     cargo test --release --test soak -- --ignored --nocapture
//!     SOAK_SECONDS=120 cargo test --release --test soak -- --ignored --nocapture
//!
//! The daemon runs while builds finish throughout (5 a second) and both fakes misbehave:
//! Buildkite 5xx, 429s, truncated bodies and dropped connections; BuildButler 503s and
//! dropped connections, and a BuildButler outage for a tenth of the run. At the end every
//! finished build was delivered, re-sends were only upserts, and the RSS did not grow after
//! warm-up (the curve is printed).

mod common;

use std::time::{Duration, Instant};

use common::*;
use kitesync_fakes::{data, ButlerFault, Fault};
use rand::Rng;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "runs for minutes: cargo test --release --test soak -- --ignored"]
async fn the_daemon_survives_minutes_of_faults_without_losing_or_growing() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let h = Harness::start().await;
    h.bk.set_budgets(1_000_000, 1_000_000, Duration::from_secs(60));
    let mut daemon = h.spawn_daemon();
    let pid = daemon.id().expect("running");
    let started = Instant::now();
    let outage = (seconds * 4 / 10, seconds / 10); // from 40 % of the run, for 10 %
    let mut rng = rand::rng();
    let mut next = 1u64;
    let mut curve = Vec::new();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        // 5 builds finish every second.
        h.bk.add_builds((0..5).map(|i| data::just_finished(ORG, next + i, "web")));
        next += 5;
        // Faults, now and then.
        match rng.random_range(0..10) {
            0 => h.bk.inject([Fault::Status(502)]),
            1 => h.bk.inject([Fault::Truncated]),
            2 => h.bk.inject([Fault::Dropped, Fault::Status(500)]),
            3 => h.bk.inject([Fault::RateLimited(2)]),
            4 => {
                h.bb.inject([ButlerFault::Status(503), ButlerFault::DropAfterStoring])
            }
            5 => h.bb.inject([ButlerFault::DropAfterStoring]),
            _ => {}
        }
        let elapsed = started.elapsed().as_secs();
        h.bb.set_down(elapsed >= outage.0 && elapsed < outage.0 + outage.1);
        if tick.is_multiple_of(10) {
            curve.push((elapsed, rss_mib(pid).unwrap_or(0.0)));
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    h.bb.set_down(false);
    let total = (next - 1) as usize;
    let deadline = Instant::now() + Duration::from_secs(180);
    while h.bb.build_count() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    curve.push((started.elapsed().as_secs(), rss_mib(pid).unwrap_or(0.0)));
    terminate(&daemon);
    let status = daemon.wait().await.expect("reaped");

    println!("RSS of the daemon (MiB) by second:");
    for (at, rss) in &curve {
        println!("  {at:>5} s  {rss:6.1}");
    }
    let posts = h.bb.build_posts() as usize;
    println!(
        "{total} builds finished; {} delivered; {posts} posts ({} re-sent as upserts)",
        h.bb.build_count(),
        posts - h.bb.build_count()
    );
    assert!(status.success(), "stopped cleanly");
    assert_eq!(
        h.bb.build_count(),
        total,
        "every finished build was delivered"
    );
    assert_eq!(integrity(&h), "ok");
    // After warm-up (the first fifth of the run), memory stays flat.
    let warm: Vec<f64> = curve
        .iter()
        .filter(|(at, _)| *at >= seconds / 5)
        .map(|(_, r)| *r)
        .collect();
    let (first, last) = (
        warm.first().copied().unwrap_or(0.0),
        warm.last().copied().unwrap_or(0.0),
    );
    assert!(
        last <= first * 1.25 + 2.0,
        "RSS grew from {first:.1} to {last:.1} MiB after warm-up"
    );
}
