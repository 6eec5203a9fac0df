//! Drains the outbox into BuildButler: bounded concurrency, a row leaves only after a 2xx,
//! transient failures back off with jitter, refusals become dead letters.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::butler::{SendError, Sink};
use crate::retry;
use crate::store::outbox::{self, Outcome, Row};
use crate::store::{now_ms, Store, StoreError};

/// Rows read from the outbox at a time.
const BATCH: usize = 256;
/// At most this many outcomes are recorded in one transaction.
const SETTLE_CHUNK: usize = 64;
/// The first retry waits about this long, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    /// Attempts that failed and will be retried.
    pub retried: usize,
    /// Items BuildButler refused for good.
    pub dead: usize,
}

/// Why delivery stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// BuildButler refuses everything until the operator acts (API key, URL).
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Delivers every due row. Rows whose retry falls before `retry_until` are waited for and
/// tried again; later ones stay in the outbox for the next drain.
pub async fn drain(
    store: &Store,
    sink: &Arc<Sink>,
    concurrency: usize,
    retry_until: tokio::time::Instant,
) -> Result<DeliveryReport, DeliverError> {
    let mut report = DeliveryReport::default();
    loop {
        let lock = store.delivery_lock().await?;
        let rows = store.call(|c| outbox::due(c, now_ms(), BATCH)).await?;
        if rows.is_empty() {
            drop(lock);
            let next = store.call(|c| outbox::summary(c)).await?.next_attempt_at;
            let Some(next) = next else { return Ok(report) };
            let wait = Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0));
            if tokio::time::Instant::now() + wait > retry_until {
                return Ok(report);
            }
            tokio::time::sleep(wait).await;
            continue;
        }
        let mut results = stream::iter(rows)
            .map(|row| {
                let sink = Arc::clone(sink);
                async move {
                    let result = sink.deliver(&row).await;
                    (row, result)
                }
            })
            .buffer_unordered(concurrency)
            .ready_chunks(SETTLE_CHUNK);
        // Outcomes are recorded as they arrive, so a crash re-sends at most a chunk.
        while let Some(chunk) = results.next().await {
            let (settled, fatal) = judge(chunk, &mut report);
            store.call(move |c| outbox::settle(c, &settled)).await?;
            if let Some(e) = fatal {
                return Err(DeliverError::Fatal(e));
            }
        }
        drop(lock);
    }
}

/// Turns delivery results into outbox outcomes (counting them), and picks out a fatal error.
fn judge(
    results: Vec<(Row, Result<(), SendError>)>,
    report: &mut DeliveryReport,
) -> (Vec<(Row, Outcome)>, Option<String>) {
    let mut fatal = None;
    let mut first_retry: Option<String> = None;
    let mut settled = Vec::with_capacity(results.len());
    for (row, result) in results {
        let outcome = match result {
            Ok(()) => {
                report.delivered += 1;
                Outcome::Delivered
            }
            Err(SendError::Retry(e)) => {
                report.retried += 1;
                tracing::debug!(item = row.label, "delivery failed, will retry: {e}");
                first_retry.get_or_insert_with(|| e.clone());
                let wait = retry::backoff(row.attempts + 1, FIRST_BACKOFF, MAX_BACKOFF);
                Outcome::RetryAt(now_ms() + wait.as_millis() as i64, e)
            }
            Err(SendError::Reject(e)) => {
                report.dead += 1;
                tracing::error!(item = row.label, "kept as a dead letter: {e}");
                Outcome::Dead(e)
            }
            Err(SendError::Fatal(e)) => {
                fatal = Some(e);
                continue;
            }
        };
        settled.push((row, outcome));
    }
    if let Some(e) = first_retry {
        tracing::debug!("BuildButler delivery failing ({e}); retrying with backoff");
    }
    (settled, fatal)
}
