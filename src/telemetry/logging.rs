//! Where log lines go: text or JSON on stderr, or the systemd journal with priorities and
//! structured fields when stderr is the journal (`JOURNAL_STREAM`), so that
//! `journalctl -u kitesync -p warning` shows exactly the warnings and errors.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// The journal when stderr is connected to it (a systemd unit), else text.
    Auto,
    /// Text lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// The systemd journal's native protocol (falls back to text when there is no journal).
    Journald,
}

/// Installs the global logger; the level comes from `RUST_LOG` (`info` by default).
pub fn init(format: LogFormat) {
    let journald = match format {
        LogFormat::Journald => true,
        LogFormat::Auto => stderr_is_the_journal(),
        LogFormat::Text | LogFormat::Json => false,
    };
    let registry = tracing_subscriber::registry().with(filter());
    if journald {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal
                    .with_syslog_identifier("kitesync".to_string())
                    .with_field_prefix(Some("KITESYNC".to_string()));
                registry.with(journal).init();
                return;
            }
            Err(e) => {
                text().init();
                tracing::warn!("cannot log to the systemd journal ({e}): logging text to stderr");
                return;
            }
        }
    }
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
        _ => text().init(),
    }
}

/// Text lines on stderr, coloured on a terminal.
fn text() -> impl SubscriberInitExt {
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    tracing_subscriber::registry().with(filter()).with(layer)
}

fn filter() -> EnvFilter {
    // tokio-cron-scheduler says "Uninited" and "Job creator created" at INFO.
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_cron_scheduler=warn"))
}

/// True when systemd connected stderr to the journal: `JOURNAL_STREAM` names the device and
/// inode of stderr (not merely inherited by a program whose stderr goes elsewhere).
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream
        .to_str()
        .and_then(|s| s.split_once(':'))
        .is_some_and(|(dev, ino)| {
            dev.parse() == Ok(stderr.dev()) && ino.parse() == Ok(stderr.ino())
        })
}
