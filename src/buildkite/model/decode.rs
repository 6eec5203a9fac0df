//! The decoding of a build, field by field: [`Lenient`] fields, the fields kitesync reads
//! ([`Field`]), and the errors of a build that cannot be taken ([`Unreadable`]).

use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A time as Buildkite sends it: RFC 3339 (with or without fractions, `Z` or an offset), or
/// the `"2015-04-23 16:55:52 UTC"` form of older answers and of webhooks — both read by
/// chrono's `FromStr`, as its serde reads them.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    s.parse().ok()
}

macro_rules! fields {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// A field of a build (or of its jobs) that kitesync reads; its name is the label of
        /// `kitesync_buildkite_fields_ignored_total`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $($(#[$doc])* $variant,)*
        }

        impl Field {
            /// The field's path in the build's JSON (`jobs.agent.id`: of a job's agent).
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Field::$variant => $name,)*
                }
            }
        }
    };
}

fields! {
    Id = "id",
    Number = "number",
    State = "state",
    CreatedAt = "created_at",
    FinishedAt = "finished_at",
    PipelineSlug = "pipeline.slug",
    Commit = "commit",
    Branch = "branch",
    Source = "source",
    ScheduledAt = "scheduled_at",
    StartedAt = "started_at",
    /// The list, or one of its items that is not an object.
    Jobs = "jobs",
    JobType = "jobs.type",
    JobId = "jobs.id",
    JobName = "jobs.name",
    JobLabel = "jobs.label",
    JobStepKey = "jobs.step_key",
    JobState = "jobs.state",
    JobSoftFailed = "jobs.soft_failed",
    JobStartedAt = "jobs.started_at",
    JobFinishedAt = "jobs.finished_at",
    JobRetried = "jobs.retried",
    JobAgent = "jobs.agent",
    JobArtifactPaths = "jobs.artifact_paths",
    AgentId = "jobs.agent.id",
    AgentName = "jobs.agent.name",
    AgentHostname = "jobs.agent.hostname",
    /// The list, or one of its tags that is not a string.
    AgentMetaData = "jobs.agent.meta_data",
}

impl Field {
    /// What kitesync reads in the field.
    fn expected(self) -> &'static str {
        match self {
            Field::Number => "a whole number",
            Field::CreatedAt | Field::FinishedAt => "a time",
            _ => "a non-empty string",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a field held instead of what kitesync reads there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Missing,
    Bool,
    Number,
    /// A string, but not of the expected form (a time, a non-empty text) or type.
    String,
    List,
    Object,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Found::Missing => "nothing",
            Found::Bool => "a boolean",
            Found::Number => "a number",
            Found::String => "a string",
            Found::List => "a list",
            Found::Object => "an object",
        })
    }
}

/// A build that cannot be taken as it is: a field the sync depends on cannot be read. What
/// could be read of its key is kept, to file it as a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its `{field}` cannot be read: expected {}, found {found}", field.expected())]
pub struct Unreadable {
    pub(crate) field: Field,
    pub(crate) found: Found,
    pub(crate) id: Option<String>,
    pub(crate) number: Option<u64>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

/// Why a listed build does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// Not a JSON object at all (a quote of the parser's error, cut short).
    #[error("not a build object: {0}")]
    Json(String),
    #[error(transparent)]
    Field(#[from] Unreadable),
}

/// A field as read: absent (missing or `null`), read, or of the wrong type or format.
#[derive(Debug, Default)]
pub(super) enum Lenient<T> {
    #[default]
    Absent,
    Read(T),
    Wrong(Found),
}

impl<T> Lenient<T> {
    /// The value, or `None` with `field` noted in `ignored` when it was of the wrong type.
    pub(super) fn or_ignore(self, field: Field, ignored: &mut Vec<Field>) -> Option<T> {
        match self {
            Lenient::Read(v) => Some(v),
            Lenient::Absent => None,
            Lenient::Wrong(_) => {
                ignored.push(field);
                None
            }
        }
    }

    /// What was found instead of a value.
    pub(super) fn found(&self) -> Found {
        match self {
            Lenient::Wrong(found) => *found,
            _ => Found::Missing,
        }
    }

    pub(super) fn ok(self) -> Option<T> {
        match self {
            Lenient::Read(v) => Some(v),
            _ => None,
        }
    }
}

/// A type a [`Lenient`] field reads from JSON: each kind of JSON value either is one, or is
/// of the wrong type (`None`).
trait Read<'de>: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de, T: Read<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(PhantomData))
    }
}

struct LenientVisitor<T>(PhantomData<T>);

fn read<T>(value: Option<T>, found: Found) -> Lenient<T> {
    value.map_or(Lenient::Wrong(found), Lenient::Read)
}

impl<'de, T: Read<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Lenient<T>, E> {
        Ok(read(T::from_bool(v), Found::Bool))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Lenient<T>, E> {
        Ok(read(T::from_u64(v), Found::Number))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Lenient<T>, E> {
        Ok(read(
            u64::try_from(v).ok().and_then(T::from_u64),
            Found::Number,
        ))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Lenient<T>, E> {
        Ok(Lenient::Wrong(Found::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Lenient<T>, E> {
        Ok(read(T::from_str(v), Found::String))
    }
    fn visit_unit<E>(self) -> Result<Lenient<T>, E> {
        Ok(Lenient::Absent)
    }
    fn visit_none<E>(self) -> Result<Lenient<T>, E> {
        Ok(Lenient::Absent)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Lenient<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Lenient<T>, A::Error> {
        Ok(read(T::from_map(map)?, Found::Object))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Lenient<T>, A::Error> {
        Ok(read(T::from_seq(seq)?, Found::List))
    }
}

impl Read<'_> for String {
    fn from_str(s: &str) -> Option<Self> {
        Some(s.to_string())
    }
}

impl Read<'_> for u64 {
    fn from_u64(n: u64) -> Option<Self> {
        Some(n)
    }
}

impl Read<'_> for bool {
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
}

impl Read<'_> for DateTime<Utc> {
    fn from_str(s: &str) -> Option<Self> {
        parse_time(s)
    }
}

/// A list whose items are read one by one: those of the wrong type are left out and noted.
#[derive(Debug)]
pub(super) struct List<T> {
    items: Vec<T>,
    wrong: bool,
}

impl<T> List<T> {
    /// The items, with `field` noted in `ignored` when one or the list was of the wrong type.
    pub(super) fn or_ignore(
        list: Lenient<List<T>>,
        field: Field,
        ignored: &mut Vec<Field>,
    ) -> Option<Vec<T>> {
        let list = list.or_ignore(field, ignored)?;
        if list.wrong {
            ignored.push(field);
        }
        Some(list.items)
    }
}

impl<'de, T: Read<'de>> Read<'de> for List<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut list = List {
            items: Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024)),
            wrong: false,
        };
        while let Some(item) = seq.next_element::<Lenient<T>>()? {
            match item {
                Lenient::Read(v) => list.items.push(v),
                Lenient::Absent => {}
                Lenient::Wrong(_) => list.wrong = true,
            }
        }
        Ok(Some(list))
    }
}

/// A step's `artifact_paths`: one string (globs separated by `;`), or a list of globs.
#[derive(Debug)]
pub(super) struct Paths(pub(super) String);

impl<'de> Read<'de> for Paths {
    fn from_str(s: &str) -> Option<Self> {
        Some(Paths(s.to_string()))
    }
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        let globs = List::<String>::from_seq(seq)?.filter(|l| !l.wrong);
        Ok(globs.map(|l| Paths(l.items.join(";"))))
    }
}

/// Objects read field by field.
macro_rules! read_objects {
    ($($t:ty),*) => {$(
        impl<'de> Read<'de> for $t {
            fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                <$t>::deserialize(MapAccessDeserializer::new(map)).map(Some)
            }
        }
    )*};
}

read_objects!(RawPipeline, RawJob, RawAgent);

/// The id and creation time of a listed build, each read leniently.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawCreated {
    pub(super) id: Lenient<String>,
    pub(super) created_at: Lenient<DateTime<Utc>>,
}

/// The id and creation time of a listed build as far as they can be read, even of a build
/// that does not decode.
pub fn created(raw: &str) -> (Option<String>, Option<DateTime<Utc>>) {
    let c: RawCreated = serde_json::from_str(raw).unwrap_or_default();
    (c.id.ok().filter(|id| !id.is_empty()), c.created_at.ok())
}

/// A build as listed, each field read leniently.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawBuild {
    pub(super) id: Lenient<String>,
    pub(super) number: Lenient<u64>,
    pub(super) state: Lenient<String>,
    pub(super) commit: Lenient<String>,
    pub(super) branch: Lenient<String>,
    pub(super) source: Lenient<String>,
    pub(super) created_at: Lenient<DateTime<Utc>>,
    pub(super) scheduled_at: Lenient<DateTime<Utc>>,
    pub(super) started_at: Lenient<DateTime<Utc>>,
    pub(super) finished_at: Lenient<DateTime<Utc>>,
    pub(super) pipeline: Lenient<RawPipeline>,
    pub(super) jobs: Lenient<List<RawJob>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawPipeline {
    pub(super) slug: Lenient<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawJob {
    #[serde(rename = "type")]
    pub(super) kind: Lenient<String>,
    pub(super) id: Lenient<String>,
    pub(super) name: Lenient<String>,
    pub(super) label: Lenient<String>,
    pub(super) step_key: Lenient<String>,
    pub(super) state: Lenient<String>,
    pub(super) soft_failed: Lenient<bool>,
    pub(super) started_at: Lenient<DateTime<Utc>>,
    pub(super) finished_at: Lenient<DateTime<Utc>>,
    pub(super) retried: Lenient<bool>,
    pub(super) agent: Lenient<RawAgent>,
    pub(super) artifact_paths: Lenient<Paths>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAgent {
    pub(super) id: Lenient<String>,
    pub(super) name: Lenient<String>,
    pub(super) hostname: Lenient<String>,
    pub(super) meta_data: Lenient<List<String>>,
}
