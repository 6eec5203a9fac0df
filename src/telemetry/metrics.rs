//! Metrics and health of the daemon: Prometheus (OpenMetrics) text on `/metrics`, and
//! `/healthz`, 200 while polls and deliveries succeed, 503 with the reason otherwise.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::item::Kind;
use crate::store::outbox::DeadCause;

/// A Buildkite request: which call, and how it ended (`error` without an answer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) endpoint: String,
    pub(crate) status: String,
}

/// A rate budget: `organization` or `user`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScopeLabels {
    pub(crate) scope: String,
}

/// A series of the outbox gauge: `state="pending"`, or `state="dead"` with the dead letters'
/// `kind` (`build`, `tests`, `log`, `agents`) and `cause` (`content`, `other`, or
/// `unrecorded` for those dead before kitesync recorded why).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum OutboxLabels {
    Pending,
    Dead {
        kind: Kind,
        cause: Option<DeadCause>,
    },
}

impl EncodeLabelSet for OutboxLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        match *self {
            OutboxLabels::Pending => [("state", "pending")].encode(encoder),
            OutboxLabels::Dead { kind, cause } => {
                let cause = cause.map_or("unrecorded", DeadCause::as_str);
                [("state", "dead"), ("kind", kind.as_str()), ("cause", cause)].encode(encoder)
            }
        }
    }
}

/// A request for test results or logs: `listing`, `download` or `log`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EnrichKindLabels {
    pub(crate) kind: String,
}

/// The cap that skipped a JUnit file: `files_per_build`, `bytes_per_build` or `file_bytes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CapLabels {
    pub(crate) cap: String,
}

/// A field of Buildkite's builds kitesync reads (`buildkite::model::Field`'s names only).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FieldLabels {
    pub(crate) field: String,
}

/// What succeeded or failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Activity {
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
pub(crate) struct WhatLabels {
    pub(crate) what: Activity,
}

/// Declares every metric once: its field, type, name and help; `Metrics::new` registers them.
macro_rules! metrics {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = $init:expr, $name:literal, $help:literal;)*) => {
        /// Every figure kitesync reports.
        pub(crate) struct Metrics {
            registry: Registry,
            $($(#[$doc])* pub $field: $ty,)*
            /// The last error of each activity failing now.
            errors: Mutex<HashMap<Activity, String>>,
        }

        impl Metrics {
            /// A fresh set of metrics, all at zero.
            pub(crate) fn new() -> Metrics {
                let mut registry = Registry::default();
                $(let $field: $ty = $init;
                registry.register($name, $help, $field.clone());)*
                Metrics { registry, $($field,)* errors: Mutex::default() }
            }
        }
    };
}

metrics! {
    requests: Family<RequestLabels, Counter> = Family::default(),
        "kitesync_buildkite_requests", "Buildkite requests by endpoint and status";
    rate_limited: Counter = Counter::default(),
        "kitesync_buildkite_rate_limited", "Buildkite answers 429";
    remaining: Family<ScopeLabels, Gauge> = Family::default(),
        "kitesync_buildkite_ratelimit_remaining", "Requests left in each Buildkite budget, as last reported";
    limit: Family<ScopeLabels, Gauge> = Family::default(),
        "kitesync_buildkite_ratelimit_limit", "Size of each Buildkite budget per window, as last reported";
    reserve: Family<ScopeLabels, Gauge> = Family::default(),
        "kitesync_buildkite_ratelimit_reserve", "Requests of each Buildkite budget kitesync leaves to others (reserve_percent)";
    /// The pace in force, requests a minute (`--pace free` follows the budgets).
    pace: Gauge = Gauge::default(),
        "kitesync_buildkite_pace_requests_per_minute", "Requests a minute kitesync allows itself now: requests_per_minute, or under --pace free what the budgets leave";
    builds_polled: Counter = Counter::default(),
        "kitesync_builds_polled", "Finished builds listed by polls";
    fields_ignored: Family<FieldLabels, Counter> = Family::default(),
        "kitesync_buildkite_fields_ignored", "Builds queued by polls with an optional field of an unexpected type or format, read as absent, by field";
    builds_queued: Counter = Counter::default(),
        "kitesync_builds_queued", "Builds queued for delivery (new or finished again)";
    delivered: Counter = Counter::default(),
        "kitesync_items_delivered", "Items BuildButler accepted (builds, test suites, logs, agents)";
    builds_delivered: Counter = Counter::default(),
        "kitesync_builds_delivered", "Builds BuildButler accepted";
    builds_without_id: Counter = Counter::default(),
        "kitesync_butler_builds_without_id", "Builds BuildButler stored but answered without an id (their stages went under the id kitesync sent)";
    dead_lettered: Counter = Counter::default(),
        "kitesync_items_dead_lettered", "Items BuildButler refused for good";
    delivery_failures: Counter = Counter::default(),
        "kitesync_delivery_failures", "Delivery attempts that failed and will be retried";
    outbox: Family<OutboxLabels, Gauge> = Family::default(),
        "kitesync_outbox_items", "Items in the outbox: pending, and dead letters by kind and cause (content: BuildButler refused it for its content, 400, 413 or 422; other: any other refusal; unrecorded: dead before kitesync recorded why). Test suites dead for content or unrecorded never fail a run";
    poll_seconds: Histogram = Histogram::new(exponential_buckets(0.05, 2.0, 12)),
        "kitesync_poll_duration_seconds", "Duration of build polls";
    delivery_seconds: Histogram = Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        "kitesync_delivery_duration_seconds", "Duration of delivery passes";
    /// The build poll's schedule, in seconds between polls.
    poll_interval: Gauge = Gauge::default(),
        "kitesync_poll_interval_seconds", "Seconds between build polls ([schedule] builds)";
    /// Unix time the daemon started.
    started: Gauge = Gauge::default(),
        "kitesync_start_time_seconds", "Unix time the daemon started";
    /// 1 while Buildkite refuses a daemon that has worked (see `ride_out`), else 0.
    buildkite_refused: Gauge = Gauge::default(),
        "kitesync_buildkite_refused", "1 while Buildkite (or something on the way) refuses polls that worked before; retried with backoff";
    enrich_requests: Family<EnrichKindLabels, Counter> = Family::default(),
        "kitesync_enrich_requests", "Buildkite requests for test results and logs: artifact listings, downloads and logs";
    enrich_items: Counter = Counter::default(),
        "kitesync_enrich_items_queued", "Test suites and logs queued for delivery";
    enrich_skipped: Family<CapLabels, Counter> = Family::default(),
        "kitesync_enrich_files_skipped", "JUnit files skipped by a cap";
    enrich_given_up: Counter = Counter::default(),
        "kitesync_enrich_files_given_up", "JUnit files given up after failing, or never finishing, repeatedly";
    enrich_backlog_builds: Gauge = Gauge::default(),
        "kitesync_enrich_backlog_builds", "Builds whose test results or logs are still to be fetched";
    enrich_backlog_files: Gauge = Gauge::default(),
        "kitesync_enrich_backlog_files", "JUnit files listed and still to be fetched";
    enrich_oldest: Gauge = Gauge::default(),
        "kitesync_enrich_oldest_age_seconds", "Age of the oldest build waiting for its test results or logs";
    /// Unix time of the last success.
    last_success: Family<WhatLabels, Gauge> = Family::default(),
        "kitesync_last_success_timestamp_seconds", "Unix time of the last successful poll or delivery";
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts one Buildkite request.
    pub(crate) fn request(&self, endpoint: &str, status: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Counts one Buildkite request for test results or logs, of this `kind`.
    pub(crate) fn enrich_request(&self, kind: &str) {
        let labels = EnrichKindLabels { kind: kind.into() };
        self.enrich_requests.get_or_create(&labels).inc();
    }

    /// Counts `n` builds queued by a poll whose `field` was read as absent.
    pub(crate) fn fields_ignored(&self, field: &str, n: u64) {
        let labels = FieldLabels {
            field: field.into(),
        };
        self.fields_ignored.get_or_create(&labels).inc_by(n);
    }

    /// Counts `n` JUnit files skipped by `cap`.
    pub(crate) fn skipped(&self, cap: &str, n: u64) {
        let labels = CapLabels { cap: cap.into() };
        self.enrich_skipped.get_or_create(&labels).inc_by(n);
    }

    /// Notes a successful poll or delivery now.
    pub(crate) fn succeeded(&self, what: Activity) {
        self.last_success
            .get_or_create(&WhatLabels { what })
            .set(crate::clock::now().timestamp());
        self.errors().remove(&what);
    }

    /// Notes a failed poll or delivery.
    pub(crate) fn failed(&self, what: Activity, error: &str) {
        self.errors().insert(what, error.to_string());
    }

    /// The OpenMetrics text of every figure.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// Every figure in the format a scraper that sent `accept` reads: OpenMetrics when it
    /// asks for it (Prometheus does), else the classic text format (`promtool check
    /// metrics`, curl). Returns the content type and the body.
    pub(crate) fn exposition(&self, accept: &str) -> (&'static str, String) {
        let text = self.encode();
        if accept.contains("application/openmetrics-text") {
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        } else {
            ("text/plain; version=0.0.4; charset=utf-8", classic(&text))
        }
    }

    /// `None` when healthy, else why not: Buildkite refusing polls that worked before, no
    /// successful poll within `allowed` (once the daemon has been up that long), or pending
    /// deliveries and none accepted within it.
    pub(crate) fn unhealthy(
        &self,
        allowed: Duration,
        up: Duration,
        pending: i64,
    ) -> Option<String> {
        let now = crate::clock::now().timestamp();
        let allowed_s = allowed.as_secs() as i64;
        let last = |what| self.last_success.get_or_create(&WhatLabels { what }).get();
        let stale = |what| match last(what) {
            at if at > 0 => now - at > allowed_s,
            _ => up > allowed,
        };
        let errors = self.errors();
        let error = |what, none| errors.get(&what).map_or(none, String::as_str);
        if self.buildkite_refused.get() > 0 {
            let why = error(Activity::Poll, "refused");
            return Some(format!(
                "Buildkite refuses kitesync's polls, which worked before: {why}; retrying with backoff, deliveries go on"
            ));
        }
        if stale(Activity::Poll) {
            let why = error(Activity::Poll, "no poll has succeeded yet");
            return Some(format!(
                "no successful Buildkite poll in the last {allowed_s}s ({why})"
            ));
        }
        if pending > 0 && stale(Activity::Delivery) {
            let why = error(Activity::Delivery, "none tried yet");
            return Some(format!(
                "{pending} items pending and no delivery to BuildButler accepted in the last {allowed_s}s ({why})"
            ));
        }
        None
    }

    fn errors(&self) -> MutexGuard<'_, HashMap<Activity, String>> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// OpenMetrics text as the classic text format: a counter family's `HELP` and `TYPE` name its
/// `_total` sample (OpenMetrics names the family without it), and there is no `# EOF`.
fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE ", "# UNIT "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some(("# UNIT ", _)) => continue,
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(&name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_sample_and_has_no_eof() {
        let metrics = Metrics::new();
        metrics.delivered.inc_by(3);
        let (kind, text) = metrics.exposition("*/*");
        assert!(kind.starts_with("text/plain; version=0.0.4"));
        assert!(text.contains("# TYPE kitesync_items_delivered_total counter\n"));
        assert!(text.contains("# HELP kitesync_items_delivered_total Items BuildButler"));
        assert!(text.contains("\nkitesync_items_delivered_total 3\n"));
        assert!(text.contains("# TYPE kitesync_poll_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF"));

        let (kind, text) = metrics.exposition("application/openmetrics-text;version=1.0.0");
        assert!(kind.starts_with("application/openmetrics-text"));
        assert!(text.contains("# TYPE kitesync_items_delivered counter\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
