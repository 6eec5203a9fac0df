//! One poll cycle: read Buildkite, diff against the store, queue what is new.

pub mod agents;
pub mod backfill;
pub mod builds;
pub mod enrich;
pub mod junit;
pub mod logs;
pub mod tests;
pub mod walk;
