//! Tolerant models of the Buildkite answers kitesync reads.
//!
//! Unknown fields are ignored, and every field Buildkite may leave out or send as `null`
//! (waiter jobs are only `{id, graphql_id, type}`; creators and pull requests may be null or
//! `{}`) is optional, so a new API field or an odd build never breaks a whole page.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A build, with its jobs.
#[derive(Debug, Clone, Deserialize)]
pub struct Build {
    /// The build's UUID.
    pub id: String,
    pub number: u64,
    pub state: String,
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// What started it: webhook, api, ui, trigger_job, schedule.
    pub source: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub pipeline: Option<PipelineRef>,
    pub jobs: Option<Vec<Job>>,
}

/// The pipeline a build belongs to (only what kitesync uses).
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineRef {
    pub slug: String,
}

/// One job of a build: a script step, a waiter, a block (`manual`) or a trigger. An odd job
/// (no `id` or `type`, an unknown state) still decodes, so it never costs its build.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub id: String,
    pub name: Option<String>,
    pub label: Option<String>,
    pub step_key: Option<String>,
    pub state: Option<String>,
    pub soft_failed: Option<bool>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// True on an attempt that was retried (a later attempt of the same step exists).
    pub retried: Option<bool>,
    pub agent: Option<AgentRef>,
    /// The step's `artifact_paths` glob(s); a build none of whose jobs has any has no artifacts.
    pub artifact_paths: Option<String>,
}

/// The agent that ran a job.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentRef {
    /// The agent's id, as the agents list has it.
    pub id: Option<String>,
    pub name: Option<String>,
    pub hostname: Option<String>,
    /// `"key=value"` tags, e.g. `"queue=default"`.
    pub meta_data: Option<Vec<String>>,
}

/// A build artifact.
#[derive(Debug, Clone, Deserialize)]
pub struct Artifact {
    pub id: String,
    pub path: String,
    /// new, error, finished, deleted, expired: only finished ones can be downloaded.
    pub state: Option<String>,
    pub file_size: Option<u64>,
    /// The API URL that answers 302 to the storage host.
    pub download_url: Option<String>,
}

/// An agent, as the agents list shows it (connected and stopping agents only).
#[derive(Debug, Clone, Deserialize)]
pub struct Agent {
    pub id: String,
    pub name: Option<String>,
    /// never_connected, connected, disconnected, stopping, stopped, lost.
    pub connection_state: Option<String>,
    pub hostname: Option<String>,
    /// e.g. `buildkite-agent/3.80.0.10637 (linux; amd64)`.
    pub user_agent: Option<String>,
    pub arch: Option<String>,
    /// The job it is running, if any.
    pub job: Option<serde_json::Value>,
    /// `"key=value"` tags, e.g. `"queue=default"`.
    pub meta_data: Option<Vec<String>>,
}

impl Agent {
    /// The value of the `key=value` tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.meta_data
            .iter()
            .flatten()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
    }

    /// The OS and architecture the agent reports in its user agent: `(linux; amd64)`.
    pub fn platform(&self) -> (Option<&str>, Option<&str>) {
        let ua = self.user_agent.as_deref().unwrap_or_default();
        let inside = ua.split_once('(').and_then(|(_, s)| s.split_once(')'));
        let mut parts = inside.into_iter().flat_map(|(s, _)| s.split(';'));
        (parts.next().map(str::trim), parts.next().map(str::trim))
    }
}

impl Build {
    /// The finish time, when the build has finished: not in a state that is still going,
    /// whatever `finished_at` says (a build stopped at a block step counts as finished).
    pub fn finished(&self) -> Option<DateTime<Utc>> {
        let active = matches!(
            self.state.as_str(),
            "creating" | "scheduled" | "running" | "failing" | "canceling" | "waiting"
        );
        self.finished_at.filter(|_| !active)
    }

    /// The pipeline slug, or `unknown` when the answer left it out.
    pub fn pipeline_slug(&self) -> &str {
        self.pipeline.as_ref().map_or("unknown", |p| &p.slug)
    }

    /// True when the build ran a command step (which may upload artifacts however it likes).
    pub fn ran_commands(&self) -> bool {
        self.jobs.iter().flatten().any(|j| j.kind == "script")
    }

    /// True when a step of the build uploads artifacts (has `artifact_paths`).
    pub fn has_artifacts(&self) -> bool {
        self.jobs.iter().flatten().any(|j| {
            j.artifact_paths
                .as_deref()
                .is_some_and(|p| !p.trim().is_empty())
        })
    }

    /// The steps that failed (not soft-failed), for a failed build.
    pub fn failed_steps(&self) -> impl Iterator<Item = &Job> {
        let failed = self.state == "failed";
        self.steps().filter(move |j| {
            failed
                && j.kind == "script"
                && !j.id.is_empty()
                && matches!(j.state.as_deref(), Some("failed" | "timed_out"))
                && j.soft_failed != Some(true)
        })
    }

    /// The jobs a person would call the build's steps: no waiters, latest attempts only.
    pub fn steps(&self) -> impl Iterator<Item = &Job> {
        self.jobs
            .iter()
            .flatten()
            .filter(|j| j.kind != "waiter" && j.retried != Some(true))
    }
}

impl Job {
    /// A human name: the job's name, else its label, step key or type.
    pub fn display_name(&self) -> &str {
        let kind = Some(self.kind.as_str()).filter(|k| !k.is_empty());
        [
            self.name.as_deref(),
            self.label.as_deref(),
            self.step_key.as_deref(),
            kind,
        ]
        .into_iter()
        .flatten()
        .find(|n| !n.trim().is_empty())
        .unwrap_or("unnamed step")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_odd_but_real_builds() {
        let json = r#"{
            "id": "0190-uuid", "graphql_id": "QnVpbGQ=", "number": 7, "state": "passed",
            "blocked": false, "creator": null, "pull_request": {}, "brand_new_field": [1, 2],
            "finished_at": "2026-11-01T10:00:05.123Z", "started_at": "2026-11-01T09:59:00Z",
            "pipeline": {"slug": "web", "name": "Web", "repository": "git@x"},
            "jobs": [
                {"id": "j1", "graphql_id": "g", "type": "script", "name": ":rspec: Specs",
                 "state": "passed", "soft_failed": null, "agent": null},
                {"id": "j2", "graphql_id": "g", "type": "waiter"},
                {"id": "j3", "type": "manual", "label": "Deploy?", "state": "unblocked"},
                {"id": "j4", "type": "script", "name": "flaky", "retried": true}
            ]
        }"#;
        let b: Build = serde_json::from_str(json).expect("decodes");
        assert_eq!(b.number, 7);
        assert!(b.finished().is_some());
        let names: Vec<_> = b.steps().map(Job::display_name).collect();
        assert_eq!(names, [":rspec: Specs", "Deploy?"]);
    }

    #[test]
    fn an_odd_job_decodes_and_is_named_sensibly() {
        let json = r#"{"id": "u", "number": 2, "state": "passed",
            "jobs": [
                {"id": "j1", "type": "script", "name": "specs", "state": "passed"},
                {"type": "a_new_kind", "name": null, "label": null, "state": "frobnicated"},
                {"id": "j3", "name": "", "label": "", "step_key": "deploy", "state": "passed"},
                {"id": "j4"}
            ]}"#;
        let b: Build = serde_json::from_str(json).expect("one odd job never fails its build");
        let names: Vec<_> = b.steps().map(Job::display_name).collect();
        assert_eq!(names, ["specs", "a_new_kind", "deploy", "unnamed step"]);
        assert_eq!(b.failed_steps().count(), 0);
    }

    #[test]
    fn agent_platform_and_tags() {
        let a: Agent = serde_json::from_str(
            r#"{"id": "a", "name": "ci-1", "connection_state": "connected",
                "user_agent": "buildkite-agent/3.80.0.10637 (linux; amd64)",
                "meta_data": ["queue=default", "os=linux"], "job": null, "extra": 1}"#,
        )
        .expect("decodes");
        assert_eq!(a.platform(), (Some("linux"), Some("amd64")));
        assert_eq!(a.tag("queue"), Some("default"));
        assert_eq!(a.tag("que"), None);
    }

    #[test]
    fn running_build_is_not_finished_even_with_an_old_finish_time() {
        let json = r#"{"id": "u", "number": 1, "state": "running",
                       "finished_at": "2026-11-01T10:00:00Z", "jobs": null}"#;
        let b: Build = serde_json::from_str(json).expect("decodes");
        assert_eq!(b.finished(), None);
        assert_eq!(b.steps().count(), 0);
        assert_eq!(b.pipeline_slug(), "unknown");
    }
}
