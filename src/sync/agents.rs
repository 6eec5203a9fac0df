//! The agent poll: list the organization's agents, and queue a fleet snapshot for
//! BuildButler when anything changed (no change, no POST).

use super::SyncError;
use crate::buildkite::{Agent, Client};
use crate::clock;
use crate::item;
use crate::store::{agents, Store};

/// What an agent poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AgentsReport {
    pub(crate) listed: usize,
    /// True when a snapshot was queued.
    pub(crate) changed: bool,
}

/// Polls the agents once.
pub(crate) async fn poll(
    client: &Client,
    store: &Store,
    org: &str,
) -> Result<AgentsReport, SyncError> {
    let items = client.agents().await?;
    let listed: Vec<_> = items
        .into_iter()
        .filter_map(|item| match item.decoded {
            Ok(agent) => Some((agent.id.clone(), facts(&agent))),
            Err(e) => {
                tracing::warn!("cannot decode an agent from Buildkite: {e}");
                None
            }
        })
        .collect();
    let count = listed.len();
    let org = org.to_string();
    let changed = store
        .call(move |c| agents::record(c, &org, &listed, clock::now()))
        .await?;
    Ok(AgentsReport {
        listed: count,
        changed,
    })
}

/// What the fleet snapshot needs of an agent: its OS from its `os` tag or its user agent.
fn facts(a: &Agent) -> item::Agent {
    let job = a.job.as_ref().filter(|j| !j.is_null());
    let (ua_os, ua_arch) = a.platform();
    item::Agent {
        name: a
            .name
            .clone()
            .or_else(|| a.hostname.clone())
            .unwrap_or_else(|| a.id.clone()),
        connection_state: a.connection_state.clone(),
        job: job.and_then(|j| {
            let name = j.get("name").or_else(|| j.get("id"))?;
            name.as_str().map(str::to_string)
        }),
        tags: a.meta_data.clone().unwrap_or_default(),
        os: a.tag("os").or(ua_os).map(str::to_string),
        arch: a.arch.as_deref().or(ua_arch).map(str::to_string),
        gone: false,
    }
}
