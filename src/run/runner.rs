//! The task runner every mode is a configuration of: the daemon, `--once` and `--backfill`
//! spawn their background tasks (polls, delivery, enrichment) here, by name. It owns how they
//! stop ([`Stop`]), the first [`Fatal`] error any of them reports, and the wake-ups between
//! them ([`Wakes`]); [`Task::finish`] stops them and waits for each, within a grace period.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::butler::SendError;
use crate::sync::SyncError;

/// When the background tasks should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep going.
    No,
    /// Finish the delivery pass under way, then stop (nothing in flight is abandoned).
    AfterThisPass,
    /// Stop at the next await: no new requests.
    Now,
}

/// What the delivery loop does when BuildButler refuses everything (API key, URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFatal {
    /// Report it as [`Fatal`] and stop.
    Stop,
    /// Stop only if nothing was delivered yet (a mistake in the config); later, ride it out
    /// as an outage (a proxy answering 404 during a redeploy, say).
    StopIfNeverDelivered,
}

/// Why a run must stop: the operator must act, retrying is futile.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// Buildkite refuses the token, its scopes or the organization, and never worked with
    /// them.
    #[error("{0}")]
    Buildkite(SyncError),
    /// BuildButler refuses everything (API key, URL).
    #[error("{0}")]
    BuildButler(SendError),
}

/// The wake-ups between tasks: what a poll or a walk queued wakes the delivery loop and the
/// enrichment task; what enrichment or the agent poll queued wakes the delivery loop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wakes {
    pub(crate) delivery: Arc<Notify>,
    pub(crate) enrich: Arc<Notify>,
}

impl Wakes {
    /// Builds were queued: deliver them, and fetch their test results and logs.
    pub(crate) fn builds_queued(&self) {
        self.delivery.notify_one();
        self.enrich.notify_one();
    }
}

/// What a task gets to follow the run: when to stop, where to report a fatal error.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    pub(crate) stop: watch::Receiver<Stop>,
    fatal: Arc<FatalSlot>,
}

impl Handle {
    /// Reports why the run must stop; the first report is kept, later ones logged.
    pub(crate) fn fatal(&self, why: Fatal) {
        self.fatal.report(why);
    }
}

/// The first fatal error reported.
#[derive(Debug, Default)]
struct FatalSlot {
    first: Mutex<Option<Fatal>>,
    reported: Notify,
}

impl FatalSlot {
    fn report(&self, why: Fatal) {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        match &*first {
            Some(_) => tracing::debug!("also fatal: {why}"),
            None => {
                *first = Some(why);
                self.reported.notify_waiters();
            }
        }
    }

    fn is_set(&self) -> bool {
        self.first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn take(&self) -> Option<Fatal> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    async fn wait(&self) {
        loop {
            let reported = self.reported.notified();
            if self.is_set() {
                return;
            }
            reported.await;
        }
    }
}

/// A named task, spawned by [`Runner::spawn`].
#[derive(Debug)]
pub(crate) struct Task<T> {
    name: &'static str,
    handle: JoinHandle<T>,
}

impl<T> Task<T> {
    /// Ends the task at its next await.
    pub(crate) fn abort(self) {
        self.handle.abort();
    }

    /// Waits for the task's end for at most `grace` (`None`: as long as it takes); aborts it
    /// when the grace runs out. `None` when it did not end by itself (or panicked).
    pub(crate) async fn finish(mut self, grace: Option<Duration>) -> Option<T> {
        let ended = match grace {
            Some(grace) => match tokio::time::timeout(grace, &mut self.handle).await {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::warn!(
                        task = self.name,
                        "the {} did not stop within {}s: abandoned",
                        self.name,
                        grace.as_secs()
                    );
                    self.handle.abort();
                    return None;
                }
            },
            None => (&mut self.handle).await,
        };
        ended
            .inspect_err(|e| tracing::error!(task = self.name, "the {} failed: {e}", self.name))
            .ok()
    }
}

/// Owns a run's background tasks: their stop, their fatal error and their wake-ups.
#[derive(Debug)]
pub(crate) struct Runner {
    stop: watch::Sender<Stop>,
    handle: Handle,
    pub(crate) wakes: Wakes,
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new()
    }
}

impl Runner {
    /// A runner with nothing spawned yet.
    pub(crate) fn new() -> Runner {
        let (stop, stopped) = watch::channel(Stop::No);
        Runner {
            stop,
            handle: Handle {
                stop: stopped,
                fatal: Arc::default(),
            },
            wakes: Wakes::default(),
        }
    }

    /// What a task follows.
    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Spawns `task` under `name` (for the logs).
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        name: &'static str,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Task<T> {
        Task {
            name,
            handle: tokio::spawn(task),
        }
    }

    /// Asks every task to stop.
    pub(crate) fn stop(&self, how: Stop) {
        // Nobody may still listen; that is fine.
        let _ = self.stop.send(how);
    }

    /// Asks every task to stop [`Stop::Now`] after `within` (`--once`'s enrichment).
    pub(crate) async fn stop_after(&self, within: Duration) {
        tokio::time::sleep(within).await;
        self.stop(Stop::Now);
    }

    /// Waits until `shutdown` resolves (`Ok`) or a task reports a fatal error (taken).
    pub(crate) async fn until(&self, shutdown: impl Future<Output = ()>) -> Result<(), Fatal> {
        tokio::select! {
            () = shutdown => Ok(()),
            () = self.handle.fatal.wait() => self.take_fatal().map_or(Ok(()), Err),
        }
    }

    /// Waits until a task reports a fatal error (never, if none does).
    pub(crate) async fn fatal_reported(&self) {
        self.handle.fatal.wait().await;
    }

    /// True when a task reported a fatal error.
    pub(crate) fn has_fatal(&self) -> bool {
        self.handle.fatal.is_set()
    }

    /// The fatal error reported, if any.
    pub(crate) fn take_fatal(&self) -> Option<Fatal> {
        self.handle.fatal.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Fatal {
        Fatal::BuildButler(SendError::Fatal(crate::butler::client::Fatal::Header))
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_error_ends_the_wait_before_the_shutdown() {
        let runner = Runner::new();
        let handle = runner.handle();
        runner.spawn("delivery", async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.fatal(refused());
        });
        let shutdown = tokio::time::sleep(Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        let ended = runner.until(shutdown).await;
        assert!(matches!(ended, Err(Fatal::BuildButler(_))), "{ended:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_shutdown_ends_the_wait_when_nothing_is_fatal() {
        let runner = Runner::new();
        let shutdown = tokio::time::sleep(Duration::from_secs(60));
        assert!(runner.until(shutdown).await.is_ok());
        assert!(!runner.has_fatal());
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_fatal_error_is_kept() {
        let runner = Runner::new();
        let handle = runner.handle();
        handle.fatal(refused());
        handle.fatal(Fatal::BuildButler(SendError::NoRoute(
            crate::butler::client::NoRoute::NotFound {
                path: "/ingest/builds".into(),
            },
        )));
        // Reported before anyone waited: the wait still ends at once.
        let ended = runner.until(std::future::pending()).await;
        assert!(
            matches!(ended, Err(Fatal::BuildButler(SendError::Fatal(_)))),
            "{ended:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_stops_when_asked_ends_within_its_grace() {
        let runner = Runner::new();
        let mut stop = runner.handle().stop;
        let task = runner.spawn("enrichment", async move {
            let _ = stop.wait_for(|s| *s == Stop::Now).await;
            7
        });
        runner.stop(Stop::AfterThisPass);
        tokio::time::sleep(Duration::from_secs(1)).await;
        runner.stop(Stop::Now);
        assert_eq!(task.finish(Some(Duration::from_secs(5))).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_stop_is_abandoned_after_its_grace() {
        let runner = Runner::new();
        let task = runner.spawn("poll", std::future::pending::<()>());
        runner.stop(Stop::Now);
        let started = tokio::time::Instant::now();
        assert_eq!(task.finish(Some(Duration::from_secs(5))).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_after_stops_every_task_when_the_time_is_up() {
        let runner = Runner::new();
        let mut stop = runner.handle().stop;
        let task = runner.spawn("enrichment", async move {
            let _ = stop.wait_for(|s| *s == Stop::Now).await;
            tokio::time::Instant::now()
        });
        let started = tokio::time::Instant::now();
        runner.stop_after(Duration::from_secs(120)).await;
        let stopped = task.finish(None).await.expect("ended");
        assert_eq!(stopped - started, Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn queued_builds_wake_delivery_and_enrichment() {
        let wakes = Wakes::default();
        wakes.builds_queued();
        // A permit is kept for a waiter that comes later.
        tokio::time::timeout(Duration::from_secs(1), wakes.delivery.notified())
            .await
            .expect("delivery woken");
        tokio::time::timeout(Duration::from_secs(1), wakes.enrich.notified())
            .await
            .expect("enrichment woken");
    }
}
