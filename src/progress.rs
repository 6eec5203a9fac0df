//! Backfill progress: a progress bar on a terminal, plain log lines otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::store::backfill::Checkpoint;
use crate::sync::backfill::Observer;

/// Steps of the bar: the share of the range's time span walked, in thousandths.
const STEPS: u64 = 1000;

/// Shows how a backfill goes.
pub struct Reporter {
    bar: Option<ProgressBar>,
    pages_logged: u64,
}

impl Reporter {
    /// A bar when `terminal`, else log lines (one per 10 pages).
    pub fn new(terminal: bool) -> Reporter {
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
        }
    }

    /// Removes the bar, leaving the terminal clean for the summary.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Reporter {
    fn page(&mut self, cp: &Checkpoint, fraction: f64, requests: u64, budget_waits: u64) {
        let line = format!(
            "{} pages, {} builds, {} requests, {} budget waits, down to {}",
            cp.pages, cp.builds, requests, budget_waits, cp.upper
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position((fraction * STEPS as f64) as u64);
                bar.set_message(line);
            }
            None if cp.pages == 1 || cp.pages >= self.pages_logged + 10 || cp.done => {
                self.pages_logged = cp.pages;
                tracing::info!("backfill {:.0}%: {line}", fraction * 100.0);
            }
            None => {}
        }
    }
}
