//! The filters of a builds listing, and their time bounds in whole seconds.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use url::Url;

/// Filters of a builds listing.
#[derive(Debug, Default, Clone)]
pub(crate) struct BuildQuery {
    pub(crate) finished_from: Option<DateTime<Utc>>,
    pub(crate) created_from: Option<DateTime<Utc>>,
    pub(crate) created_to: Option<DateTime<Utc>>,
    pub(crate) branches: Vec<String>,
    /// A page number, only for walking the builds of one second.
    pub(crate) page: Option<u32>,
    /// Items per page (default: Buildkite's largest, 100).
    pub(crate) per_page: Option<u32>,
}

impl BuildQuery {
    /// Appends the query to a builds listing's `url`, with every attempt of every job. Time
    /// bounds go in whole seconds, widened: lower bounds down, the upper bound up.
    pub(super) fn append_to(&self, url: &mut Url) {
        let time = |key, t: Option<DateTime<Utc>>, round| t.map(|t| (key, whole_second(t, round)));
        url.query_pairs_mut()
            .append_pair("per_page", &self.per_page.unwrap_or(100).to_string())
            .append_pair("include_retried_jobs", "true")
            .extend_pairs(time("finished_from", self.finished_from, Round::Down))
            .extend_pairs(time("created_from", self.created_from, Round::Down))
            .extend_pairs(time("created_to", self.created_to, Round::Up))
            .extend_pairs(self.branches.iter().map(|b| ("branch[]", b)))
            .extend_pairs(self.page.map(|p| ("page", p.to_string())));
    }
}

/// The precision of the time filters of a builds listing as sent: whole seconds, as in every
/// example of Buildkite's documentation and its Go client. What Buildkite does with a fraction
/// is undocumented; a server that dropped it would turn `created_to = 10:00:00.001` into
/// `10:00:00` and hide every build of that second. A walk of the listing narrows its bounds
/// in steps of this.
pub(crate) const TIME_FILTER_STEP_SECS: i64 = 1;

/// Which way [`whole_second`] rounds a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// For `created_from` and `finished_from`: the range only widens.
    Down,
    /// For `created_to`: the range only widens.
    Up,
}

/// `t` as a time filter of a builds listing: RFC 3339 in whole seconds (`2026-01-01T10:00:00Z`),
/// rounded so that the range asked for only ever widens. Reading a little more than asked is
/// harmless (the seen-set drops what was read before); reading less would lose builds.
fn whole_second(t: DateTime<Utc>, round: Round) -> String {
    let down = t.with_nanosecond(0).unwrap_or(t);
    let t = match round {
        // The last second chrono can hold has no next one: it stays as it is.
        Round::Up if down < t => down
            .checked_add_signed(chrono::Duration::seconds(1))
            .unwrap_or(down),
        _ => down,
    };
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters_are_whole_seconds_that_only_widen_the_range() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        let cases = [
            (
                "2026-01-01T10:00:00.001Z",
                Round::Down,
                "2026-01-01T10:00:00Z",
            ),
            (
                "2026-01-01T10:00:00.001Z",
                Round::Up,
                "2026-01-01T10:00:01Z",
            ),
            (
                "2026-01-01T10:00:00.999Z",
                Round::Down,
                "2026-01-01T10:00:00Z",
            ),
            (
                "2026-01-01T10:00:00.999Z",
                Round::Up,
                "2026-01-01T10:00:01Z",
            ),
            ("2026-01-01T10:00:00Z", Round::Down, "2026-01-01T10:00:00Z"),
            ("2026-01-01T10:00:00Z", Round::Up, "2026-01-01T10:00:00Z"),
            ("2026-12-31T23:59:59.5Z", Round::Up, "2027-01-01T00:00:00Z"),
            (
                "2026-01-01T10:00:00.000000001Z",
                Round::Up,
                "2026-01-01T10:00:01Z",
            ),
        ];
        for (time, round, sent) in cases {
            assert_eq!(whole_second(t(time), round), sent, "{time} {round:?}");
        }
    }

    #[test]
    fn rounding_up_the_last_second_chrono_holds_does_not_panic() {
        let last = DateTime::<Utc>::MAX_UTC;
        assert_eq!(
            whole_second(last, Round::Up),
            whole_second(last, Round::Down)
        );
    }
}
