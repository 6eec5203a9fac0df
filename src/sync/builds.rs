//! The build poll: every build that finished since the high-water mark (less the overlap),
//! page by page, each page recorded in one transaction.

use chrono::{DateTime, Utc};

use crate::buildkite::client::Item;
use crate::buildkite::{Build, BuildQuery, Client, SourceError};
use crate::config::BuildkiteConfig;
use crate::store::cursor::{self, Entry, Progress};
use crate::store::{now_ms, Store, StoreError};

/// What a poll found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub pages: u32,
    /// Finished builds listed (including ones already delivered, in the overlap).
    pub finished: usize,
    /// Builds queued for delivery: new, or finished again since last seen.
    pub queued: usize,
    /// Builds that could not be decoded and went straight to dead letters.
    pub undecodable: usize,
}

/// Why a poll stopped.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Polls once: walks every page of builds finished since the cursor and queues the new ones.
pub async fn poll(
    client: &Client,
    store: &Store,
    config: &BuildkiteConfig,
) -> Result<PollReport, PollError> {
    let mark = store
        .call(|c| {
            cursor::begin_cycle(c)?;
            cursor::high_water_mark(c)
        })
        .await?;
    let overlap = chrono::Duration::from_std(config.overlap()).unwrap_or(chrono::Duration::MAX);
    let from = match mark {
        Some(mark) => mark - overlap,
        None => {
            Utc::now()
                - chrono::Duration::from_std(config.first_poll_lookback())
                    .unwrap_or(chrono::Duration::MAX)
        }
    };
    tracing::debug!(finished_from = %from, "polling builds");
    let query = BuildQuery {
        finished_from: Some(from),
        branches: config.branches.clone(),
        ..BuildQuery::default()
    };
    let mut report = PollReport::default();
    let mut url = Some(client.builds_url(&query));
    while let Some(page_url) = url {
        let page = client.builds_page(&page_url).await?;
        report.pages += 1;
        let (entries, page_max) = select(
            &config.organization,
            &config.pipelines,
            page.items,
            &page_url,
        );
        report.finished += entries.len();
        report.undecodable += entries.iter().filter(|e| e.dead.is_some()).count();
        report.queued += store
            .call(move |c| {
                let progress = Progress::Poll {
                    page_max: page_max.as_deref(),
                };
                cursor::record_page(c, &entries, progress, now_ms())
            })
            .await?;
        url = page.next;
    }
    let keep = overlap * 2;
    store.call(move |c| cursor::complete_cycle(c, keep)).await?;
    Ok(report)
}

/// The finished builds of a page as outbox entries (filtered by pipeline), and the page's
/// latest `finished_at`.
pub(crate) fn select(
    org: &str,
    pipelines: &[String],
    items: Vec<Item<Build>>,
    url: &url::Url,
) -> (Vec<Entry>, Option<String>) {
    let mut page_max: Option<DateTime<Utc>> = None;
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let entry = match item.decoded {
            Ok(build) => {
                let Some(finished) = build.finished() else {
                    continue;
                };
                page_max = page_max.max(Some(finished));
                if !pipelines.is_empty() && !pipelines.iter().any(|p| p == build.pipeline_slug()) {
                    continue;
                }
                Entry {
                    label: format!("{org}/{}#{}", build.pipeline_slug(), build.number),
                    build_id: build.id,
                    finished_at: cursor::timestamp(finished),
                    payload: item.raw,
                    dead: None,
                }
            }
            Err(error) => match undecodable(org, &item.raw, &error, url) {
                Some(entry) => entry,
                None => continue,
            },
        };
        entries.push(entry);
    }
    (entries, page_max.map(cursor::timestamp))
}

/// A build that does not decode still has an id and a finish time, most likely: it becomes
/// a dead letter (shown by `status`, re-driven by `replay`) instead of blocking the page.
fn undecodable(org: &str, raw: &str, error: &str, url: &url::Url) -> Option<Entry> {
    #[derive(serde::Deserialize)]
    struct Key {
        id: String,
        number: Option<u64>,
        finished_at: Option<DateTime<Utc>>,
    }
    let key: Option<Key> = serde_json::from_str(raw).ok();
    tracing::error!(
        endpoint = url.path(),
        build = key.as_ref().map(|k| k.id.as_str()).unwrap_or("?"),
        "cannot decode a build from Buildkite: {error}"
    );
    let key = key?;
    let finished = key.finished_at?;
    Some(Entry {
        label: format!("{org}/?#{}", key.number.unwrap_or(0)),
        build_id: key.id,
        finished_at: cursor::timestamp(finished),
        payload: raw.to_string(),
        dead: Some(format!("cannot decode the build from Buildkite: {error}")),
    })
}
