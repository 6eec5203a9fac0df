//! `--once`: one poll, then deliver everything that can be delivered now.

use std::sync::Arc;

use crate::buildkite::{Budget, Client};
use crate::butler::Sink;
use crate::config::Config;
use crate::deliver::{self, DeliverError, DeliveryReport};
use crate::store::outbox::{self, Summary};
use crate::store::Store;
use crate::sync::builds::{self, PollError, PollReport};

/// What a `--once` run did and left.
#[derive(Debug)]
pub struct OnceReport {
    pub poll: Result<PollReport, PollError>,
    pub delivery: Result<DeliveryReport, DeliverError>,
    /// Buildkite requests sent.
    pub requests: u64,
    /// The outbox after the run.
    pub outbox: Summary,
}

impl OnceReport {
    /// True when the poll worked and nothing is left to deliver.
    pub fn complete(&self) -> bool {
        self.poll.is_ok()
            && self.delivery.is_ok()
            && self.outbox.pending == 0
            && self.outbox.dead == 0
    }

    /// True when the operator must fix credentials or configuration.
    pub fn needs_configuration(&self) -> bool {
        matches!(&self.poll, Err(PollError::Source(e)) if e.is_configuration())
            || matches!(self.delivery, Err(DeliverError::Fatal(_)))
    }
}

/// Polls once and delivers. Fails only if the state database or HTTP setup fails; poll and
/// delivery problems are in the report.
pub async fn run(config: &Config) -> Result<OnceReport, String> {
    let store = Store::open(&config.state_path).map_err(|e| e.to_string())?;
    let budget = Arc::new(Budget::new(config.buildkite.requests_per_minute));
    let client = Client::new(&config.buildkite, budget)?;
    let sink = Arc::new(Sink::new(
        &config.buildbutler,
        &config.buildkite.organization,
    )?);

    let poll = builds::poll(&client, &store, &config.buildkite).await;
    if let Err(e) = &poll {
        tracing::error!("poll failed: {e}");
    }
    let retry_until = tokio::time::Instant::now() + config.buildbutler.retry_window();
    let delivery = deliver::drain(&store, &sink, config.buildbutler.concurrency, retry_until).await;
    if let Err(e) = &delivery {
        tracing::error!("delivery stopped: {e}");
    }
    let outbox = store
        .call(|c| outbox::summary(c))
        .await
        .map_err(|e| e.to_string())?;
    Ok(OnceReport {
        poll,
        delivery,
        requests: client.requests(),
        outbox,
    })
}
