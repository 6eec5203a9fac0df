//! Drains the outbox into BuildButler: bounded concurrency, a row leaves only after a 2xx,
//! transient failures back off with jitter, refusals become dead letters. The delivery loops
//! of every mode live here: [`deliver_loop`] runs beside the daemon's polls and a backfill's
//! walk; [`deliver_all`] ends `--once` and `--backfill`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::app::App;
use crate::butler::SendError;
use crate::item::{Item, Kind};
use crate::metrics::Activity;
use crate::net;
use crate::outage::Outage;
use crate::route;
use crate::store::agents;
use crate::store::outbox::{self, Outcome, Row, Summary};
use crate::store::{now_ms, StoreError};

/// The longest the delivery loop sleeps before looking at the outbox again.
const IDLE_WAKE: Duration = Duration::from_secs(30);
/// How long delivery pauses when BuildButler refuses the API key or the URL.
const FATAL_PAUSE: Duration = Duration::from_secs(300);
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
    /// Of those delivered, builds.
    pub builds: usize,
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
    app: &App,
    retry_until: tokio::time::Instant,
) -> Result<DeliveryReport, DeliverError> {
    let (store, sink, config) = (&app.store, &app.sink, &app.config);
    let concurrency = config.buildbutler.concurrency;
    route::recall(store, sink, config).await?;
    let mut report = DeliveryReport::default();
    'batches: loop {
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
        // A build's agent has no tags in the REST API: the agent poll's go with it.
        let tags = Arc::new(store.call(|c| agents::tags(c)).await?);
        let mut results = stream::iter(rows)
            .map(|row| {
                let (sink, tags) = (Arc::clone(sink), Arc::clone(&tags));
                async move {
                    let item = Item {
                        kind: row.kind,
                        payload: &row.payload,
                        agent_tags: &tags,
                    };
                    let result = sink.deliver(item).await;
                    (row, result)
                }
            })
            .buffer_unordered(concurrency)
            .ready_chunks(SETTLE_CHUNK);
        // Outcomes are recorded as they arrive, so a crash re-sends at most a chunk.
        while let Some(chunk) = results.next().await {
            let builds_before = report.builds;
            let (settled, fatal) = judge(chunk, &mut report);
            store.call(move |c| outbox::settle(c, &settled)).await?;
            if report.builds > builds_before {
                route::confirm(store, sink, config).await?;
            }
            match fatal {
                None => {}
                // The rows not settled are due again, and go to the prefix now in use.
                Some(SendError::NoRoute(_)) if route::recover(store, sink, config).await? => {
                    continue 'batches;
                }
                Some(e) => return Err(DeliverError::Fatal(e.to_string())),
            }
        }
        drop(lock);
    }
}

/// Turns delivery results into outbox outcomes (counting them), and picks out a fatal error.
fn judge(
    results: Vec<(Row, Result<(), SendError>)>,
    report: &mut DeliveryReport,
) -> (Vec<(Row, Outcome)>, Option<SendError>) {
    let mut fatal = None;
    let mut first_retry: Option<String> = None;
    let mut settled = Vec::with_capacity(results.len());
    for (row, result) in results {
        let outcome = match result {
            Ok(()) => {
                report.delivered += 1;
                report.builds += usize::from(row.kind == Kind::Build);
                Outcome::Delivered
            }
            Err(SendError::Retry(e)) => {
                report.retried += 1;
                tracing::debug!(item = row.label, "delivery failed, will retry: {e}");
                first_retry.get_or_insert_with(|| e.clone());
                let wait = net::backoff(row.attempts + 1, FIRST_BACKOFF, MAX_BACKOFF);
                Outcome::RetryAt(now_ms() + wait.as_millis() as i64, e)
            }
            Err(SendError::Reject { message, .. }) => {
                report.dead += 1;
                tracing::error!(item = row.label, "kept as a dead letter: {message}");
                Outcome::Dead(message)
            }
            Err(e @ (SendError::Fatal(_) | SendError::NoRoute(_))) => {
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

/// When the background tasks should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep going.
    No,
    /// Finish the delivery pass under way, then stop (nothing in flight is abandoned).
    AfterThisPass,
    /// Stop at the next await: no new requests.
    Now,
}

/// What the delivery loop does when BuildButler refuses everything (API key, URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFatal {
    /// Report it to `fatal` and stop.
    Stop,
    /// Stop only if nothing was delivered yet (a mistake in the config); later, ride it out
    /// as an outage (a proxy answering 404 during a redeploy, say).
    StopIfNeverDelivered,
}

/// Delivers whatever is due, then sleeps until the next retry is due, a poll queues more,
/// or [`IDLE_WAKE`] passes; until `stop` says so. Returns how many items it delivered.
pub async fn deliver_loop(
    app: Arc<App>,
    queued: Arc<Notify>,
    mut stop: watch::Receiver<Stop>,
    fatal: watch::Sender<Option<String>>,
    on_fatal: OnFatal,
) -> u64 {
    let mut outage = Outage::new("BuildButler delivery");
    let mut delivered: u64 = 0;
    loop {
        let drain = drain(&app, Instant::now());
        let started = Instant::now();
        let result = tokio::select! {
            r = drain => r,
            _ = stop.wait_for(|s| *s == Stop::Now) => return delivered,
        };
        let metrics = &app.metrics;
        // BuildButler refusing everything pauses delivery: new builds must not wake it.
        let mut pause = Duration::ZERO;
        match result {
            Ok(report) => {
                delivered += report.delivered as u64;
                metrics.delivered.inc_by(report.delivered as u64);
                metrics.builds_delivered.inc_by(report.builds as u64);
                metrics.dead_lettered.inc_by(report.dead as u64);
                metrics.delivery_failures.inc_by(report.retried as u64);
                if report.delivered + report.dead + report.retried > 0 {
                    let took = started.elapsed().as_secs_f64();
                    metrics.delivery_seconds.observe(took);
                }
                if report.delivered > 0 {
                    metrics.succeeded(Activity::Delivery);
                }
                if report.retried > 0 {
                    outage.failed("deliveries are failing and will be retried");
                } else if report.delivered > 0 {
                    outage.ok();
                    tracing::debug!(delivered = report.delivered, "delivered");
                }
            }
            Err(DeliverError::Fatal(e)) => {
                metrics.failed(Activity::Delivery, &e);
                if on_fatal == OnFatal::Stop || delivered == 0 {
                    let _ = fatal.send(Some(e));
                    return delivered;
                }
                outage.failed(&e);
                pause = FATAL_PAUSE;
            }
            Err(e) => {
                metrics.failed(Activity::Delivery, &e.to_string());
                outage.failed(&e.to_string());
            }
        }
        if *stop.borrow() != Stop::No {
            return delivered;
        }
        let summary = app.store.call(|c| outbox::summary(c)).await.ok();
        let next = summary.as_ref().and_then(|s| s.next_attempt_at);
        if let Some(error) = summary.and_then(|s| s.last_error) {
            metrics.failed(Activity::Delivery, &error);
        }
        let wait = next.map_or(IDLE_WAKE, |at| {
            Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(IDLE_WAKE)
        });
        let woken = async {
            match pause.is_zero() {
                true => queued.notified().await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(wait.max(pause)) => {}
            _ = stop.wait_for(|s| *s != Stop::No) => return delivered,
        }
    }
}

/// Delivers what is due, retrying failures for `retry_window_seconds`; then the outbox's state.
pub async fn deliver_all(
    app: &App,
) -> Result<(Result<DeliveryReport, DeliverError>, Summary), StoreError> {
    let bb = &app.config.buildbutler;
    let retry_until = Instant::now() + bb.retry_window();
    let delivery = drain(app, retry_until).await;
    Ok((delivery, app.store.call(|c| outbox::summary(c)).await?))
}
