//! Tolerant models of the Buildkite answers kitesync reads.
//!
//! Unknown fields are ignored, and every field Buildkite may leave out or send as `null`
//! (waiter jobs are only `{id, graphql_id, type}`; creators and pull requests may be null or
//! `{}`) is optional, so a new API field or an odd build never breaks a whole page.
//!
//! Types drift (the live API once sent a job's `signal` as a string where clients expected a
//! number), so a build and its jobs are read field by field ([`Lenient`]): an optional field
//! of the wrong type or format reads as absent and is named in [`Build::ignored`]. A field the
//! sync depends on (`id`, `number`, `state`, `pipeline.slug`, `finished_at` of a build in a
//! finished state, and `created_at` of a listed build: [`Build::listed`]) is never silently
//! absent: the build does not decode, and the error ([`Unreadable`]) names the field. Times are read in every form Buildkite has
//! used ([`parse_time`]).

mod decode;

use chrono::{DateTime, Utc};
use serde::Deserialize;

pub use decode::{created, parse_time, Field, Found, Undecodable, Unreadable};
use decode::{Lenient, List, RawBuild, RawJob, RawPipeline};

/// A build, with its jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawBuild")]
pub struct Build {
    /// The build's UUID.
    pub(crate) id: String,
    pub(crate) number: u64,
    pub state: String,
    pub(crate) commit: Option<String>,
    pub(crate) branch: Option<String>,
    /// What started it: webhook, api, ui, trigger_job, schedule.
    pub(crate) source: Option<String>,
    pub(crate) created_at: Option<DateTime<Utc>>,
    pub(crate) scheduled_at: Option<DateTime<Utc>>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) pipeline: PipelineRef,
    pub(crate) jobs: Option<Vec<Job>>,
    /// The optional fields read as absent because of their type or format, in the order met
    /// (a field of several jobs once per job).
    pub ignored: Vec<Field>,
}

/// The pipeline a build belongs to (only what kitesync uses).
#[derive(Debug, Clone)]
pub(crate) struct PipelineRef {
    pub(crate) slug: String,
}

/// One job of a build: a script step, a waiter, a block (`manual`) or a trigger. An odd job
/// (no `id` or `type`, an unknown state) still decodes, so it never costs its build.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: String,
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub label: Option<String>,
    pub(crate) step_key: Option<String>,
    pub state: Option<String>,
    pub(crate) soft_failed: Option<bool>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    /// True on an attempt that was retried (a later attempt of the same step exists).
    pub(crate) retried: Option<bool>,
    pub(crate) agent: Option<AgentRef>,
    /// The step's `artifact_paths` glob(s); a build none of whose jobs has any has no artifacts.
    pub(crate) artifact_paths: Option<String>,
}

/// The agent that ran a job.
#[derive(Debug, Clone)]
pub(crate) struct AgentRef {
    /// The agent's id, as the agents list has it.
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) hostname: Option<String>,
    /// `"key=value"` tags, e.g. `"queue=default"`.
    pub(crate) meta_data: Option<Vec<String>>,
}

/// True for the states of a build that is still going.
fn active(state: &str) -> bool {
    matches!(
        state,
        "creating" | "scheduled" | "running" | "failing" | "canceling" | "waiting"
    )
}

impl TryFrom<RawBuild> for Build {
    type Error = Unreadable;

    fn try_from(raw: RawBuild) -> Result<Build, Unreadable> {
        let unreadable = |field, found| Unreadable {
            field,
            found,
            id: match &raw.id {
                Lenient::Read(id) if !id.is_empty() => Some(id.clone()),
                _ => None,
            },
            number: match raw.number {
                Lenient::Read(n) => Some(n),
                _ => None,
            },
            finished_at: match raw.finished_at {
                Lenient::Read(t) => Some(t),
                _ => None,
            },
        };
        let id = match &raw.id {
            Lenient::Read(id) if !id.is_empty() => id.clone(),
            other => return Err(unreadable(Field::Id, other.found())),
        };
        let Lenient::Read(number) = raw.number else {
            return Err(unreadable(Field::Number, raw.number.found()));
        };
        let state = match &raw.state {
            Lenient::Read(s) if !s.is_empty() => s.clone(),
            other => return Err(unreadable(Field::State, other.found())),
        };
        // Absent only from builds rebuilt from what 0.1 queued; a listed build must have it
        // ([`Build::listed`]).
        let created_at = match raw.created_at {
            Lenient::Wrong(found) => return Err(unreadable(Field::CreatedAt, found)),
            other => other.ok(),
        };
        let slug = match &raw.pipeline {
            Lenient::Read(RawPipeline {
                slug: Lenient::Read(slug),
            }) if !slug.is_empty() => slug.clone(),
            Lenient::Read(p) => return Err(unreadable(Field::PipelineSlug, p.slug.found())),
            other => return Err(unreadable(Field::PipelineSlug, other.found())),
        };
        let finished_at = match raw.finished_at {
            Lenient::Wrong(found) if !active(&state) => {
                return Err(unreadable(Field::FinishedAt, found))
            }
            other => other.ok(),
        };
        let mut ignored = Vec::new();
        let jobs = List::or_ignore(raw.jobs, Field::Jobs, &mut ignored);
        let jobs = jobs.map(|jobs| {
            jobs.into_iter()
                .map(|j| Job::read(j, &mut ignored))
                .collect()
        });
        Ok(Build {
            id,
            number,
            state,
            commit: raw.commit.or_ignore(Field::Commit, &mut ignored),
            branch: raw.branch.or_ignore(Field::Branch, &mut ignored),
            source: raw.source.or_ignore(Field::Source, &mut ignored),
            created_at,
            scheduled_at: raw.scheduled_at.or_ignore(Field::ScheduledAt, &mut ignored),
            started_at: raw.started_at.or_ignore(Field::StartedAt, &mut ignored),
            finished_at,
            pipeline: PipelineRef { slug },
            jobs,
            ignored,
        })
    }
}

impl Job {
    fn read(raw: RawJob, ignored: &mut Vec<Field>) -> Job {
        let agent = raw.agent.or_ignore(Field::JobAgent, ignored);
        Job {
            kind: raw
                .kind
                .or_ignore(Field::JobType, ignored)
                .unwrap_or_default(),
            id: raw.id.or_ignore(Field::JobId, ignored).unwrap_or_default(),
            name: raw.name.or_ignore(Field::JobName, ignored),
            label: raw.label.or_ignore(Field::JobLabel, ignored),
            step_key: raw.step_key.or_ignore(Field::JobStepKey, ignored),
            state: raw.state.or_ignore(Field::JobState, ignored),
            soft_failed: raw.soft_failed.or_ignore(Field::JobSoftFailed, ignored),
            started_at: raw.started_at.or_ignore(Field::JobStartedAt, ignored),
            finished_at: raw.finished_at.or_ignore(Field::JobFinishedAt, ignored),
            retried: raw.retried.or_ignore(Field::JobRetried, ignored),
            agent: agent.map(|a| AgentRef {
                id: a.id.or_ignore(Field::AgentId, ignored),
                name: a.name.or_ignore(Field::AgentName, ignored),
                hostname: a.hostname.or_ignore(Field::AgentHostname, ignored),
                meta_data: List::or_ignore(a.meta_data, Field::AgentMetaData, ignored),
            }),
            artifact_paths: raw
                .artifact_paths
                .or_ignore(Field::JobArtifactPaths, ignored)
                .map(|p| p.0),
        }
    }
}

/// A build artifact.
#[derive(Debug, Clone, Deserialize)]
pub struct Artifact {
    pub(crate) id: String,
    pub(crate) path: String,
    /// new, error, finished, deleted, expired: only finished ones can be downloaded.
    pub(crate) state: Option<String>,
    pub(crate) file_size: Option<u64>,
    /// The API URL that answers 302 to the storage host.
    pub(crate) download_url: Option<String>,
}

/// An agent, as the agents list shows it (connected and stopping agents only).
#[derive(Debug, Clone, Deserialize)]
pub struct Agent {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    /// never_connected, connected, disconnected, stopping, stopped, lost.
    pub(crate) connection_state: Option<String>,
    pub(crate) hostname: Option<String>,
    /// e.g. `buildkite-agent/3.80.0.10637 (linux; amd64)`.
    pub(crate) user_agent: Option<String>,
    pub(crate) arch: Option<String>,
    /// The job it is running, if any.
    pub(crate) job: Option<serde_json::Value>,
    /// `"key=value"` tags, e.g. `"queue=default"`.
    pub(crate) meta_data: Option<Vec<String>>,
}

impl Agent {
    /// The value of the `key=value` tag `key`.
    pub(crate) fn tag(&self, key: &str) -> Option<&str> {
        self.meta_data
            .iter()
            .flatten()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
    }

    /// The OS and architecture the agent reports in its user agent: `(linux; amd64)`.
    pub(crate) fn platform(&self) -> (Option<&str>, Option<&str>) {
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
        self.finished_at.filter(|_| !active(&self.state))
    }

    /// A build from its JSON as listed, or why it cannot be taken: not an object, or a field
    /// the sync depends on that cannot be read.
    pub fn decode(raw: &str) -> Result<Build, Undecodable> {
        let build: RawBuild = serde_json::from_str(raw).map_err(|e| {
            let mut text = e.to_string();
            if text.len() > 200 {
                let cut = (0..=200)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push('…');
            }
            Undecodable::Json(text)
        })?;
        Ok(Build::try_from(build)?)
    }

    /// The build as listed, or why it cannot be taken: a build in a listing must say when it
    /// was created (the walk narrows by it).
    pub(crate) fn listed(self) -> Result<Build, Unreadable> {
        match self.created_at {
            Some(_) => Ok(self),
            None => Err(Unreadable {
                field: Field::CreatedAt,
                found: Found::Missing,
                id: Some(self.id),
                number: Some(self.number),
                finished_at: self.finished_at,
            }),
        }
    }

    /// The pipeline slug.
    pub(crate) fn pipeline_slug(&self) -> &str {
        &self.pipeline.slug
    }

    /// True when the build ran a command step (which may upload artifacts however it likes).
    pub(crate) fn ran_commands(&self) -> bool {
        self.jobs.iter().flatten().any(|j| j.kind == "script")
    }

    /// True when a step of the build uploads artifacts (has `artifact_paths`).
    pub(crate) fn has_artifacts(&self) -> bool {
        self.jobs.iter().flatten().any(|j| {
            j.artifact_paths
                .as_deref()
                .is_some_and(|p| !p.trim().is_empty())
        })
    }

    /// The steps that failed (not soft-failed), for a failed build.
    pub(crate) fn failed_steps(&self) -> impl Iterator<Item = &Job> {
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
    pub(crate) fn display_name(&self) -> &str {
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
            "created_at": "2026-11-01T09:58:00Z",
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
            "created_at": "2026-11-01T09:58:00Z", "pipeline": {"slug": "web"},
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
                       "created_at": "2026-11-01T09:00:00Z", "pipeline": {"slug": "web"},
                       "finished_at": "2026-11-01T10:00:00Z", "jobs": null}"#;
        let b: Build = serde_json::from_str(json).expect("decodes");
        assert_eq!(b.finished(), None);
        assert_eq!(b.steps().count(), 0);
    }

    /// A finished build with one job of every field kitesync reads.
    fn full() -> serde_json::Value {
        serde_json::json!({
            "id": "b-1", "number": 7, "state": "failed", "commit": "abc", "branch": "main",
            "source": "webhook", "created_at": "2026-11-01T09:58:00Z",
            "scheduled_at": "2026-11-01T09:58:01Z", "started_at": "2026-11-01T09:59:00Z",
            "finished_at": "2026-11-01T10:00:05Z", "pipeline": {"slug": "web"},
            "jobs": [{
                "id": "j1", "type": "script", "name": "specs", "label": "Specs",
                "step_key": "specs", "state": "failed", "soft_failed": false,
                "started_at": "2026-11-01T09:59:01Z", "finished_at": "2026-11-01T10:00:00Z",
                "retried": false, "artifact_paths": "junit/*.xml",
                "agent": {"id": "a1", "name": "ci-1", "hostname": "ci-1.local",
                          "meta_data": ["queue=default"]}
            }]
        })
    }

    /// `full()` with the value at `path` (dot-separated, `jobs.` meaning the first job) set
    /// to `value`, or removed when `value` is `None`.
    fn with(path: &str, value: Option<serde_json::Value>) -> String {
        let mut build = full();
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().expect("a path");
        let mut at = &mut build;
        for p in parts {
            at = if p == "jobs" {
                &mut at["jobs"][0]
            } else {
                &mut at[p]
            };
        }
        let object = at.as_object_mut().expect("an object");
        match value {
            Some(v) => object.insert(last.to_string(), v),
            None => object.remove(last),
        };
        build.to_string()
    }

    #[test]
    fn an_optional_field_of_the_wrong_type_reads_as_absent_and_is_named() {
        use serde_json::json;
        let cases: Vec<(&str, serde_json::Value, Field)> = vec![
            ("commit", json!(123), Field::Commit),
            ("branch", json!(["main"]), Field::Branch),
            ("source", json!({"kind": "webhook"}), Field::Source),
            ("scheduled_at", json!(1_700_000_000), Field::ScheduledAt),
            ("started_at", json!("yesterday"), Field::StartedAt),
            ("jobs", json!("none"), Field::Jobs),
            ("jobs", json!({"id": "j1"}), Field::Jobs),
            ("jobs.type", json!(1), Field::JobType),
            ("jobs.id", json!(5), Field::JobId),
            ("jobs.name", json!(true), Field::JobName),
            ("jobs.label", json!([]), Field::JobLabel),
            ("jobs.step_key", json!({}), Field::JobStepKey),
            ("jobs.state", json!(3), Field::JobState),
            ("jobs.soft_failed", json!("true"), Field::JobSoftFailed),
            ("jobs.started_at", json!(1.5), Field::JobStartedAt),
            ("jobs.finished_at", json!("soon"), Field::JobFinishedAt),
            ("jobs.retried", json!("no"), Field::JobRetried),
            ("jobs.agent", json!("ci-1"), Field::JobAgent),
            ("jobs.artifact_paths", json!(7), Field::JobArtifactPaths),
            (
                "jobs.artifact_paths",
                json!(["a", 1]),
                Field::JobArtifactPaths,
            ),
            ("jobs.agent.id", json!(1), Field::AgentId),
            ("jobs.agent.name", json!(2), Field::AgentName),
            ("jobs.agent.hostname", json!(false), Field::AgentHostname),
            (
                "jobs.agent.meta_data",
                json!("queue=default"),
                Field::AgentMetaData,
            ),
            (
                "jobs.agent.meta_data",
                json!(["queue=default", 3]),
                Field::AgentMetaData,
            ),
        ];
        for (path, value, field) in cases {
            let case = format!("{path} = {value}");
            let raw = with(path, Some(value));
            let b = Build::decode(&raw).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(b.ignored, [field], "{case}");
            assert!(b.finished().is_some(), "{case}: still a finished build");
            let b: Build = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(b.ignored, [field], "{case}: as serde decodes it too");
        }
        // What is read around a wrong value is kept.
        let b = Build::decode(&with(
            "jobs.agent.meta_data",
            Some(json!(["q=1", 3, "os=linux"])),
        ))
        .expect("decodes");
        let agent = b
            .steps()
            .next()
            .and_then(|j| j.agent.clone())
            .expect("an agent");
        assert_eq!(agent.meta_data.expect("tags"), ["q=1", "os=linux"]);
        let b = Build::decode(&with(
            "jobs",
            Some(json!([1, {"id": "j2", "type": "script"}])),
        ))
        .expect("decodes");
        assert_eq!(b.steps().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j2"]);
        let b = Build::decode(&with("jobs.soft_failed", Some(json!("true")))).expect("decodes");
        assert_eq!(
            b.failed_steps().count(),
            1,
            "read as absent: not soft-failed"
        );
    }

    #[test]
    fn a_field_the_sync_depends_on_that_cannot_be_read_is_named() {
        use serde_json::json;
        let cases: Vec<(&str, Option<serde_json::Value>, Field, Found)> = vec![
            ("id", Some(json!(12)), Field::Id, Found::Number),
            ("id", Some(json!("")), Field::Id, Found::Missing),
            ("id", None, Field::Id, Found::Missing),
            ("number", Some(json!("7")), Field::Number, Found::String),
            ("number", Some(json!(-1)), Field::Number, Found::Number),
            ("number", Some(json!(7.5)), Field::Number, Found::Number),
            ("state", Some(json!(null)), Field::State, Found::Missing),
            ("state", Some(json!(5)), Field::State, Found::Number),
            (
                "created_at",
                Some(json!("not a time")),
                Field::CreatedAt,
                Found::String,
            ),
            (
                "created_at",
                Some(json!(1_700_000_000)),
                Field::CreatedAt,
                Found::Number,
            ),
            (
                "pipeline",
                Some(json!("web")),
                Field::PipelineSlug,
                Found::String,
            ),
            (
                "pipeline",
                Some(json!({"slug": 5})),
                Field::PipelineSlug,
                Found::Number,
            ),
            (
                "pipeline",
                Some(json!({"name": "Web"})),
                Field::PipelineSlug,
                Found::Missing,
            ),
            ("pipeline", None, Field::PipelineSlug, Found::Missing),
            (
                "finished_at",
                Some(json!(17)),
                Field::FinishedAt,
                Found::Number,
            ),
            (
                "finished_at",
                Some(json!("later")),
                Field::FinishedAt,
                Found::String,
            ),
        ];
        for (path, value, field, found) in cases {
            let case = format!("{path} = {value:?}");
            let raw = with(path, value);
            let err = Build::decode(&raw).expect_err(&case);
            let Undecodable::Field(u) = &err else {
                panic!("{case}: {err}")
            };
            assert_eq!((u.field, u.found), (field, found), "{case}");
            assert!(
                err.to_string().contains(&format!("`{field}`")),
                "{case}: {err}"
            );
            // What can be read of the key is kept for the dead letter.
            assert_eq!(u.id.is_some(), path != "id", "{case}");
            assert_eq!(u.number.is_some(), path != "number", "{case}");
            assert_eq!(u.finished_at.is_some(), path != "finished_at", "{case}");
            assert!(serde_json::from_str::<Build>(&raw).is_err(), "{case}");
        }
        for raw in ["17", "{", r#""a build""#] {
            assert!(
                matches!(Build::decode(raw), Err(Undecodable::Json(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_listed_build_without_a_creation_time_is_named() {
        let b = Build::decode(&with("created_at", None)).expect("decodes, as 0.1's rebuilt builds");
        let u = b.listed().expect_err("not as listed");
        assert_eq!(
            (u.field, u.found, u.number),
            (Field::CreatedAt, Found::Missing, Some(7))
        );
        assert!(Build::decode(&full().to_string())
            .expect("decodes")
            .listed()
            .is_ok());
    }

    #[test]
    fn an_unreadable_finish_time_of_a_build_still_going_is_no_error() {
        let raw = with("finished_at", Some(serde_json::json!(17)));
        let raw = raw.replace(r#""state":"failed""#, r#""state":"running""#);
        let b = Build::decode(&raw).expect("decodes");
        assert_eq!((b.finished(), b.ignored.len()), (None, 0));
    }

    #[test]
    fn artifact_paths_as_a_list_of_globs_is_read() {
        let raw = with(
            "jobs.artifact_paths",
            Some(serde_json::json!(["a/*.xml", "b/*"])),
        );
        let b = Build::decode(&raw).expect("decodes");
        let job = b.steps().next().expect("a job");
        assert_eq!(job.artifact_paths.as_deref(), Some("a/*.xml;b/*"));
        assert!(b.has_artifacts() && b.ignored.is_empty());
    }

    #[test]
    fn regression_times_in_the_old_form_are_read_everywhere_a_build_has_them() {
        let old = "2015-04-23 16:55:52 UTC";
        let at = DateTime::parse_from_rfc3339("2015-04-23T16:55:52Z").expect("time");
        assert_eq!(parse_time(old), Some(at.with_timezone(&Utc)));
        let fraction = parse_time("2015-04-23 16:55:52.250 UTC");
        assert_eq!(
            fraction,
            Some(at.with_timezone(&Utc) + chrono::Duration::milliseconds(250))
        );
        let mut build = full();
        for key in ["created_at", "scheduled_at", "started_at", "finished_at"] {
            build[key] = old.into();
        }
        for key in ["started_at", "finished_at"] {
            build["jobs"][0][key] = old.into();
        }
        let b = Build::decode(&build.to_string()).expect("decodes");
        assert!(b.ignored.is_empty(), "{:?}", b.ignored);
        assert_eq!(b.finished(), Some(at.with_timezone(&Utc)));
        assert_eq!(b.created_at, Some(at.with_timezone(&Utc)));
        let job = b.steps().next().expect("a job");
        assert_eq!(job.finished_at, Some(at.with_timezone(&Utc)));
        assert_eq!(created(&build.to_string()).1, Some(at.with_timezone(&Utc)));
    }

    #[test]
    fn regression_rfc3339_times_with_or_without_fractions_z_or_an_offset_are_read() {
        let at = |s| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        for (text, want) in [
            ("2026-11-01T10:00:05Z", at("2026-11-01T10:00:05Z")),
            ("2026-11-01T10:00:05.123Z", at("2026-11-01T10:00:05.123Z")),
            (
                "2026-11-01T10:00:05.123456+00:00",
                at("2026-11-01T10:00:05.123456Z"),
            ),
            ("2026-11-01T12:00:05+02:00", at("2026-11-01T10:00:05Z")),
            ("2026-11-01T05:30:05.5-04:30", at("2026-11-01T10:00:05.5Z")),
        ] {
            assert_eq!(parse_time(text), Some(want), "{text}");
        }
        for text in ["", "2015-04-23 16:55:52", "2015-04-23 16:55:52 CET", "soon"] {
            assert_eq!(parse_time(text), None, "{text}");
        }
    }
}
