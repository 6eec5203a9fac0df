//! Drains the outbox into BuildButler: bounded concurrency, a row leaves only after a 2xx,
//! transient failures back off with jitter, refusals become dead letters (with their
//! [`DeadCause`]). The delivery loops of every mode live here: [`deliver_loop`] runs beside
//! the daemon's polls and a backfill's walk and keeps each row's backoff; [`deliver_all`]
//! ends `--once` and `--backfill`, trying what is pending at once and giving up for the run
//! when BuildButler fails a whole chunk of attempts in a row.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::app::App;
use crate::butler::SendError;
use crate::clock::now_ms;
use crate::delivery::route;
use crate::item::{Item, Kind};
use crate::net;
use crate::run::outage::Outage;
use crate::run::runner::{Fatal, Handle, OnFatal, Stop};
use crate::store::agents;
use crate::store::outbox::{self, DeadCause, Outcome, Row, Summary};
use crate::store::StoreError;
use crate::telemetry::metrics::Activity;

/// The longest the delivery loop sleeps before looking at the outbox again.
pub const IDLE_WAKE: Duration = Duration::from_secs(30);
/// How long delivery pauses when BuildButler refuses the API key or the URL.
const FATAL_PAUSE: Duration = Duration::from_secs(300);
/// Rows read from the outbox at a time.
const BATCH: usize = 256;
/// At most this many outcomes are recorded in one transaction.
const SETTLE_CHUNK: usize = 64;
/// The first retry waits about this long, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A one-shot run gives up for this run after this many rounds of `concurrency` attempts in
/// a row failed transiently: with BuildButler timing out, a round costs one
/// `timeout_seconds` (30 s), so the chunk costs a minute, not a timeout per row of a large
/// outbox, and two one-shot drains fit the once unit's `TimeoutStartSec` beside the polls'
/// rate-limit waits and `--enrich-seconds`. Two rounds, not one, so that a single blip
/// hitting every request in flight at once does not end the run.
pub const GIVE_UP_ROUNDS: usize = 2;

/// Which rows a drain tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// The daemon's (and a backfill's while it walks): rows whose backoff has passed.
    Due,
    /// A one-shot run's first: every pending row once, whatever its backoff, oldest first;
    /// then as [`Pass::Retry`].
    Pending,
    /// A one-shot run's: rows whose backoff has passed. Both one-shot passes give up after
    /// [`GIVE_UP_ROUNDS`] rounds of transient failures in a row, leaving the rest.
    Retry,
}

/// What a drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    /// Of those delivered, builds.
    pub(crate) builds: usize,
    /// Attempts that failed and will be retried.
    pub(crate) retried: usize,
    /// Items BuildButler refused for good.
    pub(crate) dead: usize,
    /// A one-shot pass stopped after a chunk of attempts that all failed transiently; the
    /// rest waits for the next run.
    pub(crate) gave_up: bool,
}

/// Why delivery stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// BuildButler refuses everything until the operator acts (API key, URL).
    #[error("{0}")]
    Fatal(SendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Delivers every due row (with [`Pass::Pending`], first every pending row). Rows whose
/// retry falls before `retry_until` are waited for and tried again; later ones stay in the
/// outbox for the next drain. A one-shot pass starts no batch of retries after `retry_until`.
pub(crate) async fn drain(
    app: &App,
    retry_until: tokio::time::Instant,
    pass: Pass,
) -> Result<DeliveryReport, DeliverError> {
    let (store, sink, config) = (&app.store, &app.sink, &app.config);
    let concurrency = config.buildbutler.concurrency;
    route::recall(store, sink, config).await?;
    let mut report = DeliveryReport::default();
    // With Pass::Pending: the id the sweep of pending rows has reached.
    let mut swept = (pass == Pass::Pending).then_some(0);
    let limit = (pass != Pass::Due).then(|| GIVE_UP_ROUNDS * concurrency.max(1));
    let streak = Arc::new(Streak::new(limit));
    'batches: loop {
        let lock = store.delivery_lock().await?;
        let rows = match swept {
            Some(after) => {
                let rows = store
                    .call(move |c| outbox::pending_after(c, after, BATCH))
                    .await?;
                if rows.is_empty() {
                    swept = None;
                    continue;
                }
                rows
            }
            // A one-shot pass starts no retry once its window has closed (the rest waits for
            // the next run): it ends within a batch of the window's end.
            None if pass != Pass::Due && Instant::now() >= retry_until => return Ok(report),
            None => store.call(|c| outbox::due(c, now_ms(), BATCH)).await?,
        };
        let batch_from = swept;
        if let (Some(_), Some(last)) = (swept, rows.last()) {
            swept = Some(last.id);
        }
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
            .take_while(|_| std::future::ready(!streak.gave_up()))
            .map(|row| {
                let (sink, tags) = (Arc::clone(sink), Arc::clone(&tags));
                let streak = Arc::clone(&streak);
                async move {
                    let item = Item {
                        kind: row.kind,
                        payload: &row.payload,
                        agent_tags: &tags,
                    };
                    let result = sink.deliver(item).await;
                    streak.ended(&result);
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
                    swept = batch_from;
                    continue 'batches;
                }
                Some(e) => return Err(DeliverError::Fatal(e)),
            }
            if streak.gave_up() {
                // What is in flight is abandoned: it stays pending, and a re-send upserts.
                tracing::warn!(
                    "BuildButler failed {} deliveries in a row: leaving the rest of the outbox \
                     for the next run",
                    limit.unwrap_or_default()
                );
                report.gave_up = true;
                return Ok(report);
            }
        }
        drop(lock);
    }
}

/// A one-shot pass's transient failures in a row, counted as attempts end. Once they reach
/// the limit the pass has given up for good: no attempt is started after that (so at most
/// `concurrency - 1` more end), and one of those succeeding does not undo it.
struct Streak {
    limit: Option<usize>,
    failed: AtomicUsize,
    gave_up: AtomicBool,
}

impl Streak {
    fn new(limit: Option<usize>) -> Streak {
        Streak {
            limit,
            failed: AtomicUsize::new(0),
            gave_up: AtomicBool::new(false),
        }
    }

    fn ended(&self, result: &Result<(), SendError>) {
        match result {
            Err(SendError::Retry(_)) => {
                let failed = self.failed.fetch_add(1, Ordering::SeqCst) + 1;
                if self.limit.is_some_and(|n| failed >= n) {
                    self.gave_up.store(true, Ordering::SeqCst);
                }
            }
            Ok(()) | Err(SendError::Reject { .. }) => self.failed.store(0, Ordering::SeqCst),
            Err(SendError::Fatal(_) | SendError::NoRoute(_)) => {}
        }
    }

    fn gave_up(&self) -> bool {
        self.gave_up.load(Ordering::SeqCst)
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
                let e = e.to_string();
                report.retried += 1;
                tracing::debug!(item = row.label, "delivery failed, will retry: {e}");
                first_retry.get_or_insert_with(|| e.clone());
                let wait = net::backoff(row.attempts + 1, FIRST_BACKOFF, MAX_BACKOFF);
                Outcome::RetryAt(now_ms() + wait.as_millis() as i64, e)
            }
            Err(SendError::Reject { status, message }) => {
                report.dead += 1;
                tracing::error!(item = row.label, "kept as a dead letter: {message}");
                Outcome::Dead(dead_cause(status), message)
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

/// Why BuildButler's refusal (`status`, none when kitesync refused to send) made a row dead:
/// only a 400, 413 or 422 refuses the item's content.
fn dead_cause(status: Option<StatusCode>) -> DeadCause {
    match status {
        Some(
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNPROCESSABLE_ENTITY,
        ) => DeadCause::Content,
        _ => DeadCause::Other,
    }
}

/// Delivers whatever is due, then sleeps until the next retry is due, a poll queues more,
/// or [`IDLE_WAKE`] passes; until the run stops. Returns how many items it delivered.
pub(crate) async fn deliver_loop(
    app: Arc<App>,
    queued: Arc<Notify>,
    run: Handle,
    on_fatal: OnFatal,
) -> u64 {
    let mut stop = run.stop.clone();
    let mut outage = Outage::new("BuildButler delivery");
    let mut delivered: u64 = 0;
    loop {
        let drain = drain(&app, Instant::now(), Pass::Due);
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
                let text = e.to_string();
                metrics.failed(Activity::Delivery, &text);
                if on_fatal == OnFatal::Stop || delivered == 0 {
                    run.fatal(Fatal::BuildButler(e));
                    return delivered;
                }
                outage.failed(&text);
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

/// A one-shot run's delivery ([`Pass::Pending`] or [`Pass::Retry`]), retrying failures for
/// `retry_window_seconds` unless it gives up; then the outbox's state.
pub(crate) async fn deliver_all(
    app: &App,
    pass: Pass,
) -> Result<(Result<DeliveryReport, DeliverError>, Summary), StoreError> {
    let bb = &app.config.buildbutler;
    let retry_until = Instant::now() + bb.retry_window();
    let delivery = drain(app, retry_until, pass).await;
    Ok((delivery, app.store.call(|c| outbox::summary(c)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::butler::client::Retry;

    #[test]
    fn only_a_400_413_or_422_refuses_an_items_content() {
        let code = |c: u16| Some(StatusCode::from_u16(c).expect("a status"));
        for c in [400, 413, 422] {
            assert_eq!(dead_cause(code(c)), DeadCause::Content, "{c}");
        }
        for c in [302, 307, 404, 405, 409, 410, 415] {
            assert_eq!(dead_cause(code(c)), DeadCause::Other, "{c}");
        }
        assert_eq!(
            dead_cause(None),
            DeadCause::Other,
            "not renderable, not sent"
        );
    }

    #[test]
    fn a_one_shot_pass_gives_up_after_its_limit_of_failures_in_a_row_for_good() {
        let retry = || {
            Err(SendError::Retry(Retry::Status {
                route: "api/v1/ingest/builds".into(),
                status: StatusCode::SERVICE_UNAVAILABLE,
            }))
        };
        let refused = Err(SendError::Reject {
            status: Some(StatusCode::BAD_REQUEST),
            message: "400".into(),
        });
        let streak = Streak::new(Some(3));
        for result in [retry(), retry(), Ok(()), retry(), retry(), refused, retry()] {
            streak.ended(&result);
        }
        assert!(!streak.gave_up(), "a success or a refusal breaks the row");
        streak.ended(&retry());
        streak.ended(&retry());
        assert!(streak.gave_up());
        streak.ended(&Ok(()));
        assert!(
            streak.gave_up(),
            "an attempt still in flight does not undo it"
        );

        let daemon = Streak::new(None);
        (0..100).for_each(|_| daemon.ended(&retry()));
        assert!(!daemon.gave_up(), "the daemon never gives up");
    }
}
