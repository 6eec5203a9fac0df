//! The runs that end by themselves: `--once` (one poll, then deliver everything that can be
//! delivered now) and `--backfill` (walk a range of history while delivering), with their
//! reports: the summary line, what went wrong, and the exit code.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};

use crate::app::App;
use crate::deliver::{deliver_all, deliver_loop, DeliverError, DeliveryReport, OnFatal, Stop};
use crate::exit::{Ending, Exit};
use crate::store::backfill::Checkpoint;
use crate::store::outbox::{self, Summary};
use crate::store::{self, StoreError};
use crate::sync::agents::{self, AgentsReport};
use crate::sync::backfill::{self, BackfillReport, Observer};
use crate::sync::builds::{self, PollReport};
use crate::sync::enrich::{self, EnrichReport};
use crate::sync::SyncError;

/// What a `--once` run did and left.
#[derive(Debug)]
pub struct OnceReport {
    pub poll: Result<PollReport, SyncError>,
    /// The agent poll, when it was due.
    pub agents: Option<Result<AgentsReport, SyncError>>,
    /// Fetching test results and logs.
    pub enrich: Result<EnrichReport, SyncError>,
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
        let config = SyncError::is_configuration;
        self.poll.as_ref().err().is_some_and(config)
            || matches!(&self.agents, Some(Err(e)) if config(e))
            || self.enrich.as_ref().err().is_some_and(config)
            || matches!(self.delivery, Err(DeliverError::Fatal(_)))
    }

    /// The one-line summary, what went wrong, and the exit code.
    pub fn ending(&self, dry_run: bool) -> Ending {
        let polled = match &self.poll {
            Ok(p) => format!(
                "{} newly finished {} in {} {}",
                p.queued,
                plural(p.queued as u64, "build"),
                p.pages,
                plural(p.pages.into(), "page")
            ),
            Err(_) => "poll failed".to_string(),
        };
        let requests = plural(self.requests, "request");
        let summary = format!(
            "kitesync: {polled} ({} Buildkite {requests}); {}",
            self.requests,
            delivered(&self.delivery, &self.outbox, dry_run)
        );
        if self.complete() {
            return Ending::new(summary, Vec::new(), Exit::Success);
        }
        let agents = self.agents.as_ref().and_then(|a| a.as_ref().err());
        let notes = [
            self.poll
                .as_ref()
                .err()
                .map(|e| format!("poll failed: {e}")),
            (self.enrich.as_ref().err())
                .map(|e| format!("fetching test results or logs failed: {e}")),
            agents.map(|e| {
                format!(
                    "agent poll failed: {e} (set [schedule] agents = \"\" to turn agent sync off)"
                )
            }),
            self.delivery
                .as_ref()
                .err()
                .map(|e| format!("delivery stopped: {e}")),
        ];
        let notes = notes
            .into_iter()
            .flatten()
            .chain(explain(&self.outbox))
            .collect();
        Ending::new(summary, notes, Exit::failed(self.needs_configuration()))
    }
}

/// Polls once and delivers. Fails only if the state database fails; poll and delivery
/// problems are in the report.
pub async fn run_once(app: &App) -> Result<OnceReport, StoreError> {
    let poll = builds::poll(&app.client, &app.store, &app.config).await;
    let due = match (app.config.agents_enabled(), &app.config.schedule.agents) {
        (true, Some(schedule)) => {
            let last = app.store.call(|c| store::agents::last_polled(c)).await?;
            // Agents follow their own, slower schedule even when cron runs --once every minute.
            schedule.due(last, Utc::now())
        }
        _ => false,
    };
    let org = &app.config.buildkite.organization;
    let agents = if due {
        Some(agents::poll(&app.client, &app.store, org).await)
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
    pub walk: Option<Result<BackfillReport, SyncError>>,
    /// True when Ctrl-C or SIGTERM stopped it (it resumes from its checkpoint next time).
    pub interrupted: bool,
    /// Fetching test results and logs, after a complete walk.
    pub enrich: Option<Result<EnrichReport, SyncError>>,
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
) -> Result<BackfillOutcome, StoreError> {
    let app = Arc::new(app);
    let (stop_tx, stop_rx) = watch::channel(Stop::No);
    let (fatal_tx, mut fatal_rx) = watch::channel(None);
    let queued = Arc::new(Notify::new());
    let delivering = tokio::spawn(deliver_loop(
        Arc::clone(&app),
        Arc::clone(&queued),
        stop_rx,
        fatal_tx,
        OnFatal::Stop,
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

async fn summary(app: &App) -> Result<Summary, StoreError> {
    app.store.call(|c| outbox::summary(c)).await
}

impl BackfillOutcome {
    /// The summary, what went wrong, and the exit code.
    pub fn ending(&self, dry_run: bool) -> Ending {
        let tail = format!(
            "{} Buildkite {}, {} budget {}; {}",
            self.requests,
            plural(self.requests, "request"),
            self.budget_waits,
            plural(self.budget_waits, "wait"),
            delivered(&self.delivery, &self.outbox, dry_run)
        );
        if self.interrupted {
            let resume = match dry_run {
                true => "a dry run saves no checkpoint",
                false => "run the same command again to resume from its checkpoint",
            };
            let summary = format!("kitesync: backfill interrupted: {tail}");
            return Ending::new(summary, vec![resume.to_string()], Exit::Interrupted);
        }
        let stopped = format!("kitesync: backfill stopped: {tail}");
        let again = "run the same command again to resume";
        let walk = match &self.walk {
            None => {
                let notes = self.delivery.as_ref().err();
                let notes = notes.map(|e| format!("delivery stopped: {e}; {again}"));
                return Ending::new(stopped, notes.into_iter().collect(), Exit::Configuration);
            }
            Some(Err(e)) => {
                let notes = [format!("backfill failed: {e}; {again}")];
                let notes = notes.into_iter().chain(explain(&self.outbox)).collect();
                return Ending::new(stopped, notes, Exit::failed(e.is_configuration()));
            }
            Some(Ok(walk)) => walk,
        };
        let cp = &walk.checkpoint;
        let summary = format!(
            "kitesync: backfill from {} to {} done{}: {} {}, {} finished builds ({} newly queued); {tail}",
            cp.since,
            cp.until,
            if walk.resumed { " (resumed)" } else { "" },
            cp.pages,
            plural(cp.pages, "page"),
            cp.builds,
            walk.queued,
        );
        let (notes, exit) = match (&self.enrich, &self.delivery) {
            (Some(Err(e)), _) => (
                vec![format!("fetching test results or logs failed: {e}")],
                Exit::Incomplete,
            ),
            (_, Err(e)) => {
                let fatal = matches!(e, DeliverError::Fatal(_));
                (vec![format!("delivery stopped: {e}")], Exit::failed(fatal))
            }
            _ if self.outbox.pending + self.outbox.dead > 0 => {
                (explain(&self.outbox), Exit::Incomplete)
            }
            _ => (Vec::new(), Exit::Success),
        };
        Ending::new(summary, notes, exit)
    }
}

/// "delivered N; outbox: P pending, D dead".
fn delivered(
    delivery: &Result<DeliveryReport, DeliverError>,
    outbox: &Summary,
    dry: bool,
) -> String {
    let n = delivery.as_ref().map_or(0, |d| d.delivered);
    let verb = if dry { "would deliver" } else { "delivered" };
    let (pending, dead) = (outbox.pending, outbox.dead);
    format!("{verb} {n}; outbox: {pending} pending, {dead} dead")
}

/// Why items are still in the outbox.
fn explain(outbox: &Summary) -> Vec<String> {
    let mut notes = Vec::new();
    if outbox.pending > 0 {
        let last = outbox.last_error.as_deref().unwrap_or("not tried yet");
        notes.push(format!(
            "{} {} pending, to be retried on the next run (last error: {last})",
            outbox.pending,
            plural(outbox.pending, "item")
        ));
    }
    if let Some(first) = outbox.dead_letters.first() {
        let (label, error) = (&first.label, &first.error);
        notes.push(format!(
            "{} {} kept aside (first: {label}: {error})",
            outbox.dead,
            plural(outbox.dead, "dead letter")
        ));
    }
    notes
}

/// `word`, or its plural when `n` is not 1.
pub fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
