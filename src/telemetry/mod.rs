//! Metrics, the metrics server, the gauges read from the store, and logging.

pub mod gauges;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod metrics_server;
