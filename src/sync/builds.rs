//! The build poll: every build that finished since the high-water mark (less the overlap),
//! page by page, each page recorded in one transaction.

use chrono::{DateTime, Utc};

use super::walk::Walk;
use super::SyncError;
use crate::buildkite::budget::Seen;
use crate::buildkite::client::Item;
use crate::buildkite::{Build, BuildQuery, Client};
use crate::config::{Config, ListArtifacts};
use crate::store::builds::{self, Entry, Progress};
use crate::store::state::{self, Key};
use crate::store::{cursor, now_ms, refusal, timestamp, Store};

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
    /// The poll looked for builds finished since this time.
    pub since: DateTime<Utc>,
    /// True when the state had no cursor: the poll looked back `first_poll_lookback_minutes`.
    pub first: bool,
    /// The pipelines of the builds listed (finished or not, filtered out or not).
    pub pipelines: std::collections::BTreeSet<String>,
}

/// Polls once: walks every build finished since the cursor and queues the new ones.
///
/// Each page is recorded in one transaction (seen-set and outbox). The high-water mark moves
/// once the walk is complete, to the latest `finished_at` it saw but never past the server's
/// time of the first answer: a build that finishes while a long poll is under way may be
/// missed by that poll, and the next one must still ask for it.
pub async fn poll(
    client: &Client,
    store: &Store,
    config: &Config,
) -> Result<PollReport, SyncError> {
    let bk = &config.buildkite;
    let mark = store.call(|c| cursor::high_water_mark(c)).await?;
    // The mark is a time the server sent: shifting it must not overflow (chrono's first
    // time is before any build).
    let from = match mark {
        Some(mark) => mark.checked_sub_signed(bk.overlap()),
        None => Utc::now().checked_sub_signed(bk.first_poll_lookback()),
    }
    .unwrap_or(DateTime::<Utc>::MIN_UTC);
    tracing::debug!(finished_from = %from, "polling builds");
    let mut walk = Walk::buildkite(BuildQuery {
        finished_from: Some(from),
        branches: bk.branches.clone(),
        ..BuildQuery::default()
    });
    let mut report = PollReport {
        since: from,
        first: mark.is_none(),
        ..PollReport::default()
    };
    let mut latest: Option<DateTime<Utc>> = None;
    let mut started: Option<DateTime<Utc>> = None;
    while let Some(page) = walk.next(client).await? {
        report.pages += 1;
        started = started.or(page.date).or_else(|| Some(Utc::now()));
        let listed = page.items.iter().filter_map(|i| i.decoded.as_ref().ok());
        report
            .pipelines
            .extend(listed.map(|b| b.pipeline_slug().to_string()));
        let (entries, latest_finish) = select(config, page.items, &page.endpoint, true);
        latest = latest.max(latest_finish);
        report.finished += entries.len();
        report.undecodable += entries.iter().filter(|e| e.dead.is_some()).count();
        report.queued += store
            .call(move |c| builds::record_page(c, &entries, Progress::Poll, now_ms()))
            .await?;
    }
    // Nothing finished in the window: everything up to the first answer has been seen.
    let mark = started
        .map(|s| latest.map_or(s, |l| l.min(s)))
        .map(timestamp);
    let keep = bk.overlap() * 2;
    // The budgets as Buildkite last reported them, for `status`.
    let seen = Seen {
        at: timestamp(Utc::now()),
        pace: Some(client.budget().pace()),
        budgets: client.budget().last_seen(),
    };
    let seen = serde_json::to_string(&seen).map_err(SyncError::encode("the rate budgets"))?;
    // It worked with this organization and token: a refusal later is a passing one.
    let (org, token) = (bk.organization.clone(), bk.token().fingerprint());
    store
        .call(move |c| {
            cursor::complete_cycle(c, mark.as_deref(), keep)?;
            state::set(c, Key::RateLimit, &seen)?;
            refusal::worked(c, &org, &token)?;
            refusal::clear(c)
        })
        .await?;
    Ok(report)
}

/// Whether anything is to be fetched for `build`: its artifacts when [`lists_artifacts`],
/// logs only for failed builds with failed steps.
fn enriches(config: &Config, build: &Build) -> bool {
    lists_artifacts(config, build)
        || (config.logs_enabled() && build.failed_steps().next().is_some())
}

/// Whether `build`'s artifacts are listed for test results: `[tests] list_artifacts = "all"`
/// lists those of every build that ran a command step, `"declared"` only those of builds with
/// a step that declares `artifact_paths`.
pub fn lists_artifacts(config: &Config, build: &Build) -> bool {
    config.tests_enabled()
        && match config.tests.list_artifacts {
            ListArtifacts::All => build.ran_commands(),
            ListArtifacts::Declared => build.has_artifacts(),
        }
}

/// The finished builds of a page (listed at `endpoint`) as outbox entries, and the page's
/// latest `finished_at`. Without `enrich`, none of them has test results or logs fetched.
pub fn select(
    config: &Config,
    items: Vec<Item<Build>>,
    endpoint: &str,
    enrich: bool,
) -> (Vec<Entry>, Option<DateTime<Utc>>) {
    let org = &config.buildkite.organization;
    let pipelines = &config.buildkite.pipelines;
    let mut page_max: Option<DateTime<Utc>> = None;
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let entry = match item.decoded {
            Ok(build) => {
                let Some(finished) = build.finished() else {
                    continue;
                };
                page_max = page_max.max(Some(finished));
                if !(pipelines.is_empty() || pipelines.iter().any(|p| p == build.pipeline_slug())) {
                    continue;
                }
                let odd = build.jobs.iter().flatten();
                for job in odd.filter(|j| j.id.is_empty() || j.kind.is_empty()) {
                    let (build, job) = (&build.id, job.display_name());
                    tracing::debug!(build, job, "a job without an id or a type: a stage, no log");
                }
                Entry {
                    label: format!("{org}/{}#{}", build.pipeline_slug(), build.number),
                    enrich: enrich && enriches(config, &build),
                    build_id: build.id,
                    finished_at: timestamp(finished),
                    payload: item.raw,
                    dead: None,
                }
            }
            Err(error) => match undecodable(org, &item.raw, &error, endpoint) {
                Some(entry) => entry,
                None => continue,
            },
        };
        entries.push(entry);
    }
    (entries, page_max)
}

/// A build that does not decode becomes a dead letter (shown by `status`, re-driven by
/// `replay`) instead of blocking the page. It is keyed by its id and finish time when those
/// can be read, else by a hash of its text, so that later polls do not queue it again.
fn undecodable(org: &str, raw: &str, error: &str, endpoint: &str) -> Option<Entry> {
    #[derive(Default, serde::Deserialize)]
    struct Key {
        id: Option<String>,
        number: Option<u64>,
        state: Option<String>,
        finished_at: Option<DateTime<Utc>>,
    }
    let key: Key = serde_json::from_str(raw).unwrap_or_default();
    if key.finished_at.is_none() && key.state.is_some() {
        // Not finished yet (or not readable as finished): a later poll sees it again.
        tracing::warn!(
            endpoint,
            build = key.id.as_deref().unwrap_or("?"),
            "cannot decode an unfinished build from Buildkite: {error}"
        );
        return None;
    }
    tracing::error!(
        endpoint,
        build = key.id.as_deref().unwrap_or("?"),
        "cannot decode a build from Buildkite: {error}"
    );
    let build_id = key.id.unwrap_or_else(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        raw.hash(&mut h);
        format!("undecodable-{:016x}", h.finish())
    });
    Some(Entry {
        label: format!("{org}/?#{}", key.number.unwrap_or(0)),
        build_id,
        finished_at: key.finished_at.map(timestamp).unwrap_or_default(),
        payload: raw.to_string(),
        dead: Some(format!("cannot decode the build from Buildkite: {error}")),
        enrich: false,
    })
}
