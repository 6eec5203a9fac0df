//! Buildkite objects shaped like the documented API answers in `fakes/data/buildkite/`
//! (sources in its `SOURCES.md`, what they show in `NOTES.md`): a build has exactly the keys
//! of "Get a build" (`build.json`), and each job the keys of its type there (`script`, the
//! retry of a retried `script` with `retry_source`, `waiter`, `manual`, `trigger`), nulls
//! included. An agent from [`agent`] has the keys of "Get an agent" (`agent.json`).
//! `tests/fakes_shape.rs` compares these key sets with the documents, so they cannot drift.
//!
//! The values are ours and deterministic: null creators on even builds, a retried attempt
//! every 5th build, a block step every 9th and a trigger step every 7th.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

const API: &str = "https://api.buildkite.com/v2/organizations";

/// The UUID of build `number` (deterministic, so tests can name it).
pub fn build_id(number: u64) -> String {
    format!("01890000-0000-4000-8000-{number:012x}")
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A user as "Get a build" embeds one (`creator`); `unblocked_by` adds a `graphql_id`.
fn user() -> Value {
    json!({"id": "0189d2b0-5d55-4e84-af6a-3ab12c9d8e99", "name": "Ada", "email": "ada@example.com",
           "avatar_url": "https://www.gravatar.com/avatar/00000000000000000000000000000000",
           "created_at": "2021-04-07T02:11:45.309Z"})
}

/// The agent as "Get a build" embeds it in a job: 11 keys, and no `meta_data` (agent tags
/// come only from `/agents`).
fn job_agent(org: &str, n: u64) -> Value {
    json!({"id": format!("agent-{n}"), "graphql_id": "QWdlbnQ=",
           "url": format!("{API}/{org}/agents/agent-{n}"),
           "web_url": format!("https://buildkite.com/organizations/{org}/agents/agent-{n}"),
           "name": format!("ci-agent-{}", n % 4), "connection_state": "connected",
           "hostname": format!("ci-host-{}", n % 4), "ip_address": "192.0.2.10",
           "user_agent": "buildkite-agent/3.95.1.10770 (linux; amd64)", "creator": user(),
           "created_at": "2026-02-27T08:00:12.402Z"})
}

/// The times a job of a build records.
#[derive(Clone, Copy)]
struct Times {
    created: DateTime<Utc>,
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
}

/// A `script` job with the documented keys (`retry_source` only on a retry).
#[allow(clippy::too_many_arguments)]
fn script(
    org: &str,
    pipeline: &str,
    number: u64,
    job_id: String,
    (name, step_key, command): (&str, &str, &str),
    state: &str,
    t: Times,
    artifact_paths: Value,
    agent: u64,
) -> Map<String, Value> {
    let build_url = format!("{API}/{org}/pipelines/{pipeline}/builds/{number}");
    let exit_status = match state {
        "failed" => json!(1),
        "running" | "scheduled" => Value::Null,
        _ => json!(0),
    };
    let cluster = format!("{API}/{org}/clusters/0190c5a8-7b3e-4d2a-9f1c-2e4b8a6d5c10");
    let job = json!({
        "id": job_id, "graphql_id": "Sm9i", "type": "script", "name": name, "step_key": step_key,
        "group_key": null, "step": {"id": format!("step-{step_key}"), "signature": null},
        "agent_query_rules": ["queue=default"], "state": state,
        "web_url": format!("https://buildkite.com/{org}/{pipeline}/builds/{number}#{job_id}"),
        "log_url": format!("{build_url}/jobs/{job_id}/log"),
        "raw_log_url": format!("{build_url}/jobs/{job_id}/log.txt"),
        "command": command, "soft_failed": false, "exit_status": exit_status,
        "artifact_paths": artifact_paths, "agent": job_agent(org, agent),
        "created_at": iso(t.created), "scheduled_at": iso(t.created),
        "runnable_at": iso(t.created), "started_at": iso(t.started),
        "finished_at": t.finished.map(iso),
        "retried": false, "retried_in_job_id": null, "retries_count": null, "retry_type": null,
        "parallel_group_index": null, "parallel_group_total": null, "matrix": null,
        "cluster_id": "0190c5a8-7b3e-4d2a-9f1c-2e4b8a6d5c10", "cluster_url": cluster,
        "cluster_queue_id": "0190c5a8-7b3e-4d2a-9f1c-2e4b8a6d5c11",
        "cluster_queue_url": format!("{cluster}/queues/0190c5a8-7b3e-4d2a-9f1c-2e4b8a6d5c11"),
    });
    match job {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object"),
    }
}

/// A build of `pipeline` in `state`, created at `created`; finished at `finished` if given.
/// Its keys are those of "Get a build" (`fakes/data/buildkite/build.json`).
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
    let web = format!("https://buildkite.com/{org}/{pipeline}/builds/{number}");
    let job_state = match state {
        "running" => "running",
        "canceled" => "canceled",
        "failed" => "failed",
        _ => "passed",
    };
    let times = Times {
        created,
        started,
        finished: finished.map(|_| job_end),
    };
    let retried = number.is_multiple_of(5);
    let mut specs = script(
        org,
        pipeline,
        number,
        format!("{id}-j1"),
        (":rspec: Specs", "specs", "bin/rspec"),
        job_state,
        times,
        json!("tmp/junit-*.xml"),
        number,
    );
    specs.insert("soft_failed".into(), json!(number.is_multiple_of(13)));
    let signature = json!({"value": "eyJhbGciOiJFZERTQSJ9..ZmFrZQ", "algorithm": "EdDSA",
                           "signed_fields": ["command", "env", "matrix", "plugins", "repository_url"]});
    if number % 2 == 1 {
        specs["step"]["signature"] = signature;
    }
    let mut jobs = Vec::new();
    let mut failing_at = (state == "failed").then(|| iso(job_end));
    if retried {
        // A flaky step retried once: the first attempt is kept with `retried: true`, the
        // retry says where it came from.
        let first_end = started + Duration::seconds(10);
        let mut first = script(
            org,
            pipeline,
            number,
            format!("{id}-j0"),
            (":rspec: Specs", "specs", "bin/rspec"),
            "failed",
            Times {
                finished: Some(first_end),
                ..times
            },
            json!("tmp/junit-*.xml"),
            number,
        );
        first.insert("retried".into(), json!(true));
        first.insert("retried_in_job_id".into(), json!(format!("{id}-j1")));
        specs.insert("retries_count".into(), json!(1));
        specs.insert(
            "retry_source".into(),
            json!({"job_id": format!("{id}-j0"), "retry_type": "automatic"}),
        );
        failing_at = Some(iso(first_end));
        jobs.push(Value::Object(first));
    }
    jobs.push(Value::Object(specs));
    jobs.push(json!({"id": format!("{id}-j2"), "graphql_id": "V2FpdA==", "type": "waiter"}));
    jobs.push(Value::Object(script(
        org,
        pipeline,
        number,
        format!("{id}-j3"),
        (":docker: Build 🐳", "docker", "docker build ."),
        job_state,
        times,
        Value::Null,
        number + 1,
    )));
    if number.is_multiple_of(9) {
        let mut unblocker = user();
        unblocker["graphql_id"] = json!("VXNlcg==");
        jobs.push(json!({
            "id": format!("{id}-j4"), "graphql_id": "Sm9i", "type": "manual",
            "label": ":rocket: Deploy?", "state": "unblocked", "web_url": null,
            "unblocked_by": unblocker, "unblocked_at": iso(job_end), "unblockable": false,
            "unblock_url": format!("{web}#{id}-j4"),
        }));
    }
    if number.is_multiple_of(7) {
        // The child build exists once the step has run.
        let child = number + 1_000_000;
        let triggered = finished.map(|_| {
            json!({"id": build_id(child), "number": child,
                   "url": format!("{API}/{org}/pipelines/deploy/builds/{child}"),
                   "web_url": format!("https://buildkite.com/{org}/deploy/builds/{child}")})
        });
        jobs.push(json!({
            "id": format!("{id}-j5"), "graphql_id": "Sm9i", "type": "trigger",
            "name": "Deploy to staging", "step_key": "deploy-staging", "state": job_state,
            "async": false, "web_url": format!("{web}#{id}-j5"),
            "created_at": iso(created), "scheduled_at": iso(created),
            "runnable_at": iso(started), "started_at": iso(started),
            "finished_at": finished.map(|_| iso(job_end)), "triggered_build": triggered,
        }));
    }
    let mut states = Map::new();
    for job in &jobs {
        let s = match job["state"].as_str() {
            Some(s) => s,
            None if finished.is_some() => "passed",
            None => "waiting",
        };
        let n = states.get(s).and_then(Value::as_u64).unwrap_or(0);
        states.insert(s.to_string(), json!(n + 1));
    }
    json!({
        "id": id, "graphql_id": "QnVpbGQ=",
        "url": format!("{API}/{org}/pipelines/{pipeline}/builds/{number}"),
        "web_url": web, "number": number, "state": state, "cancel_reason": null,
        "blocked": false, "message": format!("Change #{number}"),
        "commit": format!("{number:040x}"),
        "branch": if number.is_multiple_of(4) { "feature/x" } else { "main" },
        "env": {}, "source": "webhook",
        "creator": if number.is_multiple_of(2) { Value::Null } else { user() },
        "jobs": jobs,
        "job_state_counts": {"total": jobs.len(), "states": states},
        "created_at": iso(created), "scheduled_at": iso(created), "started_at": iso(started),
        "failing_at": failing_at, "finished_at": finished.map(iso), "meta_data": {},
        "pull_request": {}, "merge_queue": null, "rebuilt_from": null,
        "pipeline": pipeline_of(org, pipeline),
    })
}

/// The pipeline as "Get a build" embeds it.
fn pipeline_of(org: &str, pipeline: &str) -> Value {
    json!({
        "id": format!("pipe-{pipeline}"), "graphql_id": "UGlwZWxpbmU=",
        "url": format!("{API}/{org}/pipelines/{pipeline}"), "name": pipeline,
        "slug": pipeline, "repository": format!("git@github.com:{org}/{pipeline}.git"),
        "provider": {"id": "github", "webhook_url": ""},
        "skip_queued_branch_builds": false, "skip_queued_branch_builds_filter": null,
        "cancel_running_branch_builds": false, "cancel_running_branch_builds_filter": null,
        "builds_url": format!("{API}/{org}/pipelines/{pipeline}/builds"),
        "badge_url": format!("https://badge.buildkite.com/{pipeline}.svg"),
        // "Get a build" gives the pipeline's time in the webhook form.
        "created_at": "2023-06-14 09:41:07 UTC",
        "scheduled_builds_count": 0, "running_builds_count": 0, "scheduled_jobs_count": 0,
        "running_jobs_count": 0, "waiting_jobs_count": 0,
    })
}

/// Agent `n` as "Get an agent" and the agents list give it (`fakes/data/buildkite/agent.json`),
/// named `ci-{n}`, tagged `queue=default` and `slot={n}`, running a job named `job` if given.
pub fn agent(org: &str, n: u32, state: &str, job: Option<&str>) -> Value {
    let url = format!("{API}/{org}/agents/agent-{n}");
    let build = format!("{API}/{org}/pipelines/web/builds/1");
    let job = job.map(|name| {
        let id = format!("job-{n}");
        json!({
            "id": id, "graphql_id": "Sm9i", "type": "script", "name": name,
            "agent_query_rules": ["queue=default"], "state": "running", "build_url": build,
            "web_url": format!("https://buildkite.com/{org}/web/builds/1#{id}"),
            "log_url": format!("{build}/jobs/{id}/log"),
            "raw_log_url": format!("{build}/jobs/{id}/log.txt"),
            "artifacts_url": format!("{build}/jobs/{id}/artifacts"),
            "script_path": "bin/rspec", "command": "bin/rspec", "soft_failed": false,
            "exit_status": null, "artifact_paths": "tmp/junit-*.xml", "agent": null,
            "created_at": "2026-11-01T00:00:00.000Z", "scheduled_at": "2026-11-01T00:00:00.000Z",
            "started_at": "2026-11-01T00:00:01.000Z", "finished_at": null,
        })
    });
    let mut creator = user();
    creator["graphql_id"] = json!("VXNlcg==");
    json!({
        "id": format!("agent-{n}"), "graphql_id": "QWdlbnQ=", "url": url,
        "web_url": format!("https://buildkite.com/organizations/{org}/agents/agent-{n}"),
        "name": format!("ci-{n}"), "connection_state": state, "hostname": format!("host-{n}"),
        "ip_address": "10.0.0.1", "user_agent": "buildkite-agent/3.80.0.10637 (linux; amd64)",
        "version": "3.80.0.10637", "os_id": "linux", "arch": "amd64", "queue": "default",
        "creator": creator, "created_at": "2026-11-01T00:00:00.000Z",
        "connected_at": "2026-11-01T00:00:00.000Z",
        "disconnected_at": (state == "disconnected").then_some("2026-11-01T01:00:00.000Z"),
        "lost_at": null, "stopped_at": null, "job": job,
        "last_job_finished_at": null, "priority": null,
        "meta_data": ["queue=default", format!("slot={n}")],
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
