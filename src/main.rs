//! The `kitesync` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kitesync::config::Config;
use kitesync::once::{self, OnceReport};

/// Exit code for problems the operator must fix: configuration, credentials, scopes.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the run worked but not everything was delivered (yet).
const EXIT_INCOMPLETE: u8 = 1;

/// Brings Buildkite builds to BuildButler by polling, no webhooks needed.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The TOML config file (every key may also be set as KITESYNC_SECTION__KEY).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// Poll once, deliver, and exit: 0 when everything was delivered.
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kitesync: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if !cli.once {
        eprintln!("kitesync: only --once is available in this version; run it from cron or a systemd timer");
        return ExitCode::from(EXIT_CONFIG);
    }
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
    match runtime.block_on(once::run(&config)) {
        Ok(report) => finish(&report),
        Err(e) => {
            eprintln!("kitesync: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Prints the one-line summary and picks the exit code.
fn finish(report: &OnceReport) -> ExitCode {
    let delivered = report.delivery.as_ref().map_or(0, |d| d.delivered);
    let (queued, pages) = report.poll.as_ref().map_or((0, 0), |p| (p.queued, p.pages));
    println!(
        "kitesync: {queued} newly finished {} in {pages} {} ({} Buildkite {}); delivered {delivered}; outbox: {} pending, {} dead",
        plural(queued as u64, "build"),
        plural(pages.into(), "page"),
        report.requests,
        plural(report.requests, "request"),
        report.outbox.pending,
        report.outbox.dead
    );
    if report.complete() {
        return ExitCode::SUCCESS;
    }
    if let Err(e) = &report.poll {
        eprintln!("kitesync: poll failed: {e}");
    }
    if let Err(e) = &report.delivery {
        eprintln!("kitesync: delivery stopped: {e}");
    }
    if report.outbox.pending > 0 {
        let last = report
            .outbox
            .last_error
            .as_deref()
            .unwrap_or("not tried yet");
        eprintln!(
            "kitesync: {} {} pending, to be retried on the next run (last error: {last})",
            report.outbox.pending,
            plural(report.outbox.pending, "item")
        );
    }
    if let Some((label, error)) = report.outbox.dead_letters.first() {
        eprintln!(
            "kitesync: {} {} BuildButler refused (first: {label}: {error})",
            report.outbox.dead,
            plural(report.outbox.dead, "dead letter")
        );
    }
    if report.needs_configuration() {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
