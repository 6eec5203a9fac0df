//! What travels from Buildkite to BuildButler: the kinds of outbox items and their payloads.
//!
//! The rule for every kind: the outbox keeps Buildkite's facts, never a wire format. A build
//! is kept as the JSON Buildkite listed; test results, logs and the agent fleet as the types
//! below, in Buildkite's (and JUnit's) terms. The sink's `wire` module renders every kind at
//! delivery, so a mapping fix or a `status_case` change applies to what is already queued,
//! to `replay` and to `--dry-run` alike. This module is neutral: the source side fills these
//! types, the store keeps them, the sink renders them; it imports none of them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What an outbox item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A finished build: Buildkite's build JSON, as listed.
    Build,
    /// One JUnit suite of a build: [`TestResults`].
    Tests,
    /// The log tails of a failed build's failed jobs: [`Log`].
    Log,
    /// The organization's agents: [`Fleet`].
    Agents,
}

impl Kind {
    /// Every kind.
    pub(crate) const ALL: [Kind; 4] = [Kind::Build, Kind::Tests, Kind::Log, Kind::Agents];

    /// The name stored in the state database and shown by `status`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Tests => "tests",
            Kind::Log => "log",
            Kind::Agents => "agents",
        }
    }

    /// The kind stored as `name`.
    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An item to deliver: its kind and its payload, the JSON of Buildkite's facts, with what
/// kitesync learnt elsewhere that goes with it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub(crate) kind: Kind,
    pub(crate) payload: &'a str,
    /// The tags of the agents kitesync polled: a job's embedded agent has none in the REST API.
    pub(crate) agent_tags: &'a AgentTags,
}

/// Agent tags (`key=value`) by agent id, from the agent poll.
pub(crate) type AgentTags = std::collections::HashMap<String, Vec<String>>;

/// One JUnit suite of a build ([`Kind::Tests`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TestResults {
    /// The Buildkite build's UUID.
    pub(crate) build_id: String,
    pub(crate) suite: Suite,
}

/// One suite with its cases, as the JUnit file has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suite {
    pub name: String,
    /// The suite's own `time`, else the sum of its cases'.
    pub(crate) duration_ms: i64,
    pub cases: Vec<Case>,
}

/// One test case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub class_name: String,
    pub name: String,
    pub status: TestStatus,
    pub(crate) duration_ms: i64,
    pub(crate) message: Option<String>,
    pub trace: Option<String>,
}

/// How a test case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    Passed,
    Failed,
    Skipped,
    Error,
}

/// The log tails of a failed build's failed jobs ([`Kind::Log`]), with the build's JSON as
/// Buildkite listed it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Log {
    pub(crate) build: Box<RawValue>,
    pub(crate) content: String,
}

/// The organization's agents ([`Kind::Agents`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fleet {
    pub(crate) agents: Vec<Agent>,
}

/// What is known of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Its name, else its hostname, else its id.
    pub(crate) name: String,
    /// Buildkite's `connection_state`: connected, stopping, never_connected, ...
    pub(crate) connection_state: Option<String>,
    /// The name (else the id) of the job it runs.
    pub(crate) job: Option<String>,
    /// Its `key=value` tags.
    pub(crate) tags: Vec<String>,
    pub(crate) os: Option<String>,
    pub(crate) arch: Option<String>,
    /// True once it has left Buildkite's list (which shows connected agents only).
    #[serde(default)]
    pub(crate) gone: bool,
}
