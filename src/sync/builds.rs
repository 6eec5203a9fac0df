//! The build poll: every build that finished since the high-water mark (less the overlap),
//! page by page, each page recorded in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::walk::Walk;
use super::SyncError;
use crate::buildkite::budget::Seen;
use crate::buildkite::client::Item;
use crate::buildkite::model::{Field, Undecodable};
use crate::buildkite::{Build, BuildQuery, Client};
use crate::clock::{self, now_ms, timestamp};
use crate::config::{Config, ListArtifacts};
use crate::store::builds::{self, Entry, Progress};
use crate::store::state::{self, Key};
use crate::store::{cursor, refusal, Store};

/// What a poll found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PollReport {
    pub(crate) pages: u32,
    /// Finished builds listed (including ones already delivered, in the overlap).
    pub(crate) finished: usize,
    /// Builds queued for delivery: new, or finished again since last seen.
    pub(crate) queued: usize,
    /// Builds that could not be decoded and went straight to dead letters.
    pub(crate) undecodable: usize,
    /// The poll looked for builds finished since this time.
    pub(crate) since: DateTime<Utc>,
    /// True when the state had no cursor: the poll looked back `first_poll_lookback_minutes`.
    pub(crate) first: bool,
    /// The pipelines of the builds listed (finished or not, filtered out or not).
    pub(crate) pipelines: BTreeSet<String>,
    /// For each optional field read as absent, how many of the builds queued had it so.
    pub(crate) ignored: BTreeMap<Field, u64>,
}

/// Polls once: walks every build finished since the cursor and queues the new ones.
///
/// Each page is recorded in one transaction (seen-set and outbox). The high-water mark moves
/// once the walk is complete, to the latest `finished_at` it saw but never past the server's
/// time of the first answer: a build that finishes while a long poll is under way may be
/// missed by that poll, and the next one must still ask for it.
pub(crate) async fn poll(
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
        None => clock::now().checked_sub_signed(bk.first_poll_lookback()),
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
        started = started.or(page.date).or_else(|| Some(clock::now()));
        let listed = page.items.iter().filter_map(|i| i.decoded.as_ref().ok());
        report
            .pipelines
            .extend(listed.map(|b| b.pipeline_slug().to_string()));
        let Selection {
            entries,
            latest: latest_finish,
            ignored,
        } = select(config, page.items, &page.endpoint, true);
        latest = latest.max(latest_finish);
        report.finished += entries.len();
        report.undecodable += entries.iter().filter(|e| e.dead.is_some()).count();
        let (queued, ignored) = store
            .call(move |c| {
                // Only builds queued now: the overlap lists builds again at every poll.
                let mut new = Vec::new();
                for i in ignored {
                    if !builds::seen(c, &i.build_id, &i.finished_at)? {
                        new.push(i);
                    }
                }
                let queued = builds::record_page(c, &entries, Progress::Poll, now_ms())?;
                Ok((queued, new))
            })
            .await?;
        report.queued += queued;
        note_ignored(&ignored, &mut report.ignored);
    }
    // Nothing finished in the window: everything up to the first answer has been seen.
    let mark = started
        .map(|s| latest.map_or(s, |l| l.min(s)))
        .map(timestamp);
    let keep = bk.overlap() * 2;
    // The budgets as Buildkite last reported them, for `status`.
    let seen = Seen {
        at: timestamp(clock::now()),
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
pub(crate) fn lists_artifacts(config: &Config, build: &Build) -> bool {
    config.tests_enabled()
        && match config.tests.list_artifacts {
            ListArtifacts::All => build.ran_commands(),
            ListArtifacts::Declared => build.has_artifacts(),
        }
}

/// The finished builds of a page as outbox entries, and what the page told of them.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    pub(crate) entries: Vec<Entry>,
    /// The page's latest `finished_at`.
    pub(crate) latest: Option<DateTime<Utc>>,
    /// The builds of `entries` with optional fields read as absent.
    pub(crate) ignored: Vec<Ignored>,
}

/// A finished build with optional fields of an unexpected type or format, read as absent.
#[derive(Debug)]
pub(crate) struct Ignored {
    pub(crate) build_id: String,
    /// As the seen-set keys it.
    pub(crate) finished_at: String,
    pub(crate) fields: BTreeSet<Field>,
}

/// The fields already named in the log by this process: each is warned about once.
static WARNED: Mutex<BTreeSet<Field>> = Mutex::new(BTreeSet::new());

/// Names each field of `ignored` in a warning, once per process, and counts the builds that
/// had it into `counts`.
pub(crate) fn note_ignored(ignored: &[Ignored], counts: &mut BTreeMap<Field, u64>) {
    for build in ignored {
        for field in &build.fields {
            *counts.entry(*field).or_default() += 1;
            let first = WARNED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*field);
            if first {
                tracing::warn!(
                    build = %build.build_id,
                    field = field.as_str(),
                    "a field of a build from Buildkite has an unexpected type or format: read \
                     as absent (builds with it are counted in \
                     kitesync_buildkite_fields_ignored_total, this is said once)"
                );
            }
        }
    }
}

/// The finished builds of a page (listed at `endpoint`) as outbox entries. Without `enrich`,
/// none of them has test results or logs fetched. A build that cannot be decoded is a dead
/// letter naming why, finished or not.
pub(crate) fn select(
    config: &Config,
    items: Vec<Item<Build>>,
    endpoint: &str,
    enrich: bool,
) -> Selection {
    let org = &config.buildkite.organization;
    let pipelines = &config.buildkite.pipelines;
    let mut selection = Selection {
        entries: Vec::with_capacity(items.len()),
        ..Selection::default()
    };
    for item in items {
        // An item the client could not decode is decoded again for the typed reason.
        let decoded = item.decoded.or_else(|_| Build::decode(&item.raw));
        let decoded = decoded.and_then(|b| Ok(b.listed()?));
        let entry = match decoded {
            Ok(build) => {
                let Some(finished) = build.finished() else {
                    continue;
                };
                selection.latest = selection.latest.max(Some(finished));
                if !(pipelines.is_empty() || pipelines.iter().any(|p| p == build.pipeline_slug())) {
                    continue;
                }
                if !build.ignored.is_empty() {
                    selection.ignored.push(Ignored {
                        build_id: build.id.clone(),
                        finished_at: timestamp(finished),
                        fields: build.ignored.iter().copied().collect(),
                    });
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
            Err(error) => undecodable(org, item.raw, &error, endpoint),
        };
        selection.entries.push(entry);
    }
    selection
}

/// A build that cannot be decoded becomes a dead letter (shown by `status`, re-driven by
/// `replay`) instead of blocking the page or being skipped. It is keyed by its id and finish
/// time when those can be read, else by a hash of its text, so that later polls do not queue
/// it again.
fn undecodable(org: &str, raw: String, error: &Undecodable, endpoint: &str) -> Entry {
    let (id, number, finished_at) = match error {
        Undecodable::Field(u) => (u.id.clone(), u.number, u.finished_at),
        Undecodable::Json(_) => (None, None, None),
    };
    tracing::error!(
        endpoint,
        build = id.as_deref().unwrap_or("?"),
        "cannot decode a build from Buildkite: {error}"
    );
    let build_id = id.unwrap_or_else(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        raw.hash(&mut h);
        format!("undecodable-{:016x}", h.finish())
    });
    Entry {
        label: format!("{org}/?#{}", number.unwrap_or(0)),
        build_id,
        finished_at: finished_at.map(timestamp).unwrap_or_default(),
        payload: raw,
        dead: Some(format!("cannot decode the build from Buildkite: {error}")),
        enrich: false,
    }
}
