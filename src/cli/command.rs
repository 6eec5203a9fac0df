//! The commands of the CLI, each from a config to an [`Ending`]: the service, `--once`,
//! `--backfill`, `check`, `status` and `replay`. `main.rs` parses the arguments, calls one of
//! these and prints what it ends with.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::app::{App, Scratch};
use crate::buildkite::budget::Pace;
use crate::cli::exit::{Ending, Error, Exit};
use crate::cli::oneshot::{self, plural};
use crate::cli::progress::Reporter;
use crate::cli::{check, status};
use crate::config::Config;
use crate::run::daemon;
use crate::store::{outbox, Store};
use crate::sync::{self, Owner};

/// The app for a one-shot run; with `dry_run`, one that works on a throw-away copy of the
/// state and prints instead of sending (the copy lives as long as the [`Scratch`]).
fn one_shot_app(config: Config, dry_run: bool) -> Result<(App, Option<Scratch>), Error> {
    if dry_run {
        let (app, scratch) = App::dry_run(config)?;
        Ok((app, Some(scratch)))
    } else {
        Store::check_owner(&config.state_path)?;
        Ok((App::new(config)?, None))
    }
}

/// Runs the service until `shutdown` resolves or a configuration error stops it.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<Ending, Error> {
    Store::check_owner(&config.state_path)?;
    let app = App::new(config)?;
    daemon::run(app, shutdown).await?;
    tracing::info!("stopped");
    Ok(Ending::new(String::new(), Vec::new(), Exit::Success))
}

/// `--once`: one poll, every delivery that can be made now, and test results and logs for
/// at most `enrich_for`.
pub async fn once(
    config: Config,
    dry_run: bool,
    enrich_for: Duration,
    pace: Pace,
) -> Result<Ending, Error> {
    let (app, _scratch) = one_shot_app(config, dry_run)?;
    let _watch = app.set_pace(pace);
    Ok(oneshot::run_once(&app, enrich_for).await?.ending(dry_run))
}

/// How a `--backfill` runs.
#[derive(Debug, Clone, Copy)]
pub struct BackfillOptions {
    pub dry_run: bool,
    /// Progress as a bar (on a terminal) rather than log lines.
    pub terminal: bool,
    /// `--without-test-results`: no test results or logs for the range.
    pub without_test_results: bool,
    /// `--pace`.
    pub pace: Pace,
}

/// `--backfill`: every finished build created in `[since, until)`, resumable.
pub async fn backfill(
    config: Config,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    options: BackfillOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Ending, Error> {
    let BackfillOptions {
        dry_run,
        terminal,
        without_test_results,
        pace,
    } = options;
    let end = until.unwrap_or_else(crate::clock::now);
    if since >= end {
        let why = format!("--since ({since}) must be before --until ({end})");
        return Err(Error::Usage(why));
    }
    let enrich = config.enrich.backfill && !without_test_results;
    let (app, _scratch) = one_shot_app(config, dry_run)?;
    let _watch = app.set_pace(pace);
    let mut reporter = Reporter::new(terminal);
    let outcome = oneshot::run_backfill(app, since, until, enrich, &mut reporter, shutdown).await;
    reporter.finish();
    Ok(outcome?.ending(dry_run))
}

/// `check`: the token, its scopes, the organization, the budget and BuildButler's key, on a
/// throw-away state database (checking creates nothing).
pub async fn check(mut config: Config) -> Result<Ending, Error> {
    let scratch = Scratch::new().map_err(Error::Setup)?;
    config.state_path = scratch.state_path();
    let app = App::new(config)?;
    let findings = check::run(&app).await;
    let exit = if findings.iter().all(|f| f.ok) {
        Exit::Success
    } else {
        Exit::Configuration
    };
    Ok(Ending::new(check::render(&findings), Vec::new(), exit))
}

/// `status`: from the state database alone, as a table or JSON.
pub async fn status(config: &Config, json: bool) -> Result<Ending, Error> {
    let s = status::read(&config.state_path).await?;
    let text = if json {
        serde_json::to_string_pretty(&s).map_err(|e| Error::Setup(e.to_string()))?
    } else {
        status::render(&s).trim_end().to_string()
    };
    Ok(Ending::new(text, Vec::new(), Exit::Success))
}

/// What `replay` sends again.
#[derive(Debug, Clone)]
pub enum Replay {
    /// Every dead letter.
    Dead,
    /// One build still in the outbox (and what belongs to it), by its UUID.
    Build(String),
    /// Every finished build created in `[since, until)`, fetched from Buildkite now.
    Range(DateTime<Utc>, DateTime<Utc>),
}

/// `replay`: queues items again, as upserts, for the daemon or the next `--once`.
pub async fn replay(config: Config, what: Replay) -> Result<Ending, Error> {
    Store::check_owner(&config.state_path)?;
    let app = App::new(config)?;
    let queued = match what {
        Replay::Dead => app.store.call(|c| outbox::replay_dead(c)).await?,
        Replay::Build(id) => {
            let key = id.clone();
            match app.store.call(move |c| outbox::replay_build(c, &key)).await? {
                0 => return Err(Error::Missing(format!(
                    "build {id} is not in the outbox (delivered, or never seen): replay it with --since <its creation time>"
                ))),
                n => n,
            }
        }
        Replay::Range(since, until) => sync::backfill::replay(app.parts(), since, until).await?,
    };
    let line = format!(
        "kitesync: {queued} {} queued again; the daemon or the next --once delivers {}",
        plural(queued as u64, "item"),
        if queued == 1 { "it" } else { "them" }
    );
    Ok(Ending::new(line, Vec::new(), Exit::Success))
}
