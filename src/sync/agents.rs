//! The agent poll: list the organization's agents, and queue a fleet snapshot for
//! BuildButler when anything changed (no change, no POST).

use chrono::Utc;

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
