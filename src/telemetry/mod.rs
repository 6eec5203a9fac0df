//! Metrics, the metrics server, the gauges read from the store, and logging.

pub mod gauges;
pub mod logging;
pub mod metrics;
pub mod metrics_server;
