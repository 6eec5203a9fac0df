//! The service: polls on the `[schedule] builds` cron (tokio-cron-scheduler), delivers
//! continuously in between, and fetches test results and logs in a task of their own (never
//! on the poll's path), until SIGTERM or SIGINT.
//!
//! A poll never overlaps itself: a tick that comes while the previous poll still runs is
//! skipped. On shutdown the poll and the deliveries in flight are dropped at their next
//! await; every SQLite transaction is short and runs to its end on the blocking pool, so the
//! state is always either before or after a page. Outages are logged when they start, every
//! ten minutes while they last, and when they end — not on every attempt. A refusal from
//! Buildkite stops the daemon only if it never worked with this organization and token;
//! after that it is ridden out ([`crate::run::ride_out`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::app::App;
use crate::buildkite::SourceError;
use crate::delivery::deliver::deliver_loop;
use crate::run::outage::Outage;
use crate::run::ride_out::{RideOut, Verdict};
use crate::run::runner::{Fatal, Handle, OnFatal, Runner, Stop, Wakes};
use crate::run::schedule::Schedule;
use crate::sync::{agents, builds, enrich, SyncError};
use crate::telemetry::metrics::Activity;
use crate::telemetry::{gauges, metrics_server};

/// Why the daemon stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The operator must act (token, scope, organization, API key, URL); retrying is futile.
    #[error("stopping: {0}")]
    Configuration(Fatal),
    #[error("{0}")]
    Setup(String),
}

/// Runs until `shutdown` resolves (then returns `Ok`) or a configuration error makes further
/// work pointless.
pub(crate) async fn run(app: App, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    // A free-pace --backfill or --once beside the daemon leaves it its pace.
    let _mark = app.store.daemon_mark().inspect_err(|e| {
        tracing::warn!("{e}: a --pace free run beside this daemon may slow its polls")
    });
    let app = Arc::new(app);
    let runner = Runner::new();
    let wakes = runner.wakes.clone();
    let poller = Arc::new(Poller {
        app: Arc::clone(&app),
        running: Mutex::new(PollHealth {
            outage: Outage::new("Buildkite poll"),
            ride_out: RideOut::default(),
        }),
        wakes: wakes.clone(),
        run: runner.handle(),
        summarized: std::sync::atomic::AtomicBool::new(false),
    });

    let mut scheduler = JobScheduler::new()
        .await
        .map_err(|e| DaemonError::Setup(format!("cannot start the scheduler: {e}")))?;
    let tick = Arc::clone(&poller);
    add_job(&scheduler, &app.config.schedule.builds, "poll", move || {
        let poller = Arc::clone(&tick);
        async move { poller.tick().await }
    })
    .await?;
    if let (true, Some(schedule)) = (app.config.agents_enabled(), &app.config.schedule.agents) {
        let agents = Arc::new(AgentPoller {
            app: Arc::clone(&app),
            queued: Arc::clone(&wakes.delivery),
            running: Mutex::new(Outage::new("Buildkite agent poll")),
            stop: runner.handle().stop,
            off: std::sync::atomic::AtomicBool::new(false),
        });
        add_job(&scheduler, schedule, "agent poll", move || {
            let agents = Arc::clone(&agents);
            async move { agents.tick().await }
        })
        .await?;
    }
    let delivery = runner.spawn(
        "delivery loop",
        deliver_loop(
            Arc::clone(&app),
            Arc::clone(&wakes.delivery),
            runner.handle(),
            OnFatal::StopIfNeverDelivered,
        ),
    );
    let enriching = runner.spawn(
        "enrichment",
        enrich::run_loop(
            Arc::clone(&app),
            Arc::clone(&wakes.enrich),
            Arc::clone(&wakes.delivery),
            runner.handle().stop,
        ),
    );
    // Poll at once on start, then on the schedule.
    runner.spawn("first poll", {
        let poller = Arc::clone(&poller);
        async move { poller.tick().await }
    });
    scheduler
        .start()
        .await
        .map_err(|e| DaemonError::Setup(format!("cannot start the scheduler: {e}")))?;
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let watchdog = runner.spawn("watchdog", watchdog());
    if app.config.metrics.enabled {
        serve_metrics(Arc::clone(&app), runner.handle().stop).await?;
    }
    tracing::info!(
        schedule = app.config.schedule.builds.as_str(),
        "kitesync started: polling {} and delivering to {}",
        app.config.buildkite.organization,
        crate::config::redacted(&app.config.buildbutler.url)
    );

    let outcome = runner.until(shutdown).await;
    if outcome.is_ok() {
        tracing::info!("stopping: finishing the current transaction, sending nothing new");
    }
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    watchdog.abort();
    runner.stop(Stop::Now);
    let _ = scheduler.shutdown().await;
    delivery.finish(None).await;
    // The step under way takes its attempt back (it was stopped, not lost).
    enriching.finish(Some(STOP_GRACE)).await;
    // A poll in progress notices the stop at its next await; wait for it to let go.
    let _ = tokio::time::timeout(STOP_GRACE, poller.running.lock()).await;
    outcome.map_err(DaemonError::Configuration)
}

/// How long the daemon waits for enrichment and a poll under way to let go when it stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `tick` on `schedule` (a [`Schedule`] that passed validation).
async fn add_job<F, T>(
    scheduler: &JobScheduler,
    schedule: &Schedule,
    what: &str,
    tick: T,
) -> Result<(), DaemonError>
where
    T: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let job = Job::new_async(schedule.as_str(), move |_, _| Box::pin(tick()));
    let added = match job {
        Ok(job) => scheduler.add(job).await.map(drop),
        Err(e) => Err(e),
    };
    added.map_err(|e| DaemonError::Setup(format!("cannot schedule the {what}: {e}")))
}

/// One poll at a time, with its health.
struct Poller {
    app: Arc<App>,
    running: Mutex<PollHealth>,
    /// Wakes delivery and enrichment when a poll queued builds.
    wakes: Wakes,
    /// The stop to follow, and where a refusal that stops the daemon goes.
    run: Handle,
    /// Set once the first successful poll has been summarized.
    summarized: std::sync::atomic::AtomicBool,
}

/// How the polls are doing: outages of any kind, and a refusal being ridden out.
struct PollHealth {
    outage: Outage,
    ride_out: RideOut,
}

impl Poller {
    /// A scheduled tick: polls unless a poll is already running, the daemon is stopping, or
    /// a refused poll's next try is not due.
    async fn tick(&self) {
        let Ok(mut guard) = self.running.try_lock() else {
            tracing::debug!("the previous poll is still running: skipping this tick");
            return;
        };
        let PollHealth {
            outage: health,
            ride_out,
        } = &mut *guard;
        if ride_out.waiting() {
            tracing::debug!("Buildkite refused the last poll: waiting for the next try");
            return;
        }
        let mut stop = self.run.stop.clone();
        if *stop.borrow() != Stop::No {
            return;
        }
        let app = &self.app;
        let poll = builds::poll(&app.client, &app.store, &app.config);
        let started = Instant::now();
        let result = tokio::select! {
            r = poll => r,
            _ = stop.wait_for(|s| *s == Stop::Now) => return,
        };
        let metrics = &app.metrics;
        metrics
            .poll_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(report) => {
                metrics.builds_polled.inc_by(report.finished as u64);
                metrics.builds_queued.inc_by(report.queued as u64);
                for (field, n) in &report.ignored {
                    metrics.fields_ignored(field.as_str(), *n);
                }
                metrics.succeeded(Activity::Poll);
                ride_out.accepted(app);
                health.ok();
                let requests = app.client.requests();
                let (pages, queued) = (report.pages, report.queued);
                tracing::debug!(pages, queued, requests, "poll done");
                if queued > 0 {
                    tracing::info!("{queued} newly finished builds queued");
                    self.wakes.builds_queued();
                }
                if !self
                    .summarized
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tokio::spawn(first_cycle(Arc::clone(app), report.clone(), stop.clone()));
                }
            }
            Err(e) => {
                // Pages recorded before the failure may have queued builds: a delivery pass
                // with nothing due costs one query, a missed wake-up up to `IDLE_WAKE`.
                self.wakes.builds_queued();
                let text = e.to_string();
                metrics.failed(Activity::Poll, &text);
                if !e.is_configuration() {
                    health.failed(&text);
                } else if ride_out.refused(app, &e).await == Verdict::Stop {
                    self.run.fatal(Fatal::Buildkite(e));
                }
            }
        }
    }
}

/// How long the first-cycle summary waits for the first poll's builds to be delivered.
const FIRST_CYCLE_WAIT: Duration = Duration::from_secs(120);

/// Logs one line an operator can act on once the first poll's builds are delivered (or
/// [`FIRST_CYCLE_WAIT`] passed): organization, pipelines, builds delivered, where the cursor
/// starts, the agent sync and test results on or off, the budget left.
async fn first_cycle(app: Arc<App>, poll: builds::PollReport, mut stop: watch::Receiver<Stop>) {
    let metrics = &app.metrics;
    let delivered = || usize::try_from(metrics.builds_delivered.get()).unwrap_or(usize::MAX);
    let waited = tokio::time::timeout(FIRST_CYCLE_WAIT, async {
        while delivered() < poll.queued {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::select! {
        _ = waited => {}
        _ = stop.wait_for(|s| *s != Stop::No) => return,
    }
    let config = &app.config;
    let mut names: Vec<&str> = poll.pipelines.iter().map(String::as_str).take(10).collect();
    let more = poll.pipelines.len().saturating_sub(names.len());
    if more > 0 {
        names.push("…");
    }
    let pipelines = match poll.pipelines.len() {
        0 => "no pipeline with builds in the window".to_string(),
        n => format!("{n} pipelines with builds ({})", names.join(", ")),
    };
    let on = |b: bool| if b { "on" } else { "off" };
    let agents = match (&config.schedule.agents, config.agents_enabled()) {
        (Some(s), true) => format!("agent sync on ({})", s.as_str()),
        _ => "agent sync off".to_string(),
    };
    let seen = app.client.budget().last_seen();
    let left = |s: Option<crate::buildkite::budget::Scope>| {
        s.map_or("not reported".to_string(), |s| s.to_string())
    };
    let since = poll.since.format("%Y-%m-%d %H:%M:%S UTC");
    let cursor = if poll.first {
        format!("a new state: the cursor starts at {since} (builds finished earlier need kitesync --backfill --since DATE)")
    } else {
        format!("resumed from the cursor at {since}")
    };
    tracing::info!(
        "first cycle: organization {org}, {pipelines}; {delivered} of {queued} builds delivered; \
         {cursor}; {agents}; test results {tests}; logs {logs}; Buildkite budget left: \
         organization {by_org}, token owner {by_user}",
        org = config.buildkite.organization,
        delivered = delivered().min(poll.queued),
        queued = poll.queued,
        tests = on(config.tests_enabled()),
        logs = on(config.logs_enabled()),
        by_org = left(seen.org),
        by_user = left(seen.user),
    );
}

/// The agent poll, on its own schedule. A token without `read_agents` (Buildkite's own 403
/// naming the scope) turns it off (with one error) rather than stopping the build sync; any
/// other refusal is an outage like the rest, tried again on the schedule.
struct AgentPoller {
    app: Arc<App>,
    queued: Arc<tokio::sync::Notify>,
    running: Mutex<Outage>,
    stop: watch::Receiver<Stop>,
    off: std::sync::atomic::AtomicBool,
}

impl AgentPoller {
    async fn tick(&self) {
        use std::sync::atomic::Ordering;
        let Ok(mut health) = self.running.try_lock() else {
            return;
        };
        let mut stop = self.stop.clone();
        if *stop.borrow() != Stop::No || self.off.load(Ordering::Relaxed) {
            return;
        }
        let app = &self.app;
        let poll = agents::poll(&app.client, &app.store, &app.config.buildkite.organization);
        let result = tokio::select! {
            r = poll => r,
            _ = stop.wait_for(|s| *s == Stop::Now) => return,
        };
        match result {
            Ok(report) => {
                health.ok();
                if report.changed {
                    tracing::info!(
                        "agent fleet changed ({} connected): snapshot queued",
                        report.listed
                    );
                    self.queued.notify_one();
                }
            }
            Err(e @ SyncError::Source(SourceError::Forbidden { .. })) => {
                tracing::error!("agent sync is off until kitesync restarts: {e} (or set [schedule] agents = \"\")");
                self.off.store(true, Ordering::Relaxed);
            }
            Err(e) => health.failed(&e.to_string()),
        }
    }
}

/// Serves `/metrics` and `/healthz` on `[metrics] listen`, and keeps the gauges that come
/// from the state database fresh, until the daemon stops.
async fn serve_metrics(app: Arc<App>, stop: watch::Receiver<Stop>) -> Result<(), DaemonError> {
    let stopped = |mut stop: watch::Receiver<Stop>| async move {
        let _ = stop.wait_for(|s| *s != Stop::No).await;
    };
    let listen = &app.config.metrics.listen;
    // Healthy while polls and deliveries succeed within three poll intervals.
    let interval = app.config.schedule.builds.interval();
    let allowed = (interval * 3).max(Duration::from_secs(5));
    let gauge = |secs: u64| i64::try_from(secs).unwrap_or(i64::MAX);
    app.metrics.poll_interval.set(gauge(interval.as_secs()));
    app.metrics.started.set(crate::clock::now().timestamp());
    let metrics = Arc::clone(&app.metrics);
    let bound = metrics_server::start(listen, metrics, allowed, stopped(stop.clone()))
        .await
        .map_err(|e| {
            DaemonError::Setup(format!("[metrics] listen: cannot listen on {listen}: {e}"))
        })?;
    tokio::spawn(async move {
        gauges::keep_fresh(app.store.clone(), &app.metrics, stopped(stop)).await;
    });
    tracing::info!("metrics on http://{bound}/metrics, health on http://{bound}/healthz");
    Ok(())
}

/// Tells systemd (when started as `Type=notify`) how the service is doing; a no-op otherwise.
fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("cannot notify systemd: {e}");
    }
}

/// Pings systemd's watchdog at half its interval, while the runtime is alive.
async fn watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec < 2 {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        every.tick().await;
        notify_systemd(&[sd_notify::NotifyState::Watchdog]);
    }
}
