//! Fetches what goes with a finished build besides the build itself: test results and
//! logs, from the store's enrich queue, never on the build poll's path.
//!
//! One build at a time (by one process at a time: the store's enrichment lock), oldest first,
//! in steps saved one by one: the artifact listing, each JUnit file, the logs. Every attempt
//! is recorded before it is made. A step that fails is retried later with backoff; a listing
//! or logs that fail [`MAX_ATTEMPTS`] times are given up, and so is a file that failed
//! [`MAX_FILE_FAILURES`] times or that was started [`MAX_FILE_UNFINISHED`] times without ever
//! finishing (it may be what kills kitesync). The build itself is delivered regardless.
//! Requests go through the budget's enrichment lane, which has every slot the polls leave:
//! when that is spent enrichment waits, it never skips.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::test_results::{self, Fetch, Listing};
use super::{logs, Owner, Parts, SyncError};
use crate::buildkite::client::EnrichRequest;
use crate::buildkite::{Build, SourceError};
use crate::clock::now_ms;
use crate::net;
use crate::outage::Outage;
use crate::runner::Stop;
use crate::store::enrich::{self, Fetched, File, Pending, Totals};

/// Attempts at a build's artifact listing, or at its logs, before they are given up.
const MAX_ATTEMPTS: u32 = 5;
/// Failed fetches of a JUnit file before it is given up.
const MAX_FILE_FAILURES: u32 = 5;
/// Attempts at a JUnit file that never finished (kitesync was killed or stopped while
/// fetching it) before it is given up.
const MAX_FILE_UNFINISHED: u32 = 3;
/// The longest the background task sleeps before looking at the queue again.
const IDLE_WAKE: Duration = Duration::from_secs(60);
/// How long it pauses after a failure that is not a build's own (the state database, the
/// token or its scopes).
const PAUSE: Duration = Duration::from_secs(30);
const CONFIGURATION_PAUSE: Duration = Duration::from_secs(300);

/// What an enrichment run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnrichReport {
    /// Builds finished with: everything fetched, skipped or given up.
    pub builds: usize,
    /// Test suites and logs queued.
    pub items: usize,
    /// Steps to be tried again later, and the last one's error.
    pub retried: usize,
    pub last_error: Option<String>,
}

/// Enriches the builds that are due, one after the other, until none is due or `stop` says
/// [`Stop::Now`] (the step under way is then abandoned and its attempt taken back). Wakes
/// `queued` whenever it queues something. Stops at a configuration error (token, scope) or a
/// state-database failure.
pub async fn run(
    app: Parts<'_>,
    mut stop: watch::Receiver<Stop>,
    queued: &Notify,
) -> Result<EnrichReport, SyncError> {
    let mut report = EnrichReport::default();
    loop {
        // Nothing due: no lock to take (nor its file to create).
        if app
            .store
            .call(|c| enrich::next(c, now_ms()))
            .await?
            .is_none()
        {
            return Ok(report);
        }
        let Some(lock) = until_stopped(&mut stop, app.store.enrich_lock()).await else {
            return Ok(report);
        };
        let lock = lock?;
        let Some(pending) = app.store.call(|c| enrich::next(c, now_ms())).await? else {
            return Ok(report);
        };
        let Ok(build) = serde_json::from_str::<Build>(&pending.payload) else {
            // Not a build enrichment can read (it was queued for delivery regardless).
            app.store.call(move |c| enrich::finish(c, &pending)).await?;
            continue;
        };
        let mut pass = Pass {
            app,
            build,
            pending,
            stop: stop.clone(),
            queued,
            report: &mut report,
            totals: Totals::default(),
            requests: requests(app),
        };
        let ended = pass.run().await;
        // What was spent and skipped is saved however the pass ended.
        let delta = pass.take_totals();
        app.store
            .call(move |c| enrich::add_totals(c, &delta))
            .await?;
        drop(lock);
        if ended? == Ended::Stopped {
            return Ok(report);
        }
    }
}

/// Enriches in the background until `stop`: whatever is due, then sleeps until the next
/// retry is due, `wake` is notified (a poll queued builds) or a minute passes. Wakes
/// `queued` (the delivery loop) for what it queues.
pub async fn run_loop(
    owner: Arc<impl Owner>,
    wake: Arc<Notify>,
    queued: Arc<Notify>,
    mut stop: watch::Receiver<Stop>,
) {
    let app = owner.parts();
    let mut outage = Outage::new("fetching test results and logs");
    loop {
        let mut pause = Duration::ZERO;
        match run(app, stop.clone(), &queued).await {
            // Nothing but failures: Buildkite or the storage host is failing.
            Ok(r) if r.builds + r.items == 0 && r.retried > 0 => {
                outage.failed(&r.last_error.unwrap_or_default());
            }
            Ok(_) => outage.ok(),
            Err(e) if e.is_configuration() => {
                outage.failed(&format!(
                    "{e} (test results and logs wait until it is fixed)"
                ));
                pause = CONFIGURATION_PAUSE;
            }
            Err(e) => {
                outage.failed(&e.to_string());
                pause = PAUSE;
            }
        }
        if *stop.borrow() == Stop::Now {
            return;
        }
        let next = app.store.call(|c| enrich::next_attempt_at(c)).await;
        let wait = match next {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            _ => IDLE_WAKE,
        };
        let woken = async {
            match pause.is_zero() {
                true => wake.notified().await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(wait.min(IDLE_WAKE).max(pause)) => {}
            _ = stop.wait_for(|s| *s == Stop::Now) => return,
        }
    }
}

/// `f`, unless `stop` says [`Stop::Now`] first.
async fn until_stopped<F: Future>(stop: &mut watch::Receiver<Stop>, f: F) -> Option<F::Output> {
    tokio::select! {
        out = f => Some(out),
        _ = stop.wait_for(|s| *s == Stop::Now) => None,
    }
}

/// The client's requests for test results and logs so far: listings, downloads, logs.
fn requests(app: Parts<'_>) -> [u64; 3] {
    [
        EnrichRequest::Listing,
        EnrichRequest::Download,
        EnrichRequest::Log,
    ]
    .map(|k| app.client.enrich_requests(k))
}

/// How a pass over a build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Done with the build, or it is to be tried again later: on to the next one.
    Next,
    /// Stopped on purpose: the rest waits in the queue.
    Stopped,
}

/// What one step came to.
enum Step<T> {
    Got(T),
    /// Given up, or gone: go on without it.
    Without,
    /// The pass ends here.
    End(Ended),
}

/// One pass over one build.
struct Pass<'a> {
    app: Parts<'a>,
    build: Build,
    pending: Pending,
    stop: watch::Receiver<Stop>,
    queued: &'a Notify,
    report: &'a mut EnrichReport,
    /// Skipped and given-up files not saved yet.
    totals: Totals,
    /// The client's request counts when the totals were last saved.
    requests: [u64; 3],
}

impl Pass<'_> {
    async fn run(&mut self) -> Result<Ended, SyncError> {
        if !self.pending.listed {
            let listing = match self.wants_tests() {
                true => match self.listing().await? {
                    Step::Got(listing) => listing,
                    Step::Without => Listing::default(),
                    Step::End(ended) => return Ok(ended),
                },
                false => Listing::default(),
            };
            for (cap, n) in &listing.skipped {
                self.totals.skip(*cap, *n);
                self.app.metrics.skipped(cap.as_str(), *n);
            }
            let (p, files) = (self.pending.clone(), listing.files);
            if !self.save(move |c| enrich::listed(c, &p, &files)).await? {
                return Ok(Ended::Next);
            }
        }
        let p = self.pending.clone();
        let files = self.app.store.call(move |c| enrich::files(c, &p)).await?;
        let cap = self.app.config.enrich.max_bytes_per_build;
        let mut left = cap.saturating_sub(self.pending.bytes);
        for file in files {
            if let Some(ended) = self.file(&file, &mut left).await? {
                return Ok(ended);
            }
        }
        if !self.pending.logs_done && self.wants_logs() {
            let log = match self.logs().await? {
                Step::Got(log) => log,
                Step::Without => None,
                Step::End(ended) => return Ok(ended),
            };
            let n = usize::from(log.is_some());
            let p = self.pending.clone();
            self.save(move |c| enrich::logs_done(c, &p, log.as_ref(), now_ms()))
                .await?;
            self.queued_items(n);
        }
        let p = self.pending.clone();
        self.save(move |c| enrich::finish(c, &p)).await?;
        self.report.builds += 1;
        Ok(Ended::Next)
    }

    fn wants_tests(&self) -> bool {
        super::builds::lists_artifacts(self.app.config, &self.build)
    }

    fn wants_logs(&self) -> bool {
        self.app.config.logs_enabled() && self.build.failed_steps().next().is_some()
    }

    fn label(&self) -> &str {
        &self.pending.label
    }

    /// Lists the build's artifacts and picks its JUnit files.
    async fn listing(&mut self) -> Result<Step<Listing>, SyncError> {
        let attempt = match self.attempt("test results").await? {
            Ok(attempt) => attempt,
            Err(step) => return Ok(step),
        };
        let (app, build, label) = (self.app, &self.build, self.pending.label.as_str());
        let listed = until_stopped(&mut self.stop, test_results::list(app, build, label)).await;
        self.judge(attempt, "test results", listed).await
    }

    /// Fetches the tails of the failed jobs' logs.
    async fn logs(&mut self) -> Result<Step<Option<Fetched>>, SyncError> {
        let attempt = match self.attempt("logs").await? {
            Ok(attempt) => attempt,
            Err(step) => return Ok(step),
        };
        let (app, build, raw) = (self.app, &self.build, self.pending.payload.as_str());
        let log = until_stopped(&mut self.stop, logs::collect(app, build, raw)).await;
        self.judge(attempt, "logs", log).await
    }

    /// Records an attempt at the build's listing or logs (`what`) before it is made: its
    /// number, or how the step ends without it (the build finished again meanwhile, or the
    /// earlier attempts never came back).
    async fn attempt<T>(&self, what: &str) -> Result<Result<u32, Step<T>>, SyncError> {
        let p = self.pending.clone();
        match self.app.store.call(move |c| enrich::begin(c, &p)).await? {
            None => Ok(Err(Step::End(Ended::Next))),
            Some(n) if n > MAX_ATTEMPTS => {
                let label = self.label();
                tracing::warn!(
                    build = label,
                    "giving up its {what}: {MAX_ATTEMPTS} attempts never finished"
                );
                Ok(Err(Step::Without))
            }
            Some(n) => Ok(Ok(n)),
        }
    }

    /// Judges the `outcome` of `attempt` at the build's listing or logs (`what`); `None`
    /// when it was stopped.
    async fn judge<T>(
        &mut self,
        attempt: u32,
        what: &str,
        outcome: Option<Result<T, SyncError>>,
    ) -> Result<Step<T>, SyncError> {
        let label = self.label().to_string();
        let error = match outcome {
            None => {
                let p = self.pending.clone();
                self.app.store.call(move |c| enrich::undo(c, &p)).await?;
                return Ok(Step::End(Ended::Stopped));
            }
            Some(Ok(value)) => return Ok(Step::Got(value)),
            Some(Err(e)) => e,
        };
        match error {
            SyncError::Source(e @ SourceError::Gone { .. }) => {
                tracing::warn!(build = label, "{what} skipped: {e}");
                Ok(Step::Without)
            }
            e if e.is_configuration() => Err(e),
            e @ SyncError::Store(_) => Err(e),
            e if attempt >= MAX_ATTEMPTS => {
                tracing::warn!(
                    build = label,
                    "giving up its {what} after {MAX_ATTEMPTS} tries: {e}"
                );
                Ok(Step::Without)
            }
            e => {
                self.retry(attempt, &e).await?;
                Ok(Step::End(Ended::Next))
            }
        }
    }

    /// Fetches one JUnit file; `Some` when the pass ends with it.
    async fn file(&mut self, file: &File, left: &mut u64) -> Result<Option<Ended>, SyncError> {
        if *self.stop.borrow() == Stop::Now {
            return Ok(Some(Ended::Stopped));
        }
        let label = self.label().to_string();
        let unfinished = file.attempts.saturating_sub(file.failures);
        if unfinished >= MAX_FILE_UNFINISHED {
            tracing::warn!(
                build = label,
                path = file.path,
                "JUnit file given up: {unfinished} attempts at it never finished (kitesync was stopped or died while fetching it)"
            );
            return self.give_up(file).await;
        }
        let (p, f) = (self.pending.clone(), file.clone());
        if !self
            .app
            .store
            .call(move |c| enrich::begin_file(c, &p, &f))
            .await?
        {
            return Ok(None);
        }
        if *left == 0 {
            let cap = enrich::Cap::BytesPerBuild;
            tracing::warn!(
                build = label,
                path = file.path,
                "JUnit file skipped: over {}",
                cap.key()
            );
            self.totals.skip(cap, 1);
            self.app.metrics.skipped(cap.as_str(), 1);
            return self.done(file, Vec::new(), 0).await;
        }
        let (app, build) = (self.app, &self.build);
        let fetch = test_results::fetch(app, build, &label, file, *left);
        let outcome = until_stopped(&mut self.stop, fetch).await;
        let error = match outcome {
            None => {
                let (p, f) = (self.pending.clone(), file.clone());
                self.app
                    .store
                    .call(move |c| enrich::undo_file(c, &p, &f))
                    .await?;
                return Ok(Some(Ended::Stopped));
            }
            Some(Ok(Fetch::Suites(items, bytes))) => {
                *left = left.saturating_sub(bytes);
                return self.done(file, items, bytes).await;
            }
            Some(Ok(Fetch::Skipped(cap))) => {
                if let Some(cap) = cap {
                    self.totals.skip(cap, 1);
                    self.app.metrics.skipped(cap.as_str(), 1);
                }
                return self.done(file, Vec::new(), 0).await;
            }
            Some(Err(e)) => e,
        };
        match error {
            SyncError::Source(e @ SourceError::Gone { .. }) => {
                tracing::warn!(build = label, path = file.path, "JUnit file skipped: {e}");
                self.done(file, Vec::new(), 0).await
            }
            e if e.is_configuration() => Err(e),
            e @ SyncError::Store(_) => Err(e),
            e if file.failures + 1 >= MAX_FILE_FAILURES => {
                let tries = MAX_FILE_FAILURES;
                tracing::warn!(
                    build = label,
                    path = file.path,
                    "JUnit file given up after {tries} failed tries: {e}"
                );
                self.give_up(file).await
            }
            e => {
                let wait = net::backoff(
                    file.failures + 1,
                    Duration::from_secs(30),
                    Duration::from_secs(1800),
                );
                let at = now_ms() + wait.as_millis() as i64;
                let (p, f, text) = (self.pending.clone(), file.clone(), e.to_string());
                tracing::debug!(
                    build = label,
                    path = file.path,
                    "JUnit file not fetched, retrying later: {text}"
                );
                self.report.retried += 1;
                self.save(move |c| enrich::file_failed(c, &p, &f, at, &text))
                    .await?;
                Ok(Some(Ended::Next))
            }
        }
    }

    /// Forgets a file that was given up.
    async fn give_up(&mut self, file: &File) -> Result<Option<Ended>, SyncError> {
        self.totals.given_up += 1;
        self.app.metrics.enrich_given_up.inc();
        self.done(file, Vec::new(), 0).await
    }

    /// Queues what a file gave (`bytes` read) and forgets it.
    async fn done(
        &mut self,
        file: &File,
        items: Vec<Fetched>,
        bytes: u64,
    ) -> Result<Option<Ended>, SyncError> {
        let n = items.len();
        let (p, f) = (self.pending.clone(), file.clone());
        self.save(move |c| enrich::file_done(c, &p, &f, &items, bytes, now_ms()))
            .await?;
        self.queued_items(n);
        Ok(None)
    }

    /// Counts `n` items queued, and wakes the delivery loop for them.
    fn queued_items(&mut self, n: usize) {
        self.report.items += n;
        self.app.metrics.enrich_items.inc_by(n as u64);
        if n > 0 {
            self.queued.notify_one();
        }
    }

    /// Tries the build again later, after `error` at its `attempt`.
    async fn retry(&mut self, attempt: u32, error: &SyncError) -> Result<(), SyncError> {
        let wait = net::backoff(attempt, Duration::from_secs(30), Duration::from_secs(1800));
        let at = now_ms() + wait.as_millis() as i64;
        let (p, text) = (self.pending.clone(), error.to_string());
        tracing::debug!(
            build = p.label,
            "test results or logs not fetched, retrying later: {text}"
        );
        self.report.retried += 1;
        self.save(move |c| enrich::retry_at(c, &p, at, &text)).await
    }

    /// Runs `f` on the store, saving with it the totals spent since the last save.
    async fn save<R, F>(&mut self, f: F) -> Result<R, SyncError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let delta = self.take_totals();
        let out = self
            .app
            .store
            .call(move |c| {
                let out = f(c)?;
                enrich::add_totals(c, &delta)?;
                Ok(out)
            })
            .await?;
        Ok(out)
    }

    /// The totals spent and skipped since they were last taken.
    fn take_totals(&mut self) -> Totals {
        let now = requests(self.app);
        let spent = |i: usize| now[i].saturating_sub(self.requests[i]);
        let totals = Totals {
            listings: spent(0),
            downloads: spent(1),
            logs: spent(2),
            ..std::mem::take(&mut self.totals)
        };
        self.requests = now;
        totals
    }
}
