//! The runs that end by themselves: `--once` (one poll, then deliver everything that can be
//! delivered now) and `--backfill` (walk a range of history while delivering).

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};

use crate::app::App;
use crate::daemon::{self, Stop};
use crate::deliver::{self, DeliverError, DeliveryReport};
use crate::store;
use crate::store::backfill::Checkpoint;
use crate::store::outbox::{self, Summary};
use crate::sync::agents::{self, AgentsReport};
use crate::sync::backfill::{self, BackfillReport, Observer};
use crate::sync::builds::{self, PollError, PollReport};
use crate::sync::enrich::{self, EnrichReport};

/// What a `--once` run did and left.
#[derive(Debug)]
pub struct OnceReport {
    pub poll: Result<PollReport, PollError>,
    /// The agent poll, when it was due.
    pub agents: Option<Result<AgentsReport, PollError>>,
    /// Fetching test results and logs.
    pub enrich: Result<EnrichReport, PollError>,
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
            && !matches!(self.agents, Some(Err(_)))
            && self.enrich.is_ok()
            && self.delivery.is_ok()
            && self.outbox.pending == 0
            && self.outbox.dead == 0
    }

    /// True when the operator must fix credentials or configuration.
    pub fn needs_configuration(&self) -> bool {
        let config = |r: &PollError| matches!(r, PollError::Source(e) if e.is_configuration());
        self.poll.as_ref().err().is_some_and(config)
            || matches!(&self.agents, Some(Err(e)) if config(e))
            || self.enrich.as_ref().err().is_some_and(config)
            || matches!(self.delivery, Err(DeliverError::Fatal(_)))
    }
}

/// Polls once and delivers. Fails only if the state database or HTTP setup fails; poll and
/// delivery problems are in the report.
pub async fn run_once(app: &App) -> Result<OnceReport, String> {
    let filter = builds::Filter::new(&app.config);
    let poll = builds::poll(&app.client, &app.store, &app.config.buildkite, &filter).await;
    let agents = if app.config.agents_enabled() {
        let last = app
            .store
            .call(|c| store::agents::last_polled(c))
            .await
            .map_err(|e| e.to_string())?;
        // Agents follow their own, slower schedule even when cron runs --once every minute.
        let due = crate::schedule::due(&app.config.schedule.agents, last, Utc::now());
        if due {
            let org = &app.config.buildkite.organization;
            Some(agents::poll(&app.client, &app.store, org).await)
        } else {
            None
        }
    } else {
        None
    };
    let enrich = enrich::run(app).await;
    let (delivery, outbox) = deliver_all(app).await?;
    Ok(OnceReport {
        poll,
        agents,
        enrich,
        delivery,
        requests: app.client.requests(),
        outbox,
    })
}

/// What a `--backfill` run did and left.
#[derive(Debug)]
pub struct BackfillOutcome {
    /// The walk; `None` when it was interrupted (it resumes from its checkpoint next time).
    pub walk: Option<Result<BackfillReport, PollError>>,
    /// True when Ctrl-C or SIGTERM stopped it (it resumes from its checkpoint next time).
    pub interrupted: bool,
    /// Fetching test results and logs, after a complete walk.
    pub enrich: Option<Result<EnrichReport, PollError>>,
    pub delivery: Result<DeliveryReport, DeliverError>,
    pub requests: u64,
    pub budget_waits: u64,
    pub outbox: Summary,
}

/// Walks `[since, until)`, delivering as it goes, then delivers what is left. Stops early,
/// with the checkpoint saved, when `shutdown` resolves.
pub async fn run_backfill(
    app: App,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    observer: &mut dyn Observer,
    shutdown: impl Future<Output = ()>,
) -> Result<BackfillOutcome, String> {
    let app = Arc::new(app);
    let (stop_tx, stop_rx) = watch::channel(Stop::No);
    let (fatal_tx, mut fatal_rx) = watch::channel(None);
    let queued = Arc::new(Notify::new());
    let delivering = tokio::spawn(daemon::deliver_loop(
        Arc::clone(&app),
        Arc::clone(&queued),
        stop_rx,
        fatal_tx,
        daemon::OnFatal::Stop,
    ));
    let mut observer = Notifying {
        inner: observer,
        queued: Arc::clone(&queued),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    // Stops at Ctrl-C or SIGTERM, or when BuildButler refuses everything: walking on would
    // only spend the organization's budget.
    let walk = tokio::select! {
        r = backfill::run(&app, since, until, &mut observer) => Some(r),
        () = &mut shutdown => None,
        _ = fatal_rx.wait_for(Option::is_some) => None,
    };
    let mut interrupted = walk.is_none() && fatal_rx.borrow().is_none();
    // After the walk, let the pass under way finish (abandoning it would re-send its
    // deliveries); after an interruption, stop at once.
    let _ = stop_tx.send(if walk.is_some() {
        Stop::AfterThisPass
    } else {
        Stop::Now
    });
    let delivered_while_walking = delivering.await.unwrap_or(0) as usize;
    let mut enriched = None;
    let fatal = fatal_rx.borrow().clone();
    let (delivery, outbox) = match (&walk, fatal) {
        (_, Some(fatal)) => (Err(DeliverError::Fatal(fatal)), summary(&app).await?),
        (None, None) => (Ok(DeliveryReport::default()), summary(&app).await?),
        (Some(_), None) => {
            // Ctrl-C still works while the rest is fetched and delivered.
            let rest = async {
                enriched = Some(enrich::run(&app).await);
                deliver_all(&app).await
            };
            let finished = tokio::select! {
                r = rest => Some(r?),
                () = &mut shutdown => None,
            };
            match finished {
                Some(done) => done,
                None => {
                    interrupted = true;
                    (Ok(DeliveryReport::default()), summary(&app).await?)
                }
            }
        }
    };
    let delivery = delivery.map(|mut d| {
        d.delivered += delivered_while_walking;
        d
    });
    Ok(BackfillOutcome {
        walk: if interrupted { None } else { walk },
        interrupted,
        enrich: enriched,
        delivery,
        requests: app.client.requests(),
        budget_waits: app.client.budget().waits(),
        outbox,
    })
}

/// Passes progress on, and wakes the delivery loop after each page.
struct Notifying<'a> {
    inner: &'a mut dyn Observer,
    queued: Arc<Notify>,
}

impl Observer for Notifying<'_> {
    fn page(&mut self, cp: &Checkpoint, fraction: f64, requests: u64, budget_waits: u64) {
        self.queued.notify_one();
        self.inner.page(cp, fraction, requests, budget_waits);
    }
}

/// Delivers what is due, retrying failures for `retry_window_seconds`; then the outbox's state.
pub async fn deliver_all(
    app: &App,
) -> Result<(Result<DeliveryReport, DeliverError>, Summary), String> {
    let bb = &app.config.buildbutler;
    let retry_until = tokio::time::Instant::now() + bb.retry_window();
    let delivery = deliver::drain(&app.store, &app.sink, bb.concurrency, retry_until).await;
    Ok((delivery, summary(app).await?))
}

async fn summary(app: &App) -> Result<Summary, String> {
    app.store
        .call(|c| outbox::summary(c))
        .await
        .map_err(|e| e.to_string())
}
