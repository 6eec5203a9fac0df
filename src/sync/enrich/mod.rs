//! Fetches what goes with a finished build besides the build itself: test results and
//! logs, from the store's enrich queue, never on the build poll's path.
//!
//! One build at a time (by one process at a time: the store's enrichment lock), oldest first,
//! in steps saved one by one: the artifact listing, each JUnit file, the logs. Every attempt
//! is recorded before it is made. A step that fails is retried later with backoff; a listing
//! or logs that fail [`ladder::MAX_ATTEMPTS`] times are given up, and so is a file that
//! failed [`ladder::MAX_FILE_FAILURES`] times or that was started
//! [`ladder::MAX_FILE_UNFINISHED`] times without ever finishing (it may be what kills
//! kitesync); [`ladder`] holds that ladder, written once for every step. The build itself is
//! delivered regardless.
//! Requests go through the budget's enrichment lane, which has every slot the polls leave:
//! when that is spent enrichment waits, it never skips.

mod ladder;
pub(crate) mod logs;
mod pass;
pub mod test_results;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::{Owner, Parts, SyncError};
use crate::buildkite::Build;
use crate::clock::now_ms;
use crate::run::outage::Outage;
use crate::run::runner::Stop;
use crate::store::enrich;
pub(crate) use pass::EnrichReport;
use pass::{until_stopped, Ended, Pass};

/// The longest the background task sleeps before looking at the queue again.
const IDLE_WAKE: Duration = Duration::from_secs(60);
/// How long it pauses after a failure that is not a build's own (the state database, the
/// token or its scopes).
const PAUSE: Duration = Duration::from_secs(30);
const CONFIGURATION_PAUSE: Duration = Duration::from_secs(300);

/// Enriches the builds that are due, one after the other, until none is due or `stop` says
/// [`Stop::Now`] (the step under way is then abandoned and its attempt taken back). Wakes
/// `queued` whenever it queues something. Stops at a configuration error (token, scope) or a
/// state-database failure.
pub(crate) async fn run(
    app: Parts<'_>,
    mut stop: watch::Receiver<Stop>,
    queued: &Notify,
) -> Result<EnrichReport, SyncError> {
    let mut report = EnrichReport::default();
    loop {
        // Nothing due: no lock to take (nor its file to create).
        if app
            .store
            .call(|c| enrich::next(c, now_ms()))
            .await?
            .is_none()
        {
            return Ok(report);
        }
        let Some(lock) = until_stopped(&mut stop, app.store.enrich_lock()).await else {
            return Ok(report);
        };
        let lock = lock?;
        let Some(pending) = app.store.call(|c| enrich::next(c, now_ms())).await? else {
            return Ok(report);
        };
        let Ok(build) = serde_json::from_str::<Build>(&pending.payload) else {
            // Not a build enrichment can read (it was queued for delivery regardless).
            app.store.call(move |c| enrich::finish(c, &pending)).await?;
            continue;
        };
        let mut pass = Pass::new(app, build, pending, stop.clone(), queued, &mut report);
        let ended = pass.run().await;
        // What was spent and skipped is saved however the pass ended.
        let delta = pass.take_totals();
        app.store
            .call(move |c| enrich::add_totals(c, &delta))
            .await?;
        drop(lock);
        if ended? == Ended::Stopped {
            return Ok(report);
        }
    }
}

/// Enriches in the background until `stop`: whatever is due, then sleeps until the next
/// retry is due, `wake` is notified (a poll queued builds) or a minute passes. Wakes
/// `queued` (the delivery loop) for what it queues.
pub(crate) async fn run_loop(
    owner: Arc<impl Owner>,
    wake: Arc<Notify>,
    queued: Arc<Notify>,
    mut stop: watch::Receiver<Stop>,
) {
    let app = owner.parts();
    let mut outage = Outage::new("fetching test results and logs");
    loop {
        let mut pause = Duration::ZERO;
        match run(app, stop.clone(), &queued).await {
            // Nothing but failures: Buildkite or the storage host is failing.
            Ok(r) if r.builds + r.items == 0 && r.retried > 0 => {
                outage.failed(&r.last_error.unwrap_or_default());
            }
            Ok(_) => outage.ok(),
            Err(e) if e.is_configuration() => {
                outage.failed(&format!(
                    "{e} (test results and logs wait until it is fixed)"
                ));
                pause = CONFIGURATION_PAUSE;
            }
            Err(e) => {
                outage.failed(&e.to_string());
                pause = PAUSE;
            }
        }
        if *stop.borrow() == Stop::Now {
            return;
        }
        let next = app.store.call(|c| enrich::next_attempt_at(c)).await;
        let wait = match next {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            _ => IDLE_WAKE,
        };
        let woken = async {
            match pause.is_zero() {
                true => wake.notified().await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(wait.min(IDLE_WAKE).max(pause)) => {}
            _ = stop.wait_for(|s| *s == Stop::Now) => return,
        }
    }
}
