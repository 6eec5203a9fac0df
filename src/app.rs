//! The parts every mode shares: the state database, the paced Buildkite client and the
//! BuildButler sink, built once from the config.

use std::sync::Arc;

use crate::buildkite::{Budget, Client};
use crate::butler::Sink;
use crate::config::Config;
use crate::store::Store;

/// What a run of kitesync works with.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub client: Client,
    pub sink: Arc<Sink>,
    /// `[tests] junit_artifact_globs`, compiled.
    pub junit_globs: globset::GlobSet,
}

impl App {
    /// Opens the state database and sets up both HTTP clients.
    pub fn new(config: Config) -> Result<App, String> {
        let store = Store::open(&config.state_path).map_err(|e| e.to_string())?;
        let budget = Arc::new(Budget::new(
            config.buildkite.requests_per_minute,
            config.buildkite.reserve_percent,
        ));
        let client = Client::new(&config.buildkite, budget)?;
        let sink = Arc::new(Sink::new(&config)?);
        Ok(App {
            junit_globs: config.junit_globs(),
            config,
            store,
            client,
            sink,
        })
    }
}
