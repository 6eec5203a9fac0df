//! The `kitesync` command.
//!
//! Argument parsing, dispatch to [`kitesync::cli::command`], and the exit-code policy
//! ([`finish`]); nothing else.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use clap::Parser;
use kitesync::buildkite::budget::Pace;
use kitesync::cli::command::{self, BackfillOptions, Replay};
use kitesync::cli::exit::{Ending, Error};
use kitesync::config::Config;
use kitesync::telemetry::logging::LogFormat;

/// The end of `--help` and of the man page.
const AFTER_HELP: &str = "Exit status: 0 when everything was delivered; 1 when something is \
left (retried on the next run) or Buildkite or the state database failed; 2 when the \
configuration, the token or its scopes, BuildButler's key or URL, or the state database (another \
user's, or a newer kitesync's) must be fixed; 130 when a backfill was interrupted (run it again \
to resume).

Files: /etc/kitesync/kitesync.toml (the packaged config; every key may also be set as \
KITESYNC_SECTION__KEY), the state database at state_path. The manual is in \
/usr/share/doc/kitesync/: README.md (start there), docs/ (operating.md, test-results.md, \
monitoring.md, buildbutler.md, reliability.md, performance.md, container.md), CHANGELOG.md \
(what changed, for upgrades) and config.example.toml (every key).";

/// Brings Buildkite builds to BuildButler by polling, no webhooks needed.
///
/// Without --once or --backfill it runs as a service: it polls on the [schedule] builds cron
/// and delivers continuously until SIGTERM or Ctrl-C.
#[derive(Parser, Debug)]
#[command(version, about, after_long_help = AFTER_HELP)]
struct Cli {
    /// The TOML config file (every key may also be set as KITESYNC_SECTION__KEY).
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Log lines as text, as JSON objects one per line, or to the systemd journal; auto (the
    /// default) is the journal when stderr is connected to it, else text. Level from RUST_LOG.
    #[arg(long, value_name = "FORMAT", global = true, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    /// Poll once, deliver, and exit: 0 when everything was delivered.
    #[arg(long, conflicts_with = "backfill")]
    once: bool,
    /// With --once: after delivering the builds, fetch test results and logs for at most this
    /// many seconds; the rest stays queued for the next run (0: leave them all).
    #[arg(long, value_name = "SECONDS", default_value_t = kitesync::cli::oneshot::DEFAULT_ENRICH_SECONDS, requires = "once",
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    enrich_seconds: u64,
    /// With --backfill: fetch no test results or logs for the range (see [enrich] backfill).
    #[arg(long, requires = "backfill")]
    without_test_results: bool,
    /// With --once or --backfill: how fast to go. configured: [buildkite] requests_per_minute;
    /// free: what Buildkite's budgets show free above reserve_percent, spread until their
    /// reset (never beyond requests_per_minute without the token owner's budget, and leaving
    /// requests_per_minute to a daemon on the same state database).
    #[arg(long, value_name = "PACE", value_enum, default_value_t = Pace::Configured)]
    pace: Pace,
    /// With --once or --backfill: poll as usual, but print what would be delivered as NDJSON
    /// on stdout instead of sending it, and change no state.
    #[arg(long)]
    dry_run: bool,
    /// Deliver every finished build created from --since to --until, then exit. Resumable:
    /// run the same command again after an interruption.
    #[arg(long, requires = "since")]
    backfill: bool,
    /// Start of the backfill range (RFC 3339, e.g. 2025-01-01T00:00:00Z, or a date).
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "backfill")]
    since: Option<DateTime<Utc>>,
    /// End of the backfill range, exclusive. Default: when the first run of this backfill
    /// (same --since) started, so that running the same command again resumes it.
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "backfill")]
    until: Option<DateTime<Utc>>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Check the config, the Buildkite token and its scopes against the enabled features,
    /// the organization, the rate budget and BuildButler's API key; stores nothing.
    Check,
    /// Show the cursor, the outbox, dead letters, backfills and the last rate budget seen,
    /// from the state database alone (no network).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send again, as upserts, on the next poll or --once: dead letters, one build still in
    /// the outbox, or every finished build created in a time range.
    Replay {
        /// Every dead letter.
        #[arg(long, conflicts_with_all = ["build", "since"])]
        dead: bool,
        /// One build, by its Buildkite UUID.
        #[arg(long, value_name = "UUID", conflicts_with = "since")]
        build: Option<String>,
        /// Every finished build created from this time (fetched from Buildkite now).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// ...until this time, exclusive (default: now).
        #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "since")]
        until: Option<DateTime<Utc>>,
    },
    /// Print a shell completion script on stdout (the .deb installs bash's, zsh's and fish's).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (kitesync.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Writes what `completions` and `manpages` generate from the CLI itself.
fn generate(command: &Command) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    match command {
        Command::Manpages { dir } => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cli, dir)
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli, "kitesync", &mut std::io::stdout());
            Ok(())
        }
        _ => Ok(()),
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("{s:?} is not an RFC 3339 time (2025-01-31T00:00:00Z) or a date (2025-01-31)")
        })
}

fn main() -> ExitCode {
    kitesync::malloc::tune();
    let cli = Cli::parse();
    if let Some(command @ (Command::Completions { .. } | Command::Manpages { .. })) = &cli.command {
        return match generate(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kitesync: cannot write: {e}");
                ExitCode::from(1)
            }
        };
    }
    kitesync::telemetry::logging::init(cli.log_format);
    let dry_run = cli.dry_run;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Setup(format!("cannot start the async runtime: {e}")));
    let ended = match runtime {
        Ok(runtime) => {
            let ended = runtime.block_on(dispatch(cli));
            // Let the blocking pool finish a transaction in flight, but do not hang on a request.
            runtime.shutdown_timeout(Duration::from_secs(5));
            ended
        }
        Err(e) => Err(e),
    };
    finish(ended, dry_run)
}

/// Runs the command the arguments name.
async fn dispatch(cli: Cli) -> Result<Ending, Error> {
    if cli.dry_run && !(cli.once || cli.backfill) {
        return Err(Error::Usage(
            "--dry-run goes with --once or --backfill".into(),
        ));
    }
    if cli.pace != Pace::Configured && !(cli.once || cli.backfill) {
        let why = "--pace goes with --once or --backfill (the daemon keeps requests_per_minute)";
        return Err(Error::Usage(why.into()));
    }
    let Some(path) = &cli.config else {
        let why = "--config FILE is required (see config.example.toml)";
        return Err(Error::Usage(why.into()));
    };
    let config = Config::load(path)?;
    for ignored in config.ignored() {
        tracing::warn!("{ignored}");
    }
    match cli.command {
        Some(Command::Completions { .. } | Command::Manpages { .. }) => Err(Error::Usage(
            "completions and manpages need no config".into(),
        )),
        Some(Command::Check) => command::check(config).await,
        Some(Command::Status { json }) => command::status(&config, json).await,
        Some(Command::Replay {
            dead,
            build,
            since,
            until,
        }) => {
            let what = match (dead, build, since) {
                (true, _, _) => Replay::Dead,
                (_, Some(id), _) => Replay::Build(id),
                (_, _, Some(since)) => {
                    Replay::Range(since, until.unwrap_or_else(kitesync::clock::now))
                }
                _ => {
                    let why = "say what to replay: --dead, --build UUID or --since TIME";
                    return Err(Error::Usage(why.into()));
                }
            };
            command::replay(config, what).await
        }
        None if cli.once => {
            let enrich_for = Duration::from_secs(cli.enrich_seconds);
            command::once(config, cli.dry_run, enrich_for, cli.pace).await
        }
        None => match cli.since {
            Some(since) => {
                let options = BackfillOptions {
                    dry_run: cli.dry_run,
                    terminal: std::io::stderr().is_terminal(),
                    without_test_results: cli.without_test_results,
                    pace: cli.pace,
                };
                command::backfill(config, since, cli.until, options, shutdown_signal()).await
            }
            None => command::serve(config, shutdown_signal()).await,
        },
    }
}

/// Prints how the command ended and turns it into the exit code: the summary on stdout (on
/// stderr next to a dry run's NDJSON), explanations and errors on stderr.
fn finish(ended: Result<Ending, Error>, dry_run: bool) -> ExitCode {
    match ended {
        Ok(ending) => {
            match (ending.summary.as_str(), dry_run) {
                ("", _) => {}
                (summary, true) => eprintln!("{summary}"),
                (summary, false) => println!("{summary}"),
            }
            for note in &ending.notes {
                eprintln!("kitesync: {note}");
            }
            ExitCode::from(ending.exit.code())
        }
        Err(e) => {
            eprintln!("kitesync: {e}");
            let args: Vec<String> = std::env::args().skip(1).collect();
            if let Some(line) = e.run_as_service(&args) {
                eprintln!("kitesync: {line}");
            }
            ExitCode::from(e.exit().code())
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
