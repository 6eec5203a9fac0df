//! `kill -9` of `kitesync --once` in the middle of polling or of delivery loses nothing:
//! the next run delivers every build, re-sending at most what was in flight.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_delivery_then_a_clean_run_delivers_everything() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(500));
    h.bb.set_latency(Duration::from_millis(15));
    let mut child = h.spawn(&["--once"]);
    until(|| h.bb.builds().len() >= 120).await;
    child.start_kill().expect("kill -9");
    let status = child.wait().await.expect("reaped");
    assert!(!status.success(), "it was killed mid-run");
    assert!(h.bb.builds().len() < 500, "killed before the end");
    assert_eq!(integrity(&h), "ok");

    h.bb.set_latency(Duration::ZERO);
    h.bk.clear_requests();
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 500, "nothing lost");
    assert_eq!(h.bb.stages().len(), 500);
    let resent = h.bb.build_posts() - 500;
    assert!(
        resent <= 72,
        "only in-flight and unsettled deliveries re-sent: {resent}"
    );
    assert_eq!(
        h.bk_requests(),
        1,
        "the poll had finished: one request for the overlap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_between_pages_then_a_clean_run_walks_them_again() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(500));
    h.bk.set_latency(Duration::from_millis(400));
    let mut child = h.spawn(&["--once"]);
    until(|| h.bk_requests() >= 2).await;
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reaped");
    assert_eq!(integrity(&h), "ok");
    let conn = rusqlite::Connection::open(h.state_path()).expect("open state");
    let queued: i64 = conn
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .expect("count");
    assert!(
        queued >= 100,
        "the first page was committed before the kill: {queued}"
    );
    let before = h.bb.build_posts();

    h.bk.set_latency(Duration::ZERO);
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 500, "nothing lost");
    assert_eq!(
        h.bb.build_posts(),
        500.max(before),
        "no build delivered twice"
    );
}
