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
        let delivered = self.delivery.as_ref().map_or(0, |d| d.delivered);
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
        let summary = format!(
            "kitesync: {polled} ({} Buildkite {}); {} {delivered}; outbox: {} pending, {} dead",
            self.requests,
            plural(self.requests, "request"),
            delivered_word(dry_run),
            self.outbox.pending,
            self.outbox.dead
        );
        let mut notes = Vec::new();
        if let Err(e) = &self.poll {
            notes.push(format!("poll failed: {e}"));
        }
        if let Err(e) = &self.enrich {
            notes.push(format!("fetching test results or logs failed: {e}"));
        }
        if let Some(Err(e)) = &self.agents {
            notes.push(format!(
                "agent poll failed: {e} (set [schedule] agents = \"\" to turn agent sync off)"
            ));
        }
        if let Err(e) = &self.delivery {
            notes.push(format!("delivery stopped: {e}"));
        }
        let exit = if self.complete() {
            notes.clear();
            Exit::Success
        } else {
            notes.extend(explain(&self.outbox));
            if self.needs_configuration() {
                Exit::Configuration
            } else {
                Exit::Incomplete
            }
        };
        Ending {
            summary: Some(summary),
            notes,
            exit,
        }
    }
}

/// Polls once and delivers. Fails only if the state database fails; poll and delivery
/// problems are in the report.
pub async fn run_once(app: &App) -> Result<OnceReport, StoreError> {
    let filter = builds::Filter::new(&app.config);
    let poll = builds::poll(&app.client, &app.store, &app.config.buildkite, &filter).await;
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
        let delivered = self.delivery.as_ref().map_or(0, |d| d.delivered);
        let tail = format!(
            "{} Buildkite {}, {} budget {}; {} {delivered}; outbox: {} pending, {} dead",
            self.requests,
            plural(self.requests, "request"),
            self.budget_waits,
            plural(self.budget_waits, "wait"),
            delivered_word(dry_run),
            self.outbox.pending,
            self.outbox.dead
        );
        let ending = |summary: String, notes: Vec<String>, exit| Ending {
            summary: Some(summary),
            notes,
            exit,
        };
        if self.interrupted {
            let resume = if dry_run {
                "a dry run saves no checkpoint"
            } else {
                "run the same command again to resume from its checkpoint"
            };
            let summary = format!("kitesync: backfill interrupted: {tail}");
            return ending(summary, vec![resume.to_string()], Exit::Interrupted);
        }
        let stopped = format!("kitesync: backfill stopped: {tail}");
        let walk = match &self.walk {
            None => {
                let notes = self.delivery.as_ref().err().map(|e| {
                    format!("delivery stopped: {e}; run the same command again to resume")
                });
                return ending(stopped, notes.into_iter().collect(), Exit::Configuration);
            }
            Some(Err(e)) => {
                let mut notes = vec![format!(
                    "backfill failed: {e}; run the same command again to resume"
                )];
                notes.extend(explain(&self.outbox));
                let exit = if e.is_configuration() {
                    Exit::Configuration
                } else {
                    Exit::Incomplete
                };
                return ending(stopped, notes, exit);
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
        if let Some(Err(e)) = &self.enrich {
            let note = format!("fetching test results or logs failed: {e}");
            return ending(summary, vec![note], Exit::Incomplete);
        }
        if let Err(e) = &self.delivery {
            let exit = if matches!(e, DeliverError::Fatal(_)) {
                Exit::Configuration
            } else {
                Exit::Incomplete
            };
            return ending(summary, vec![format!("delivery stopped: {e}")], exit);
        }
        if self.outbox.pending + self.outbox.dead > 0 {
            return ending(summary, explain(&self.outbox), Exit::Incomplete);
        }
        ending(summary, Vec::new(), Exit::Success)
    }
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
    if let Some((label, error)) = outbox.dead_letters.first() {
        notes.push(format!(
            "{} {} kept aside (first: {label}: {error})",
            outbox.dead,
            plural(outbox.dead, "dead letter")
        ));
    }
    notes
}

fn delivered_word(dry_run: bool) -> &'static str {
    if dry_run {
        "would deliver"
    } else {
        "delivered"
    }
}

/// `word`, or its plural when `n` is not 1.
pub fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
