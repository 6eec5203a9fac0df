//! The process's one clock for wall time: what the outbox, the enrichment queue and the
//! state database's timestamps are measured in. In the crate's unit tests it follows tokio's
//! clock, so paused time moves it too and timing decisions are tested without waiting.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, in UTC.
pub fn now() -> DateTime<Utc> {
    #[cfg(not(test))]
    {
        Utc::now()
    }
    #[cfg(test)]
    {
        follows_tokio::now()
    }
}

/// Milliseconds since the Unix epoch, the unit of the outbox's times.
pub(crate) fn now_ms() -> i64 {
    now().timestamp_millis()
}

/// The canonical text form of a time in the state database: RFC 3339 with milliseconds, so
/// that text order is time order.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The wall time of the first reading, moved on by tokio's clock since then.
#[cfg(test)]
mod follows_tokio {
    use std::sync::OnceLock;

    use chrono::{DateTime, Utc};

    static START: OnceLock<(DateTime<Utc>, std::time::Instant)> = OnceLock::new();

    pub(crate) fn now() -> DateTime<Utc> {
        let (wall, at) = *START.get_or_init(|| (Utc::now(), std::time::Instant::now()));
        let since = tokio::time::Instant::now()
            .into_std()
            .saturating_duration_since(at);
        wall + chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_clock() {
        let before = now_ms();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let after = now_ms();
        assert!(after - before >= 3_600_000, "{}", after - before);
        assert!(after - before < 3_660_000, "{}", after - before);
    }

    #[test]
    fn timestamps_sort_as_times() {
        let t = DateTime::parse_from_rfc3339("2026-12-05T09:08:07Z").expect("time");
        assert_eq!(timestamp(t.into()), "2026-12-05T09:08:07.000Z");
    }
}
