//! Upgrading from 0.1: a state database written by kitesync 0.1 (tests/data/state), whose
//! outbox holds test results, logs and a fleet in BuildButler's wire format, is migrated to
//! Buildkite's facts and delivered exactly as 0.1 would have sent it.

mod common;

use common::*;
use serde_json::Value;

const DUMP: &str = include_str!("data/state/kitesync-0.1.sql");

/// The 0.1 outbox rows of `kind`: their payloads, as 0.1 would have sent them.
fn queued_by_0_1(kind: &str) -> Vec<Value> {
    let conn = rusqlite::Connection::open_in_memory().expect("memory");
    conn.execute_batch(DUMP).expect("the 0.1 dump loads");
    let mut stmt = conn
        .prepare("SELECT payload FROM outbox WHERE kind = ?1 ORDER BY id")
        .expect("query");
    let rows = stmt
        .query_map([kind], |r| r.get::<_, String>(0))
        .expect("rows");
    rows.map(|p| serde_json::from_str(&p.expect("row")).expect("json"))
        .collect()
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|v| v.to_string());
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_1_outbox_of_every_kind_is_migrated_and_delivered_as_0_1_would_have() {
    let mut h = Harness::start().await;
    let conn = rusqlite::Connection::open(h.state_path()).expect("create");
    conn.execute_batch(DUMP).expect("the 0.1 dump loads");
    conn.pragma_update(None, "user_version", 5)
        .expect("0.1's schema version");
    drop(conn);
    // As 0.1 ran: lower-case statuses, test results and logs on.
    h.set_env("KITESYNC_BUILDBUTLER__STATUS_CASE", "lower");
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[tmp/junit-*.xml]");
    h.set_env("KITESYNC_LOGS__ENABLED", "true");

    let run = h.once_ok().await;
    assert!(
        run.stdout.contains("outbox: 0 pending, 0 dead"),
        "{}",
        run.output()
    );
    assert_eq!(h.bb.builds().len(), 7, "the queued builds");
    assert_eq!(sorted(h.bb.suites()), sorted(queued_by_0_1("tests")));
    assert_eq!(h.bb.logs(), queued_by_0_1("log"));
    assert_eq!(h.bb.fleets(), queued_by_0_1("agents"));

    // The agents table was migrated too: the same fleet polled again sends nothing new,
    // a changed one sends a snapshot with the tag that holds a comma intact.
    let conn = rusqlite::Connection::open(h.state_path()).expect("open");
    let facts: Vec<String> = conn
        .prepare("SELECT facts FROM agents ORDER BY id")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("facts");
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, 8, "migrated to the latest schema");
    let ci2: Value = serde_json::from_str(&facts[1]).expect("json");
    assert_eq!(ci2["name"], "ci-2");
    assert_eq!(ci2["connection_state"], "connected");
    assert_eq!(
        ci2["tags"],
        serde_json::json!(["queue=mac", "fast", "os=macos"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_status_case_changed_while_items_wait_applies_to_them() {
    let h = Harness::start().await;
    let conn = rusqlite::Connection::open(h.state_path()).expect("create");
    conn.execute_batch(DUMP).expect("the 0.1 dump loads");
    conn.pragma_update(None, "user_version", 5)
        .expect("0.1's schema version");
    drop(conn);
    // 0.1 queued the log in lower case; the config now says upper (the default).
    h.once_ok().await;
    let logs = h.bb.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["status"], "FAILURE");
    let mut expected = queued_by_0_1("log").remove(0);
    expected["status"] = "FAILURE".into();
    assert_eq!(logs[0], expected, "only the case differs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_0_1_left_waiting_for_its_test_results_gets_them_after_the_upgrade() {
    let mut h = Harness::start().await;
    let conn = rusqlite::Connection::open(h.state_path()).expect("create");
    conn.execute_batch(DUMP).expect("the 0.1 dump loads");
    // 0.1 was killed after queueing acme/api#7 and before fetching its test results.
    conn.execute(
        "INSERT INTO enrich (build_id, version, label, payload)
         SELECT key, version, label, payload FROM outbox
         WHERE kind = 'build' AND label = 'acme/api#7'",
        [],
    )
    .expect("a waiting build");
    conn.pragma_update(None, "user_version", 5)
        .expect("0.1's schema version");
    drop(conn);
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[tmp/junit-*.xml]");
    let xml = br#"<testsuite name="upgraded"><testcase classname="c" name="n"/></testsuite>"#;
    h.bk.set_artifacts(7, vec![("tmp/junit-7.xml".into(), xml.to_vec())]);

    h.once_ok().await;
    let suites = h.bb.suites();
    let upgraded = suites.iter().filter(|s| s["name"] == "upgraded").count();
    assert_eq!(upgraded, 1, "its test results were fetched and delivered");
    let conn = rusqlite::Connection::open(h.state_path()).expect("open");
    let waiting: i64 = conn
        .query_row("SELECT count(*) FROM enrich", [], |r| r.get(0))
        .expect("count");
    assert_eq!(waiting, 0);
}

/// Writes the 0.1 dump to the harness's state database, with `then` run on it before
/// kitesync sees it (what else 0.1 could have left).
fn state_of_0_1(h: &Harness, then: &str) {
    let conn = rusqlite::Connection::open(h.state_path()).expect("create");
    conn.execute_batch(DUMP).expect("the 0.1 dump loads");
    conn.execute_batch(then).expect("what 0.1 could have left");
    conn.pragma_update(None, "user_version", 5)
        .expect("0.1's schema version");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_suite_dead_before_the_upgrade_still_excuses_the_run_and_says_so() {
    let h = Harness::start().await;
    // 0.1 kept a suite BuildButler refused; it did not record why.
    state_of_0_1(
        &h,
        "UPDATE outbox SET state = 'dead', attempts = 1,
             last_error = 'BuildButler refused it (400 Bad Request at api/v1/ingest/tests): {}'
         WHERE id = 9",
    );
    let run = h.once_ok().await;
    assert!(
        run.stdout
            .contains("outbox: 0 pending, 1 dead (1 refused test suite)"),
        "{}",
        run.output()
    );
    assert!(
        run.stderr.contains(
            "1 dead test suite from before kitesync recorded why BuildButler refused it \
             does not fail the run"
        ),
        "{}",
        run.stderr
    );
    let status = h.run(&["status"]).await.stdout;
    let line = status
        .lines()
        .find(|l| l.contains("tests acme/mobile#2"))
        .unwrap_or_default();
    assert!(
        line.ends_with("[dead before kitesync recorded why: does not fail a run]"),
        "{status}"
    );
    let json = h.run(&["status", "--json"]).await.stdout;
    let json: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["dead_letters"][0]["cause"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_1_database_that_delivered_keeps_its_configured_prefix() {
    let h = Harness::start().await;
    // 0.1 delivered on the configured prefix (it recorded when, not where), and its builds
    // were deleted; these 7 are still pending. Now a proxy in front of BuildButler answers
    // 404 at that prefix: the other one is not probed, or builds would go astray.
    state_of_0_1(
        &h,
        "INSERT INTO state VALUES('last_delivery_ok_at', '2026-11-29T21:00:00.000Z')",
    );
    h.bb.set_ingest_prefix("/ingest");
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(run.stderr.contains("404"), "{}", run.stderr);
    let probes =
        h.bb.posts()
            .iter()
            .filter(|p| p.starts_with("/ingest/"))
            .count();
    assert_eq!(probes, 0, "{:?}", h.bb.posts());
    assert!(h.bb.builds().is_empty());
}

/// Issue 20: a state database a newer kitesync wrote stops every command that opens it with
/// exit code 2 (upgrade kitesync; retrying cannot help), not 1.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_written_by_a_newer_kitesync_asks_the_operator_to_upgrade() {
    let h = Harness::start().await;
    h.once_ok().await;
    let conn = rusqlite::Connection::open(h.state_path()).expect("open");
    conn.pragma_update(None, "user_version", 999)
        .expect("a newer kitesync's schema version");
    drop(conn);
    for args in [&["--once"][..], &[], &["replay", "--dead"]] {
        let run = h.run(args).await;
        assert_eq!(run.code, 2, "{args:?}:\n{}", run.output());
        assert!(run.stderr.contains("upgrade kitesync"), "{}", run.output());
    }
}
