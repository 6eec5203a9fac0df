//! The shared rate budget: kitesync's own pace plus what Buildkite says is left.
//!
//! Buildkite counts every request against budgets shared with people and other tools: the
//! organization's and the token owner's, each reported by its own `RateLimit-*` headers,
//! whose `Scope` says whose it is. Each budget is read from whatever headers it has. After
//! each answer, when a budget is down to its reserve (`reserve_percent` of its limit, at
//! least 2 requests) kitesync waits for that budget's reset instead of spending what others
//! need. On a 429 it waits out the `Reset` of the budget that ran out (Buildkite sends no
//! `Retry-After`). Such a wait holds every request of the process, from any task, until it
//! has passed, and ends [`RESET_BUFFER`] after the reset, as Buildkite's own Go client waits,
//! so that the first request does not land in the old window.
//!
//! The pace itself is a [`Pacer`]: the polls first, test results and logs ([`Lane::Enrich`])
//! with every slot the polls leave, up to `[enrich] max_share_percent`. At [`Pace::Free`] the
//! pace follows the budgets: what each shows free above the reserve, spread until its reset.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

pub(crate) use super::pace::Lane;
use super::pace::Pacer;
use crate::net;

/// The longest wait any header may impose: Buildkite's windows are one minute. Public for
/// the once unit's timeout test (`tests/systemd.rs`).
pub const MAX_WAIT: Duration = Duration::from_secs(120);
/// Used on a 429 that says nothing about when to come back, and for a budget down to its
/// reserve that gives no reset.
const DEFAULT_429_WAIT: Duration = Duration::from_secs(60);
/// Added to every wait for a budget's reset: `RateLimit-Reset` is in whole seconds, and a
/// request sent on the dot may still count against the old window (go-buildkite adds the
/// same 500 ms). Public for the once unit's timeout test (`tests/systemd.rs`).
pub const RESET_BUFFER: Duration = Duration::from_millis(500);

/// Whose budget headers report, from their `Scope` (`RateLimit-Scope`,
/// `RateLimit-User-Scope`): a bounded set, whatever Buildkite sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Owner {
    /// `organization` or `rest`: the organization's budget.
    Organization,
    /// `user` or `rest_user`: the token owner's budget.
    User,
    /// Any other scope.
    Other,
}

impl Owner {
    /// The owner a scope value names; `default` when there is none.
    fn from_scope(value: Option<&str>, default: Owner) -> Owner {
        let Some(value) = value else { return default };
        match value.trim().to_ascii_lowercase().as_str() {
            "organization" | "rest" => Owner::Organization,
            "user" | "rest_user" => Owner::User,
            _ => Owner::Other,
        }
    }

    /// Its name in logs and metric labels.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Owner::Organization => "organization",
            Owner::User => "user",
            Owner::Other => "other",
        }
    }
}

/// One budget as the headers report it: each figure only if it was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) remaining: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<u32>,
    #[serde(
        default,
        rename = "reset_seconds",
        serialize_with = "secs",
        deserialize_with = "from_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) reset: Option<Duration>,
}

impl std::fmt::Display for Scope {
    /// `150 of 200 left, resets in 42s`, with `?` for what was not reported.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
        write!(f, "{} of {} left", n(self.remaining), n(self.limit))?;
        match self.reset {
            Some(reset) => write!(f, ", resets in {}s", reset.as_secs()),
            None => Ok(()),
        }
    }
}

fn secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_secs()),
        None => s.serialize_none(),
    }
}

fn from_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<u64>::deserialize(d).map(|s| s.map(Duration::from_secs))
}

/// The budgets, as of the last answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The organization's budget.
    #[serde(rename = "organization")]
    pub(crate) org: Option<Scope>,
    /// The token owner's budget.
    pub(crate) user: Option<Scope>,
    /// A budget of another scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) other: Option<Scope>,
}

/// How fast a run goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// `[buildkite] requests_per_minute`.
    #[default]
    Configured,
    /// What Buildkite's budgets show free above the reserve, spread until their reset.
    Free,
}

impl Pace {
    /// Its name, as on the command line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Pace::Configured => "configured",
            Pace::Free => "free",
        }
    }
}

/// The pace in force: which, and how many requests a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PaceInUse {
    pub(crate) pace: Pace,
    pub(crate) per_minute: u32,
}

impl std::fmt::Display for PaceInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} a minute ({})", self.per_minute, self.pace.as_str())
    }
}

/// The budgets as last seen, and when: what a poll saves for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    pub(crate) at: String,
    /// The pace in force then (absent in what kitesync 0.4 and earlier saved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pace: Option<PaceInUse>,
    #[serde(flatten)]
    pub(crate) budgets: Snapshot,
}

impl Snapshot {
    /// Reads the budgets from an answer's headers, each from whatever figures it has
    /// (garbled ones count as absent). The plain headers are the organization's and the
    /// `User` ones the token owner's unless their `Scope` says otherwise.
    pub fn from_headers(headers: &HeaderMap) -> Snapshot {
        let mut s = Snapshot::default();
        for (prefix, default) in [
            ("ratelimit-", Owner::Organization),
            ("ratelimit-user-", Owner::User),
        ] {
            if let Some(scope) = scope(headers, prefix) {
                let owner = net::header(headers, format!("{prefix}scope"));
                s.put(Owner::from_scope(owner, default), scope);
            }
        }
        s
    }

    /// Adds what a 429's body says (`scope`, `limit`, `reset`) about a budget the headers did
    /// not report: that one is spent.
    fn with_429_body(mut self, body: &[u8]) -> Snapshot {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
            return self;
        };
        let owner = Owner::from_scope(body.get("scope").and_then(|v| v.as_str()), Owner::Other);
        let num = |key: &str| body.get(key).and_then(serde_json::Value::as_u64);
        if self.get(owner).is_none() && body.get("scope").is_some() {
            let limit = num("limit").map(|l| u32::try_from(l).unwrap_or(u32::MAX));
            self.put(
                owner,
                Scope {
                    remaining: Some(0),
                    limit,
                    reset: num("reset").map(|r| Duration::from_secs(r).min(MAX_WAIT)),
                },
            );
        }
        self
    }

    fn get(&self, owner: Owner) -> Option<Scope> {
        match owner {
            Owner::Organization => self.org,
            Owner::User => self.user,
            Owner::Other => self.other,
        }
    }

    /// Records `scope` for `owner`; of two for the same owner, the one with less left.
    fn put(&mut self, owner: Owner, scope: Scope) {
        let slot = match owner {
            Owner::Organization => &mut self.org,
            Owner::User => &mut self.user,
            Owner::Other => &mut self.other,
        };
        let left = |s: &Scope| s.remaining.unwrap_or(u32::MAX);
        if slot.is_none_or(|old| left(&scope) < left(&old)) {
            *slot = Some(scope);
        }
    }

    /// The budgets reported, with their owners.
    pub(crate) fn scopes(&self) -> impl Iterator<Item = (Owner, Scope)> {
        [
            (Owner::Organization, self.org),
            (Owner::User, self.user),
            (Owner::Other, self.other),
        ]
        .into_iter()
        .filter_map(|(owner, s)| Some((owner, s?)))
    }

    /// The scopes that are at or below their reserve (the least one, 2, without a limit).
    fn low(&self, reserve_percent: u32) -> impl Iterator<Item = (Owner, Scope)> {
        self.scopes().filter(move |(_, s)| {
            s.remaining
                .is_some_and(|r| r <= reserve(s.limit.unwrap_or(0), reserve_percent))
        })
    }

    /// The free pace, in requests a minute, and how long it holds: for each budget, what it
    /// shows free above the reserve, less `leave` a minute, spread until its reset (resets
    /// over 120 s over 120 s); the lowest of them, and never beyond `configured` for a budget
    /// that lacks a figure or when the token owner's is not reported. `None` when no budget
    /// is reported at all.
    fn free_pace(
        &self,
        reserve_percent: u32,
        configured: u32,
        leave: u32,
    ) -> Option<(f64, Duration)> {
        self.scopes().next()?;
        let configured = f64::from(configured);
        let mut pace = if self.user.is_none() {
            configured
        } else {
            f64::INFINITY
        };
        let mut holds = DEFAULT_429_WAIT;
        for (_, s) in self.scopes() {
            let (Some(remaining), Some(limit), Some(reset)) = (s.remaining, s.limit, s.reset)
            else {
                pace = pace.min(configured);
                continue;
            };
            let window = reset.clamp(Duration::from_secs(1), MAX_WAIT);
            let minutes = window.as_secs_f64() / 60.0;
            let spare = f64::from(remaining.saturating_sub(reserve(limit, reserve_percent)))
                - f64::from(leave) * minutes;
            pace = pace.min(spare.max(0.0) / minutes);
            holds = holds.min(reset);
        }
        Some((pace, holds))
    }
}

/// The part of a budget kitesync leaves to others: `percent` of it, at least 2 requests.
fn reserve(limit: u32, percent: u32) -> u32 {
    (u64::from(limit) * u64::from(percent) / 100).max(2) as u32
}

/// A budget from the headers under `prefix`: `None` when none of its figures is readable.
fn scope(headers: &HeaderMap, prefix: &str) -> Option<Scope> {
    let num = |name: &str| -> Option<u64> {
        let value = net::header(headers, format!("{prefix}{name}"))?;
        value.trim().parse().ok()
    };
    let count = |name: &str| num(name).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let s = Scope {
        remaining: count("remaining"),
        limit: count("limit"),
        reset: num("reset").map(|r| Duration::from_secs(r).min(MAX_WAIT)),
    };
    (s != Scope::default()).then_some(s)
}

/// Paces every Buildkite request. Shared by all of a process's requests.
pub(crate) struct Budget {
    pacer: Pacer,
    /// `[buildkite] requests_per_minute`.
    configured: u32,
    reserve_percent: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// No request before this, whichever task asks: a wait for a budget's reset.
    not_before: Option<Instant>,
    last: Snapshot,
    waits: u64,
    pace: Pace,
    /// Requests a minute a free pace leaves to a daemon on the same state database.
    leave: u32,
    /// When the free pace set from the last answer ends (the budget's reset): the pace goes
    /// back to the configured one until the next answer.
    free_until: Option<Instant>,
    /// Whether the run was told that no budget is reported.
    said_unreported: bool,
}

impl Budget {
    /// A budget that goes at `requests_per_minute`, in bursts of at most 10, leaves
    /// `reserve_percent` of Buildkite's budgets to others, and lets [`Lane::Enrich`] use at
    /// most `enrich_share_percent` of the pace in force.
    pub(crate) fn new(
        requests_per_minute: u32,
        reserve_percent: u32,
        enrich_share_percent: u32,
    ) -> Budget {
        Budget {
            pacer: Pacer::new(f64::from(requests_per_minute), enrich_share_percent),
            configured: requests_per_minute,
            reserve_percent,
            state: Mutex::new(State::default()),
        }
    }

    /// Goes at `pace` from now on.
    pub(crate) fn set_pace(&self, pace: Pace) {
        self.lock().pace = pace;
    }

    /// At [`Pace::Free`], leaves `per_minute` of every budget to a daemon that shares them.
    pub(crate) fn leave_for_daemon(&self, per_minute: u32) {
        self.lock().leave = per_minute;
    }

    /// The pace in force.
    pub(crate) fn pace(&self) -> PaceInUse {
        PaceInUse {
            pace: self.lock().pace,
            per_minute: self.pacer.per_minute().round() as u32,
        }
    }

    /// The pace [`Pace::Free`] would go at after the last answer, in requests a minute (what
    /// the budgets show free, less what is left to a daemon); `None` if none is reported.
    pub(crate) fn free_pace_now(&self) -> Option<u64> {
        let state = self.lock();
        let free = state
            .last
            .free_pace(self.reserve_percent, self.configured, state.leave);
        free.map(|(pace, _)| pace.round() as u64)
    }

    /// The requests of a budget of `limit` that kitesync leaves to others.
    pub(crate) fn reserve_of(&self, limit: u32) -> u32 {
        reserve(limit, self.reserve_percent)
    }

    /// Waits until a request for `lane` may be sent: until any wait for a budget's reset has
    /// passed (however many tasks wait for it, and even if it grew while they waited); then
    /// for the pace, polls first.
    pub(crate) async fn acquire(&self, lane: Lane) {
        while let Some(until) = self.deferred_until() {
            tokio::time::sleep_until(until).await;
        }
        let ended = {
            let mut state = self.lock();
            let ended = state.free_until.is_some_and(|t| t <= Instant::now());
            if ended {
                state.free_until = None;
            }
            ended
        };
        if ended {
            // The budget has reset: at the configured pace until an answer tells more.
            self.pacer.set_per_minute(f64::from(self.configured));
        }
        self.pacer.acquire(lane).await;
    }

    /// The end of the wait for a budget's reset, while it lasts.
    fn deferred_until(&self) -> Option<Instant> {
        self.lock().not_before.filter(|t| *t > Instant::now())
    }

    /// Records an answer's headers; if a budget is down to its reserve, the next request
    /// waits for its reset. At [`Pace::Free`], sets the pace from them.
    pub(crate) fn observe(&self, headers: &HeaderMap) {
        let snapshot = Snapshot::from_headers(headers);
        let wait = snapshot
            .low(self.reserve_percent)
            .max_by_key(|(_, s)| s.reset);
        if let Some((owner, s)) = wait {
            let reset = s.reset.unwrap_or(DEFAULT_429_WAIT);
            let name = owner.as_str();
            tracing::info!(
                scope = name,
                remaining = s.remaining,
                limit = s.limit,
                "Buildkite {name} rate budget is down to its reserve ({s}): waiting {}s for it to reset",
                reset.as_secs()
            );
            self.defer(reset);
        }
        self.record(snapshot);
    }

    /// Keeps `snapshot` as the last seen and, at the free pace, sets the pace from it.
    fn record(&self, snapshot: Snapshot) {
        let free = {
            let mut state = self.lock();
            state.last = snapshot;
            if state.pace != Pace::Free {
                return;
            }
            match snapshot.free_pace(self.reserve_percent, self.configured, state.leave) {
                Some((pace, holds)) => {
                    state.free_until = Some(Instant::now() + holds + RESET_BUFFER);
                    Some(pace)
                }
                None => {
                    if !std::mem::replace(&mut state.said_unreported, true) {
                        tracing::warn!(
                            "Buildkite reports no rate budget (no RateLimit-* headers): --pace free keeps the configured pace, {} a minute",
                            self.configured
                        );
                    }
                    None
                }
            }
        };
        if let Some(pace) = free {
            self.pacer.set_per_minute(pace);
        }
    }

    /// Records a 429 and returns how long to wait: the reset of the budget that ran out (from
    /// the headers, else the body), else a minute.
    pub(crate) fn rate_limited(&self, headers: &HeaderMap, body: &[u8]) -> Duration {
        let snapshot = Snapshot::from_headers(headers).with_429_body(body);
        let exhausted = snapshot
            .scopes()
            .filter(|(_, s)| s.remaining == Some(0))
            .filter_map(|(_, s)| s.reset)
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
        self.defer(wait);
        self.record(snapshot);
        wait
    }

    /// The budgets as last reported by Buildkite.
    pub(crate) fn last_seen(&self) -> Snapshot {
        self.lock().last
    }

    /// How many times a request was held back for the budget.
    pub(crate) fn waits(&self) -> u64 {
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

    fn scope(remaining: u32, limit: u32, reset: u64) -> Scope {
        Scope {
            remaining: Some(remaining),
            limit: Some(limit),
            reset: Some(Duration::from_secs(reset)),
        }
    }

    /// The documented headers (SOURCES.md of ../shared/realdata/buildkite: rate_limits.md).
    const DOCUMENTED: [(&str, &str); 8] = [
        ("RateLimit-Scope", "rest"),
        ("RateLimit-Remaining", "80"),
        ("RateLimit-Limit", "200"),
        ("RateLimit-Reset", "42"),
        ("RateLimit-User-Scope", "rest_user"),
        ("RateLimit-User-Remaining", "35"),
        ("RateLimit-User-Limit", "50"),
        ("RateLimit-User-Reset", "42"),
    ];

    #[test]
    fn reads_both_scopes() {
        let s = Snapshot::from_headers(&headers(&DOCUMENTED));
        assert_eq!(s.org, Some(scope(80, 200, 42)));
        assert_eq!(s.user, Some(scope(35, 50, 42)));
        assert_eq!(s.other, None);
        let s = Snapshot::from_headers(&headers(&[
            ("RateLimit-Remaining", "150"),
            ("RateLimit-Limit", "200"),
            ("RateLimit-Reset", "42"),
            ("RateLimit-User-Remaining", "2"),
            ("RateLimit-User-Limit", "50"),
            ("RateLimit-User-Reset", "17"),
        ]));
        let low: Vec<_> = s.low(0).map(|(o, _)| o).collect();
        assert_eq!(
            low,
            [Owner::User],
            "2 is the least reserve; 150 of 200 is plenty"
        );
        let low: Vec<_> = s.low(80).map(|(o, _)| o).collect();
        assert_eq!(
            low,
            [Owner::Organization, Owner::User],
            "150 of 200 is under an 80 % reserve"
        );
    }

    #[test]
    fn no_headers_no_budget() {
        assert_eq!(
            Snapshot::from_headers(&HeaderMap::new()),
            Snapshot::default()
        );
        let only_scope = headers(&[("RateLimit-Scope", "rest")]);
        assert_eq!(Snapshot::from_headers(&only_scope), Snapshot::default());
    }

    #[test]
    fn a_budget_is_read_from_whatever_headers_it_has() {
        // Each of the three figures alone, and two of them: none is dropped for the others.
        let one = |name: &str, value: &str| Snapshot::from_headers(&headers(&[(name, value)])).org;
        let only = |s: Scope| Some(s);
        assert_eq!(
            one("RateLimit-Remaining", "7"),
            only(Scope {
                remaining: Some(7),
                ..Scope::default()
            })
        );
        assert_eq!(
            one("RateLimit-Limit", "200"),
            only(Scope {
                limit: Some(200),
                ..Scope::default()
            })
        );
        assert_eq!(
            one("RateLimit-Reset", "9"),
            only(Scope {
                reset: Some(Duration::from_secs(9)),
                ..Scope::default()
            })
        );
        let s = Snapshot::from_headers(&headers(&[
            ("RateLimit-Remaining", "lots"),
            ("RateLimit-Limit", "200"),
            ("RateLimit-User-Remaining", "1"),
        ]));
        assert_eq!(
            s.org,
            only(Scope {
                limit: Some(200),
                ..Scope::default()
            }),
            "garbled counts as absent"
        );
        assert_eq!(
            s.user,
            only(Scope {
                remaining: Some(1),
                ..Scope::default()
            })
        );
        // 1 left of a budget whose size is unknown is under the least reserve.
        assert_eq!(s.low(10).map(|(o, _)| o).collect::<Vec<_>>(), [Owner::User]);
    }

    #[test]
    fn each_scope_value_names_its_owner() {
        for (value, owner) in [
            ("organization", Owner::Organization),
            ("rest", Owner::Organization),
            ("user", Owner::User),
            ("rest_user", Owner::User),
            (" REST_USER ", Owner::User),
            ("graphql", Owner::Other),
            ("", Owner::Other),
        ] {
            let s = Snapshot::from_headers(&headers(&[
                ("RateLimit-Scope", value),
                ("RateLimit-Remaining", "12"),
                ("RateLimit-Limit", "50"),
                ("RateLimit-Reset", "30"),
            ]));
            let owners: Vec<_> = s.scopes().map(|(o, _)| o).collect();
            assert_eq!(owners, [owner], "RateLimit-Scope: {value:?}");
        }
        // The user headers are the token owner's unless their scope says otherwise.
        let s = Snapshot::from_headers(&headers(&[
            ("RateLimit-User-Scope", "organization"),
            ("RateLimit-User-Remaining", "3"),
        ]));
        assert_eq!(s.org.and_then(|s| s.remaining), Some(3));
        assert_eq!(s.user, None);
        // The real `scope-organization` style (shopify-buildkit-vcr/unblock_a_job.yml).
        let s = Snapshot::from_headers(&headers(&[
            ("ratelimit-scope", "organization"),
            ("ratelimit-remaining", "199"),
            ("ratelimit-limit", "200"),
            ("ratelimit-reset", "60"),
        ]));
        assert_eq!(s.org, Some(scope(199, 200, 60)));
        assert_eq!(s.user, None);
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
    fn the_free_pace_is_the_lowest_budget_free_above_the_reserve() {
        let both = Snapshot {
            org: Some(scope(150, 200, 30)),
            user: Some(scope(40, 50, 30)),
            other: None,
        };
        // The user budget: 40 − 5 over 30 s is 70 a minute; the organization's 260.
        let (pace, holds) = both.free_pace(10, 30, 0).expect("reported");
        assert!((pace - 70.0).abs() < 1e-6, "{pace}");
        assert_eq!(holds, Duration::from_secs(30));
        // Leaving 30 a minute to a daemon: 35 − 15 over half a minute.
        let (pace, _) = both.free_pace(10, 30, 30).expect("reported");
        assert!((pace - 40.0).abs() < 1e-6, "{pace}");
        // Without the token owner's budget, never beyond the configured pace.
        let org_only = Snapshot { user: None, ..both };
        assert_eq!(org_only.free_pace(10, 30, 0).map(|p| p.0), Some(30.0));
        // A budget without its reset: the configured pace.
        let partial = Snapshot {
            user: Some(Scope {
                reset: None,
                ..scope(40, 50, 0)
            }),
            ..both
        };
        assert_eq!(partial.free_pace(10, 30, 0).map(|p| p.0), Some(30.0));
        // A reset of a day is spread over 2 minutes; a spent budget gives nothing.
        let day = Snapshot {
            org: None,
            user: Some(scope(130, 1000, 86_400)),
            other: None,
        };
        assert_eq!(day.free_pace(10, 30, 0).map(|p| p.0), Some(15.0));
        let spent = Snapshot {
            org: None,
            user: Some(scope(3, 50, 20)),
            other: None,
        };
        assert_eq!(spent.free_pace(10, 30, 0).map(|p| p.0), Some(0.0));
        assert_eq!(Snapshot::default().free_pace(10, 30, 0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_pace_is_set_from_each_answer_and_ends_at_the_reset() {
        let b = Budget::new(30, 10, 100);
        b.set_pace(Pace::Free);
        assert_eq!(
            b.pace(),
            PaceInUse {
                pace: Pace::Free,
                per_minute: 30
            },
            "before any answer"
        );
        b.observe(&headers(&DOCUMENTED));
        // 35 − 5 over 42 s is 42.9 a minute; the organization's 180 − 20 over 42 s more.
        assert_eq!(b.pace().per_minute, 43);
        tokio::time::sleep(Duration::from_secs(43)).await;
        b.acquire(Lane::Poll).await;
        assert_eq!(
            b.pace().per_minute,
            30,
            "the reset passed: the configured pace"
        );
        // No headers at all: the configured pace stays.
        b.observe(&HeaderMap::new());
        assert_eq!(b.pace().per_minute, 30);
        // At the configured pace, headers change nothing.
        let configured = Budget::new(30, 10, 100);
        configured.observe(&headers(&DOCUMENTED));
        assert_eq!(
            configured.pace(),
            PaceInUse {
                pace: Pace::Configured,
                per_minute: 30
            }
        );
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

    #[test]
    fn a_429_body_names_the_budget_that_ran_out() {
        // The documented body (SOURCES.md of ../shared/realdata/buildkite: rate_limits.md).
        let body = br#"{"message": "You have exceeded your API rate limit. Please wait 42 seconds before making more requests.", "scope": "rest_user", "limit": 50, "current": 55, "reset": 42}"#;
        let b = Budget::new(30, 10, 100);
        assert_eq!(
            b.rate_limited(&HeaderMap::new(), body),
            Duration::from_secs(42)
        );
        assert_eq!(b.last_seen().user, Some(scope(0, 50, 42)));
        assert_eq!(b.last_seen().org, None);
        // The headers, when they report that budget, win over the body.
        let h = headers(&[
            ("RateLimit-User-Remaining", "0"),
            ("RateLimit-User-Limit", "60"),
        ]);
        b.rate_limited(&h, body);
        assert_eq!(b.last_seen().user.and_then(|u| u.limit), Some(60));
        let other = br#"{"scope": "graphql", "limit": 500, "reset": 5}"#;
        b.rate_limited(&HeaderMap::new(), other);
        assert_eq!(b.last_seen().other, Some(scope(0, 500, 5)));
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

    /// Regression (the ceiling held already; `tests/hostile.rs` proved it with the binary in
    /// a real two minutes): answers that claim both budgets spent for a day, as
    /// `Fault::LongReset(86_400)` does, hold every task of both lanes two minutes and half a
    /// second, no less and no more.
    #[tokio::test(start_paused = true)]
    async fn regression_a_day_long_reset_holds_every_task_of_every_lane_two_minutes() {
        let b = std::sync::Arc::new(Budget::new(6000, 10, 50));
        let start = Instant::now();
        let day = headers(&[
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Limit", "200"),
            ("RateLimit-Reset", "86400"),
            ("RateLimit-User-Remaining", "0"),
            ("RateLimit-User-Limit", "200"),
            ("RateLimit-User-Reset", "86400"),
        ]);
        b.observe(&day);
        let tasks: Vec<_> = [Lane::Poll, Lane::Enrich, Lane::Poll, Lane::Enrich]
            .into_iter()
            .map(|lane| {
                let b = std::sync::Arc::clone(&b);
                tokio::spawn(async move {
                    b.acquire(lane).await;
                    Instant::now() - start
                })
            })
            .collect();
        // Another day-long answer while they wait moves the end, never beyond the ceiling.
        tokio::time::sleep(Duration::from_secs(60)).await;
        b.observe(&day);
        let ceiling = Duration::from_secs(60) + Duration::from_millis(120_500);
        for task in tasks {
            let waited = task.await.expect("task");
            assert_eq!(
                waited, ceiling,
                "two minutes and a half second after the last answer"
            );
        }
        assert_eq!(MAX_WAIT, Duration::from_secs(120));
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
