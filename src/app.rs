//! The parts every mode shares: the state database, the paced Buildkite client and the
//! BuildButler sink, built once from the config.

use std::sync::Arc;
use std::time::Duration;

use crate::buildkite::budget::Pace;
use crate::buildkite::{Budget, Client};
use crate::butler::Sink;
use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::sync;
use crate::telemetry::metrics::Metrics;

/// What a run of kitesync works with.
pub struct App {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) client: Client,
    pub(crate) sink: Arc<Sink>,
    pub(crate) metrics: Arc<Metrics>,
    /// `[tests] junit_artifact_globs`, compiled.
    pub(crate) junit_globs: globset::GlobSet,
}

/// Why the parts of a run could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The state database: unreadable, another user's, or written by a newer kitesync.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An HTTP client (Buildkite's or BuildButler's) could not be built.
    #[error("{0}")]
    Client(String),
    /// The temporary directory of a dry run.
    #[error("{0}")]
    Scratch(String),
}

/// How often a free-pace run looks for a daemon on its state database.
const DAEMON_LOOK: Duration = Duration::from_secs(10);

/// Keeps a free-pace run's look-out for a daemon going; stops it when dropped.
pub(crate) struct PaceWatch(tokio::task::JoinHandle<()>);

impl Drop for PaceWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A private temporary directory (mode 0700, random name) for a throw-away state database
/// (`--dry-run`, `check`), removed when dropped.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new, empty scratch directory.
    pub(crate) fn new() -> Result<Scratch, String> {
        tempfile::Builder::new()
            .prefix("kitesync-")
            .tempdir()
            .map(|dir| Scratch { dir })
            .map_err(|e| format!("cannot make a temporary directory: {e}"))
    }

    /// Where a scratch state database goes.
    pub(crate) fn state_path(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }
}

impl sync::Owner for App {
    /// What a sync works with: every part but the sink.
    fn parts(&self) -> sync::Parts<'_> {
        sync::Parts {
            client: &self.client,
            store: &self.store,
            config: &self.config,
            metrics: &self.metrics,
            junit_globs: &self.junit_globs,
        }
    }
}

impl App {
    /// An app that works on a copy of the state database and prints what it would deliver
    /// as NDJSON instead of sending it: nothing it does changes any state.
    pub(crate) fn dry_run(mut config: Config) -> Result<(App, Scratch), AppError> {
        let scratch = Scratch::new().map_err(AppError::Scratch)?;
        Store::copy(&config.state_path, &scratch.state_path())?;
        config.state_path = scratch.state_path();
        let mut app = App::new(config)?;
        app.sink = Arc::new(
            Sink::new(&app.config, Arc::clone(&app.metrics))
                .map_err(AppError::Client)?
                .printing(),
        );
        Ok((app, scratch))
    }

    /// Opens the state database and sets up both HTTP clients.
    pub fn new(config: Config) -> Result<App, AppError> {
        let store = Store::open(&config.state_path)?;
        let bk = &config.buildkite;
        let share = config.enrich.max_share_percent;
        let budget = Arc::new(Budget::new(
            bk.requests_per_minute,
            bk.reserve_percent,
            share,
        ));
        let metrics = Arc::new(Metrics::new());
        let client = Client::new(bk, budget, Arc::clone(&metrics)).map_err(AppError::Client)?;
        let sink = Arc::new(Sink::new(&config, Arc::clone(&metrics)).map_err(AppError::Client)?);
        Ok(App {
            metrics,
            junit_globs: config.junit_globs(),
            config,
            store,
            client,
            sink,
        })
    }

    /// Sets the pace of a `--once` or `--backfill`. At [`Pace::Free`] it leaves
    /// `requests_per_minute` to a daemon on the same state database whenever one runs (looked
    /// for every 10 s, as long as the returned watch lives).
    pub(crate) fn set_pace(&self, pace: Pace) -> Option<PaceWatch> {
        let budget = self.client.shared_budget();
        budget.set_pace(pace);
        if pace != Pace::Free {
            return None;
        }
        let (store, daemon_pace) = (
            self.store.clone(),
            self.config.buildkite.requests_per_minute,
        );
        let look = async move {
            let mut said = None;
            loop {
                let running = store.daemon_running();
                if said != Some(running) {
                    if running {
                        tracing::info!("a daemon runs on this state database: --pace free leaves it {daemon_pace} requests a minute");
                    }
                    said = Some(running);
                }
                budget.leave_for_daemon(if running { daemon_pace } else { 0 });
                tokio::time::sleep(DAEMON_LOOK).await;
            }
        };
        // The first look before the first request.
        let running = self.store.daemon_running();
        self.client
            .budget()
            .leave_for_daemon(if running { daemon_pace } else { 0 });
        Some(PaceWatch(tokio::spawn(look)))
    }
}
