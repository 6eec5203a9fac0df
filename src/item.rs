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
pub enum Kind {
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
    pub const ALL: [Kind; 4] = [Kind::Build, Kind::Tests, Kind::Log, Kind::Agents];

    /// The name stored in the state database and shown by `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Tests => "tests",
            Kind::Log => "log",
            Kind::Agents => "agents",
        }
    }

    /// The kind stored as `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An item to deliver: its kind and its payload, the JSON of Buildkite's facts, with what
/// kitesync learnt elsewhere that goes with it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub kind: Kind,
    pub payload: &'a str,
    /// The tags of the agents kitesync polled: a job's embedded agent has none in the REST API.
    pub agent_tags: &'a AgentTags,
}

/// Agent tags (`key=value`) by agent id, from the agent poll.
pub type AgentTags = std::collections::HashMap<String, Vec<String>>;

/// One JUnit suite of a build ([`Kind::Tests`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResults {
    /// The Buildkite build's UUID.
    pub build_id: String,
    pub suite: Suite,
}

/// One suite with its cases, as the JUnit file has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suite {
    pub name: String,
    /// The suite's own `time`, else the sum of its cases'.
    pub duration_ms: i64,
    pub cases: Vec<Case>,
}

/// One test case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub class_name: String,
    pub name: String,
    pub status: TestStatus,
    pub duration_ms: i64,
    pub message: Option<String>,
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
pub struct Log {
    pub build: Box<RawValue>,
    pub content: String,
}

/// The organization's agents ([`Kind::Agents`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    pub agents: Vec<Agent>,
}

/// What is known of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Its name, else its hostname, else its id.
    pub name: String,
    /// Buildkite's `connection_state`: connected, stopping, never_connected, ...
    pub connection_state: Option<String>,
    /// The name (else the id) of the job it runs.
    pub job: Option<String>,
    /// Its `key=value` tags.
    pub tags: Vec<String>,
    pub os: Option<String>,
    pub arch: Option<String>,
    /// True once it has left Buildkite's list (which shows connected agents only).
    #[serde(default)]
    pub gone: bool,
}
