//! The gauges that come from the state database, read by the daemon every [`REFRESH`] in
//! one store call and kept in [`Metrics`]: a scrape reads them there and never waits for
//! SQLite. A new gauge is a field of [`Snapshot`], read in [`Snapshot::read`] and set in
//! [`Snapshot::apply`].

use std::future::Future;
use std::time::Duration;

use rusqlite::Connection;

use crate::clock::now_ms;
use crate::store::{enrich, outbox, Store, StoreError};
use crate::telemetry::metrics::{Metrics, StateLabels};

/// How often the daemon reads the gauges from the state database.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);

/// The figures of the state database the gauges show.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Outbox items pending and dead.
    pub(crate) outbox: outbox::Summary,
    /// Builds and files waiting for their test results and logs.
    pub(crate) enrich: enrich::Backlog,
}

impl Snapshot {
    /// Reads every figure (one store call, so one turn of the connection).
    pub(crate) fn read(conn: &Connection) -> rusqlite::Result<Snapshot> {
        Ok(Snapshot {
            outbox: outbox::summary(conn)?,
            enrich: enrich::backlog(conn)?,
        })
    }

    /// Sets the gauges to these figures.
    pub(crate) fn apply(&self, metrics: &Metrics) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (state, n) in [("pending", self.outbox.pending), ("dead", self.outbox.dead)] {
            let labels = StateLabels {
                state: state.into(),
            };
            metrics.outbox.get_or_create(&labels).set(gauge(n));
        }
        metrics.enrich_backlog_builds.set(gauge(self.enrich.builds));
        metrics.enrich_backlog_files.set(gauge(self.enrich.files));
        let oldest = self.enrich.oldest_queued_at;
        let age = oldest.map_or(0, |at| (now_ms() - at).max(0) / 1000);
        metrics.enrich_oldest.set(age);
    }
}

/// Reads the gauges from `store` into `metrics` once.
pub(crate) async fn refresh(store: &Store, metrics: &Metrics) -> Result<(), StoreError> {
    let snapshot = store.call(|c| Snapshot::read(c)).await?;
    snapshot.apply(metrics);
    Ok(())
}

/// Refreshes the gauges every [`REFRESH`] until `stopped` resolves. A failed read keeps the
/// last figures (the poll and the deliveries report the database's troubles).
pub(crate) async fn keep_fresh(store: Store, metrics: &Metrics, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    let mut every = tokio::time::interval(REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = &mut stopped => return,
        }
        if let Err(e) = refresh(&store, metrics).await {
            tracing::debug!("cannot refresh the gauges: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gauges_show_the_outbox_once_refreshed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        store
            .call(|c| {
                c.execute_batch(
                    "INSERT INTO outbox (kind, key, version, label, payload, state, enqueued_at)
                     VALUES ('build', 'a', '1', 'acme/web#1', '{}', 'pending', 0),
                            ('build', 'b', '1', 'acme/web#2', '{}', 'pending', 0),
                            ('build', 'c', '1', 'acme/web#3', '{}', 'dead', 0)",
                )
            })
            .await
            .expect("queued");
        let metrics = Metrics::new();
        let shown = |state: &str| {
            let labels = StateLabels {
                state: state.into(),
            };
            metrics.outbox.get_or_create(&labels).get()
        };
        assert_eq!((shown("pending"), shown("dead")), (0, 0), "not read yet");
        refresh(&store, &metrics).await.expect("refreshed");
        assert_eq!((shown("pending"), shown("dead")), (2, 1));
    }
}
