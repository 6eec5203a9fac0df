//! Operating kitesync: `status` (from the state database alone) and `replay`.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_dead_letters_and_replay_sends_them_again() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(10));
    h.bb.reject_build_numbers([3]);
    assert_eq!(h.run(&["--once"]).await.code, 1);

    let table = h.run(&["status"]).await;
    assert_eq!(table.code, 0, "{}", table.output());
    assert!(table.stdout.contains("1 build dead"), "{}", table.stdout);
    assert!(
        table.stdout.contains("dead letters (1)"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("acme/web#3"), "{}", table.stdout);
    assert!(
        table.stdout.contains("kitesync replay --dead"),
        "{}",
        table.stdout
    );

    let json = h.run(&["status", "--json"]).await;
    let s: Value = serde_json::from_str(&json.stdout).expect("status --json is JSON");
    assert_eq!(s["dead"], 1);
    assert_eq!(s["pending"], 0);
    assert_eq!(s["dead_letters"][0]["label"], "acme/web#3");
    assert!(s["dead_letters"][0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("400")));
    assert!(s["high_water_mark"].is_string());
    assert!(s["last_delivery_ok_at"].is_string());
    assert_eq!(s["rate_limit"]["user"]["limit"], 50);
    // The pace the last poll went at (issue 18).
    assert_eq!(s["rate_limit"]["pace"]["pace"], "configured");
    assert_eq!(s["rate_limit"]["pace"]["per_minute"], 6000);
    assert!(
        table.stdout.contains("6000 a minute (configured)"),
        "{}",
        table.stdout
    );

    // BuildButler is fixed; the dead letter goes again.
    h.bb.clear_rejections();
    let replay = h.run(&["replay", "--dead"]).await;
    assert_eq!(replay.code, 0, "{}", replay.output());
    assert!(
        replay.stdout.contains("1 item queued again"),
        "{}",
        replay.stdout
    );
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 10);
    let s: Value = serde_json::from_str(&h.run(&["status", "--json"]).await.stdout).expect("json");
    assert_eq!(s["dead"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_of_a_time_range_sends_delivered_builds_again_as_upserts() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(12));
    h.once_ok().await;
    assert_eq!(h.bb.build_posts(), 12);
    let since = ago(120).to_rfc3339();
    let replay = h.run(&["replay", "--since", &since]).await;
    assert_eq!(replay.code, 0, "{}", replay.output());
    assert!(
        replay.stdout.contains("12 items queued again"),
        "{}",
        replay.stdout
    );
    h.once_ok().await;
    assert_eq!(h.bb.build_posts(), 24);
    assert_eq!(h.bb.builds().len(), 12, "upserts, not duplicates");

    let unknown = h.run(&["replay", "--build", "no-such-build"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("not in the outbox"),
        "{}",
        unknown.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_before_any_run_says_so() {
    let h = Harness::start().await;
    let run = h.run(&["status"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("has not run with this config yet"),
        "{}",
        run.stderr
    );
    assert!(!h.state_path().exists(), "status creates nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_when_all_is_well_and_stores_nothing() {
    let h = Harness::start().await;
    let run = h.run(&["check"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        run.stdout.contains("ok    token has read_builds (builds)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("can list the builds of acme"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("rate budget: organization"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("ok    pace: 6000 a minute (configured), polls first")
            && run
                .stdout
                .contains("--pace free (--once, --backfill) would go at"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("accepted the API key"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
    assert!(
        h.bb.builds().is_empty(),
        "check stored nothing in BuildButler"
    );
    assert!(!h.state_path().exists(), "check created no state database");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_each_missing_scope_and_a_wrong_api_key() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_SCHEDULE__AGENTS", "0 */5 * * * *");
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[**/junit.xml]");
    h.set_env("KITESYNC_BUILDBUTLER__API_KEY", "bb_live_WRONG");
    h.bk.set_scopes(&["read_builds", "read_artifacts"]);
    let run = h.run(&["check"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stdout
            .contains("ok    token has read_artifacts (test results)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("FAIL  token lacks read_agents: the agent sync will fail"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("FAIL  BuildButler: BuildButler rejected the API key"),
        "{}",
        run.stdout
    );
    assert!(!run.output().contains("WRONG"), "the key is never printed");
}

fn ndjson(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_ndjson_sends_nothing_and_changes_no_state() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(5));
    let run = h.run(&["--once", "--dry-run"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let lines = ndjson(&run.stdout);
    let builds: Vec<&Value> = lines
        .iter()
        .filter(|l| l["route"] == "api/v1/ingest/builds")
        .collect();
    assert_eq!(builds.len(), 5);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["route"] == "api/v1/ingest/pipeline-stages")
            .count(),
        5
    );
    assert_eq!(builds[0]["body"]["jenkinsInstanceId"], ORG);
    assert!(run.stderr.contains("would deliver 5"), "{}", run.stderr);
    assert!(h.bb.auth_seen().is_empty(), "nothing sent to BuildButler");
    assert!(!h.state_path().exists(), "no state written");
    for secret in [TOKEN, API_KEY] {
        assert!(!run.output().contains(secret));
    }

    // After a real run, a dry run shows only what is new and leaves the state as it was.
    h.once_ok().await;
    let before = h.run(&["status", "--json"]).await.stdout;
    h.bk.add_builds([kitesync_fakes::data::build(
        ORG,
        99,
        "web",
        "passed",
        ago(3),
        Some(ago(1)),
    )]);
    let run = h.run(&["--once", "--dry-run"]).await;
    let lines = ndjson(&run.stdout);
    assert_eq!(lines.len(), 2, "build 99 and its stages: {lines:?}");
    assert_eq!(lines[0]["body"]["buildNumber"], 99);
    let after = h.run(&["status", "--json"]).await.stdout;
    let strip = |s: &str| -> Value {
        let mut v: Value = serde_json::from_str(s).expect("json");
        v["rate_limit"] = Value::Null;
        v
    };
    assert_eq!(
        strip(&before),
        strip(&after),
        "the dry run changed the state"
    );
    assert_eq!(h.bb.build_posts(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(3));
    h.bb.reject_build_numbers([2]);
    let run = h.run(&["--once", "--log-format", "json"]).await;
    let logs: Vec<Value> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    let dead = logs
        .iter()
        .find(|l| l["level"] == "ERROR")
        .expect("the dead letter is logged");
    assert_eq!(dead["fields"]["item"], "acme/mobile#2");
}

/// The daemon's descriptors that point at a deleted file of the state database (a WAL or
/// shared-memory file another process removed under it).
fn deleted_state_files(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.contains("state.db") && target.ends_with("(deleted)"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_beside_the_daemon_leaves_the_daemons_writes_where_everyone_sees_them() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(3));
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let pid = daemon.id().expect("running");
    // Delivered: the daemon took and released its delivery lock.
    until(|| h.bb.builds().len() == 3).await;
    until(|| last_delivery_ok(&h).is_some()).await;
    // Another process opens and closes the database, as `status` does.
    let status = h.run(&["status"]).await;
    assert_eq!(status.code, 0, "{}", status.output());
    assert!(
        deleted_state_files(pid).is_empty(),
        "{:?}",
        deleted_state_files(pid)
    );
    // What the daemon writes next is in the database, not in a WAL only it can see.
    let before = last_delivery_ok(&h);
    h.bk.add_builds([kitesync_fakes::data::just_finished(ORG, 4, "web")]);
    until(|| h.bb.builds().len() == 4).await;
    until(|| last_delivery_ok(&h) > before).await;
    assert!(
        deleted_state_files(pid).is_empty(),
        "{:?}",
        deleted_state_files(pid)
    );
    terminate(&daemon);
    let ended = daemon.wait().await.expect("reaped");
    assert!(ended.success(), "{}", log_text(&stderr));
}

/// `last_delivery_ok_at` as another process reads it from the state database.
fn last_delivery_ok(h: &Harness) -> Option<String> {
    let conn = rusqlite::Connection::open(h.state_path()).ok()?;
    conn.query_row(
        "SELECT value FROM state WHERE key = 'last_delivery_ok_at'",
        [],
        |r| r.get(0),
    )
    .ok()
}
