//! Cron schedules with a seconds field, parsed once, exactly as tokio-cron-scheduler parses
//! them: the config holds only schedules that passed [`Schedule::parse`], and the daemon's
//! scheduler, "is the agent poll due" and the health check's interval all use that value.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use serde::{Deserialize, Deserializer};

/// A parsed `[schedule]` expression.
#[derive(Clone)]
pub(crate) struct Schedule {
    text: String,
    cron: Cron,
    /// The time between two runs.
    interval: Duration,
}

impl Schedule {
    /// Parses `text` as tokio-cron-scheduler does (six fields, seconds first); the error
    /// completes "[schedule] builds ...".
    pub(crate) fn parse(text: &str) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(text)
            .map_err(|_| format!("= \"{text}\" is not a valid cron expression: it needs six fields, seconds first, e.g. \"*/30 * * * * *\""))?;
        let next = |after| cron.find_next_occurrence(&after, false).ok();
        let interval = next(crate::clock::now())
            .and_then(|first| (next(first)? - first).to_std().ok())
            .ok_or_else(|| {
                format!("= \"{text}\" never runs twice: give a schedule that repeats")
            })?;
        Ok(Schedule {
            text: text.to_string(),
            cron,
            interval,
        })
    }

    /// The expression as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// True when a run is due, the last one having been at `last`.
    pub(crate) fn due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        let Some(last) = last else { return true };
        self.cron
            .find_next_occurrence(&last, false)
            .is_ok_and(|next| next <= now)
    }

    /// The time between two runs.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Schedule::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A schedule where an empty string means "off".
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Schedule>, D::Error> {
    let text = String::deserialize(d)?;
    let schedule = (!text.is_empty()).then(|| Schedule::parse(&text));
    schedule.transpose().map_err(serde::de::Error::custom)
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
        let every5 = Schedule::parse("0 */5 * * * *").expect("valid");
        assert!(every5.due(None, t("2026-01-01T00:01:00Z")));
        assert!(!every5.due(Some(t("2026-01-01T00:00:00Z")), t("2026-01-01T00:04:59Z")));
        assert!(every5.due(Some(t("2026-01-01T00:00:00Z")), t("2026-01-01T00:05:00Z")));
    }

    #[test]
    fn interval_between_runs() {
        let every = |s: &str| Schedule::parse(s).expect("valid").interval();
        assert_eq!(every("*/30 * * * * *"), Duration::from_secs(30));
        assert_eq!(every("0 */5 * * * *"), Duration::from_secs(300));
    }

    #[test]
    fn what_the_scheduler_refuses_is_refused_here_with_no_fallback() {
        for bad in ["every minute", "*/5 * * * *", "0 0 0 30 2 *", ""] {
            let ours = Schedule::parse(bad);
            assert!(ours.is_err(), "{bad:?} accepted");
        }
        for good in ["*/30 * * * * *", "0 */5 * * * *", "0 0 9 * * Mon-Fri"] {
            assert!(Schedule::parse(good).is_ok(), "{good:?} refused");
            let job = tokio_cron_scheduler::Job::new_async(good, |_, _| Box::pin(async {}));
            assert!(job.is_ok(), "the scheduler refuses {good:?}");
        }
    }
}
