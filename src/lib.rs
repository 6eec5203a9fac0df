//! kitesync: polls Buildkite's REST API and delivers finished builds to BuildButler, for
//! sites whose firewall keeps Buildkite's webhooks out.
//!
//! The flow is one-way: [`buildkite`] (source) -> [`sync`] (diff) -> [`store`] (cursor, seen
//! builds, outbox) -> [`delivery`] -> [`butler`] (sink).

pub mod app;
pub mod buildkite;
pub mod butler;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod item;
pub mod malloc;
pub(crate) mod net;
pub mod run;
pub mod store;
pub mod sync;
pub mod telemetry;
