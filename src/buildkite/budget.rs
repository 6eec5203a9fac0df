//! The shared rate budget: kitesync's own pace (governor) plus what Buildkite says is left.
//!
//! Buildkite counts every request against two budgets shared with people and other tools:
//! the organization's (`RateLimit-*`) and the token owner's (`RateLimit-User-*`). After each
//! answer the headers are read; when either budget is down to its reserve (`reserve_percent`
//! of its limit, at least 2 requests) kitesync waits for that budget's reset instead of
//! spending what others need. On a 429 it waits out the `Reset` of the budget that ran out
//! (Buildkite sends no `Retry-After`). Such a wait holds every request of the process, from
//! any task, until it has passed, and ends [`RESET_BUFFER`] after the reset, as Buildkite's
//! own Go client waits, so that the first request does not land in the old window.
//!
//! Test results and logs ([`Lane::Enrich`]) may use only a share of kitesync's pace: they
//! pass a pacer of their own before the shared one, so a backlog of them never starves the
//! build and agent polls. When their share is spent they wait; nothing is skipped.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

use crate::net;

/// The longest wait any header may impose: Buildkite's windows are one minute.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// Used on a 429 that says nothing about when to come back.
const DEFAULT_429_WAIT: Duration = Duration::from_secs(60);
/// Added to every wait for a budget's reset: `RateLimit-Reset` is in whole seconds, and a
/// request sent on the dot may still count against the old window (go-buildkite adds the
/// same 500 ms).
const RESET_BUFFER: Duration = Duration::from_millis(500);

/// One budget as the headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub remaining: u32,
    pub limit: u32,
    #[serde(
        rename = "reset_seconds",
        serialize_with = "secs",
        deserialize_with = "from_secs"
    )]
    pub reset: Duration,
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn from_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// Both budgets, as of the last answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The organization's budget (`RateLimit-*`).
    #[serde(rename = "organization")]
    pub org: Option<Scope>,
    /// The token owner's budget (`RateLimit-User-*`).
    pub user: Option<Scope>,
}

/// The budgets as last seen, and when: what a poll saves for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub at: String,
    #[serde(flatten)]
    pub budgets: Snapshot,
}

impl Snapshot {
    /// Reads both budgets from an answer's headers; absent or garbled headers give `None`.
    pub fn from_headers(headers: &HeaderMap) -> Snapshot {
        Snapshot {
            org: scope(headers, "ratelimit-"),
            user: scope(headers, "ratelimit-user-"),
        }
    }

    /// The budgets reported, with their names (`organization`, `user`).
    pub fn scopes(&self) -> impl Iterator<Item = (&'static str, Scope)> {
        [("organization", self.org), ("user", self.user)]
            .into_iter()
            .filter_map(|(name, s)| Some((name, s?)))
    }

    /// The scopes that are at or below their reserve, with their names.
    fn low(&self, reserve_percent: u32) -> impl Iterator<Item = (&'static str, Scope)> {
        self.scopes()
            .filter(move |(_, s)| s.remaining <= reserve(s.limit, reserve_percent))
    }
}

/// The part of a budget kitesync leaves to others: `percent` of it, at least 2 requests.
fn reserve(limit: u32, percent: u32) -> u32 {
    (u64::from(limit) * u64::from(percent) / 100).max(2) as u32
}

fn scope(headers: &HeaderMap, prefix: &str) -> Option<Scope> {
    let num = |name: &str| -> Option<u64> {
        let value = net::header(headers, format!("{prefix}{name}"))?;
        value.trim().parse().ok()
    };
    Some(Scope {
        remaining: u32::try_from(num("remaining")?).unwrap_or(u32::MAX),
        limit: u32::try_from(num("limit")?).unwrap_or(u32::MAX),
        reset: Duration::from_secs(num("reset")?).min(MAX_WAIT),
    })
}

/// Who a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The build and agent polls, and every other request: kitesync's whole pace.
    Poll,
    /// Test results and logs: at most their share of the pace.
    Enrich,
}

/// Paces every Buildkite request. Shared by all of a process's requests.
pub struct Budget {
    limiter: DefaultDirectRateLimiter,
    /// The share of the pace that test results and logs may use.
    enrich: DefaultDirectRateLimiter,
    reserve_percent: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// No request before this, whichever task asks: a wait for a budget's reset.
    not_before: Option<Instant>,
    last: Snapshot,
    waits: u64,
}

impl Budget {
    /// A budget that never goes faster than `requests_per_minute`, in bursts of at most 10,
    /// leaves `reserve_percent` of Buildkite's budgets to others, and lets [`Lane::Enrich`]
    /// use at most `enrich_share_percent` of the pace.
    pub fn new(
        requests_per_minute: u32,
        reserve_percent: u32,
        enrich_share_percent: u32,
    ) -> Budget {
        let share = |n: u32| (u64::from(n) * u64::from(enrich_share_percent.min(100)) / 100) as u32;
        let pace = |rpm: u32, burst: u32| {
            let rpm = NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(Quota::per_minute(rpm).allow_burst(burst))
        };
        let burst = requests_per_minute.min(10);
        Budget {
            limiter: pace(requests_per_minute, burst),
            enrich: pace(share(requests_per_minute), share(burst)),
            reserve_percent,
            state: Mutex::new(State::default()),
        }
    }

    /// The requests of a budget of `limit` that kitesync leaves to others.
    pub fn reserve_of(&self, limit: u32) -> u32 {
        reserve(limit, self.reserve_percent)
    }

    /// Waits until a request for `lane` may be sent: enrichment first for its share of the
    /// pace; then until any wait for a budget's reset has passed (however many tasks wait for
    /// it, and even if it grew while they waited); then for kitesync's own pace.
    pub async fn acquire(&self, lane: Lane) {
        if lane == Lane::Enrich {
            self.enrich.until_ready().await;
        }
        while let Some(until) = self.deferred_until() {
            tokio::time::sleep_until(until).await;
        }
        self.limiter.until_ready().await;
    }

    /// The end of the wait for a budget's reset, while it lasts.
    fn deferred_until(&self) -> Option<Instant> {
        self.lock().not_before.filter(|t| *t > Instant::now())
    }

    /// Records an answer's headers; if a budget is down to its reserve, the next request
    /// waits for its reset.
    pub fn observe(&self, headers: &HeaderMap) {
        let snapshot = Snapshot::from_headers(headers);
        let wait = snapshot
            .low(self.reserve_percent)
            .max_by_key(|(_, s)| s.reset);
        if let Some((name, s)) = wait {
            tracing::info!(
                scope = name,
                remaining = s.remaining,
                limit = s.limit,
                "Buildkite {name} rate budget is down to its reserve ({} of {} left): waiting {}s for it to reset",
                s.remaining,
                s.limit,
                s.reset.as_secs()
            );
            self.defer(s.reset);
        }
        self.lock().last = snapshot;
    }

    /// Records a 429 and returns how long to wait: the reset of the budget that ran out, else
    /// the body's `reset`, else a minute.
    pub fn rate_limited(&self, headers: &HeaderMap, body: &[u8]) -> Duration {
        let snapshot = Snapshot::from_headers(headers);
        let exhausted = snapshot
            .scopes()
            .filter(|(_, s)| s.remaining == 0)
            .map(|(_, s)| s.reset)
            .max();
        let from_body = || {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()?
                .get("reset")?
                .as_u64()
                .map(Duration::from_secs)
        };
        let wait = exhausted
            .or_else(from_body)
            .unwrap_or(DEFAULT_429_WAIT)
            .clamp(Duration::from_secs(1), MAX_WAIT);
        self.lock().last = snapshot;
        self.defer(wait);
        wait
    }

    /// The budgets as last reported by Buildkite.
    pub fn last_seen(&self) -> Snapshot {
        self.lock().last
    }

    /// How many times a request was held back for the budget.
    pub fn waits(&self) -> u64 {
        self.lock().waits
    }

    fn defer(&self, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_WAIT) + RESET_BUFFER;
        let mut state = self.lock();
        state.waits += 1;
        state.not_before = Some(state.not_before.map_or(until, |t| t.max(until)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another request panicked mid-update; the numbers are
        // still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn reads_both_scopes() {
        let h = headers(&[
            ("RateLimit-Remaining", "150"),
            ("RateLimit-Limit", "200"),
            ("RateLimit-Reset", "42"),
            ("RateLimit-User-Remaining", "2"),
            ("RateLimit-User-Limit", "50"),
            ("RateLimit-User-Reset", "17"),
        ]);
        let s = Snapshot::from_headers(&h);
        assert_eq!(
            s.org,
            Some(Scope {
                remaining: 150,
                limit: 200,
                reset: Duration::from_secs(42)
            })
        );
        assert_eq!(s.user.map(|u| u.remaining), Some(2));
        let low: Vec<_> = s.low(0).map(|(n, _)| n).collect();
        assert_eq!(
            low,
            ["user"],
            "2 is the least reserve; 150 of 200 is plenty"
        );
        let low: Vec<_> = s.low(80).map(|(n, _)| n).collect();
        assert_eq!(
            low,
            ["organization", "user"],
            "150 of 200 is under an 80 % reserve"
        );
    }

    #[test]
    fn garbled_headers_are_ignored() {
        let h = headers(&[("RateLimit-Remaining", "lots"), ("RateLimit-Limit", "200")]);
        assert_eq!(Snapshot::from_headers(&h), Snapshot::default());
    }

    #[test]
    fn low_means_at_or_below_the_reserve() {
        let s = Snapshot::from_headers(&headers(&[
            ("RateLimit-Remaining", "20"),
            ("RateLimit-Limit", "200"),
            ("RateLimit-Reset", "5"),
        ]));
        assert_eq!(s.low(10).count(), 1);
        assert_eq!(s.low(5).count(), 0);
    }

    #[test]
    fn enrichment_has_only_its_share_of_the_pace() {
        let burst = |limiter: &DefaultDirectRateLimiter| {
            (0..100).take_while(|_| limiter.check().is_ok()).count()
        };
        let b = Budget::new(600, 10, 50);
        assert_eq!(burst(&b.enrich), 5, "half of the pace's burst of 10");
        assert_eq!(burst(&b.limiter), 10, "the polls keep the whole pace");
        let b = Budget::new(1, 10, 1);
        assert_eq!(burst(&b.enrich), 1, "never less than one request");
    }

    #[test]
    fn a_429_waits_for_the_scope_that_ran_out() {
        let b = Budget::new(30, 10, 50);
        let h = headers(&[
            ("RateLimit-Remaining", "120"),
            ("RateLimit-Limit", "200"),
            ("RateLimit-Reset", "50"),
            ("RateLimit-User-Remaining", "0"),
            ("RateLimit-User-Limit", "50"),
            ("RateLimit-User-Reset", "7"),
        ]);
        assert_eq!(b.rate_limited(&h, b"{}"), Duration::from_secs(7));
        let body = br#"{"message": "slow down", "scope": "rest", "reset": 12}"#;
        assert_eq!(
            b.rate_limited(&HeaderMap::new(), body),
            Duration::from_secs(12)
        );
        assert_eq!(
            b.rate_limited(&HeaderMap::new(), b"<html>"),
            DEFAULT_429_WAIT
        );
        assert_eq!(b.waits(), 3);
        let day = headers(&[
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Limit", "200"),
            ("RateLimit-Reset", "86400"),
        ]);
        assert_eq!(
            b.rate_limited(&day, b"{}"),
            MAX_WAIT,
            "a day-long reset waits 2 minutes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_task_honours_a_deferral_until_it_passes() {
        let b = std::sync::Arc::new(Budget::new(6000, 10, 50));
        let start = Instant::now();
        b.rate_limited(&HeaderMap::new(), br#"{"reset": 3}"#);
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let b = std::sync::Arc::clone(&b);
                tokio::spawn(async move {
                    b.acquire(Lane::Poll).await;
                    Instant::now()
                })
            })
            .collect();
        for task in tasks {
            let sent = task.await.expect("task");
            assert!(
                sent - start >= Duration::from_secs(3) + RESET_BUFFER,
                "a task went through after {:?}",
                sent - start
            );
        }
        // Once passed, it holds no one back.
        let now = Instant::now();
        b.acquire(Lane::Poll).await;
        assert_eq!(Instant::now(), now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferral_that_grows_while_tasks_wait_holds_them_all() {
        let b = std::sync::Arc::new(Budget::new(6000, 10, 50));
        let start = Instant::now();
        b.rate_limited(&HeaderMap::new(), br#"{"reset": 2}"#);
        let waiting = {
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move {
                b.acquire(Lane::Poll).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.rate_limited(&HeaderMap::new(), br#"{"reset": 5}"#);
        let sent = waiting.await.expect("task");
        assert!(
            sent - start >= Duration::from_secs(6) + RESET_BUFFER,
            "{:?}",
            sent - start
        );
    }
}
