//! The service: polls on the `[schedule] builds` cron (tokio-cron-scheduler), delivers
//! continuously in between, and fetches test results and logs in a task of their own (never
//! on the poll's path), until SIGTERM or SIGINT.
//!
//! A poll never overlaps itself: a tick that comes while the previous poll still runs is
//! skipped. On shutdown the poll and the deliveries in flight are dropped at their next
//! await; every SQLite transaction is short and runs to its end on the blocking pool, so the
//! state is always either before or after a page. Outages are logged when they start, every
//! ten minutes while they last, and when they end — not on every attempt.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex, Notify};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::app::App;
use crate::deliver::{deliver_loop, OnFatal, Stop};
use crate::metrics::{Activity, StateLabels};
use crate::outage::Outage;
use crate::schedule::Schedule;
use crate::store::{enrich as enrich_queue, now_ms, outbox};
use crate::sync::{agents, builds, enrich};

/// Why the daemon stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The operator must act (token, scope, organization, API key, URL); retrying is futile.
    #[error("stopping: {0}")]
    Configuration(String),
    #[error("{0}")]
    Setup(String),
}

/// Runs until `shutdown` resolves (then returns `Ok`) or a configuration error makes further
/// work pointless.
pub async fn run(app: App, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let app = Arc::new(app);
    let (stop_tx, stop_rx) = watch::channel(Stop::No);
    let (fatal_tx, mut fatal_rx) = watch::channel(None::<String>);
    let queued = Arc::new(Notify::new());
    let enrich_wake = Arc::new(Notify::new());
    let poller = Arc::new(Poller {
        app: Arc::clone(&app),
        running: Mutex::new(Outage::new("Buildkite poll")),
        queued: Arc::clone(&queued),
        enrich_wake: Arc::clone(&enrich_wake),
        stop: stop_rx.clone(),
        fatal: fatal_tx.clone(),
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
            queued: Arc::clone(&queued),
            running: Mutex::new(Outage::new("Buildkite agent poll")),
            stop: stop_rx.clone(),
            off: std::sync::atomic::AtomicBool::new(false),
        });
        add_job(&scheduler, schedule, "agent poll", move || {
            let agents = Arc::clone(&agents);
            async move { agents.tick().await }
        })
        .await?;
    }
    let delivery = tokio::spawn(deliver_loop(
        Arc::clone(&app),
        Arc::clone(&queued),
        stop_rx.clone(),
        fatal_tx,
        OnFatal::StopIfNeverDelivered,
    ));
    let enriching = tokio::spawn(enrich::run_loop(
        Arc::clone(&app),
        enrich_wake,
        Arc::clone(&queued),
        stop_rx.clone(),
    ));
    // Poll at once on start, then on the schedule.
    tokio::spawn({
        let poller = Arc::clone(&poller);
        async move { poller.tick().await }
    });
    scheduler
        .start()
        .await
        .map_err(|e| DaemonError::Setup(format!("cannot start the scheduler: {e}")))?;
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let watchdog = tokio::spawn(watchdog());
    if app.config.metrics.enabled {
        serve_metrics(Arc::clone(&app), stop_rx.clone()).await?;
    }
    tracing::info!(
        schedule = app.config.schedule.builds.as_str(),
        "kitesync started: polling {} and delivering to {}",
        app.config.buildkite.organization,
        crate::config::redacted(&app.config.buildbutler.url)
    );

    let outcome = tokio::select! {
        () = shutdown => {
            tracing::info!("stopping: finishing the current transaction, sending nothing new");
            Ok(())
        }
        why = fatal_rx.wait_for(Option::is_some) => {
            let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
            Err(DaemonError::Configuration(why))
        }
    };
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    watchdog.abort();
    let _ = stop_tx.send(Stop::Now);
    let _ = scheduler.shutdown().await;
    let _ = delivery.await;
    // The step under way takes its attempt back (it was stopped, not lost).
    let _ = tokio::time::timeout(Duration::from_secs(5), enriching).await;
    // A poll in progress notices the stop at its next await; wait for it to let go.
    let _ = tokio::time::timeout(Duration::from_secs(5), poller.running.lock()).await;
    outcome
}

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
    running: Mutex<Outage>,
    queued: Arc<Notify>,
    /// Wakes the enrichment task when a poll queued builds.
    enrich_wake: Arc<Notify>,
    stop: watch::Receiver<Stop>,
    fatal: watch::Sender<Option<String>>,
}

impl Poller {
    /// A scheduled tick: polls unless a poll is already running or the daemon is stopping.
    async fn tick(&self) {
        let Ok(mut health) = self.running.try_lock() else {
            tracing::debug!("the previous poll is still running: skipping this tick");
            return;
        };
        let mut stop = self.stop.clone();
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
                metrics.succeeded(Activity::Poll);
                health.ok();
                let requests = app.client.requests();
                let (pages, queued) = (report.pages, report.queued);
                tracing::debug!(pages, queued, requests, "poll done");
                if queued > 0 {
                    tracing::info!("{queued} newly finished builds queued");
                    self.queued.notify_one();
                    self.enrich_wake.notify_one();
                }
            }
            Err(e) => {
                let text = e.to_string();
                metrics.failed(Activity::Poll, &text);
                if e.is_configuration() {
                    let _ = self.fatal.send(Some(text));
                } else {
                    health.failed(&text);
                }
            }
        }
    }
}

/// The agent poll, on its own schedule. A token without `read_agents` turns it off (with
/// one error) rather than stopping the build sync.
struct AgentPoller {
    app: Arc<App>,
    queued: Arc<Notify>,
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
            Err(e) if e.is_configuration() => {
                tracing::error!("agent sync is off until kitesync restarts: {e} (or set [schedule] agents = \"\")");
                self.off.store(true, Ordering::Relaxed);
            }
            Err(e) => health.failed(&e.to_string()),
        }
    }
}

/// Serves `/metrics` and `/healthz` on `[metrics] listen` until the daemon stops.
async fn serve_metrics(app: Arc<App>, mut stop: watch::Receiver<Stop>) -> Result<(), DaemonError> {
    use axum::http::{header::CONTENT_TYPE, StatusCode};
    let listen = &app.config.metrics.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        DaemonError::Setup(format!("[metrics] listen: cannot listen on {listen}: {e}"))
    })?;
    // The address actually bound: with port 0 the system picks a free port.
    let bound = listener
        .local_addr()
        .map_or(listen.clone(), |a| a.to_string());
    tracing::info!("metrics on http://{bound}/metrics, health on http://{bound}/healthz");
    // Healthy while polls and deliveries succeed within three poll intervals.
    let allowed = (app.config.schedule.builds.interval() * 3).max(Duration::from_secs(5));
    let started = Instant::now();
    let page = Arc::clone(&app);
    let metrics = move || {
        let app = Arc::clone(&page);
        async move {
            outbox_gauges(&app).await;
            enrich_gauges(&app).await;
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            ([(CONTENT_TYPE, kind)], app.metrics.encode())
        }
    };
    let health = move || {
        let app = Arc::clone(&app);
        async move {
            let pending = outbox_gauges(&app).await;
            match app.metrics.unhealthy(allowed, started.elapsed(), pending) {
                None => (StatusCode::OK, "ok\n".to_string()),
                Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            }
        }
    };
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(health));
    let stopped = async move {
        let _ = stop.wait_for(|s| *s != Stop::No).await;
    };
    tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .into_future(),
    );
    Ok(())
}

/// Refreshes the outbox gauges from the store; the number of pending items.
async fn outbox_gauges(app: &App) -> i64 {
    let summary = app
        .store
        .call(|c| outbox::summary(c))
        .await
        .unwrap_or_default();
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for (state, n) in [("pending", summary.pending), ("dead", summary.dead)] {
        let labels = StateLabels {
            state: state.into(),
        };
        app.metrics.outbox.get_or_create(&labels).set(gauge(n));
    }
    gauge(summary.pending)
}

/// Refreshes the enrichment backlog gauges from the store.
async fn enrich_gauges(app: &App) {
    let backlog = app.store.call(|c| enrich_queue::backlog(c)).await;
    let backlog = backlog.unwrap_or_default();
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let m = &app.metrics;
    m.enrich_backlog_builds.set(gauge(backlog.builds));
    m.enrich_backlog_files.set(gauge(backlog.files));
    let age = backlog
        .oldest_queued_at
        .map_or(0, |at| (now_ms() - at).max(0) / 1000);
    m.enrich_oldest.set(age);
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
