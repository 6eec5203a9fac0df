//! The agent poll: list the organization's agents, and queue a fleet snapshot for
//! BuildButler when anything changed (no change, no POST).

use chrono::{DateTime, Utc};

use super::builds::PollError;
use crate::buildkite::Client;
use crate::butler::wire;
use crate::store::{agents, Store};

/// What an agent poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentsReport {
    pub listed: usize,
    /// True when a snapshot was queued.
    pub changed: bool,
}

/// Polls the agents once.
pub async fn poll(client: &Client, store: &Store, org: &str) -> Result<AgentsReport, PollError> {
    let items = client.agents().await?;
    let listed: Vec<_> = items
        .into_iter()
        .filter_map(|item| match item.decoded {
            Ok(agent) => Some((agent.id.clone(), wire::agent(&agent))),
            Err(e) => {
                tracing::warn!("cannot decode an agent from Buildkite: {e}");
                None
            }
        })
        .collect();
    let count = listed.len();
    let org = org.to_string();
    let changed = store
        .call(move |c| agents::record(c, &org, &listed, Utc::now()))
        .await?;
    Ok(AgentsReport {
        listed: count,
        changed,
    })
}

/// True when a poll on the cron `schedule` is due, the last one having been at `last`.
pub fn due(schedule: &str, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let Some(last) = last else { return true };
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule);
    match parsed.and_then(|cron| cron.find_next_occurrence(&last, false)) {
        Ok(next) => next <= now,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_follows_the_cron() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
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
}
