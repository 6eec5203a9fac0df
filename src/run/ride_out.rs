//! Riding out refusals from Buildkite once kitesync has worked with this organization and
//! token.
//!
//! A 401, 403 or 404 from Buildkite (or from a proxy on the way) means the operator must act
//! when kitesync has never worked with this config: the daemon stops with exit code 2, which
//! the unit's `RestartPreventExitStatus=2` keeps stopped. Once a poll has succeeded with this
//! organization and token (remembered in the state database, so a restart during a token
//! rotation is no different), the same answer is more likely passing: a token being rotated,
//! a proxy's block page, an API hiccup. Then it is logged loudly each time, shown by
//! `/healthz` (503) and `status`, and the poll is tried again with backoff — 30 s, then ever
//! less often up to `[buildkite] refused_retry_seconds` — while deliveries go on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::app::App;
use crate::clock::{self, timestamp};
use crate::net;
use crate::store::refusal::{self, Refusal};
use crate::sync::SyncError;

/// The wait before the first retry of a refused poll (if `refused_retry_seconds` is longer).
const FIRST_RETRY: Duration = Duration::from_secs(30);

/// What to do about a poll Buildkite refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Never worked with this organization and token: stop, the operator must act.
    Stop,
    /// Worked before: try again after this long, delivering meanwhile.
    RetryIn(Duration),
}

/// The refusal being ridden out, if any.
#[derive(Debug, Default)]
pub(crate) struct RideOut {
    refused: Option<Refused>,
}

#[derive(Debug)]
struct Refused {
    since: DateTime<Utc>,
    attempts: u32,
    retry_at: Instant,
}

impl RideOut {
    /// True while a refused poll's next try is not due yet.
    pub(crate) fn waiting(&self) -> bool {
        self.refused
            .as_ref()
            .is_some_and(|r| Instant::now() < r.retry_at)
    }

    /// Decides about a poll that failed with a configuration error (`error`): stop when
    /// kitesync never worked with this organization and token, else log it, record it for
    /// `/healthz` and `status`, and say when to try again.
    pub(crate) async fn refused(&mut self, app: &App, error: &SyncError) -> Verdict {
        let bk = &app.config.buildkite;
        let (org, token) = (bk.organization.clone(), bk.token().fingerprint());
        let worked = app
            .store
            .call(move |c| refusal::has_worked(c, &org, &token))
            .await;
        match worked {
            Ok(true) => {}
            Ok(false) => return Verdict::Stop,
            Err(e) => tracing::warn!(
                "cannot tell whether kitesync worked before ({e}): riding this refusal out"
            ),
        }
        let now = clock::now();
        let attempts = self.refused.as_ref().map_or(1, |r| r.attempts + 1);
        let since = self.refused.as_ref().map_or(now, |r| r.since);
        let most = bk.refused_retry();
        let wait = net::backoff(attempts, FIRST_RETRY.min(most), most);
        self.refused = Some(Refused {
            since,
            attempts,
            retry_at: Instant::now() + wait,
        });
        let secs = wait.as_secs().max(1);
        // Recorded before it is logged: whoever reads the log finds it in `status` and
        // `/healthz` too.
        let record = Refusal {
            since: timestamp(since),
            attempts,
            error: error.to_string(),
            next_attempt_at: timestamp(
                now.checked_add_signed(chrono::Duration::seconds(secs as i64))
                    .unwrap_or(now),
            ),
        };
        if let Err(e) = app.store.call(move |c| refusal::set(c, &record)).await {
            tracing::warn!("cannot record the refusal for `status`: {e}");
        }
        app.metrics.buildkite_refused.set(1);
        tracing::error!(
            attempts,
            "Buildkite refuses kitesync: {error}. kitesync has worked with this organization and \
             token before, so this may pass (a token being rotated, a proxy, an API hiccup): \
             it goes on delivering what it has and tries again in {secs}s (refused since {})",
            timestamp(since)
        );
        Verdict::RetryIn(wait)
    }

    /// A poll succeeded: a refusal being ridden out is over (the poll cleared its record).
    pub(crate) fn accepted(&mut self, app: &App) {
        if let Some(r) = self.refused.take() {
            app.metrics.buildkite_refused.set(0);
            tracing::info!(
                "Buildkite accepts kitesync again, after {} refused polls since {}",
                r.attempts,
                timestamp(r.since)
            );
        }
    }
}
