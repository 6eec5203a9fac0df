//! What to fetch from Buildkite, and what to keep of it: polls, backfills and replays walk the
//! builds listing; enrichment fetches test results and logs; the agent poll lists agents.
//! Each diffs what it read against the store and queues what is new.

pub mod agents;
pub mod backfill;
pub(crate) mod builds;
pub mod enrich;
pub mod junit;
pub(crate) mod walk;

use crate::buildkite::{Client, SourceError};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// The parts a sync works with: the Buildkite client (and its budget), the store and the
/// config. Never the sink: `sync/` is where the source meets the store.
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub(crate) client: &'a Client,
    pub(crate) store: &'a Store,
    pub(crate) config: &'a Config,
    pub(crate) metrics: &'a crate::telemetry::metrics::Metrics,
    /// `[tests] junit_artifact_globs`, compiled.
    pub(crate) junit_globs: &'a globset::GlobSet,
}

/// What owns the [`Parts`], for a task that outlives a borrow of them.
pub(crate) trait Owner: Send + Sync + 'static {
    fn parts(&self) -> Parts<'_>;
}

/// Why a poll, a backfill, a replay or an enrichment pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An artifact's storage host failed (the build is tried again later).
    #[error("artifact storage: {0}")]
    Storage(String),
    /// An item could not be encoded for the outbox.
    #[error("cannot encode {what} for the outbox: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl SyncError {
    /// True when no retry can help: the token, its scopes or the organization are wrong.
    pub(crate) fn is_configuration(&self) -> bool {
        matches!(self, SyncError::Source(e) if e.is_configuration())
    }

    /// An encoding failure of `what`.
    pub(crate) fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> SyncError {
        move |source| SyncError::Encode { what, source }
    }
}
