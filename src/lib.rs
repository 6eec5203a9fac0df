//! kitesync: polls Buildkite's REST API and delivers finished builds to BuildButler, for
//! sites whose firewall keeps Buildkite's webhooks out.
//!
//! The flow is one-way: [`buildkite`] (source) -> [`sync`] (diff) -> [`store`] (cursor, seen
//! builds, outbox) -> [`deliver`] -> [`butler`] (sink).

pub mod app;
pub mod buildkite;
pub mod butler;
pub mod check;
pub mod clock;
pub mod command;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod exit;
pub mod gauges;
pub mod item;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod metrics_server;
pub mod net;
pub mod oneshot;
pub mod outage;
pub mod progress;
pub mod ride_out;
pub mod route;
pub mod runner;
pub mod schedule;
pub mod status;
pub mod store;
pub mod sync;
