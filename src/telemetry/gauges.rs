//! The gauges that come from the state database, read by the daemon every [`REFRESH`] in
//! one store call and kept in [`Metrics`]: a scrape reads them there and never waits for
//! SQLite. A new gauge is a field of [`Snapshot`], read in [`Snapshot::read`] and set in
//! [`Snapshot::apply`].

use std::future::Future;
use std::time::Duration;

use rusqlite::Connection;

use crate::clock::now_ms;
use crate::item::Kind;
use crate::store::outbox::DeadCause;
use crate::store::{enrich, outbox, Store, StoreError};
use crate::telemetry::metrics::{Metrics, OutboxLabels};

/// How often the daemon reads the gauges from the state database.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The figures of the state database the gauges show.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Outbox items pending and dead.
    pub(crate) outbox: outbox::Summary,
    /// Dead letters by kind and cause ([`outbox::dead_by_cause`]).
    pub(crate) dead: Vec<(Kind, Option<DeadCause>, u64)>,
    /// Builds and files waiting for their test results and logs.
    pub(crate) enrich: enrich::Backlog,
}

impl Snapshot {
    /// Reads every figure (one store call, so one turn of the connection).
    pub(crate) fn read(conn: &Connection) -> rusqlite::Result<Snapshot> {
        Ok(Snapshot {
            outbox: outbox::summary(conn)?,
            dead: outbox::dead_by_cause(conn)?,
            enrich: enrich::backlog(conn)?,
        })
    }

    /// Sets the gauges to these figures.
    pub(crate) fn apply(&self, metrics: &Metrics) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let outbox = |labels| metrics.outbox.get_or_create(&labels);
        outbox(OutboxLabels::Pending).set(gauge(self.outbox.pending));
        // Every kind and cause has its series, at 0 when there are none: a sum over them is
        // never empty, and dead letters replayed show as 0, not as their last count.
        for kind in Kind::ALL {
            for cause in DeadCause::ALL.map(Some).into_iter().chain([None]) {
                let n = self.dead.iter().find(|&&(k, c, _)| (k, c) == (kind, cause));
                outbox(OutboxLabels::Dead { kind, cause }).set(gauge(n.map_or(0, |d| d.2)));
            }
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
    async fn gauges_show_the_outbox_once_refreshed_dead_letters_by_kind_and_cause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        store
            .call(|c| {
                c.execute_batch(
                    "INSERT INTO outbox (kind, key, version, label, payload, state, enqueued_at,
                                         dead_cause)
                     VALUES ('build', 'a', '1', 'acme/web#1', '{}', 'pending', 0, NULL),
                            ('build', 'b', '1', 'acme/web#2', '{}', 'pending', 0, NULL),
                            ('build', 'c', '1', 'acme/web#3', '{}', 'dead', 0, 'content'),
                            ('tests', 'd', '1', 'acme/web#4', '{}', 'dead', 0, 'content'),
                            ('tests', 'e', '1', 'acme/web#4', '{}', 'dead', 0, 'content'),
                            ('tests', 'f', '1', 'acme/web#5', '{}', 'dead', 0, 'other'),
                            ('tests', 'g', '1', 'acme/web#6', '{}', 'dead', 0, NULL)",
                )
            })
            .await
            .expect("queued");
        let metrics = Metrics::new();
        let shown = |labels| metrics.outbox.get_or_create(&labels).get();
        let dead = |kind, cause| OutboxLabels::Dead { kind, cause };
        let content = Some(DeadCause::Content);
        let other = Some(DeadCause::Other);
        assert_eq!(shown(OutboxLabels::Pending), 0, "not read yet");
        refresh(&store, &metrics).await.expect("refreshed");
        assert_eq!(shown(OutboxLabels::Pending), 2);
        assert_eq!(shown(dead(Kind::Build, content)), 1);
        assert_eq!(shown(dead(Kind::Tests, content)), 2);
        assert_eq!(shown(dead(Kind::Tests, other)), 1);
        assert_eq!(shown(dead(Kind::Tests, None)), 1);
        let text = metrics.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("kitesync_outbox_items{"));
        assert_eq!(
            series.count(),
            1 + 4 * 3,
            "every kind and cause, at 0 if none:\n{text}"
        );
        assert!(
            text.contains(
                "kitesync_outbox_items{state=\"dead\",kind=\"tests\",cause=\"unrecorded\"} 1\n"
            ),
            "{text}"
        );

        // Replayed, the dead letters' series stay, at 0.
        store
            .call(|c| outbox::replay_dead(c))
            .await
            .expect("replayed");
        refresh(&store, &metrics).await.expect("refreshed");
        assert_eq!(shown(OutboxLabels::Pending), 7);
        assert_eq!(shown(dead(Kind::Tests, content)), 0);
    }
}
