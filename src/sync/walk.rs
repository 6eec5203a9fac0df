//! Walking a builds listing without page numbers.
//!
//! Buildkite lists builds newest-first by creation time, and refuses deep pages. Worse,
//! following `page=2, 3, ...` over a list that changes between requests (a build retried
//! drops out of `finished_from`, a late finisher drops in) shifts items across page
//! boundaries, and a build that shifts onto a page already read is never seen. So every
//! request here is the *first* page of the query, narrowed with `created_to` to just above
//! the oldest build seen so far: what was read can never shift into what is still to read,
//! and no listing is ever deep. Builds created in that same step of time come again on the
//! next page and are skipped; when more than a page of builds share one step, that step is
//! paged through on its own. The `Link` header (or a full page) says whether there is more.
//!
//! The walk reads pages through [`Pages`], so that its cases are unit-tested without HTTP;
//! the time granularity of its bounds and its page size are parameters. Buildkite's walk
//! ([`Walk::buildkite`]) steps in whole seconds, the precision the client sends time filters
//! in: once narrowed, every bound is a whole second; the bounds it starts from (a range's
//! ends, a checkpoint) are widened to whole seconds by the client.
//!
//! A page of 100 builds with all their jobs can be too big for the server to answer in time,
//! or for kitesync to read (larger than the client's cap). When a page request times out
//! (after the client's own retries) or is too large, the walk halves its page size, down to
//! [`MIN_PER_PAGE`], and asks again; the smaller size lasts for the rest of the walk.
//! Nothing of the walk's exactness depends on the size: a page is only ever compared with
//! the size it was asked with, and a step being paged through restarts from its page 1 at
//! the new size, the ids already read of it skipped.
//!
//! Every walk ends, whatever the server answers: a page with a build outside the bounds it
//! was asked for (a server that ignores `created_to`, say), a list that does not narrow, a
//! page of a step being paged through that holds no build not read before (a server that
//! ignores `page`, whatever order it gives them in), a step of more than
//! [`MAX_STEP_BUILDS`] builds or more pages than those could fill are each an error naming
//! the endpoint. A page with builds that finished before the `finished_from` asked is the
//! last: those builds are taken out of it, and the walk ends with an error naming the
//! endpoint.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::buildkite::client::{Item, Page, TIME_FILTER_STEP_SECS};
use crate::buildkite::{model, Build, BuildQuery, Client, SourceError};

/// The smallest page a walk shrinks to when pages time out or are too large.
pub(crate) const MIN_PER_PAGE: u32 = 25;

/// The most builds of one step of time the walk pages through (Buildkite's depth limit
/// comes long before): more is an error, not a walk without end.
pub(crate) const MAX_STEP_BUILDS: usize = 10_000;

/// Pages of one step asked beyond those its [`MAX_STEP_BUILDS`] builds fill.
const SPARE_STEP_PAGES: usize = 3;

/// Reads one page of a builds listing: Buildkite's, or a table in a unit test.
pub(crate) trait Pages {
    /// The page `query` asks for.
    fn page(
        &self,
        query: &BuildQuery,
    ) -> impl Future<Output = Result<Page<Build>, SourceError>> + Send;
}

impl Pages for Client {
    fn page(
        &self,
        query: &BuildQuery,
    ) -> impl Future<Output = Result<Page<Build>, SourceError>> + Send {
        self.builds(query)
    }
}

/// A walk through every build a query lists, newest first.
pub(crate) struct Walk {
    query: BuildQuery,
    /// The granularity of the `created_*` bounds the server compares at.
    step: Duration,
    /// Items in a full page.
    per_page: u32,
    /// Set while walking the builds of one step that fills pages by itself.
    tie: Option<Tie>,
    /// Ids already read of the step the next page starts with.
    boundary: HashSet<String>,
    /// The step of the oldest build read so far.
    oldest: Option<DateTime<Utc>>,
    /// The last step walked as a [`Tie`].
    tied: Option<DateTime<Utc>>,
    done: bool,
    /// Why the walk ends after the page it last returned.
    stop: Option<SourceError>,
}

/// Paging through the builds created in one step: `[at, to)`, page by page.
struct Tie {
    at: DateTime<Utc>,
    /// `at` + the step.
    to: DateTime<Utc>,
    page: u32,
    /// The pages from the first that only read again what was read of the step (at a
    /// larger page size, or the page that showed the step is full): no new build is expected
    /// of them. Any later page without one means the server ignores `page`.
    rereads: u32,
}

impl Tie {
    /// The step starting at `at`, paged from its first page; `read` of its builds were
    /// read already, in pages of `per_page`.
    fn new(at: DateTime<Utc>, to: DateTime<Utc>, read: usize, per_page: u32) -> Tie {
        let mut tie = Tie {
            at,
            to,
            page: 1,
            rereads: 0,
        };
        tie.restart(read, per_page);
        tie
    }

    /// Pages the step again from its first page, now in pages of `per_page`.
    fn restart(&mut self, read: usize, per_page: u32) {
        self.page = 1;
        self.rereads = u32::try_from(read / per_page.max(1) as usize).unwrap_or(u32::MAX);
    }
}

/// When a listed build finished, read on its own: an odd `finished_at` (the decoder's
/// business) is never outside `finished_from`.
#[derive(serde::Deserialize)]
struct Finished {
    finished_at: Option<DateTime<Utc>>,
}

impl Walk {
    /// A walk of Buildkite's listing as kitesync walks it: bounds in whole seconds (the
    /// precision the client sends them in, [`TIME_FILTER_STEP_SECS`]), pages of Buildkite's
    /// largest size.
    pub(crate) fn buildkite(query: BuildQuery) -> Walk {
        Walk::new(query, Duration::seconds(TIME_FILTER_STEP_SECS), 100)
    }

    /// A walk from the newest build `query` lists (below `query.created_to`, if set), with
    /// bounds in multiples of `step` and pages of `per_page` items.
    pub(crate) fn new(query: BuildQuery, step: Duration, per_page: u32) -> Walk {
        Walk {
            query: BuildQuery {
                per_page: Some(per_page),
                ..query
            },
            step,
            per_page,
            tie: None,
            boundary: HashSet::new(),
            oldest: None,
            tied: None,
            done: false,
            stop: None,
        }
    }

    /// The `created_to` bound of what is still to walk (`None` before the first page).
    pub(crate) fn upper(&self) -> Option<DateTime<Utc>> {
        match &self.tie {
            Some(tie) => Some(tie.to),
            None => self.query.created_to,
        }
    }

    /// True once the last page was read.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The next page, without the builds already read; `None` when the walk is over.
    pub(crate) async fn next(
        &mut self,
        pages: &impl Pages,
    ) -> Result<Option<Page<Build>>, SourceError> {
        if let Some(stop) = self.stop.take() {
            self.done = true;
            return Err(stop);
        }
        if self.done {
            return Ok(None);
        }
        let (mut page, asked) = loop {
            let asked = self.ask();
            match pages.page(&asked).await {
                Err(e) if self.per_page > MIN_PER_PAGE && too_big(&e) => self.shrink(&e),
                answer => break (answer?, asked),
            }
        };
        // A proxy may strip `Link`: a full page means there may be more.
        let more = page.next.is_some() || page.items.len() >= self.per_page as usize;
        // A build whose id or creation time cannot be read is a dead letter (`select`), not
        // a place in the list.
        let created: Vec<(String, DateTime<Utc>)> = page
            .items
            .iter()
            .filter_map(|i| match &i.decoded {
                Ok(b) => Some((b.id.clone(), self.floor(b.created_at?))),
                Err(_) => match model::created(&i.raw) {
                    (Some(id), Some(at)) => Some((id, self.floor(at))),
                    _ => None,
                },
            })
            .collect();
        self.check_bounds(&asked, &created, &page.endpoint)?;
        self.stop = self.drop_finished_before(&asked, &mut page);
        page.items
            .retain(|i| !listed_id(i).is_some_and(|id| self.boundary.contains(id.as_ref())));
        let oldest = created.iter().map(|(_, t)| *t).min();
        match (&mut self.tie, oldest) {
            (Some(tie), _) if more => {
                // Still within the step: every page past the re-read ones brings a build not
                // read before, or the server ignores `page` (reshuffling or not).
                let new = created.iter().any(|(id, _)| !self.boundary.contains(id));
                if !new && tie.page > tie.rereads {
                    return Err(SourceError::Protocol {
                        endpoint: page.endpoint,
                        problem: format!(
                            "page {} of the builds created at {} holds no build not read \
                             before: the server ignores `page`; refusing to walk it forever",
                            tie.page, tie.at
                        ),
                    });
                }
                self.boundary.extend(created.into_iter().map(|(id, _)| id));
                if self.boundary.len() > MAX_STEP_BUILDS {
                    return Err(SourceError::Protocol {
                        endpoint: page.endpoint,
                        problem: format!(
                            "more than {MAX_STEP_BUILDS} builds created at {}; refusing to \
                             page through them",
                            tie.at
                        ),
                    });
                }
                tie.page += 1;
                let most = MAX_STEP_BUILDS.div_ceil(self.per_page as usize) + SPARE_STEP_PAGES;
                if tie.page as usize > most {
                    return Err(SourceError::Protocol {
                        endpoint: page.endpoint,
                        problem: format!(
                            "more than {most} pages of {} builds created at {}; refusing to \
                             page through them",
                            self.per_page, tie.at
                        ),
                    });
                }
            }
            (Some(tie), _) => {
                // That step is done: continue below it.
                self.query.created_to = Some(tie.at);
                self.tied = Some(tie.at);
                self.tie = None;
                self.boundary.clear();
            }
            (None, Some(oldest)) if more => {
                let stuck = self.tied == Some(oldest);
                if stuck || self.oldest.is_some_and(|before| oldest > before) {
                    return Err(SourceError::Protocol {
                        endpoint: page.endpoint,
                        problem:
                            "the list did not narrow with created_to; refusing to walk it forever"
                                .into(),
                    });
                }
                let to = self.after(oldest, &page.endpoint)?;
                if self.oldest == Some(oldest) {
                    // A whole page created in one step: page through that step alone
                    // (never deep), then go on below it.
                    tracing::debug!("more than a page of builds created at {oldest}");
                    self.boundary.extend(created.into_iter().map(|(id, _)| id));
                    let read = self.boundary.len();
                    self.tie = Some(Tie::new(oldest, to, read, self.per_page));
                } else {
                    self.boundary = created
                        .into_iter()
                        .filter(|(_, t)| *t == oldest)
                        .map(|(id, _)| id)
                        .collect();
                    self.query.created_to = Some(to);
                }
                self.oldest = Some(oldest);
            }
            (None, None) if more => {
                return Err(SourceError::Protocol {
                    endpoint: page.endpoint,
                    problem: "a full page of builds none of whose id and created_at can be read; \
                              cannot narrow the list below them"
                        .into(),
                })
            }
            (None, _) => self.done = true,
        }
        Ok(Some(page))
    }

    /// The query of the next page.
    fn ask(&self) -> BuildQuery {
        match &self.tie {
            None => self.query.clone(),
            Some(tie) => BuildQuery {
                created_from: Some(self.query.created_from.map_or(tie.at, |f| f.max(tie.at))),
                created_to: Some(tie.to),
                page: Some(tie.page),
                ..self.query.clone()
            },
        }
    }

    /// Refuses a page that lists a build (`created`: ids and steps) outside the `created_*`
    /// bounds it was `asked` with: such a server ignores them, and a walk of it would not
    /// narrow. The bounds are compared as sent (widened to whole steps).
    fn check_bounds(
        &self,
        asked: &BuildQuery,
        created: &[(String, DateTime<Utc>)],
        endpoint: &str,
    ) -> Result<(), SourceError> {
        let from = asked.created_from.map(|t| self.floor(t));
        let to = asked.created_to.and_then(|t| self.ceil(t));
        let outside = created
            .iter()
            .find(|(_, t)| from.is_some_and(|from| *t < from) || to.is_some_and(|to| *t >= to));
        match outside {
            Some((id, t)) => Err(SourceError::Protocol {
                endpoint: endpoint.to_string(),
                problem: format!(
                    "the list did not narrow: it holds build {id}, created at {t}, outside the \
                     created_from/created_to asked for; refusing to walk it forever"
                ),
            }),
            None => Ok(()),
        }
    }

    /// Takes out of `page` the builds that finished before the `finished_from` it was
    /// `asked` with (compared as sent, rounded down to a step; a build not finished is not
    /// outside it). If there were any, the server ignores `finished_from` and a walk of it
    /// would read every build there is: the error that ends the walk after this page.
    fn drop_finished_before(
        &self,
        asked: &BuildQuery,
        page: &mut Page<Build>,
    ) -> Option<SourceError> {
        let from = self.floor(asked.finished_from?);
        let finished = |i: &Item<Build>| {
            let f = serde_json::from_str::<Finished>(&i.raw).ok()?;
            f.finished_at.filter(|t| self.floor(*t) < from)
        };
        let before: Vec<Option<DateTime<Utc>>> = page.items.iter().map(finished).collect();
        let (first, at) = page
            .items
            .iter()
            .zip(&before)
            .find_map(|(i, t)| Some((i, (*t)?)))?;
        let id = listed_id(first).unwrap_or_default();
        let problem = format!(
            "it lists build {id}, finished at {at}, before the finished_from asked for \
             ({from}): the server ignores finished_from; the builds of this page that finished \
             since are kept, the walk stops here"
        );
        let mut before = before.into_iter();
        page.items.retain(|_| before.next().flatten().is_none());
        Some(SourceError::Protocol {
            endpoint: page.endpoint.clone(),
            problem,
        })
    }

    /// Halves the page size (not below [`MIN_PER_PAGE`]) for the rest of the walk, after a
    /// page of the current size timed out or was too large (`why`).
    fn shrink(&mut self, why: &SourceError) {
        let before = self.per_page;
        self.per_page = (before / 2).max(MIN_PER_PAGE);
        self.query.per_page = Some(self.per_page);
        // Page numbers count pages of the old size: page the step through again from its
        // first page; `boundary` holds every id of it already read, so none comes twice.
        if let Some(tie) = &mut self.tie {
            tie.restart(self.boundary.len(), self.per_page);
        }
        tracing::warn!(
            per_page = self.per_page,
            "a page of {before} builds failed ({why}); asking for {} at a time for the rest \
             of this walk",
            self.per_page
        );
    }

    /// The step `t` falls in.
    fn floor(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.duration_trunc(self.step).unwrap_or(t)
    }

    /// The first step boundary at or after `t`; `None` past the last time chrono holds.
    fn ceil(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let floor = self.floor(t);
        match floor == t {
            true => Some(t),
            false => floor.checked_add_signed(self.step),
        }
    }

    /// The step after the one starting at `t` (a build's creation, as the server sent it).
    fn after(&self, t: DateTime<Utc>, endpoint: &str) -> Result<DateTime<Utc>, SourceError> {
        t.checked_add_signed(self.step)
            .ok_or_else(|| SourceError::Protocol {
                endpoint: endpoint.to_string(),
                problem: format!("a build created at {t}, a time kitesync cannot count past"),
            })
    }
}

/// True when a page failed for its size: no answer in time, or more than the client reads.
fn too_big(e: &SourceError) -> bool {
    matches!(
        e,
        SourceError::Unavailable {
            timed_out: true,
            ..
        } | SourceError::TooLarge { .. }
    )
}

/// The id of a listed build (read from its JSON, so even of an undecodable one).
fn listed_id(item: &Item<Build>) -> Option<std::borrow::Cow<'_, str>> {
    match &item.decoded {
        Ok(build) => Some(std::borrow::Cow::Borrowed(build.id.as_str())),
        Err(_) => model::created(&item.raw).0.map(std::borrow::Cow::Owned),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::buildkite::client::Item;

    const T0: i64 = 1_780_000_000_000;

    /// A builds listing in memory, served as Buildkite serves it: newest first by creation,
    /// `created_from` inclusive, `created_to` exclusive, `page` numbers, `per_page` items,
    /// a `Link` to the next page when there is one.
    #[derive(Default)]
    struct Table {
        /// (id, created_at in ms), in any order.
        builds: Mutex<Vec<(String, i64)>>,
        /// A broken server that ignores `created_to`.
        ignore_created_to: bool,
        /// A proxy that strips `Link`.
        strip_link: bool,
        /// A broken server that serves the first page whatever `page` asks.
        ignore_page: bool,
        /// A broken server that serves the first page whatever `page` asks, its builds in
        /// another order for each page number (ties have no order of their own).
        reshuffle: bool,
        /// A broken server that reads `page` as the number of builds to skip, less one: each
        /// page brings one build not read before.
        slide: bool,
        /// Applied to the list after each answer: builds arrive and leave while it is read.
        churn: Mutex<Vec<Vec<(String, i64)>>>,
        /// A server too slow for big pages.
        slow: Option<Slow>,
        queries: Mutex<Vec<BuildQuery>>,
    }

    /// Pages of more than `above` items fail as the client fails them after its retries,
    /// once `after` queries were asked.
    struct Slow {
        above: u32,
        after: usize,
        fails: Fails,
    }

    /// How a page too big for the server fails.
    #[derive(Clone, Copy, Debug)]
    enum Fails {
        /// No answer in time.
        TimedOut,
        /// An answer larger than the client reads.
        TooLarge,
        /// Some other fault: a 502, say.
        Otherwise,
    }

    impl Table {
        fn new(builds: &[(String, i64)]) -> Table {
            Table {
                builds: Mutex::new(builds.to_vec()),
                ..Table::default()
            }
        }

        fn serve(&self, q: &BuildQuery) -> Page<Build> {
            self.queries.lock().expect("lock").push(q.clone());
            let ms = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
            let (from, to) = (ms(q.created_from), ms(q.created_to));
            let mut list = self.builds.lock().expect("lock").clone();
            list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let matching: Vec<_> = list
                .into_iter()
                .filter(|(_, t)| from.is_none_or(|f| *t >= f))
                .filter(|(_, t)| self.ignore_created_to || to.is_none_or(|to| *t < to))
                .collect();
            let per_page = q.per_page.unwrap_or(100) as usize;
            let page = if self.ignore_page || self.reshuffle {
                1
            } else {
                q.page.unwrap_or(1)
            };
            let skip = match self.slide {
                true => page as usize - 1,
                false => (page as usize - 1) * per_page,
            };
            let mut items: Vec<Item<Build>> = matching
                .iter()
                .skip(skip)
                .take(per_page)
                .map(|(id, t)| item(id, *t))
                .collect();
            if self.reshuffle && !items.is_empty() {
                let by = q.page.unwrap_or(1) as usize % items.len();
                items.rotate_left(by);
            }
            let more = matching.len() > skip + per_page;
            if let Some(next) = self.churn.lock().expect("lock").pop() {
                *self.builds.lock().expect("lock") = next;
            }
            Page {
                items,
                next: (more && !self.strip_link)
                    .then(|| url::Url::parse("http://127.0.0.1/next").expect("url")),
                date: None,
                endpoint: "127.0.0.1/v2/organizations/acme/builds".into(),
            }
        }
    }

    impl Pages for Table {
        fn page(
            &self,
            query: &BuildQuery,
        ) -> impl Future<Output = Result<Page<Build>, SourceError>> + Send {
            let asked = self.queries.lock().expect("lock").len();
            let too_big = self
                .slow
                .as_ref()
                .filter(|s| asked >= s.after && query.per_page.unwrap_or(100) > s.above);
            let answer = match too_big {
                Some(slow) => {
                    self.queries.lock().expect("lock").push(query.clone());
                    let endpoint = "127.0.0.1/v2/organizations/acme/builds".to_string();
                    Err(match slow.fails {
                        Fails::TooLarge => SourceError::TooLarge {
                            endpoint,
                            cap: 1 << 25,
                        },
                        fails => SourceError::Unavailable {
                            endpoint,
                            attempts: 5,
                            reason: "timed out".into(),
                            timed_out: matches!(fails, Fails::TimedOut),
                        },
                    })
                }
                None => Ok(self.serve(query)),
            };
            async move { answer }
        }
    }

    fn item(id: &str, created_ms: i64) -> Item<Build> {
        let created = DateTime::from_timestamp_millis(created_ms).expect("time");
        let raw = serde_json::json!({"id": id, "number": 1, "state": "passed",
            "created_at": created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)})
        .to_string();
        Item {
            decoded: serde_json::from_str(&raw).map_err(|e| e.to_string()),
            raw,
        }
    }

    /// `n` builds from `first` on, created `gap_ms` apart (0: all at once), newest last.
    fn builds(first: usize, n: usize, start_ms: i64, gap_ms: i64) -> Vec<(String, i64)> {
        (first..first + n)
            .map(|i| (format!("b{i}"), start_ms + (i - first) as i64 * gap_ms))
            .collect()
    }

    /// Walks everything `table` lists; the ids read, in order.
    async fn walk(table: &Table, step_ms: i64, per_page: u32) -> Result<Vec<String>, SourceError> {
        let query = BuildQuery {
            created_from: DateTime::from_timestamp_millis(T0),
            ..BuildQuery::default()
        };
        let mut walk = Walk::new(query, Duration::milliseconds(step_ms), per_page);
        let mut read = Vec::new();
        while let Some(page) = walk.next(table).await? {
            read.extend(page.items.into_iter().map(|i| i.raw));
            assert!(read.len() < 100_000, "the walk does not end");
            let asked = table.queries.lock().expect("lock").len();
            assert!(asked < 20_000, "the walk does not end: {asked} pages asked");
        }
        Ok(read
            .iter()
            .map(|raw| model::created(raw).0.expect("id"))
            .collect())
    }

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn every_build_is_read_exactly_once() {
        // (case, builds, step of the bounds in ms, page size)
        type Case = (&'static str, Vec<(String, i64)>, i64, u32);
        let cases: Vec<Case> = vec![
            ("one page", builds(0, 7, T0, 1000), 1, 10),
            ("pages of distinct times", builds(0, 95, T0, 7), 1, 10),
            (
                "ties at every boundary",
                builds(0, 90, T0, 0)
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, _))| (id, T0 + (i as i64 / 3) * 5))
                    .collect(),
                1,
                10,
            ),
            (
                "more than a page in one millisecond",
                [
                    builds(0, 5, T0, 1),
                    builds(5, 35, T0 + 10, 0),
                    builds(40, 5, T0 + 20, 1),
                ]
                .concat(),
                1,
                10,
            ),
            (
                "whole seconds, 25 builds in one second",
                [
                    builds(0, 6, T0, 1000),
                    builds(6, 25, T0 + 7_000, 37),
                    builds(31, 6, T0 + 9_000, 1000),
                ]
                .concat(),
                1000,
                10,
            ),
            ("a page exactly full", builds(0, 20, T0, 3), 1, 10),
        ];
        for (case, list, step, per_page) in cases {
            let table = Table::new(&list);
            let read = walk(&table, step, per_page).await.expect(case);
            let expected = sorted(list.iter().map(|(id, _)| id.clone()).collect());
            assert_eq!(sorted(read.clone()), expected, "{case}: each build once");
            assert_eq!(read.len(), expected.len(), "{case}: no build twice");
            let queries = table.queries.lock().expect("lock");
            assert!(
                queries.iter().all(|q| q.page.unwrap_or(1) <= 5),
                "{case}: never deep"
            );
        }
    }

    #[tokio::test]
    async fn a_walk_resumed_from_its_upper_bound_after_any_page_misses_nothing() {
        // Whole-second steps as kitesync walks Buildkite, 25 builds (more than a page) in
        // one second: a backfill checkpoints `upper()` after each page and resumes from it.
        let list = [
            builds(0, 6, T0 + 300, 1000),
            builds(6, 25, T0 + 7_000, 37),
            builds(31, 6, T0 + 9_000, 1000),
        ]
        .concat();
        let expected = sorted(list.iter().map(|(id, _)| id.clone()).collect());
        let query = |created_to| BuildQuery {
            created_from: DateTime::from_timestamp_millis(T0),
            created_to,
            ..BuildQuery::default()
        };
        let ids = |page: Page<Build>| -> Vec<String> {
            page.items
                .iter()
                .map(|i| model::created(&i.raw).0.expect("id"))
                .collect()
        };
        for stop_after in 1..12 {
            let table = Table::new(&list);
            let mut walk = Walk::new(query(None), Duration::seconds(1), 10);
            let mut read = Vec::new();
            for _ in 0..stop_after {
                if let Some(page) = walk.next(&table).await.expect("page") {
                    read.extend(ids(page));
                }
            }
            if !walk.is_done() {
                let mut resumed = Walk::new(query(walk.upper()), Duration::seconds(1), 10);
                while let Some(page) = resumed.next(&table).await.expect("page") {
                    read.extend(ids(page));
                }
            }
            let queries = table.queries.lock().expect("lock");
            assert!(
                queries.iter().all(|q| [q.created_from, q.created_to]
                    .iter()
                    .flatten()
                    .all(|t| t.timestamp_subsec_nanos() == 0)),
                "after {stop_after} pages: bounds in whole seconds"
            );
            // Each build read; the one step at the checkpoint again (the seen-set's work).
            let mut once = sorted(read.clone());
            once.dedup();
            assert_eq!(once, expected, "resumed after {stop_after} pages");
            assert!(
                read.len() - once.len() <= 25,
                "resumed after {stop_after} pages: only one step read again"
            );
        }
    }

    #[tokio::test]
    async fn a_full_page_goes_on_when_a_proxy_strips_link() {
        let list = builds(0, 30, T0, 2);
        let table = Table {
            strip_link: true,
            ..Table::new(&list)
        };
        assert_eq!(walk(&table, 1, 10).await.expect("walk").len(), 30);
    }

    #[tokio::test]
    async fn builds_that_arrive_or_leave_while_it_is_read_never_hide_others() {
        let list = builds(0, 40, T0, 10);
        let table = Table::new(&list);
        // After the first page: a new build arrives on top, the oldest is retried away.
        let mut next = list.clone();
        next.push(("new".into(), T0 + 10_000));
        next.retain(|(id, _)| id != "b0");
        *table.churn.lock().expect("lock") = vec![next];
        let read = walk(&table, 1, 10).await.expect("walk");
        for i in 1..40 {
            let id = format!("b{i}");
            assert_eq!(read.iter().filter(|r| **r == id).count(), 1, "{id}");
        }
        assert!(
            !read.contains(&"new".to_string()),
            "newer than the walk's start"
        );
    }

    #[tokio::test]
    async fn a_server_that_does_not_narrow_is_refused_not_walked_forever() {
        let table = Table {
            ignore_created_to: true,
            ..Table::new(&builds(0, 30, T0, 5))
        };
        let err = walk(&table, 1, 10).await.expect_err("refused");
        assert!(
            matches!(&err, SourceError::Protocol { problem, .. } if problem.contains("did not narrow")),
            "{err}"
        );
        let asked = table.queries.lock().expect("lock").len();
        assert!(asked <= 6, "refused within a few requests, not {asked}");
    }

    /// The page sizes asked, in order.
    fn sizes(table: &Table) -> Vec<u32> {
        let queries = table.queries.lock().expect("lock");
        queries.iter().map(|q| q.per_page.unwrap_or(100)).collect()
    }

    #[tokio::test]
    async fn pages_that_time_out_shrink_to_50_then_25_and_every_build_is_read_once() {
        // (case, builds, timed-out pages are those larger than, sizes asked until the first
        // answer)
        type Case = (&'static str, Vec<(String, i64)>, u32, Vec<u32>);
        let cases: Vec<Case> = vec![
            (
                "distinct times",
                builds(0, 230, T0, 7),
                25,
                vec![100, 50, 25],
            ),
            (
                "ties at every boundary",
                builds(0, 240, T0, 0)
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, _))| (id, T0 + (i as i64 / 7) * 5))
                    .collect(),
                25,
                vec![100, 50, 25],
            ),
            (
                "only 100 too big",
                [
                    builds(0, 40, T0, 3),
                    builds(40, 130, T0 + 500, 0),
                    builds(170, 40, T0 + 600, 3),
                ]
                .concat(),
                50,
                vec![100, 50],
            ),
        ];
        for ((case, list, above, first), fails) in cases
            .into_iter()
            .flat_map(|c| [(c.clone(), Fails::TimedOut), (c, Fails::TooLarge)])
        {
            let case = &format!("{case}, {fails:?}");
            let table = Table {
                slow: Some(Slow {
                    above,
                    after: 0,
                    fails,
                }),
                ..Table::new(&list)
            };
            let read = walk(&table, 1, 100).await.expect(case);
            let expected = sorted(list.iter().map(|(id, _)| id.clone()).collect());
            assert_eq!(sorted(read.clone()), expected, "{case}: each build once");
            assert_eq!(read.len(), expected.len(), "{case}: no build twice");
            let sizes = sizes(&table);
            assert_eq!(
                sizes[..first.len()],
                first[..],
                "{case}: halved per timeout"
            );
            let last = *first.last().expect("a size");
            assert!(
                sizes[first.len()..].iter().all(|s| *s == last),
                "{case}: the smaller size lasts for the rest of the walk: {sizes:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_step_being_paged_through_when_pages_time_out_restarts_at_the_smaller_size() {
        // 260 builds in one millisecond between others: the walk pages through that step at
        // 100 a page; its third page times out.
        let tied = T0 + 500;
        let list = [
            builds(0, 30, T0, 3),
            builds(30, 260, tied, 0),
            builds(290, 30, T0 + 600, 3),
        ]
        .concat();
        let table = Table {
            slow: Some(Slow {
                above: 50,
                after: 4,
                fails: Fails::TimedOut,
            }),
            ..Table::new(&list)
        };
        let read = walk(&table, 1, 100).await.expect("walk");
        let expected = sorted(list.iter().map(|(id, _)| id.clone()).collect());
        assert_eq!(sorted(read.clone()), expected, "each build once");
        assert_eq!(read.len(), expected.len(), "no build twice");
        let queries = table.queries.lock().expect("lock").clone();
        let in_tie = |q: &BuildQuery| q.created_to.map(|t| t.timestamp_millis()) == Some(tied + 1);
        // The step was being paged through at 100 (page 2 read), page 3 timed out...
        let shrunk = queries
            .iter()
            .position(|q| q.per_page == Some(50))
            .expect("shrunk to 50");
        assert!(shrunk >= 1, "{queries:?}");
        let timed_out = &queries[shrunk - 1];
        assert!(
            in_tie(timed_out) && timed_out.per_page == Some(100) && timed_out.page == Some(3),
            "a tie's page 3 of 100 timed out: {timed_out:?}"
        );
        assert!(
            queries[..shrunk - 1]
                .iter()
                .any(|q| in_tie(q) && q.page == Some(2) && q.per_page == Some(100)),
            "page 2 of the tie was read at 100: {queries:?}"
        );
        // ...and the step starts again from its first page at 50.
        let again = &queries[shrunk];
        assert!(
            in_tie(again) && again.page == Some(1),
            "the tie restarted at page 1: {again:?}"
        );
        assert!(
            queries[shrunk..].iter().all(|q| q.per_page == Some(50)),
            "50 for the rest of the walk: {queries:?}"
        );
        assert!(
            queries.iter().all(|q| q.page.unwrap_or(1) <= 6),
            "never deep: {queries:?}"
        );
    }

    #[tokio::test]
    async fn pages_that_time_out_at_25_or_fail_otherwise_are_an_error_as_before() {
        for (case, fails, asked) in [
            (
                "timed out at every size",
                Fails::TimedOut,
                vec![100, 50, 25],
            ),
            (
                "too large at every size",
                Fails::TooLarge,
                vec![100, 50, 25],
            ),
            (
                "unavailable for another reason",
                Fails::Otherwise,
                vec![100],
            ),
        ] {
            let table = Table {
                slow: Some(Slow {
                    above: 0,
                    after: 0,
                    fails,
                }),
                ..Table::new(&builds(0, 30, T0, 5))
            };
            let err = walk(&table, 1, 100).await.expect_err(case);
            let as_failed = match (&err, fails) {
                (SourceError::TooLarge { .. }, Fails::TooLarge) => true,
                (SourceError::Unavailable { timed_out, .. }, Fails::TimedOut) => *timed_out,
                (SourceError::Unavailable { timed_out, .. }, Fails::Otherwise) => !*timed_out,
                _ => false,
            };
            assert!(as_failed, "{case}: {err}");
            assert_eq!(sizes(&table), asked, "{case}");
        }
    }

    #[tokio::test]
    async fn a_server_that_ignores_page_within_a_step_is_refused_not_walked_forever() {
        // 35 builds in one millisecond: the walk pages through that step, and the server
        // answers its first page every time.
        let table = Table {
            ignore_page: true,
            ..Table::new(&builds(0, 35, T0, 0))
        };
        let err = walk(&table, 1, 10).await.expect_err("refused");
        assert!(
            matches!(&err, SourceError::Protocol { problem, .. } if problem.contains(IGNORES_PAGE)),
            "{err}"
        );
        let asked = table.queries.lock().expect("lock").len();
        assert!(asked <= 4, "refused within a few requests, not {asked}");
    }

    /// What the walk says of a server that ignores `page` within a step.
    const IGNORES_PAGE: &str = "holds no build not read before: the server ignores `page`";

    #[tokio::test]
    async fn a_server_that_ignores_page_and_reshuffles_a_steps_builds_is_refused() {
        // 35 builds in one millisecond, between others: each page of that step is its first
        // page again, in another order; never the page before again, never a new build.
        let list = [
            builds(0, 5, T0, 3),
            builds(5, 35, T0 + 100, 0),
            builds(40, 5, T0 + 200, 3),
        ]
        .concat();
        let table = Table {
            reshuffle: true,
            ..Table::new(&list)
        };
        let err = walk(&table, 1, 10).await.expect_err("refused");
        assert!(
            matches!(&err, SourceError::Protocol { problem, endpoint } if problem.contains(IGNORES_PAGE)
                && problem.contains("page 2 of the builds created at")
                && endpoint.ends_with("acme/builds")),
            "{err}"
        );
        let asked = table.queries.lock().expect("lock").len();
        assert!(asked <= 6, "refused within a few requests, not {asked}");
    }

    #[tokio::test]
    async fn a_step_is_paged_through_in_no_more_pages_than_its_most_builds_fill() {
        // 500 builds in one millisecond from a server where each page brings just one build
        // not read before: the pages of a step stop at what 10,000 builds fill, plus 3.
        let table = Table {
            slide: true,
            ..Table::new(&builds(0, 500, T0, 0))
        };
        let err = walk(&table, 1, 100).await.expect_err("refused");
        let most = MAX_STEP_BUILDS / 100 + 3;
        assert!(
            matches!(&err, SourceError::Protocol { problem, .. } if problem.contains(&format!("more than {most} pages of 100 builds created at"))),
            "{err}"
        );
        let asked = table.queries.lock().expect("lock").len();
        assert!(asked <= most + 2, "{asked} requests");
    }

    /// A page of `items` with a link to more, whatever is asked.
    struct Endless(Vec<serde_json::Value>);

    impl Pages for Endless {
        fn page(
            &self,
            _: &BuildQuery,
        ) -> impl Future<Output = Result<Page<Build>, SourceError>> + Send {
            let items = self.0.iter().map(|b| Item {
                raw: b.to_string(),
                decoded: serde_json::from_value(b.clone()).map_err(|e| e.to_string()),
            });
            let page = Page {
                items: items.collect(),
                next: url::Url::parse("http://127.0.0.1/next").ok(),
                date: None,
                endpoint: "127.0.0.1/v2/organizations/acme/builds".into(),
            };
            async move { Ok(page) }
        }
    }

    #[tokio::test]
    async fn builds_finished_before_finished_from_end_the_walk_after_their_page() {
        // Asked for builds finished from 10:00:00.700 (sent as 10:00:00): a server that
        // ignores it lists one from 09:59:59.
        let build = |id: &str, finished: serde_json::Value| {
            serde_json::json!({"id": id, "number": 1, "state": "passed",
                "created_at": "2026-01-01T09:00:00.000Z", "finished_at": finished})
        };
        let page = vec![
            build("after", "2026-01-01T10:05:00.000Z".into()),
            build("same-second", "2026-01-01T10:00:00.100Z".into()),
            build("running", serde_json::Value::Null),
            build("odd", 1_767_261_600.into()),
            build("before", "2026-01-01T09:59:59.999Z".into()),
            build("long-before", "2025-06-01T00:00:00.000Z".into()),
        ];
        let query = BuildQuery {
            finished_from: "2026-01-01T10:00:00.700Z".parse().ok(),
            ..BuildQuery::default()
        };
        let mut walk = Walk::buildkite(query);
        let pages = Endless(page);
        let first = walk.next(&pages).await.expect("the page").expect("a page");
        let kept: Vec<String> = first
            .items
            .iter()
            .filter_map(|i| listed_id(i).map(String::from))
            .collect();
        assert_eq!(kept, ["after", "same-second", "running", "odd"]);
        let Err(err) = walk.next(&pages).await else {
            panic!("the walk ends");
        };
        assert!(
            matches!(&err, SourceError::Protocol { problem, endpoint } if endpoint.ends_with("acme/builds")
                && problem.contains("it lists build before, finished at 2026-01-01 09:59:59.999 UTC, before the finished_from asked for (2026-01-01 10:00:00 UTC)")),
            "{err}"
        );
        assert!(walk.next(&pages).await.expect("over").is_none());
    }

    #[tokio::test]
    async fn more_builds_in_one_step_than_the_walk_pages_through_is_an_error() {
        let table = Table::new(&builds(0, MAX_STEP_BUILDS + 150, T0, 0));
        let err = walk(&table, 1, 100).await.expect_err("refused");
        assert!(
            matches!(&err, SourceError::Protocol { problem, .. } if problem.contains(&format!("more than {MAX_STEP_BUILDS} builds"))),
            "{err}"
        );
        let asked = table.queries.lock().expect("lock").len();
        assert!(asked <= MAX_STEP_BUILDS / 100 + 3, "{asked} requests");
    }

    #[tokio::test]
    async fn builds_at_the_last_time_chrono_holds_end_the_walk_without_a_panic() {
        // A page full of builds at the end of time: the walk would narrow to just after it.
        let end = DateTime::<Utc>::MAX_UTC.timestamp_millis();
        for step_ms in [1, 1000] {
            let table = Table::new(&builds(0, 15, end, 0));
            let err = walk(&table, step_ms, 10).await.expect_err("refused");
            assert!(
                matches!(&err, SourceError::Protocol { problem, .. } if problem.contains("cannot count past")),
                "step {step_ms} ms: {err}"
            );
        }
    }

    /// A [`Table`] whose answers carry each build's JSON edited by `.1`.
    struct Edited<F>(Table, F);

    impl<F: Fn(&mut serde_json::Value) + Sync> Pages for Edited<F> {
        fn page(
            &self,
            query: &BuildQuery,
        ) -> impl Future<Output = Result<Page<Build>, SourceError>> + Send {
            let mut page = self.0.serve(query);
            for item in &mut page.items {
                let mut v: serde_json::Value = serde_json::from_str(&item.raw).expect("JSON");
                (self.1)(&mut v);
                item.raw = v.to_string();
                item.decoded = Build::decode(&item.raw).map_err(|e| e.to_string());
            }
            async move { Ok(page) }
        }
    }

    /// A [`Table`] whose answers carry each build's `created_at` rewritten by `rewrite`.
    fn rewritten(
        table: Table,
        rewrite: fn(DateTime<Utc>) -> serde_json::Value,
    ) -> Edited<impl Fn(&mut serde_json::Value) + Sync> {
        Edited(table, move |v: &mut serde_json::Value| {
            let at = v["created_at"].as_str().and_then(model::parse_time);
            v["created_at"] = rewrite(at.expect("a time"));
        })
    }

    async fn walk_all(pages: &impl Pages, per_page: u32) -> Result<Vec<String>, SourceError> {
        let query = BuildQuery {
            created_from: DateTime::from_timestamp_millis(T0),
            ..BuildQuery::default()
        };
        let mut walk = Walk::new(query, Duration::seconds(1), per_page);
        let mut read = Vec::new();
        while let Some(page) = walk.next(pages).await? {
            read.extend(page.items.iter().filter_map(|i| model::created(&i.raw).0));
            assert!(read.len() < 1000, "the walk does not end");
        }
        Ok(read)
    }

    #[tokio::test]
    async fn regression_creation_times_in_the_old_form_narrow_the_walk() {
        let list = builds(0, 30, T0, 1000);
        let old = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string().into();
        let read = walk_all(&rewritten(Table::new(&list), old), 10)
            .await
            .expect("walk");
        let expected = sorted(list.iter().map(|(id, _)| id.clone()).collect());
        assert_eq!(sorted(read), expected, "each build once");
    }

    #[tokio::test]
    async fn regression_builds_without_id_or_created_at_pass_through_and_the_rest_narrow() {
        // Each such build is handed on with its page (`select` makes it a dead letter naming
        // the field); the others narrow the walk, every one read once.
        let list = builds(0, 45, T0, 1000);
        let broken = |id: &str| id.trim_start_matches('b').parse::<u32>().expect("b<n>") % 4 == 1;
        for field in ["created_at", "id"] {
            let stripped = Edited(Table::new(&list), |v: &mut serde_json::Value| {
                if broken(v["id"].as_str().expect("an id")) {
                    v.as_object_mut().expect("an object").remove(field);
                }
            });
            let query = BuildQuery {
                created_from: DateTime::from_timestamp_millis(T0),
                ..BuildQuery::default()
            };
            let mut walk = Walk::new(query, Duration::seconds(1), 10);
            let (mut read, mut without) = (Vec::new(), 0);
            while let Some(page) = walk.next(&stripped).await.expect("walk") {
                for item in page.items {
                    match model::created(&item.raw) {
                        (Some(id), Some(_)) => read.push(id),
                        _ => without += 1,
                    }
                }
                assert!(read.len() < 1000, "the walk does not end");
            }
            let expected: Vec<String> = list
                .iter()
                .map(|(id, _)| id.clone())
                .filter(|id| !broken(id))
                .collect();
            assert_eq!(
                sorted(read),
                sorted(expected),
                "{field}: each readable build once"
            );
            let n_broken = list.iter().filter(|(id, _)| broken(id)).count();
            assert!(
                without >= n_broken,
                "{field}: {without} of {n_broken} handed on"
            );
        }
    }

    #[tokio::test]
    async fn a_full_page_without_a_readable_creation_time_is_an_error_not_the_end() {
        let list = builds(0, 30, T0, 1000);
        let unreadable = |t: DateTime<Utc>| t.timestamp().into();
        let err = walk_all(&rewritten(Table::new(&list), unreadable), 10)
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, SourceError::Protocol { problem, .. } if problem.contains("created_at")),
            "{err}"
        );
    }
}
