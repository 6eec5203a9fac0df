//! Every wire choice of the Buildkite -> BuildButler mapping, for every item kind, in one
//! place: the outbox keeps Buildkite's facts ([`crate::item`]) and the sink renders them here,
//! at delivery.
//!
//! | Buildkite | BuildButler |
//! |---|---|
//! | organization slug | `jenkinsInstanceId` |
//! | pipeline slug | `jobName` |
//! | build number | `buildNumber` |
//! | build UUID | `id` and `externalRunId` (a re-send upserts) |
//! | `source` (webhook, ui, ...) | `cause` |
//! | step (non-waiter job, latest attempt) | pipeline stage |
//!
//! BuildButler's docs and its GitHub Action disagree on status casing: [`StatusCase`]
//! picks one (default: upper case, as the Action sends; lower case has no `not_built`, so
//! such builds are sent as `aborted`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::buildkite::model::{Build, Job};
use crate::config::StatusCase;
use crate::item::{Agent, AgentTags, Fleet, TestResults, TestStatus};

/// The body of `POST {prefix}/builds`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireBuild<'a> {
    pub(crate) id: &'a str,
    pub(crate) external_run_id: &'a str,
    pub(crate) jenkins_instance_id: &'a str,
    pub(crate) job_name: &'a str,
    pub(crate) build_number: u64,
    pub(crate) status: String,
    /// Milliseconds from start to finish.
    pub(crate) duration: i64,
    /// Milliseconds from scheduled to started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) queue_duration: Option<i64>,
    pub(crate) started_at: String,
    pub(crate) completed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) branch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) commit_sha: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cause: Option<&'a str>,
    pub(crate) source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_info: Option<NodeInfo<'a>>,
}

/// The agent a build ran on (its first step's).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeInfo<'a> {
    pub(crate) node_name: &'a str,
    pub(crate) node_labels: &'a [String],
    pub(crate) is_built_in: bool,
}

/// The body of `POST {prefix}/pipeline-stages`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireStages<'a> {
    pub(crate) build_id: &'a str,
    pub(crate) stages: Vec<WireStage<'a>>,
}

/// One stage: a step of the build.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireStage<'a> {
    /// The job's name, emoji shortcodes kept as text (`:rspec: Specs`).
    pub(crate) stage_name: &'a str,
    /// 0-based, in the build's job order.
    pub(crate) stage_order: usize,
    pub(crate) status: String,
    pub(crate) duration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) agent_name: Option<&'a str>,
}

/// The body of `POST {prefix}/tests`: one JUnit suite of a build.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireSuite<'a> {
    pub(crate) build_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) total_count: usize,
    pub(crate) pass_count: usize,
    /// Failures and errors, as BuildButler's Action counts them.
    pub(crate) fail_count: usize,
    pub(crate) skip_count: usize,
    pub(crate) duration: i64,
    pub(crate) test_cases: Vec<WireCase<'a>>,
}

/// One test case of a suite.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireCase<'a> {
    pub(crate) class_name: &'a str,
    pub(crate) test_name: &'a str,
    /// PASSED, FAILED, SKIPPED or ERROR.
    pub(crate) status: &'static str,
    pub(crate) duration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stack_trace: Option<&'a str>,
}

/// A JUnit suite of a build.
pub(crate) fn suite(results: &TestResults) -> WireSuite<'_> {
    let s = &results.suite;
    let count = |status: TestStatus| s.cases.iter().filter(|c| c.status == status).count();
    WireSuite {
        build_id: &results.build_id,
        name: &s.name,
        total_count: s.cases.len(),
        pass_count: count(TestStatus::Passed),
        fail_count: count(TestStatus::Failed) + count(TestStatus::Error),
        skip_count: count(TestStatus::Skipped),
        duration: s.duration_ms,
        test_cases: s
            .cases
            .iter()
            .map(|c| WireCase {
                class_name: &c.class_name,
                test_name: &c.name,
                status: match c.status {
                    TestStatus::Passed => "PASSED",
                    TestStatus::Failed => "FAILED",
                    TestStatus::Skipped => "SKIPPED",
                    TestStatus::Error => "ERROR",
                },
                duration: c.duration_ms,
                error_message: c.message.as_deref(),
                stack_trace: c.trace.as_deref(),
            })
            .collect(),
    }
}

/// The body of `POST {prefix}/build-logs`: the tails of a failed build's failed jobs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireLog<'a> {
    pub(crate) build_id: &'a str,
    pub(crate) job_name: &'a str,
    pub(crate) build_number: u64,
    pub(crate) status: String,
    pub(crate) jenkins_instance_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) branch: Option<&'a str>,
    pub(crate) duration: i64,
    pub(crate) started_at: String,
    pub(crate) completed_at: String,
    pub(crate) log_content: &'a str,
}

/// A failed build's log text as BuildButler takes it.
pub(crate) fn log<'a>(
    org: &'a str,
    b: &'a Build,
    content: &'a str,
    case: StatusCase,
) -> WireLog<'a> {
    let head = build(org, b, case, None);
    WireLog {
        build_id: &b.id,
        job_name: b.pipeline_slug(),
        build_number: b.number,
        status: head.status,
        jenkins_instance_id: org,
        branch: b.branch.as_deref(),
        duration: head.duration,
        started_at: head.started_at,
        completed_at: head.completed_at,
        log_content: content,
    }
}

/// One agent of the fleet snapshot (`POST {prefix}/agents`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireAgent<'a> {
    pub(crate) name: &'a str,
    /// ONLINE (connected, idle), BUILDING (running a job), OFFLINE (gone from the list) or
    /// UNKNOWN (never connected).
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) current_job: Option<&'a str>,
    /// The agent's `meta_data` tags, comma-joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) labels: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) os: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) arch: Option<&'a str>,
    /// A Buildkite agent runs one job at a time.
    pub(crate) executors: u32,
}

/// The body of `POST {prefix}/agents`: the whole fleet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireFleet<'a> {
    pub(crate) jenkins_instance_id: &'a str,
    pub(crate) agents: Vec<WireAgent<'a>>,
    pub(crate) queue_items: [(); 0],
}

/// The fleet snapshot of the organization `org`.
pub(crate) fn fleet<'a>(org: &'a str, fleet: &'a Fleet) -> WireFleet<'a> {
    WireFleet {
        jenkins_instance_id: org,
        agents: fleet.agents.iter().map(agent).collect(),
        queue_items: [],
    }
}

/// An agent as BuildButler's fleet snapshot shows it; one that left the list is OFFLINE.
pub(crate) fn agent(a: &Agent) -> WireAgent<'_> {
    let job = a.job.as_deref().filter(|_| !a.gone);
    let status = match a.connection_state.as_deref() {
        _ if a.gone => "OFFLINE",
        Some("connected" | "stopping") if job.is_some() => "BUILDING",
        Some("connected" | "stopping") => "ONLINE",
        Some("never_connected") => "UNKNOWN",
        _ => "OFFLINE",
    };
    WireAgent {
        name: &a.name,
        status,
        current_job: job,
        labels: (!a.tags.is_empty()).then(|| a.tags.join(",")),
        os: a.os.as_deref(),
        arch: a.arch.as_deref(),
        executors: 1,
    }
}

/// A finished build as BuildButler's ingest API takes it; its node's labels are the agent's
/// own `meta_data` if the build has them, else its tags from the agent poll (`tags`).
pub(crate) fn build<'a>(
    org: &'a str,
    b: &'a Build,
    case: StatusCase,
    tags: Option<&'a AgentTags>,
) -> WireBuild<'a> {
    let finished = b.finished_at.unwrap_or_else(crate::clock::now);
    let started = b.started_at.or(b.created_at).unwrap_or(finished);
    let agent = b.steps().find_map(|j| j.agent.as_ref());
    WireBuild {
        id: &b.id,
        external_run_id: &b.id,
        jenkins_instance_id: org,
        job_name: b.pipeline_slug(),
        build_number: b.number,
        status: cased(build_status(b), case),
        duration: millis(started, finished),
        queue_duration: span(b.scheduled_at.or(b.created_at), b.started_at),
        started_at: iso(started),
        completed_at: iso(finished),
        branch: b.branch.as_deref(),
        commit_sha: b.commit.as_deref(),
        cause: b.source.as_deref(),
        source: "buildkite",
        node_info: agent.and_then(|a| {
            Some(NodeInfo {
                node_name: a.name.as_deref().or(a.hostname.as_deref())?,
                node_labels: a
                    .meta_data
                    .as_deref()
                    .or_else(|| tags?.get(a.id.as_deref()?).map(Vec::as_slice))
                    .unwrap_or_default(),
                is_built_in: false,
            })
        }),
    }
}

/// The stages of a build, for the BuildButler build `build_id`.
pub(crate) fn stages<'a>(build_id: &'a str, b: &'a Build, case: StatusCase) -> WireStages<'a> {
    let stages = b
        .steps()
        .enumerate()
        .map(|(order, job)| WireStage {
            stage_name: job.display_name(),
            stage_order: order,
            status: cased(job_status(job), case),
            duration: span(job.started_at, job.finished_at).unwrap_or(0),
            started_at: job.started_at.map(iso),
            completed_at: job.finished_at.map(iso),
            agent_name: job.agent.as_ref().and_then(|a| a.name.as_deref()),
        })
        .collect();
    WireStages { build_id, stages }
}

/// passed -> SUCCESS (UNSTABLE with a soft-failed step), failed -> FAILURE,
/// canceled -> ABORTED, skipped and not_run -> NOT_BUILT. A blocked build keeps its last
/// state (usually passed). Anything unknown is NOT_BUILT rather than a false verdict.
fn build_status(b: &Build) -> &'static str {
    match b.state.as_str() {
        "passed" | "blocked" if b.steps().any(|j| j.soft_failed == Some(true)) => "UNSTABLE",
        "passed" | "blocked" => "SUCCESS",
        "failed" => "FAILURE",
        "canceled" | "canceling" => "ABORTED",
        _ => "NOT_BUILT",
    }
}

fn job_status(j: &Job) -> &'static str {
    match j.state.as_deref().unwrap_or("") {
        "passed" if j.soft_failed == Some(true) => "UNSTABLE",
        "passed" | "unblocked" => "SUCCESS",
        "failed" if j.soft_failed == Some(true) => "UNSTABLE",
        "failed" | "timed_out" | "unblocked_failed" | "blocked_failed" | "waiting_failed" => {
            "FAILURE"
        }
        "canceled" | "canceling" | "timing_out" => "ABORTED",
        "running" | "scheduled" | "assigned" | "accepted" | "blocked" | "waiting" | "pending" => {
            "IN_PROGRESS"
        }
        _ => "NOT_BUILT",
    }
}

/// The status in the chosen casing. BuildButler's docs list only `success, failure,
/// unstable, aborted, in_progress`: with lower case, NOT_BUILT is sent as `aborted`.
fn cased(status: &str, case: StatusCase) -> String {
    match (case, status) {
        (StatusCase::Upper, _) => status.to_string(),
        (StatusCase::Lower, "NOT_BUILT") => "aborted".to_string(),
        (StatusCase::Lower, _) => status.to_ascii_lowercase(),
    }
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds().max(0)
}

/// [`millis`], when both times are known.
fn span(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<i64> {
    Some(millis(from?, to?))
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: serde_json::Value) -> Build {
        serde_json::from_value(v).expect("build")
    }

    fn sample(state: &str, soft: bool) -> Build {
        decode(json!({
            "id": "uuid-1", "number": 42, "state": state, "branch": "main", "commit": "abc123",
            "source": "webhook",
            "created_at": "2026-11-01T10:00:00Z", "scheduled_at": "2026-11-01T10:00:01Z",
            "started_at": "2026-11-01T10:00:11Z", "finished_at": "2026-11-01T10:01:11.500Z",
            "pipeline": {"slug": "web"},
            "jobs": [
                {"id": "j0", "type": "script", "name": "old try", "state": "failed", "retried": true},
                {"id": "j1", "type": "script", "name": ":rspec: Specs", "state": "passed",
                 "soft_failed": soft,
                 "started_at": "2026-11-01T10:00:11Z", "finished_at": "2026-11-01T10:00:41Z",
                 "agent": {"name": "agent-1", "meta_data": ["queue=default", "os=linux"]}},
                {"id": "j2", "type": "waiter"},
                {"id": "j3", "type": "manual", "label": "Ship it?", "state": "unblocked"}
            ]
        }))
    }

    #[test]
    fn build_fields_follow_the_mapping() {
        let b = sample("passed", false);
        let v = serde_json::to_value(build("acme", &b, StatusCase::Upper, None)).expect("json");
        assert_eq!(
            v,
            json!({
                "id": "uuid-1", "externalRunId": "uuid-1", "jenkinsInstanceId": "acme",
                "jobName": "web", "buildNumber": 42, "status": "SUCCESS",
                "duration": 60500, "queueDuration": 10000,
                "startedAt": "2026-11-01T10:00:11.000Z", "completedAt": "2026-11-01T10:01:11.500Z",
                "branch": "main", "commitSha": "abc123", "cause": "webhook", "source": "buildkite",
                "nodeInfo": {"nodeName": "agent-1", "nodeLabels": ["queue=default", "os=linux"],
                             "isBuiltIn": false}
            })
        );
    }

    #[test]
    fn node_labels_come_from_the_agent_poll_when_the_job_has_none() {
        let mut b = sample("passed", false);
        let tags = AgentTags::from([("a-7".to_string(), vec!["queue=gpu".to_string()])]);
        let labels = |b: &Build| {
            let v = serde_json::to_value(build("acme", b, StatusCase::Upper, Some(&tags)));
            v.expect("json")["nodeInfo"]["nodeLabels"].clone()
        };
        assert_eq!(
            labels(&b),
            json!(["queue=default", "os=linux"]),
            "its own first"
        );
        for job in b.jobs.iter_mut().flatten() {
            if let Some(agent) = job.agent.as_mut() {
                agent.meta_data = None;
                agent.id = Some("a-7".into());
            }
        }
        assert_eq!(labels(&b), json!(["queue=gpu"]), "then the agent poll's");
        let unknown = serde_json::to_value(build("acme", &b, StatusCase::Upper, None));
        assert_eq!(unknown.expect("json")["nodeInfo"]["nodeLabels"], json!([]));
    }

    #[test]
    fn statuses_map_as_documented() {
        let status = |state: &str, soft: bool, case: StatusCase| {
            build("acme", &sample(state, soft), case, None).status
        };
        assert_eq!(status("passed", true, StatusCase::Upper), "UNSTABLE");
        assert_eq!(status("failed", false, StatusCase::Upper), "FAILURE");
        assert_eq!(status("canceled", false, StatusCase::Upper), "ABORTED");
        assert_eq!(status("skipped", false, StatusCase::Upper), "NOT_BUILT");
        assert_eq!(status("not_run", false, StatusCase::Upper), "NOT_BUILT");
        assert_eq!(status("failed", false, StatusCase::Lower), "failure");
        assert_eq!(status("skipped", false, StatusCase::Lower), "aborted");
    }

    #[test]
    fn agents_map_to_fleet_statuses() {
        let busy = Agent {
            name: "ci-1".into(),
            connection_state: Some("connected".into()),
            job: Some(":rspec: Specs".into()),
            tags: vec!["queue=default".into(), "docker=true".into()],
            os: Some("linux".into()),
            arch: Some("arm64".into()),
            gone: false,
        };
        assert_eq!(
            serde_json::to_value(agent(&busy)).expect("json"),
            json!({"name": "ci-1", "status": "BUILDING", "currentJob": ":rspec: Specs",
                   "labels": "queue=default,docker=true", "os": "linux", "arch": "arm64",
                   "executors": 1})
        );
        let idle = Agent {
            job: None,
            ..busy.clone()
        };
        assert_eq!(agent(&idle).status, "ONLINE");
        let gone = Agent { gone: true, ..busy };
        assert_eq!(
            (agent(&gone).status, agent(&gone).current_job),
            ("OFFLINE", None)
        );
    }

    #[test]
    fn stages_skip_waiters_and_retried_attempts() {
        let b = sample("passed", false);
        let v = serde_json::to_value(stages("bb-1", &b, StatusCase::Upper)).expect("json");
        assert_eq!(
            v,
            json!({"buildId": "bb-1", "stages": [
                {"stageName": ":rspec: Specs", "stageOrder": 0, "status": "SUCCESS",
                 "duration": 30000, "startedAt": "2026-11-01T10:00:11.000Z",
                 "completedAt": "2026-11-01T10:00:41.000Z", "agentName": "agent-1"},
                {"stageName": "Ship it?", "stageOrder": 1, "status": "SUCCESS", "duration": 0}
            ]})
        );
    }
}
