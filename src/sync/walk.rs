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
//! the time granularity of its bounds and its page size are parameters.

use std::future::Future;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Deserialize;

use crate::buildkite::client::{Item, Page};
use crate::buildkite::{Build, BuildQuery, Client, SourceError};

/// Reads one page of a builds listing: Buildkite's, or a table in a unit test.
pub trait Pages {
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
pub struct Walk {
    query: BuildQuery,
    /// The granularity of the `created_*` bounds the server compares at.
    step: Duration,
    /// Items in a full page.
    per_page: u32,
    /// Set while walking the builds of one step that fills pages by itself.
    tie: Option<Tie>,
    /// Ids already read of the step the next page starts with.
    boundary: Vec<String>,
    /// The step of the oldest build read so far.
    oldest: Option<DateTime<Utc>>,
    /// The last step walked as a [`Tie`].
    tied: Option<DateTime<Utc>>,
    done: bool,
}

/// Paging through the builds created in one step: `[at, at + step)`, page by page.
struct Tie {
    at: DateTime<Utc>,
    page: u32,
}

/// Just what the walk needs of a listed build, read even from builds that do not decode.
#[derive(Deserialize)]
struct Created {
    id: String,
    created_at: Option<DateTime<Utc>>,
}

impl Walk {
    /// A walk of Buildkite's listing as kitesync walks it: bounds to the millisecond, pages
    /// of Buildkite's largest size.
    pub fn buildkite(query: BuildQuery) -> Walk {
        Walk::new(query, Duration::milliseconds(1), 100)
    }

    /// A walk from the newest build `query` lists (below `query.created_to`, if set), with
    /// bounds in multiples of `step` and pages of `per_page` items.
    pub fn new(query: BuildQuery, step: Duration, per_page: u32) -> Walk {
        Walk {
            query: BuildQuery {
                per_page: Some(per_page),
                ..query
            },
            step,
            per_page,
            tie: None,
            boundary: Vec::new(),
            oldest: None,
            tied: None,
            done: false,
        }
    }

    /// The `created_to` bound of what is still to walk (`None` before the first page).
    pub fn upper(&self) -> Option<DateTime<Utc>> {
        match &self.tie {
            Some(tie) => Some(tie.at + self.step),
            None => self.query.created_to,
        }
    }

    /// True once the last page was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next page, without the builds already read; `None` when the walk is over.
    pub async fn next(&mut self, pages: &impl Pages) -> Result<Option<Page<Build>>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let query = match &self.tie {
            None => self.query.clone(),
            Some(tie) => BuildQuery {
                created_from: Some(self.query.created_from.map_or(tie.at, |f| f.max(tie.at))),
                created_to: Some(tie.at + self.step),
                page: Some(tie.page),
                ..self.query.clone()
            },
        };
        let mut page = pages.page(&query).await?;
        // A proxy may strip `Link`: a full page means there may be more.
        let more = page.next.is_some() || page.items.len() >= self.per_page as usize;
        let created: Vec<(String, DateTime<Utc>)> = page
            .items
            .iter()
            .filter_map(|i| {
                let c = serde_json::from_str::<Created>(&i.raw).ok()?;
                Some((c.id, self.floor(c.created_at?)))
            })
            .collect();
        page.items
            .retain(|i| !self.boundary.iter().any(|b| read(i, b)));
        let oldest = created.iter().map(|(_, t)| *t).min();
        match (&mut self.tie, oldest) {
            (Some(tie), _) if more => {
                // Still within the step: remember every id read, go on.
                self.boundary.extend(created.into_iter().map(|(id, _)| id));
                tie.page += 1;
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
                if self.oldest == Some(oldest) {
                    // A whole page created in one step: page through that step alone
                    // (never deep), then go on below it.
                    tracing::debug!("more than a page of builds created at {oldest}");
                    self.boundary.extend(created.into_iter().map(|(id, _)| id));
                    self.tie = Some(Tie {
                        at: oldest,
                        page: 1,
                    });
                } else {
                    self.boundary = created
                        .into_iter()
                        .filter(|(_, t)| *t == oldest)
                        .map(|(id, _)| id)
                        .collect();
                    self.query.created_to = Some(oldest + self.step);
                }
                self.oldest = Some(oldest);
            }
            (None, _) => self.done = true,
        }
        Ok(Some(page))
    }

    /// The step `t` falls in.
    fn floor(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.duration_trunc(self.step).unwrap_or(t)
    }
}

/// True when `item` is the build `id` (read from its JSON, so even an undecodable one).
fn read(item: &Item<Build>, id: &str) -> bool {
    match &item.decoded {
        Ok(build) => build.id == id,
        Err(_) => serde_json::from_str::<Created>(&item.raw).is_ok_and(|c| c.id == id),
    }
}
