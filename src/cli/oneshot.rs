//! The runs that end by themselves: `--once` (one poll, deliver the builds, then fetch test
//! results and logs for a while and deliver them) and `--backfill` (walk a range of history
//! while delivering and fetching), with their reports: the summary line, what went wrong,
//! and the exit code.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::app::App;
use crate::cli::exit::{self, Ending, Exit};
use crate::clock;
use crate::delivery::deliver::{
    deliver_all, deliver_loop, DeliverError, DeliveryReport, Pass, GIVE_UP_ROUNDS,
};
use crate::run::runner::{Fatal, OnFatal, Runner, Stop, Wakes};
use crate::store::enrich::Backlog;
use crate::store::outbox::{self, Summary};
use crate::store::{self, StoreError};
use crate::sync::agents::{self, AgentsReport};
use crate::sync::backfill::{self, BackfillReport, Estimate, Observer, Progress};
use crate::sync::builds::{self, PollReport};
use crate::sync::enrich::{self, EnrichReport};
use crate::sync::{Owner, SyncError};

/// `--enrich-seconds` by default: how long `--once` fetches test results and logs after
/// delivering its builds. `systemd/kitesync-once.service` leaves room for it.
pub const DEFAULT_ENRICH_SECONDS: u64 = 120;

/// What a `--once` run did and left.
#[derive(Debug)]
pub struct OnceReport {
    pub(crate) poll: Result<PollReport, SyncError>,
    /// The agent poll, when it was due.
    pub(crate) agents: Option<Result<AgentsReport, SyncError>>,
    /// Fetching test results and logs.
    pub(crate) enrich: Result<EnrichReport, SyncError>,
    pub delivery: Result<DeliveryReport, DeliverError>,
    /// Buildkite requests sent.
    pub requests: u64,
    /// The outbox after the run.
    pub outbox: Summary,
    /// Test results and logs left to fetch by the next run.
    pub(crate) backlog: Backlog,
}

impl OnceReport {
    /// True when the poll worked and nothing is left to deliver (see [`exit::outbox_done`]).
    pub(crate) fn complete(&self) -> bool {
        self.poll.is_ok()
            && !matches!(self.agents, Some(Err(_)))
            && self.enrich.is_ok()
            && self.delivery.is_ok()
            && exit::outbox_done(&self.outbox)
    }

    /// True when the operator must fix credentials or configuration.
    pub(crate) fn needs_configuration(&self) -> bool {
        let config = SyncError::is_configuration;
        self.poll.as_ref().err().is_some_and(config)
            || matches!(&self.agents, Some(Err(e)) if config(e))
            || self.enrich.as_ref().err().is_some_and(config)
            || matches!(self.delivery, Err(DeliverError::Fatal(_)))
    }

    /// The one-line summary, what went wrong, and the exit code.
    pub(crate) fn ending(&self, dry_run: bool) -> Ending {
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
            "kitesync: {polled} ({} Buildkite {requests}); {}{}",
            self.requests,
            delivered(&self.delivery, &self.outbox, dry_run),
            left_queued(&self.backlog, "the next run")
        );
        if self.complete() {
            // Refused test suites only: reported, not a failure.
            return Ending::new(summary, explain(&self.outbox), Exit::Success);
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
            gave_up(&self.delivery),
        ];
        let notes = notes
            .into_iter()
            .flatten()
            .chain(explain(&self.outbox))
            .collect();
        Ending::new(summary, notes, Exit::failed(self.needs_configuration()))
    }
}

/// Polls once, delivers the builds, fetches test results and logs for at most `enrich_for`
/// (leaving the rest queued for the next run) and delivers what was fetched. Fails only if
/// the state database fails; poll and delivery problems are in the report.
pub async fn run_once(app: &App, enrich_for: Duration) -> Result<OnceReport, StoreError> {
    let poll = builds::poll(&app.client, &app.store, &app.config).await;
    let due = match (app.config.agents_enabled(), &app.config.schedule.agents) {
        (true, Some(schedule)) => {
            let last = app.store.call(|c| store::agents::last_polled(c)).await?;
            // Agents follow their own, slower schedule even when cron runs --once every minute.
            schedule.due(last, clock::now())
        }
        _ => false,
    };
    let org = &app.config.buildkite.organization;
    let agents = if due {
        Some(agents::poll(&app.client, &app.store, org).await)
    } else {
        None
    };
    // The builds first, and whatever earlier runs left pending whatever its backoff: their
    // test results and logs never hold them back.
    let (builds, outbox) = deliver_all(app, Pass::Pending).await?;
    let (enrich, delivery, outbox) = match builds {
        // BuildButler refuses everything: fetching more for it would only spend the budget.
        Err(e @ DeliverError::Fatal(_)) => (Ok(EnrichReport::default()), Err(e), outbox),
        builds => {
            let enrich = enrich_within(app, enrich_for).await;
            // BuildButler failed a whole chunk: what was fetched waits for the next run too.
            if matches!(&builds, Ok(b) if b.gave_up) {
                (enrich, builds, summary(app).await?)
            } else {
                let (rest, outbox) = deliver_all(app, Pass::Retry).await?;
                let delivery = match (builds, rest) {
                    (Ok(mut b), Ok(r)) => {
                        b.delivered += r.delivered;
                        b.retried += r.retried;
                        b.dead += r.dead;
                        b.gave_up = r.gave_up;
                        Ok(b)
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                (enrich, delivery, outbox)
            }
        }
    };
    Ok(OnceReport {
        poll,
        agents,
        enrich,
        delivery,
        requests: app.client.requests(),
        outbox,
        backlog: app.store.call(|c| store::enrich::backlog(c)).await?,
    })
}

/// Fetches test results and logs for at most `within`; the step under way when time is up
/// is abandoned and its attempt taken back.
async fn enrich_within(app: &App, within: Duration) -> Result<EnrichReport, SyncError> {
    if within.is_zero() {
        return Ok(EnrichReport::default());
    }
    let runner = Runner::new();
    let nobody = Notify::new();
    let timer = async {
        runner.stop_after(within).await;
        std::future::pending::<Infallible>().await
    };
    tokio::select! {
        r = enrich::run(app.parts(), runner.handle().stop, &nobody) => r,
        never = timer => match never {},
    }
}

/// What a `--backfill` run did and left.
#[derive(Debug)]
pub struct BackfillOutcome {
    /// The walk; `None` when it was interrupted (it resumes from its checkpoint next time).
    pub walk: Option<Result<BackfillReport, SyncError>>,
    /// True when Ctrl-C or SIGTERM stopped it (it resumes from its checkpoint next time).
    pub(crate) interrupted: bool,
    /// Fetching the rest of the test results and logs, after the walk.
    pub(crate) enrich: Option<Result<EnrichReport, SyncError>>,
    pub delivery: Result<DeliveryReport, DeliverError>,
    pub requests: u64,
    pub(crate) budget_waits: u64,
    pub outbox: Summary,
    /// Test results and logs left to fetch.
    pub(crate) backlog: Backlog,
}

/// Walks `[since, until)`, delivering as it goes and (with `enrich_range`) fetching the test
/// results and logs of what it queues with the pace the walk leaves; then fetches and
/// delivers what is left. Stops early, with the checkpoint saved, when `shutdown` resolves.
pub async fn run_backfill(
    app: App,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    enrich_range: bool,
    observer: &mut dyn Observer,
    shutdown: impl Future<Output = ()>,
) -> Result<BackfillOutcome, StoreError> {
    let app = Arc::new(app);
    // Delivery runs through the whole backfill; enrichment beside the walk, then after it.
    let delivery = Runner::new();
    let wakes = delivery.wakes.clone();
    let queued = Arc::clone(&wakes.delivery);
    let delivering = delivery.spawn(
        "delivery loop",
        deliver_loop(
            Arc::clone(&app),
            Arc::clone(&queued),
            delivery.handle(),
            OnFatal::Stop,
        ),
    );
    let walking = Runner::new();
    let enriching = walking.spawn(
        "enrichment",
        enrich::run_loop(
            Arc::clone(&app),
            Arc::clone(&wakes.enrich),
            Arc::clone(&queued),
            walking.handle().stop,
        ),
    );
    let mut observer = Notifying {
        inner: observer,
        wakes,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    // Stops at Ctrl-C or SIGTERM, or when BuildButler refuses everything: walking on would
    // only spend the organization's budget.
    let walk = tokio::select! {
        r = backfill::run(app.parts(), since, until, enrich_range, &mut observer) => Some(r),
        () = &mut shutdown => None,
        () = delivery.fatal_reported() => None,
    };
    walking.stop(Stop::Now);
    enriching.finish(None).await;
    let mut interrupted = walk.is_none() && !delivery.has_fatal();
    // After the walk, the rest of the test results and logs, delivered as they come.
    let mut enriched = None;
    if walk.is_some() && !delivery.has_fatal() {
        let rest_runner = Runner::new();
        let stop = |how| rest_runner.stop(how);
        let mut rest = std::pin::pin!(enrich::run(app.parts(), rest_runner.handle().stop, &queued));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        enriched = Some(loop {
            tokio::select! {
                r = &mut rest => break r,
                _ = tick.tick() => {
                    if let Ok(backlog) = backlog(&app).await {
                        observer.inner.enriching(&backlog, app.client.requests());
                    }
                }
                () = &mut shutdown => {
                    interrupted = true;
                    stop(Stop::Now);
                    break rest.await;
                }
                () = delivery.fatal_reported() => {
                    stop(Stop::Now);
                    break rest.await;
                }
            }
        });
    }
    // After the walk, let the pass under way finish (abandoning it would re-send its
    // deliveries); after an interruption, stop at once.
    delivery.stop(if walk.is_some() && !interrupted {
        Stop::AfterThisPass
    } else {
        Stop::Now
    });
    let delivered_while_walking = delivering.finish(None).await.unwrap_or(0) as usize;
    // Only the delivery loop reports a fatal error here, and only BuildButler's refusals.
    let refused = match delivery.take_fatal() {
        Some(Fatal::BuildButler(e)) => Some(e),
        Some(other @ Fatal::Buildkite(_)) => {
            tracing::error!("stopping: {other}");
            None
        }
        None => None,
    };
    let (delivery, outbox) = match (&walk, refused) {
        (_, Some(refused)) => (Err(DeliverError::Fatal(refused)), summary(&app).await?),
        (Some(_), None) if !interrupted => {
            // Ctrl-C still works while the rest is delivered.
            let finished = tokio::select! {
                r = deliver_all(&app, Pass::Pending) => Some(r?),
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
        _ => (Ok(DeliveryReport::default()), summary(&app).await?),
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
        backlog: backlog(&app).await?,
    })
}

/// Passes progress on, and wakes the delivery loop and the enrichment task after each page.
struct Notifying<'a> {
    inner: &'a mut dyn Observer,
    wakes: Wakes,
}

impl Observer for Notifying<'_> {
    fn page(&mut self, progress: &Progress<'_>) {
        self.wakes.builds_queued();
        self.inner.page(progress);
    }

    fn estimate(&mut self, estimate: &Estimate) {
        self.inner.estimate(estimate);
    }

    fn enriching(&mut self, backlog: &Backlog, requests: u64) {
        self.inner.enriching(backlog, requests);
    }
}

async fn backlog(app: &App) -> Result<Backlog, StoreError> {
    app.store.call(|c| store::enrich::backlog(c)).await
}

async fn summary(app: &App) -> Result<Summary, StoreError> {
    app.store.call(|c| outbox::summary(c)).await
}

impl BackfillOutcome {
    /// The summary, what went wrong, and the exit code.
    pub(crate) fn ending(&self, dry_run: bool) -> Ending {
        let tail = format!(
            "{} Buildkite {}, {} budget {}; {}{}",
            self.requests,
            plural(self.requests, "request"),
            self.budget_waits,
            plural(self.budget_waits, "wait"),
            delivered(&self.delivery, &self.outbox, dry_run),
            left_queued(&self.backlog, "the daemon or the next run")
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
            (_, delivery) if !exit::outbox_done(&self.outbox) => {
                let notes = gave_up(delivery).into_iter().chain(explain(&self.outbox));
                (notes.collect(), Exit::Incomplete)
            }
            // Refused test suites only: reported, not a failure.
            _ => (explain(&self.outbox), Exit::Success),
        };
        Ending::new(summary, notes, exit)
    }
}

/// "delivered N; outbox: P pending, D dead (T refused test suites)".
fn delivered(
    delivery: &Result<DeliveryReport, DeliverError>,
    outbox: &Summary,
    dry: bool,
) -> String {
    let n = delivery.as_ref().map_or(0, |d| d.delivered);
    let verb = if dry { "would deliver" } else { "delivered" };
    let (pending, dead) = (outbox.pending, outbox.dead);
    let suites = match outbox.refused_tests {
        0 => String::new(),
        t => format!(" ({t} refused test {})", plural(t, "suite")),
    };
    format!("{verb} {n}; outbox: {pending} pending, {dead} dead{suites}")
}

/// "; test results and logs of N builds left queued for `whom` (M files listed)", or
/// nothing when none are left.
fn left_queued(backlog: &Backlog, whom: &str) -> String {
    match (backlog.builds, backlog.files) {
        (0, _) => String::new(),
        (builds, files) => format!(
            "; test results and logs of {builds} {} left queued for {whom} ({files} JUnit {} listed)",
            plural(builds, "build"),
            plural(files, "file")
        ),
    }
}

/// Why a one-shot delivery stopped early, if it did.
fn gave_up(delivery: &Result<DeliveryReport, DeliverError>) -> Option<String> {
    delivery.as_ref().is_ok_and(|d| d.gave_up).then(|| {
        format!(
            "delivery stopped early: BuildButler failed {GIVE_UP_ROUNDS} rounds of deliveries \
             in a row ([buildbutler] concurrency each), so the rest waits for the next run"
        )
    })
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
    if outbox.unrecorded_tests > 0 {
        let n = outbox.unrecorded_tests;
        notes.push(format!(
            "{n} dead test {} from before kitesync recorded why BuildButler refused {} \
             {} not fail the run, as before the upgrade (`kitesync status` marks {1}; \
             `kitesync replay --dead` sends {1} again)",
            plural(n, "suite"),
            if n == 1 { "it" } else { "them" },
            if n == 1 { "does" } else { "do" }
        ));
    }
    notes
}

/// `word`, or its plural when `n` is not 1.
pub(crate) fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
