//! Outages logged as people want to read them: when they start, every ten minutes while
//! they last, and when they end — not on every attempt.

use std::time::Duration;

use tokio::time::Instant;

/// How often a lasting outage is logged again.
const REMIND_EVERY: Duration = Duration::from_secs(600);

/// Logs an outage when it starts, every [`REMIND_EVERY`] while it lasts, and when it ends.
pub(crate) struct Outage {
    what: &'static str,
    failing_since: Option<Instant>,
    reminded: Instant,
    failures: u64,
}

impl Outage {
    /// An outage logger for `what` (e.g. "BuildButler delivery").
    pub(crate) fn new(what: &'static str) -> Outage {
        Outage {
            what,
            failing_since: None,
            reminded: Instant::now(),
            failures: 0,
        }
    }

    /// Notes a failure: logged when the outage starts and every ten minutes.
    pub(crate) fn failed(&mut self, error: &str) {
        self.failures += 1;
        let (what, attempts) = (self.what, self.failures);
        match self.failing_since {
            None => {
                self.failing_since = Some(Instant::now());
                self.reminded = Instant::now();
                tracing::error!("{what} failing: {error}; retrying with backoff");
            }
            Some(since) if self.reminded.elapsed() >= REMIND_EVERY => {
                self.reminded = Instant::now();
                let secs = since.elapsed().as_secs();
                tracing::error!(
                    "{what} still failing after {attempts} attempts over {secs}s: {error}"
                );
            }
            Some(_) => tracing::debug!("{what} failed again: {error}"),
        }
    }

    /// Notes a success: logged when it ends an outage.
    pub(crate) fn ok(&mut self) {
        if let Some(since) = self.failing_since.take() {
            let (what, attempts, secs) = (self.what, self.failures, since.elapsed().as_secs());
            tracing::info!("{what} recovered after {attempts} failed attempts over {secs}s");
        }
        self.failures = 0;
    }
}
