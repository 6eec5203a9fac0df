//! BuildButler's ingest prefix: its Action posts to `/api/v1/ingest`, its docs say
//! `/ingest`. `check` finds which one a server answers and names the line to set; a run whose
//! configured prefix answers 404 uses the other one (with a warning), remembers it, and never
//! switches once builds were delivered on the configured one.

mod common;

use common::*;

const LINE: &str = "set ingest_prefix = \"/ingest\" in [buildbutler]";

fn probes_at(h: &Harness, prefix: &str) -> usize {
    let route = format!("{prefix}/builds");
    h.bb.posts().iter().filter(|p| **p == route).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_the_prefix_the_server_answers() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(1));
    let run = h.run(&["check"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(run.stdout.contains("at /api/v1/ingest"), "{}", run.stdout);

    h.bb.set_ingest_prefix("/ingest");
    let run = h.run(&["check"]).await;
    assert_ne!(run.code, 0, "{}", run.output());
    let fail = run
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_default();
    assert!(
        fail.contains("no ingest route at /api/v1/ingest"),
        "{}",
        run.stdout
    );
    assert!(fail.contains(LINE), "{}", run.stdout);
    // Nothing was stored by the probes.
    assert!(h.bb.builds().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_run_uses_the_prefix_that_answers_and_remembers_it() {
    let h = Harness::start().await;
    h.bb.set_ingest_prefix("/ingest");
    h.bk.set_builds(recent_builds(4));
    let run = h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 4, "{}", run.output());
    assert!(run.stderr.contains(LINE), "{}", run.stderr);
    // The configured prefix was tried only by the first deliveries under way at once (at
    // most `[buildbutler] concurrency`, 4), one of which found the other prefix.
    let posts = h.bb.posts();
    let wrong = posts
        .iter()
        .filter(|p| p.starts_with("/api/v1/ingest/"))
        .count();
    assert!((1..=4).contains(&wrong), "{posts:?}");

    // The next run goes straight to /ingest, saying so again, and probes nothing.
    let posts_before = h.bb.posts().len();
    h.bk.add_builds([kitesync_fakes::data::just_finished(ORG, 5, "web")]);
    let run = h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 5);
    assert!(run.stderr.contains(LINE), "{}", run.stderr);
    let later = &h.bb.posts()[posts_before..];
    assert!(later.iter().all(|p| p.starts_with("/ingest/")), "{later:?}");

    // A changed config (the right prefix now) probes afresh and says nothing.
    let mut h = h;
    h.set_env("KITESYNC_BUILDBUTLER__INGEST_PREFIX", "/ingest");
    h.bk.add_builds([kitesync_fakes::data::just_finished(ORG, 6, "web")]);
    let run = h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 6);
    assert!(!run.stderr.contains("no ingest route"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn never_switches_once_builds_were_delivered_on_the_configured_prefix() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(2));
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 2);

    // The server moves (or a proxy answers 404 in front of it): the route is not guessed.
    h.bb.set_ingest_prefix("/ingest");
    h.bk.add_builds([kitesync_fakes::data::just_finished(ORG, 3, "web")]);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(run.stderr.contains("404"), "{}", run.stderr);
    assert_eq!(h.bb.builds().len(), 2);
    assert_eq!(probes_at(&h, "/ingest"), 0, "{:?}", h.bb.posts());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_switches_with_a_warning_and_delivers() {
    let h = Harness::start().await;
    h.bb.set_ingest_prefix("/ingest");
    h.bk.set_builds(recent_builds(3));
    let mut daemon = h.spawn_daemon();
    let log = capture_stderr(&mut daemon);
    until(|| h.bb.builds().len() == 3).await;
    let text = wait_for_log(&log, LINE).await;
    assert!(text.contains("WARN"), "{text}");
    terminate(&daemon);
}

/// The remembered route is unreadable (only kitesync writes it; a damaged or hand-edited row):
/// the run says so, finds the route again, and remembers it readably.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_remembered_route_is_said_found_again_and_rewritten() {
    let h = Harness::start().await;
    h.bb.set_ingest_prefix("/ingest");
    h.bk.set_builds(recent_builds(1));
    h.once_ok().await;
    let conn = rusqlite::Connection::open(h.state_path()).expect("open state");
    let damaged = conn
        .execute(
            "UPDATE state SET value = '{\"url\": ' WHERE key = 'ingest_route'",
            [],
        )
        .expect("damage the route");
    assert_eq!(damaged, 1, "the route was remembered");

    h.bk.add_builds([kitesync_fakes::data::just_finished(ORG, 2, "web")]);
    let run = h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 2, "{}", run.output());
    assert!(
        run.stderr
            .contains("the ingest route remembered in the state database is unreadable"),
        "{}",
        run.stderr
    );
    let route: String = conn
        .query_row(
            "SELECT value FROM state WHERE key = 'ingest_route'",
            [],
            |r| r.get(0),
        )
        .expect("remembered again");
    assert!(route.contains("\"answers\":\"/ingest\""), "{route}");
}
