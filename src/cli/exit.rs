//! How a command ends: what it prints, its exit code, and the one mapping of errors to codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done: everything delivered (see [`outbox_done`]) |
//! | 1 | not everything delivered (yet), or a transient failure: run again |
//! | 2 | the operator must fix something: configuration, credentials, scopes, a state database a newer kitesync wrote |
//! | 130 | a backfill stopped by Ctrl-C or SIGTERM (it resumes when run again) |

use crate::app::AppError;
use crate::buildkite::SourceError;
use crate::config::ConfigError;
use crate::delivery::deliver::DeliverError;
use crate::run::daemon::DaemonError;
use crate::store::outbox::Summary;
use crate::store::{Cause, StoreError};
use crate::sync::SyncError;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    Incomplete,
    Configuration,
    Interrupted,
}

impl Exit {
    /// A failure: [`Exit::Configuration`] when the operator must act, else [`Exit::Incomplete`].
    pub(crate) fn failed(configuration: bool) -> Exit {
        if configuration {
            Exit::Configuration
        } else {
            Exit::Incomplete
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Incomplete => 1,
            Exit::Configuration => 2,
            Exit::Interrupted => 130,
        }
    }
}

/// The one rule for what a run leaves in the outbox: it is done when nothing is pending and
/// the only dead letters are test suites BuildButler refused for their content (a 400, 413
/// or 422 with its reason; see [`DeadLetter::excused`]). Those are reported (in the summary,
/// in `status`) and can be sent again with `replay --dead`, but never fail a run on their
/// own; any other dead letter does: a build, log or agent fleet, a suite answered 404 or a
/// redirect, one that cannot be rendered. Suites dead from before kitesync recorded why
/// (schema 8) are excused as they were then. Test results and logs still waiting to be
/// fetched are not in the outbox: they never fail a run either.
///
/// [`DeadLetter::excused`]: crate::store::outbox::DeadLetter::excused
pub(crate) fn outbox_done(outbox: &Summary) -> bool {
    outbox.pending == 0 && outbox.dead == outbox.refused_tests
}

/// What a command that ran has to say: its summary (stdout, or stderr next to a dry run's
/// NDJSON), explanations for stderr, and how it ended.
#[derive(Debug)]
pub struct Ending {
    /// Empty when there is nothing to say.
    pub summary: String,
    pub notes: Vec<String>,
    pub exit: Exit,
}

impl Ending {
    /// A summary with its notes.
    pub(crate) fn new(summary: String, notes: Vec<String>, exit: Exit) -> Ending {
        Ending {
            summary,
            notes,
            exit,
        }
    }
}

/// Why a command could not run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config error: {0}")]
    Config(#[from] ConfigError),
    /// Wrong arguments.
    #[error("{0}")]
    Usage(String),
    /// What was asked for is not there (a build not in the outbox, no state database yet).
    #[error("{0}")]
    Missing(String),
    /// The runtime, a temporary directory or an HTTP client could not be set up.
    #[error("{0}")]
    Setup(String),
    /// The parts of a run could not be set up.
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Deliver(#[from] DeliverError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

impl Error {
    /// The one place an error becomes an exit code.
    pub fn exit(&self) -> Exit {
        Exit::failed(match self {
            Error::Config(_) | Error::Usage(_) => true,
            Error::Sync(e) => e.is_configuration(),
            Error::Source(e) => e.is_configuration(),
            Error::Deliver(e) => matches!(e, DeliverError::Fatal(_)),
            Error::Daemon(e) => matches!(e, DaemonError::Configuration(_)),
            Error::Store(e) | Error::App(AppError::Store(e)) => operator_must_act(e),
            Error::App(AppError::Client(_) | AppError::Scratch(_)) => false,
            Error::Missing(_) | Error::Setup(_) => false,
        })
    }

    /// For a state database that belongs to another user (the service's): the line that runs
    /// the same command, `args`, as the service, with the packaged config's credentials.
    pub fn run_as_service(&self, args: &[String]) -> Option<String> {
        let (Error::Store(e) | Error::App(AppError::Store(e))) = self else {
            return None;
        };
        if !matches!(e.cause, Cause::OtherOwner { .. }) {
            return None;
        }
        let state = e
            .path
            .parent()
            .and_then(|d| d.strip_prefix("/var/lib").ok());
        let state = state.map_or("kitesync".into(), |d| d.display().to_string());
        let creds = "/run/credentials/run-kitesync.service";
        let args: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
        Some(format!(
            "run it as the service instead:\n  sudo systemd-run --wait --pty --unit=run-kitesync \
             -p DynamicUser=yes -p User=kitesync -p StateDirectory={state} -p UMask=0077 \
             -p LoadCredential=buildkite-token:/etc/kitesync/buildkite-token \
             -p LoadCredential=buildbutler-key:/etc/kitesync/buildbutler-key \
             --setenv=KITESYNC_BUILDKITE__TOKEN_FILE={creds}/buildkite-token \
             --setenv=KITESYNC_BUILDBUTLER__API_KEY_FILE={creds}/buildbutler-key \
             kitesync {}\n(/usr/share/doc/kitesync/docs/operating.md, \"A backfill beside the service\", has the same with the service's hardening)",
            args.join(" ")
        ))
    }
}

/// True when the state database cannot be used until the operator acts: it belongs to
/// another user, or a newer kitesync wrote it (upgrade kitesync). An older schema a
/// read-only command cannot migrate, or a failing disk, are not configuration.
fn operator_must_act(e: &StoreError) -> bool {
    match e.cause {
        Cause::OtherOwner { .. } => true,
        Cause::Schema { found, known } => found > known,
        Cause::Sqlite(_) | Cause::Io(_) | Cause::Task(_) => false,
    }
}

/// `word` as one shell word.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
