//! kitesync's own pace: a token bucket over tokio's clock (so paused time drives it), with
//! two lanes. A poll request waiting for the pace is served before any waiting enrichment
//! request, and enrichment never takes the last token, so a poll never waits for a slot
//! enrichment just took. Enrichment uses every other slot, up to an optional ceiling on its
//! share. The rate may change at run time (the free pace follows Buildkite's budgets).

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Who a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The build and agent polls, and every other request: served first.
    Poll,
    /// Test results and logs: every slot the polls leave, within their ceiling.
    Enrich,
}

/// The largest burst: ten requests, as before kitesync paced its lanes.
const MAX_BURST: f64 = 10.0;
/// The slowest pace (requests a minute) a bucket runs at, so that every wait ends.
const MIN_PER_MINUTE: f64 = 1.0;
/// Float slack when comparing token counts.
const EPSILON: f64 = 1e-9;

/// Paces requests in two lanes. Shared by every task of a process.
pub(crate) struct Pacer {
    state: Mutex<Bucket>,
    /// Woken when a poll has taken its token or the rate changed.
    changed: Notify,
}

struct Bucket {
    /// Tokens a second.
    rate: f64,
    capacity: f64,
    tokens: f64,
    /// Enrichment's ceiling (`max_share_percent`), a bucket of its own when under 100 %.
    share_percent: u32,
    enrich_tokens: f64,
    at: Instant,
    /// Poll requests waiting for a token.
    polls_waiting: usize,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.enrich_tokens =
            (self.enrich_tokens + elapsed * self.enrich_rate()).min(self.enrich_capacity());
        self.at = now;
    }

    fn capped(&self) -> bool {
        self.share_percent < 100
    }

    fn enrich_rate(&self) -> f64 {
        self.rate * f64::from(self.share_percent) / 100.0
    }

    fn enrich_capacity(&self) -> f64 {
        (self.capacity * f64::from(self.share_percent) / 100.0).max(1.0)
    }

    /// Takes a token for `lane`, or says how long until one may be there.
    fn take(&mut self, lane: Lane) -> Result<(), Duration> {
        let until = |have: f64, need: f64, rate: f64| (need - have).max(0.0) / rate;
        let slot = 1.0 / self.rate;
        match lane {
            Lane::Poll if self.tokens >= 1.0 - EPSILON => {
                self.tokens -= 1.0;
                Ok(())
            }
            Lane::Poll => Err(secs(until(self.tokens, 1.0, self.rate))),
            // A poll is waiting: it has the next token; enrichment looks again when it is
            // taken (or a slot later).
            Lane::Enrich if self.polls_waiting > 0 => {
                Err(secs(until(self.tokens, 2.0, self.rate).max(slot)))
            }
            Lane::Enrich => {
                let mut wait = until(self.tokens, 2.0 - EPSILON, self.rate);
                if self.capped() {
                    wait = wait.max(until(self.enrich_tokens, 1.0 - EPSILON, self.enrich_rate()));
                }
                if wait > 0.0 {
                    return Err(secs(wait));
                }
                self.tokens -= 1.0;
                if self.capped() {
                    self.enrich_tokens -= 1.0;
                }
                Ok(())
            }
        }
    }
}

fn secs(s: f64) -> Duration {
    // At least a millisecond (tokio's tick), at most a minute: every wait looks again.
    Duration::from_secs_f64(s.clamp(0.001, 60.0))
}

fn capacity(per_minute: f64) -> f64 {
    per_minute.clamp(2.0, MAX_BURST)
}

impl Pacer {
    /// A pacer at `per_minute` requests a minute (bursts of at most 10, at least 2 so that
    /// enrichment can run beside a poll's token), enrichment held to `share_percent` of it.
    pub(crate) fn new(per_minute: f64, share_percent: u32) -> Pacer {
        let per_minute = per_minute.max(MIN_PER_MINUTE);
        let share_percent = share_percent.clamp(1, 100);
        let capacity = capacity(per_minute);
        let bucket = Bucket {
            rate: per_minute / 60.0,
            capacity,
            tokens: capacity,
            share_percent,
            enrich_tokens: 0.0,
            at: Instant::now(),
            polls_waiting: 0,
        };
        let mut bucket = bucket;
        bucket.enrich_tokens = bucket.enrich_capacity();
        Pacer {
            state: Mutex::new(bucket),
            changed: Notify::new(),
        }
    }

    /// The pace in force, in requests a minute.
    pub(crate) fn per_minute(&self) -> f64 {
        self.lock().rate * 60.0
    }

    /// Changes the pace from now on (what was earned so far stays, within the new burst).
    pub(crate) fn set_per_minute(&self, per_minute: f64) {
        let per_minute = per_minute.max(MIN_PER_MINUTE);
        {
            let mut b = self.lock();
            if (b.rate * 60.0 - per_minute).abs() < EPSILON {
                return;
            }
            b.refill(Instant::now());
            b.rate = per_minute / 60.0;
            b.capacity = capacity(per_minute);
            b.tokens = b.tokens.min(b.capacity);
            b.enrich_tokens = b.enrich_tokens.min(b.enrich_capacity());
        }
        self.changed.notify_waiters();
    }

    /// Waits for a token of `lane`'s.
    pub(crate) async fn acquire(&self, lane: Lane) {
        let mut waiting = Waiting {
            pacer: self,
            registered: false,
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let mut b = self.lock();
                b.refill(Instant::now());
                match b.take(lane) {
                    Ok(()) => return,
                    Err(wait) => {
                        if lane == Lane::Poll && !waiting.registered {
                            b.polls_waiting += 1;
                            waiting.registered = true;
                        }
                        wait
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = changed => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // A poisoned lock only means another task panicked mid-update; the bucket is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A poll counted as waiting until it has its token or is dropped (cancelled).
struct Waiting<'a> {
    pacer: &'a Pacer,
    registered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.pacer.lock().polls_waiting -= 1;
            self.pacer.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Spawns `n` tasks of `lane` that each take a token and record when and who.
    fn spawn(
        pacer: &Arc<Pacer>,
        lane: Lane,
        n: usize,
        log: &Arc<Mutex<Vec<(Lane, Instant)>>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (pacer, log) = (Arc::clone(pacer), Arc::clone(log));
                tokio::spawn(async move {
                    pacer.acquire(lane).await;
                    log.lock().expect("log").push((lane, Instant::now()));
                })
            })
            .collect()
    }

    /// Runs enrichment requests back to back for `for_`, counting them.
    async fn enrich_for(pacer: &Pacer, for_: Duration) -> usize {
        let end = Instant::now() + for_;
        let mut n = 0;
        while Instant::now() < end {
            pacer.acquire(Lane::Enrich).await;
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_poll_is_served_before_every_waiting_enrichment_request() {
        let pacer = Arc::new(Pacer::new(60.0, 100));
        let log = Arc::new(Mutex::new(Vec::new()));
        // Enrichment empties the bucket down to its last token, then waits.
        let mut tasks = spawn(&pacer, Lane::Enrich, 20, &log);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(log.lock().expect("log").len(), 9, "all but the last token");
        // Three polls arrive: the first takes the last token at once, the others come next.
        let start = Instant::now();
        tasks.extend(spawn(&pacer, Lane::Poll, 3, &log));
        for t in tasks {
            t.await.expect("task");
        }
        let log = log.lock().expect("log");
        let after: Vec<_> = log[9..].iter().map(|(lane, _)| *lane).collect();
        assert_eq!(&after[..3], [Lane::Poll; 3], "{after:?}");
        assert_eq!(
            log[9].1, start,
            "the first poll took the last token at once"
        );
        assert!(log[11].1 - start <= Duration::from_secs(2), "one slot each");
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_never_waits_behind_a_backlog_of_enrichment() {
        let pacer = Arc::new(Pacer::new(30.0, 100));
        let backlog = {
            let pacer = Arc::clone(&pacer);
            tokio::spawn(async move { enrich_for(&pacer, Duration::from_secs(600)).await })
        };
        // One poll request every 30 s, for ten minutes, each served at once.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let asked = Instant::now();
            pacer.acquire(Lane::Poll).await;
            assert_eq!(Instant::now(), asked, "a poll waited for the pace");
        }
        let enriched = backlog.await.expect("task");
        // 30 a minute for ten minutes plus the first burst, less the 20 polls' slots.
        assert!(
            (275..=290).contains(&enriched),
            "enrichment sent {enriched}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn enrichment_uses_every_slot_the_polls_leave() {
        let pacer = Pacer::new(120.0, 100);
        let n = enrich_for(&pacer, Duration::from_secs(60)).await;
        // The burst less the last token, then two a second.
        assert!((128..=130).contains(&n), "{n} in a minute at 120 a minute");
    }

    #[tokio::test(start_paused = true)]
    async fn max_share_percent_is_a_ceiling_on_enrichment() {
        let pacer = Pacer::new(120.0, 25);
        let n = enrich_for(&pacer, Duration::from_secs(60)).await;
        assert!((30..=34).contains(&n), "{n} at a quarter of 120 a minute");
        // The polls keep the whole pace.
        let start = Instant::now();
        for _ in 0..10 {
            pacer.acquire(Lane::Poll).await;
        }
        assert!(Instant::now() - start <= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_changes_at_run_time() {
        let pacer = Arc::new(Pacer::new(6.0, 100));
        let waiting = {
            let pacer = Arc::clone(&pacer);
            tokio::spawn(async move {
                for _ in 0..3 {
                    pacer.acquire(Lane::Poll).await;
                }
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let start = Instant::now();
        // Burst of 2 at 6 a minute; the third would wait 10 s, but the pace goes to 600.
        pacer.set_per_minute(600.0);
        let done = waiting.await.expect("task");
        assert!(
            done - start <= Duration::from_millis(200),
            "{:?}",
            done - start
        );
        assert_eq!(pacer.per_minute(), 600.0);
    }
}
