//! Walking a builds listing without page numbers.
//!
//! Buildkite lists builds newest-first by creation time, and refuses deep pages. Worse,
//! following `page=2, 3, ...` over a list that changes between requests (a build retried
//! drops out of `finished_from`, a late finisher drops in) shifts items across page
//! boundaries, and a build that shifts onto a page already read is never seen. So every
//! request here is the *first* page of the query, narrowed with `created_to` to just above
//! the oldest build seen so far: what was read can never shift into what is still to read,
//! and no listing is ever deep. Builds created in that same millisecond come again on the
//! next page and are skipped. The `Link` header says whether there is more.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::builds::{select, Filter};
use crate::buildkite::{BuildQuery, Client, SourceError};
use crate::store::cursor::Entry;

/// One page of a walk.
pub struct WalkPage {
    /// The page's finished builds (filtered by pipeline), without repeats from the last page.
    pub entries: Vec<Entry>,
    /// The latest `finished_at` on the page.
    pub latest_finish: Option<DateTime<Utc>>,
    /// The server's time of the answer.
    pub date: Option<DateTime<Utc>>,
}

/// A walk through every build a query lists, newest first.
pub struct Walk {
    query: BuildQuery,
    /// Set while walking the builds of one millisecond that fills pages by itself.
    tie: Option<Tie>,
    /// Ids already read of the millisecond the next page starts with.
    boundary: Vec<String>,
    /// The oldest creation time read so far.
    oldest: Option<DateTime<Utc>>,
    /// The last millisecond walked as a [`Tie`].
    tied: Option<DateTime<Utc>>,
    done: bool,
}

/// Paging through the builds created in one millisecond: `[at, at + 1 ms)`, page by page.
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

/// Buildkite's largest page.
const PER_PAGE: usize = 100;

impl Walk {
    /// A walk from the newest build `query` lists (below `query.created_to`, if set).
    pub fn new(query: BuildQuery) -> Walk {
        Walk {
            query,
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
            Some(tie) => Some(tie.at + Duration::milliseconds(1)),
            None => self.query.created_to,
        }
    }

    /// True once the last page was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next page, or `None` when the walk is over.
    pub async fn next(
        &mut self,
        client: &Client,
        filter: &Filter<'_>,
    ) -> Result<Option<WalkPage>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let query = match &self.tie {
            None => self.query.clone(),
            Some(tie) => BuildQuery {
                created_from: Some(self.query.created_from.map_or(tie.at, |f| f.max(tie.at))),
                created_to: Some(tie.at + Duration::milliseconds(1)),
                page: Some(tie.page),
                ..self.query.clone()
            },
        };
        let url = client.builds_url(&query);
        let page = client.builds_page(&url).await?;
        // A proxy may strip `Link`: a full page means there may be more.
        let more = page.next.is_some() || page.items.len() >= PER_PAGE;
        let created: Vec<(String, DateTime<Utc>)> = page
            .items
            .iter()
            .filter_map(|i| {
                let c = serde_json::from_str::<Created>(&i.raw).ok()?;
                Some((c.id, c.created_at?))
            })
            .collect();
        let date = page.date;
        let (mut entries, latest_finish) = select(filter, page.items, &url);
        entries.retain(|e| !self.boundary.contains(&e.build_id));
        let oldest = created.iter().map(|(_, t)| *t).min();
        match (&mut self.tie, oldest) {
            (Some(tie), _) if more => {
                // Still within the millisecond: remember every id read, go on.
                self.boundary.extend(created.into_iter().map(|(id, _)| id));
                tie.page += 1;
            }
            (Some(tie), _) => {
                // That millisecond is done: continue below it.
                self.query.created_to = Some(tie.at);
                self.tied = Some(tie.at);
                self.tie = None;
                self.boundary.clear();
            }
            (None, Some(oldest)) if more => {
                let stuck = self.tied == Some(oldest);
                if stuck || self.oldest.is_some_and(|before| oldest > before) {
                    return Err(SourceError::Rejected {
                        endpoint: url.path().to_string(),
                        status: 200,
                        message:
                            "the list did not narrow with created_to; refusing to walk it forever"
                                .into(),
                    });
                }
                if self.oldest == Some(oldest) {
                    // A whole page created in one millisecond: page through that
                    // millisecond alone (never deep), then go on below it.
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
                    self.query.created_to = Some(oldest + Duration::milliseconds(1));
                }
                self.oldest = Some(oldest);
            }
            (None, _) => self.done = true,
        }
        Ok(Some(WalkPage {
            entries,
            latest_finish,
            date,
        }))
    }
}
