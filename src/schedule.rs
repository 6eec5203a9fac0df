//! Cron schedules with a seconds field, read as tokio-cron-scheduler reads them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;

fn parse(schedule: &str) -> Option<Cron> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .ok()
}

/// True when a run on `schedule` is due, the last one having been at `last`.
pub fn due(schedule: &str, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let Some(last) = last else { return true };
    parse(schedule)
        .and_then(|cron| cron.find_next_occurrence(&last, false).ok())
        .is_none_or(|next| next <= now)
}

/// The time between two runs of `schedule` (30 s when it cannot be read).
pub fn interval(schedule: &str) -> Duration {
    let now = Utc::now();
    parse(schedule)
        .and_then(|cron| {
            let first = cron.find_next_occurrence(&now, false).ok()?;
            let second = cron.find_next_occurrence(&first, false).ok()?;
            (second - first).to_std().ok()
        })
        .unwrap_or(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn due_follows_the_cron() {
        let every5 = "0 */5 * * * *";
        assert!(due(every5, None, t("2026-01-01T00:01:00Z")));
        assert!(!due(
            every5,
            Some(t("2026-01-01T00:00:00Z")),
            t("2026-01-01T00:04:59Z")
        ));
        assert!(due(
            every5,
            Some(t("2026-01-01T00:00:00Z")),
            t("2026-01-01T00:05:00Z")
        ));
    }

    #[test]
    fn interval_between_runs() {
        assert_eq!(interval("*/30 * * * * *"), Duration::from_secs(30));
        assert_eq!(interval("0 */5 * * * *"), Duration::from_secs(300));
    }
}
