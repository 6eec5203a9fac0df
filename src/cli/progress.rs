//! Backfill progress: a progress bar on a terminal, plain log lines otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::store::enrich::Backlog;
use crate::sync::backfill::{Estimate, Observer, Progress};

/// Steps of the bar: the share of the range's time span walked, in thousandths.
const STEPS: u64 = 1000;
/// Log lines while test results and logs are fetched after the walk: one per this many.
const ENRICH_LOG_EVERY: u64 = 30;

/// Shows how a backfill goes.
pub(crate) struct Reporter {
    bar: Option<ProgressBar>,
    pages_logged: u64,
    enrich_ticks: u64,
}

impl Reporter {
    /// A bar when `terminal`, else log lines (one per 10 pages).
    pub(crate) fn new(terminal: bool) -> Reporter {
        let bar = terminal.then(|| {
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = ProgressBar::new(STEPS).with_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Reporter {
            bar,
            pages_logged: 0,
            enrich_ticks: 0,
        }
    }

    /// Removes the bar, leaving the terminal clean for the summary.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// "N builds (M files) of test results and logs to fetch", or nothing.
fn backlog_text(backlog: &Backlog) -> String {
    match backlog.builds {
        0 => String::new(),
        builds => format!(
            ", test results and logs of {builds} builds to fetch ({} files listed)",
            backlog.files
        ),
    }
}

impl Observer for Reporter {
    fn page(&mut self, p: &Progress<'_>) {
        let cp = p.checkpoint;
        let line = format!(
            "{} pages, {} builds, {} requests, {} budget waits, down to {}{}",
            cp.pages,
            cp.builds,
            p.requests,
            p.budget_waits,
            cp.upper,
            backlog_text(&p.backlog)
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position((p.fraction * STEPS as f64) as u64);
                bar.set_message(line);
            }
            None if cp.pages == 1 || cp.pages >= self.pages_logged + 10 || cp.done => {
                self.pages_logged = cp.pages;
                tracing::info!("backfill {:.0}%: {line}", p.fraction * 100.0);
            }
            None => {}
        }
    }

    fn estimate(&mut self, estimate: &Estimate) {
        match &self.bar {
            Some(bar) => bar.println(format!("kitesync: {estimate}")),
            None => tracing::info!("{estimate}"),
        }
    }

    fn enriching(&mut self, backlog: &Backlog, requests: u64) {
        let line = format!("walk done, {requests} requests{}", backlog_text(backlog));
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if self.enrich_ticks.is_multiple_of(ENRICH_LOG_EVERY) => {
                tracing::info!("backfill: {line}");
            }
            None => {}
        }
        self.enrich_ticks += 1;
    }
}
