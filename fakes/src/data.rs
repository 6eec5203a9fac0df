//! Realistic Buildkite build objects, shaped like real API answers: full pipeline objects,
//! null creators, `pull_request: {}`, waiter jobs with only `{id, graphql_id, type}`, block
//! steps, retried attempts, emoji shortcodes and fields kitesync does not know.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

/// The UUID of build `number` (deterministic, so tests can name it).
pub fn build_id(number: u64) -> String {
    format!("01890000-0000-4000-8000-{number:012x}")
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A build of `pipeline` in `state`, created at `created`; finished at `finished` if given.
pub fn build(
    org: &str,
    number: u64,
    pipeline: &str,
    state: &str,
    created: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
) -> Value {
    let id = build_id(number);
    let started = created + Duration::seconds(5);
    let job_end = finished.unwrap_or(started + Duration::seconds(30));
    let agent = |n: u64| {
        json!({"id": format!("agent-{n}"), "name": format!("ci-agent-{}", n % 4),
               "hostname": format!("ci-host-{}", n % 4), "connection_state": "connected",
               "meta_data": ["queue=default", "os=linux"], "creator": null})
    };
    let job_state = match state {
        "running" => "running",
        "canceled" => "canceled",
        "failed" => "failed",
        _ => "passed",
    };
    let mut jobs = vec![
        json!({"id": format!("{id}-j1"), "graphql_id": "Sm9i", "type": "script",
               "name": ":rspec: Specs", "step_key": "specs", "state": job_state,
               "command": "bin/rspec", "soft_failed": number.is_multiple_of(13), "exit_status": 0,
               "agent": agent(number), "created_at": iso(created),
               "scheduled_at": iso(created), "runnable_at": iso(created),
               "started_at": iso(started), "finished_at": finished.map(|_| iso(job_end)),
               "retried": false, "retries_count": 0, "parallel_group_index": null,
               "artifact_paths": "tmp/junit-*.xml", "web_url": "https://buildkite.com/x"}),
        json!({"id": format!("{id}-j2"), "graphql_id": "V2FpdA==", "type": "waiter"}),
        json!({"id": format!("{id}-j3"), "graphql_id": "Sm9i", "type": "script",
               "name": ":docker: Build 🐳", "state": job_state, "soft_failed": false,
               "agent": agent(number + 1), "started_at": iso(started),
               "finished_at": finished.map(|_| iso(job_end)), "retried": false}),
    ];
    if number.is_multiple_of(5) {
        // A flaky step retried once: the first attempt is kept with `retried: true`.
        jobs.insert(
            0,
            json!({"id": format!("{id}-j0"), "type": "script", "name": ":rspec: Specs",
            "state": "failed", "soft_failed": false, "retried": true,
            "retried_in_job_id": format!("{id}-j1"), "agent": agent(number)}),
        );
    }
    if number.is_multiple_of(9) {
        jobs.push(
            json!({"id": format!("{id}-j4"), "type": "manual", "label": ":rocket: Deploy?",
                         "state": "unblocked", "unblocked_by": {"id": "u1", "name": "Ada"}}),
        );
    }
    json!({
        "id": id, "graphql_id": "QnVpbGQ=", "number": number, "state": state, "blocked": false,
        "url": format!("https://api.buildkite.com/v2/organizations/{org}/pipelines/{pipeline}/builds/{number}"),
        "web_url": format!("https://buildkite.com/{org}/{pipeline}/builds/{number}"),
        "message": format!("Change #{number}"), "commit": format!("{number:040x}"),
        "branch": if number.is_multiple_of(4) { "feature/x" } else { "main" }, "tag": null, "env": {},
        "source": "webhook", "creator": if number.is_multiple_of(2) { Value::Null } else { json!({"id": "u1", "graphql_id": "VXNlcg=="}) },
        "author": {"name": "Ada", "email": "ada@example.com"},
        "created_at": iso(created), "scheduled_at": iso(created), "started_at": iso(started),
        "finished_at": finished.map(iso), "meta_data": {}, "pull_request": {},
        "rebuilt_from": null, "cluster_id": null, "some_future_field": {"nested": [1, 2, 3]},
        "pipeline": {"id": format!("pipe-{pipeline}"), "slug": pipeline, "name": pipeline,
                     "repository": format!("git@github.com:{org}/{pipeline}.git"),
                     "default_branch": "main", "visibility": "private"},
        "jobs": jobs,
    })
}

/// A build of `pipeline` that passed just now, created two minutes ago.
pub fn just_finished(org: &str, number: u64, pipeline: &str) -> Value {
    let now = Utc::now();
    build(
        org,
        number,
        pipeline,
        "passed",
        now - Duration::minutes(2),
        Some(now),
    )
}

/// `count` finished builds numbered from `first`, the last finishing at `end` and each
/// `spacing` before the next; a mix of pipelines and of passed, failed, canceled, skipped
/// and soft-failed results. Each was created five minutes before it finished.
pub fn finished_builds(
    org: &str,
    first: u64,
    count: u64,
    end: DateTime<Utc>,
    spacing: Duration,
) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let number = first + i;
            let finished = end - spacing * i32::try_from(count - 1 - i).unwrap_or(i32::MAX);
            let pipeline = ["web", "api", "mobile"][(number % 3) as usize];
            let state = match number {
                n if n.is_multiple_of(7) => "failed",
                n if n.is_multiple_of(11) => "canceled",
                n if n.is_multiple_of(17) => "skipped",
                _ => "passed",
            };
            build(
                org,
                number,
                pipeline,
                state,
                finished - Duration::minutes(5),
                Some(finished),
            )
        })
        .collect()
}
