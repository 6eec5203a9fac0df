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
    /// Ids of the builds created in the millisecond the next page starts with (already read).
    boundary: Vec<String>,
    done: bool,
}

/// Just what the walk needs of a listed build, read even from builds that do not decode.
#[derive(Deserialize)]
struct Created {
    id: String,
    created_at: Option<DateTime<Utc>>,
}

impl Walk {
    /// A walk from the newest build `query` lists (below `query.created_to`, if set).
    pub fn new(query: BuildQuery) -> Walk {
        Walk {
            query,
            boundary: Vec::new(),
            done: false,
        }
    }

    /// The `created_to` bound of what is still to walk (`None` before the first page).
    pub fn upper(&self) -> Option<DateTime<Utc>> {
        self.query.created_to
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
        let url = client.builds_url(&self.query);
        let page = client.builds_page(&url).await?;
        let created: Vec<(String, DateTime<Utc>)> = page
            .items
            .iter()
            .filter_map(|i| {
                let c = serde_json::from_str::<Created>(&i.raw).ok()?;
                Some((c.id, c.created_at?))
            })
            .collect();
        let oldest = created.iter().map(|(_, t)| *t).min();
        let more = page.next.is_some();
        let date = page.date;
        let (mut entries, latest_finish) = select(filter, page.items, &url);
        entries.retain(|e| !self.boundary.contains(&e.build_id));
        self.boundary = created
            .into_iter()
            .filter(|(_, t)| Some(*t) == oldest)
            .map(|(id, _)| id)
            .collect();
        match oldest {
            Some(oldest) if more => {
                let mut upper = oldest + Duration::milliseconds(1);
                if Some(upper) == self.query.created_to {
                    // A whole page created in one millisecond: step past it rather than
                    // read the same page forever.
                    tracing::warn!(
                        endpoint = url.path(),
                        "more than a page of builds created at {oldest}: skipping the rest of that millisecond"
                    );
                    upper = oldest;
                }
                self.query.created_to = Some(upper);
            }
            _ => self.done = true,
        }
        Ok(Some(WalkPage {
            entries,
            latest_finish,
            date,
        }))
    }
}
