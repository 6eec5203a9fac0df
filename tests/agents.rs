//! The agent sync: a fleet snapshot goes to BuildButler when, and only when, an agent
//! connects, starts or finishes a job, or disappears.

mod common;

use common::*;
use kitesync_fakes::data;
use serde_json::{json, Value};

/// Agent `n` as Buildkite's `/agents` lists it (the documented shape, see `data::agent`).
fn agent(n: u32, state: &str, job: Option<&str>) -> Value {
    data::agent(ORG, n, state, job)
}

/// When the agents were last polled, as the state database says.
fn agents_polled_at(h: &Harness) -> Option<chrono::DateTime<chrono::Utc>> {
    use rusqlite::OptionalExtension;
    if !h.state_path().exists() {
        return None;
    }
    let conn = rusqlite::Connection::open(h.state_path()).expect("open state");
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM state WHERE key = 'agents_polled_at'",
            [],
            |r| r.get(0),
        )
        .optional()
        .expect("read the state");
    text.map(|t| {
        chrono::DateTime::parse_from_rfc3339(&t)
            .expect("an RFC 3339 time")
            .with_timezone(&chrono::Utc)
    })
}

/// Runs `--once` with the agent sync on (every second), once its agent poll is due: a
/// second after the last agent poll.
async fn once_with_agents(h: &mut Harness) -> Run {
    until(|| {
        agents_polled_at(h).is_none_or(|at| at + chrono::Duration::seconds(1) <= chrono::Utc::now())
    })
    .await;
    h.set_env("KITESYNC_SCHEDULE__AGENTS", "* * * * * *");
    h.once_ok().await
}

fn statuses(fleet: &Value) -> Vec<(String, String)> {
    fleet["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or("").to_string(),
                a["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn connected_busy_gone_each_send_one_snapshot_and_no_change_sends_none() {
    let mut h = Harness::start().await;
    h.bk.set_agents(vec![
        agent(1, "connected", None),
        agent(2, "connected", None),
    ]);
    once_with_agents(&mut h).await;
    let fleets = h.bb.fleets();
    assert_eq!(fleets.len(), 1);
    assert_eq!(fleets[0]["jenkinsInstanceId"], ORG);
    assert_eq!(fleets[0]["queueItems"], json!([]));
    assert_eq!(
        fleets[0]["agents"][0],
        json!({"name": "ci-1", "status": "ONLINE", "labels": "queue=default,slot=1",
               "os": "linux", "arch": "amd64", "executors": 1})
    );

    // Nothing changed: no POST.
    once_with_agents(&mut h).await;
    assert_eq!(h.bb.fleets().len(), 1);

    // ci-1 picks up a job.
    h.bk.set_agents(vec![
        agent(1, "connected", Some(":rspec: Specs")),
        agent(2, "connected", None),
    ]);
    once_with_agents(&mut h).await;
    let fleets = h.bb.fleets();
    assert_eq!(fleets.len(), 2);
    assert_eq!(fleets[1]["agents"][0]["status"], "BUILDING");
    assert_eq!(fleets[1]["agents"][0]["currentJob"], ":rspec: Specs");

    // ci-2 disconnects: Buildkite stops listing it; BuildButler is told it is OFFLINE.
    h.bk.set_agents(vec![
        agent(1, "connected", Some(":rspec: Specs")),
        agent(2, "disconnected", None),
    ]);
    once_with_agents(&mut h).await;
    let fleets = h.bb.fleets();
    assert_eq!(fleets.len(), 3);
    assert_eq!(
        statuses(&fleets[2]),
        [
            ("ci-1".to_string(), "BUILDING".to_string()),
            ("ci-2".to_string(), "OFFLINE".to_string())
        ]
    );
    once_with_agents(&mut h).await;
    assert_eq!(h.bb.fleets().len(), 3, "still gone is no change");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_larger_than_a_page_is_listed_whole() {
    let mut h = Harness::start().await;
    h.bk.set_agents((1..=150).map(|n| agent(n, "connected", None)).collect());
    once_with_agents(&mut h).await;
    let fleets = h.bb.fleets();
    assert_eq!(fleets.len(), 1);
    assert_eq!(fleets[0]["agents"].as_array().map(Vec::len), Some(150));
    let agent_requests =
        h.bk.requests()
            .iter()
            .filter(|r| r.uri.contains("/agents"))
            .count();
    assert_eq!(agent_requests, 2, "two pages of 100, following Link");
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_follow_their_own_schedule_in_once_runs() {
    let mut h = Harness::start().await;
    h.bk.set_agents(vec![agent(1, "connected", None)]);
    h.set_env("KITESYNC_SCHEDULE__AGENTS", "0 0 * * * *");
    h.once_ok().await;
    h.once_ok().await;
    let agent_requests =
        h.bk.requests()
            .iter()
            .filter(|r| r.uri.contains("/agents"))
            .count();
    assert_eq!(
        agent_requests, 1,
        "the hourly agent poll is not due again a moment later"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_read_agents_says_so_and_builds_still_flow() {
    let mut h = Harness::start().await;
    h.bk.set_scopes(&["read_builds"]);
    h.bk.set_builds(recent_builds(5));
    h.set_env("KITESYNC_SCHEDULE__AGENTS", "* * * * * *");
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stderr.contains("lacks the read_agents scope"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("[schedule] agents"),
        "says how to turn it off: {}",
        run.stderr
    );
    assert_eq!(h.bb.builds().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_builds_node_labels_come_from_the_agent_poll() {
    let mut h = Harness::start().await;
    h.bk.set_builds(recent_builds(3));
    // Build 2 ran on agent-2 (its jobs embed the agent without meta_data, as the REST API
    // does); only agent-2 is connected now.
    h.bk.set_agents(vec![agent(2, "connected", None)]);
    once_with_agents(&mut h).await;
    let builds = h.bb.builds();
    let labels = |n: u64| builds[&data::build_id(n)]["nodeInfo"]["nodeLabels"].clone();
    assert_eq!(labels(2), json!(["queue=default", "slot=2"]));
    assert_eq!(labels(1), json!([]), "agent-1 was never polled: no labels");
}
