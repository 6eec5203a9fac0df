//! The `kitesync` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use clap::Parser;
use kitesync::app::{App, Scratch};
use kitesync::config::Config;
use kitesync::daemon::{self, DaemonError};
use kitesync::oneshot::{self, BackfillOutcome, OnceReport};
use kitesync::progress::Reporter;
use kitesync::store::outbox::Summary;

/// Exit code when the run worked but not everything was delivered (yet).
const EXIT_INCOMPLETE: u8 = 1;
/// Exit code for problems the operator must fix: configuration, credentials, scopes.
const EXIT_CONFIG: u8 = 2;
/// Exit code of a backfill stopped by Ctrl-C or SIGTERM (it resumes when run again).
const EXIT_INTERRUPTED: u8 = 130;

/// Brings Buildkite builds to BuildButler by polling, no webhooks needed.
///
/// Without --once or --backfill it runs as a service: it polls on the [schedule] builds cron
/// and delivers continuously until SIGTERM or Ctrl-C.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The TOML config file (every key may also be set as KITESYNC_SECTION__KEY).
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Log lines as text (default) or as JSON objects, one per line (level from RUST_LOG).
    #[arg(long, value_name = "FORMAT", global = true, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    /// Poll once, deliver, and exit: 0 when everything was delivered.
    #[arg(long, conflicts_with = "backfill")]
    once: bool,
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

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
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
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    if cli.dry_run && !(cli.once || cli.backfill) {
        eprintln!("kitesync: --dry-run goes with --once or --backfill");
        return ExitCode::from(EXIT_CONFIG);
    }
    let Some(config_path) = &cli.config else {
        eprintln!("kitesync: --config FILE is required (see config.example.toml)");
        return ExitCode::from(EXIT_CONFIG);
    };
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kitesync: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kitesync: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    let code = runtime.block_on(async {
        if let Some(command) = cli.command {
            return match command {
                Command::Check => check(config).await,
                Command::Status { json } => status(&config, json).await,
                Command::Replay {
                    dead,
                    build,
                    since,
                    until,
                } => replay(&config, dead, build, since, until).await,
            };
        }
        if cli.once {
            once(config, cli.dry_run).await
        } else if let Some(since) = cli.since {
            backfill(config, since, cli.until, cli.dry_run).await
        } else {
            serve(config).await
        }
    });
    // Let the blocking pool finish a transaction in flight, but do not hang on a request.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// The app for a one-shot run; with `dry_run`, one that works on a throw-away copy of the
/// state and prints instead of sending.
fn one_shot_app(config: Config, dry_run: bool) -> Result<(App, Option<Scratch>), String> {
    if dry_run {
        App::dry_run(config).map(|(app, scratch)| (app, Some(scratch)))
    } else {
        App::new(config).map(|app| (app, None))
    }
}

/// A summary line: on stdout, or on stderr when stdout carries a dry run's NDJSON.
fn summary(dry_run: bool, line: &str) {
    if dry_run {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

async fn once(config: Config, dry_run: bool) -> ExitCode {
    let report = match one_shot_app(config, dry_run) {
        Ok((app, _scratch)) => oneshot::run_once(&app).await,
        Err(e) => Err(e),
    };
    match report {
        Ok(report) => report_once(&report, dry_run),
        Err(e) => {
            eprintln!("kitesync: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    let app = match App::new(config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("kitesync: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    match daemon::run(app, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(DaemonError::Configuration(e)) => {
            eprintln!("kitesync: stopping: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(DaemonError::Setup(e)) => {
            eprintln!("kitesync: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

async fn backfill(
    config: Config,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    dry_run: bool,
) -> ExitCode {
    let end = until.unwrap_or_else(Utc::now);
    if since >= end {
        eprintln!("kitesync: --since ({since}) must be before --until ({end})");
        return ExitCode::from(EXIT_CONFIG);
    }
    let (app, _scratch) = match one_shot_app(config, dry_run) {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("kitesync: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    let mut reporter = Reporter::new(std::io::stderr().is_terminal());
    let outcome = oneshot::run_backfill(app, since, until, &mut reporter, shutdown_signal()).await;
    reporter.finish();
    match outcome {
        Ok(outcome) => report_backfill(&outcome, dry_run),
        Err(e) => {
            eprintln!("kitesync: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

async fn check(config: Config) -> ExitCode {
    // Checking must not create a state database either.
    let mut config = config;
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kitesync: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    config.state_path = scratch.state_path();
    let app = App::new(config);
    let findings = match &app {
        Ok(app) => kitesync::check::run(app).await,
        Err(e) => {
            eprintln!("kitesync: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    drop(app);
    drop(scratch);
    println!("ok    the config is valid");
    for f in &findings {
        println!("{:<4}  {}", if f.ok { "ok" } else { "FAIL" }, f.text);
    }
    if findings.iter().all(|f| f.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

async fn status(config: &Config, json: bool) -> ExitCode {
    match kitesync::status::read(&config.state_path).await {
        Ok(s) if json => match serde_json::to_string_pretty(&s) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kitesync: {e}");
                ExitCode::from(EXIT_INCOMPLETE)
            }
        },
        Ok(s) => {
            print!("{}", kitesync::status::render(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kitesync: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
        }
    }
}

async fn replay(
    config: &Config,
    dead: bool,
    build: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> ExitCode {
    let app = match App::new(config.clone()) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("kitesync: {e}");
            return ExitCode::from(EXIT_INCOMPLETE);
        }
    };
    let queued = match (dead, build, since) {
        (true, _, _) => app
            .store
            .call(|c| kitesync::store::outbox::replay_dead(c))
            .await
            .map_err(|e| e.to_string()),
        (_, Some(id), _) => {
            let key = id.clone();
            match app
                .store
                .call(move |c| kitesync::store::outbox::replay_build(c, &key))
                .await
            {
                Ok(0) => Err(format!(
                    "build {id} is not in the outbox (delivered, or never seen): replay it with --since <its creation time>"
                )),
                other => other.map_err(|e| e.to_string()),
            }
        }
        (_, _, Some(since)) => {
            let until = until.unwrap_or_else(Utc::now);
            kitesync::sync::backfill::replay(&app, since, until)
                .await
                .map_err(|e| e.to_string())
        }
        _ => Err("say what to replay: --dead, --build UUID or --since TIME".into()),
    };
    match queued {
        Ok(n) => {
            println!(
                "kitesync: {n} {} queued again; the daemon or the next --once delivers {}",
                plural(n as u64, "item"),
                if n == 1 { "it" } else { "them" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kitesync: {e}");
            ExitCode::from(EXIT_INCOMPLETE)
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

/// Prints the one-line summary of `--once` and picks the exit code.
fn report_once(report: &OnceReport, dry_run: bool) -> ExitCode {
    let delivered = report.delivery.as_ref().map_or(0, |d| d.delivered);
    let polled = match &report.poll {
        Ok(p) => format!(
            "{} newly finished {} in {} {}",
            p.queued,
            plural(p.queued as u64, "build"),
            p.pages,
            plural(p.pages.into(), "page")
        ),
        Err(_) => "poll failed".to_string(),
    };
    let line = format!(
        "kitesync: {polled} ({} Buildkite {}); {} {delivered}; outbox: {} pending, {} dead",
        report.requests,
        plural(report.requests, "request"),
        if dry_run {
            "would deliver"
        } else {
            "delivered"
        },
        report.outbox.pending,
        report.outbox.dead
    );
    summary(dry_run, &line);
    if report.complete() {
        return ExitCode::SUCCESS;
    }
    if let Err(e) = &report.poll {
        eprintln!("kitesync: poll failed: {e}");
    }
    if let Err(e) = &report.enrich {
        eprintln!("kitesync: fetching test results or logs failed: {e}");
    }
    if let Some(Err(e)) = &report.agents {
        eprintln!("kitesync: agent poll failed: {e} (set [schedule] agents = \"\" to turn agent sync off)");
    }
    if let Err(e) = &report.delivery {
        eprintln!("kitesync: delivery stopped: {e}");
    }
    explain_outbox(&report.outbox);
    if report.needs_configuration() {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    }
}

/// Prints the summary of `--backfill` and picks the exit code.
fn report_backfill(outcome: &BackfillOutcome, dry_run: bool) -> ExitCode {
    let delivered = outcome.delivery.as_ref().map_or(0, |d| d.delivered);
    let tail = format!(
        "{} Buildkite {}, {} budget {}; {} {delivered}; outbox: {} pending, {} dead",
        outcome.requests,
        plural(outcome.requests, "request"),
        outcome.budget_waits,
        plural(outcome.budget_waits, "wait"),
        if dry_run {
            "would deliver"
        } else {
            "delivered"
        },
        outcome.outbox.pending,
        outcome.outbox.dead
    );
    if outcome.interrupted {
        summary(dry_run, &format!("kitesync: backfill interrupted: {tail}"));
        if dry_run {
            eprintln!("kitesync: a dry run saves no checkpoint");
        } else {
            eprintln!("kitesync: run the same command again to resume from its checkpoint");
        }
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    let walk = match &outcome.walk {
        None => {
            summary(dry_run, &format!("kitesync: backfill stopped: {tail}"));
            if let Err(e) = &outcome.delivery {
                eprintln!("kitesync: delivery stopped: {e}; run the same command again to resume");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
        Some(Err(e)) => {
            summary(dry_run, &format!("kitesync: backfill stopped: {tail}"));
            eprintln!("kitesync: backfill failed: {e}; run the same command again to resume");
            explain_outbox(&outcome.outbox);
            let config =
                matches!(e, kitesync::sync::builds::PollError::Source(s) if s.is_configuration());
            return ExitCode::from(if config { EXIT_CONFIG } else { EXIT_INCOMPLETE });
        }
        Some(Ok(walk)) => walk,
    };
    let cp = &walk.checkpoint;
    summary(dry_run, &format!(
        "kitesync: backfill from {} to {} done{}: {} {}, {} finished builds ({} newly queued); {tail}",
        cp.since,
        cp.until,
        if walk.resumed { " (resumed)" } else { "" },
        cp.pages,
        plural(cp.pages, "page"),
        cp.builds,
        walk.queued,
    ));
    if let Some(Err(e)) = &outcome.enrich {
        eprintln!("kitesync: fetching test results or logs failed: {e}");
        return ExitCode::from(EXIT_INCOMPLETE);
    }
    if let Err(e) = &outcome.delivery {
        eprintln!("kitesync: delivery stopped: {e}");
        let config = matches!(e, kitesync::deliver::DeliverError::Fatal(_));
        return ExitCode::from(if config { EXIT_CONFIG } else { EXIT_INCOMPLETE });
    }
    if outcome.outbox.pending + outcome.outbox.dead > 0 {
        explain_outbox(&outcome.outbox);
        return ExitCode::from(EXIT_INCOMPLETE);
    }
    ExitCode::SUCCESS
}

/// Says why items are still in the outbox.
fn explain_outbox(outbox: &Summary) {
    if outbox.pending > 0 {
        let last = outbox.last_error.as_deref().unwrap_or("not tried yet");
        eprintln!(
            "kitesync: {} {} pending, to be retried on the next run (last error: {last})",
            outbox.pending,
            plural(outbox.pending, "item")
        );
    }
    if let Some((label, error)) = outbox.dead_letters.first() {
        eprintln!(
            "kitesync: {} {} kept aside (first: {label}: {error})",
            outbox.dead,
            plural(outbox.dead, "dead letter")
        );
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
