//! Metrics and health of the daemon: Prometheus (OpenMetrics) text on `/metrics`, and
//! `/healthz`, 200 while polls and deliveries succeed, 503 with the reason otherwise.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A Buildkite request: which call, and how it ended (`error` without an answer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

/// A rate budget: `organization` or `user`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: String,
}

/// An outbox state: `pending` or `dead`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// What succeeded or failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Activity {
    /// The build poll.
    Poll,
    /// Delivery to BuildButler.
    Delivery,
}

impl EncodeLabelValue for Activity {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let name = match self {
            Activity::Poll => "poll",
            Activity::Delivery => "delivery",
        };
        EncodeLabelValue::encode(&name, encoder)
    }
}

/// The `what` label of the last-success gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabels {
    pub what: Activity,
}

/// Every figure kitesync reports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub rate_limited: Counter,
    pub remaining: Family<ScopeLabels, Gauge>,
    pub builds_polled: Counter,
    pub builds_queued: Counter,
    pub delivered: Counter,
    pub dead_lettered: Counter,
    pub outbox: Family<StateLabels, Gauge>,
    pub poll_seconds: Histogram,
    pub delivery_seconds: Histogram,
    /// Unix time of the last success.
    pub last_success: Family<WhatLabels, Gauge>,
    health: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    poll_error: Option<String>,
    delivery_error: Option<String>,
}

impl HealthState {
    fn error(&mut self, what: Activity) -> &mut Option<String> {
        match what {
            Activity::Poll => &mut self.poll_error,
            Activity::Delivery => &mut self.delivery_error,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let rate_limited = Counter::default();
        let remaining = Family::<ScopeLabels, Gauge>::default();
        let builds_polled = Counter::default();
        let builds_queued = Counter::default();
        let delivered = Counter::default();
        let dead_lettered = Counter::default();
        let outbox = Family::<StateLabels, Gauge>::default();
        let poll_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        let delivery_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let last_success = Family::<WhatLabels, Gauge>::default();
        let r = &mut registry;
        r.register(
            "kitesync_buildkite_requests",
            "Buildkite requests by endpoint and status",
            requests.clone(),
        );
        r.register(
            "kitesync_buildkite_rate_limited",
            "Buildkite answers 429",
            rate_limited.clone(),
        );
        r.register(
            "kitesync_buildkite_ratelimit_remaining",
            "Requests left in each Buildkite budget, as last reported",
            remaining.clone(),
        );
        r.register(
            "kitesync_builds_polled",
            "Finished builds listed by polls",
            builds_polled.clone(),
        );
        r.register(
            "kitesync_builds_queued",
            "Builds queued for delivery (new or finished again)",
            builds_queued.clone(),
        );
        r.register(
            "kitesync_items_delivered",
            "Items BuildButler accepted",
            delivered.clone(),
        );
        r.register(
            "kitesync_items_dead_lettered",
            "Items BuildButler refused for good",
            dead_lettered.clone(),
        );
        r.register(
            "kitesync_outbox_items",
            "Items in the outbox by state",
            outbox.clone(),
        );
        r.register(
            "kitesync_poll_duration_seconds",
            "Duration of build polls",
            poll_seconds.clone(),
        );
        r.register(
            "kitesync_delivery_duration_seconds",
            "Duration of delivery passes",
            delivery_seconds.clone(),
        );
        r.register(
            "kitesync_last_success_timestamp_seconds",
            "Unix time of the last successful poll or delivery",
            last_success.clone(),
        );
        Metrics {
            registry,
            requests,
            rate_limited,
            remaining,
            builds_polled,
            builds_queued,
            delivered,
            dead_lettered,
            outbox,
            poll_seconds,
            delivery_seconds,
            last_success,
            health: Mutex::new(HealthState::default()),
        }
    }

    /// Counts one Buildkite request.
    pub fn request(&self, endpoint: &str, status: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Notes a successful poll or delivery now.
    pub fn succeeded(&self, what: Activity) {
        self.last_success
            .get_or_create(&WhatLabels { what })
            .set(chrono::Utc::now().timestamp());
        *self.lock().error(what) = None;
    }

    /// Notes a failed poll or delivery.
    pub fn failed(&self, what: Activity, error: &str) {
        *self.lock().error(what) = Some(error.to_string());
    }

    /// The OpenMetrics text of every figure.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// `None` when healthy, else why not: no successful poll within `allowed` (once the
    /// daemon has been up that long), or pending deliveries and none accepted within it.
    pub fn unhealthy(&self, allowed: Duration, up: Duration, pending: i64) -> Option<String> {
        let now = chrono::Utc::now().timestamp();
        let age = |what: Activity| {
            let at = self.last_success.get_or_create(&WhatLabels { what }).get();
            (at > 0).then_some(now - at)
        };
        let allowed_s = allowed.as_secs() as i64;
        let h = self.lock();
        let stale = |what: Activity| match age(what) {
            Some(a) => a > allowed_s,
            None => up > allowed,
        };
        if stale(Activity::Poll) {
            return Some(format!(
                "no successful Buildkite poll in the last {}s ({})",
                allowed_s,
                h.poll_error
                    .as_deref()
                    .unwrap_or("no poll has succeeded yet")
            ));
        }
        if pending > 0 && stale(Activity::Delivery) {
            return Some(format!(
                "{pending} items pending and no delivery to BuildButler accepted in the last {}s ({})",
                allowed_s,
                h.delivery_error.as_deref().unwrap_or("none tried yet")
            ));
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}
