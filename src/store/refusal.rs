//! Whether kitesync has worked with an organization and token before, and the refusal from
//! Buildkite the daemon is riding out.
//!
//! A poll that succeeds records its organization and a fingerprint of its token (never the
//! token). A 401, 403 or 404 with a pair that has worked is a passing refusal (a token being
//! rotated, a proxy's block page, an API hiccup), ridden out; with a pair that never worked
//! it is a configuration to fix. The refusal being ridden out is kept here for `status`.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::state::{self, Key};

/// The pairs remembered, newest first: enough for a rotation or two, and a switch back.
const KEEP: usize = 8;

/// An organization and token (by fingerprint) a poll has succeeded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Worked {
    organization: String,
    token: String,
}

/// Records that a poll succeeded with `organization` and the token of `fingerprint`.
pub(crate) fn worked(
    conn: &Connection,
    organization: &str,
    fingerprint: &str,
) -> rusqlite::Result<()> {
    let this = Worked {
        organization: organization.to_string(),
        token: fingerprint.to_string(),
    };
    let mut all = read(conn)?;
    if all.first() == Some(&this) {
        return Ok(());
    }
    all.retain(|w| *w != this);
    all.insert(0, this);
    all.truncate(KEEP);
    state::set(conn, Key::WorkedWith, &json(&all)?)
}

/// True when a poll has succeeded with `organization` and the token of `fingerprint`.
pub(crate) fn has_worked(
    conn: &Connection,
    organization: &str,
    fingerprint: &str,
) -> rusqlite::Result<bool> {
    Ok(read(conn)?
        .iter()
        .any(|w| w.organization == organization && w.token == fingerprint))
}

fn read(conn: &Connection) -> rusqlite::Result<Vec<Worked>> {
    let value = state::get(conn, Key::WorkedWith)?;
    Ok(value
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default())
}

/// A refusal being ridden out: Buildkite, or something on the way, answering a poll with
/// 401, 403 or 404 after kitesync has worked with this organization and token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Refusal {
    /// When the first refused poll was (RFC 3339).
    pub(crate) since: String,
    /// Polls refused since.
    pub(crate) attempts: u32,
    /// The last refusal.
    pub(crate) error: String,
    /// When the next poll is tried (RFC 3339).
    pub(crate) next_attempt_at: String,
}

/// Keeps `refusal` as the one being ridden out.
pub(crate) fn set(conn: &Connection, refusal: &Refusal) -> rusqlite::Result<()> {
    state::set(conn, Key::BuildkiteRefusal, &json(refusal)?)
}

/// The refusal being ridden out, if any.
pub(crate) fn get(conn: &Connection) -> rusqlite::Result<Option<Refusal>> {
    let value = state::get(conn, Key::BuildkiteRefusal)?;
    Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
}

/// `value` as JSON, or the error that stops the write.
fn json<T: Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Ends a refusal: a poll succeeded.
pub(crate) fn clear(conn: &Connection) -> rusqlite::Result<()> {
    state::clear(conn, Key::BuildkiteRefusal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn remembers_organization_and_token_pairs_newest_first_and_only_a_few() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let (before, after, other_org, other_token, oldest, newest) = store
            .call(|c| {
                let before = has_worked(c, "acme", "fp-a")?;
                worked(c, "acme", "fp-a")?;
                worked(c, "acme", "fp-a")?;
                let after = has_worked(c, "acme", "fp-a")?;
                let other_org = has_worked(c, "umbrella", "fp-a")?;
                let other_token = has_worked(c, "acme", "fp-b")?;
                for i in 0..KEEP {
                    worked(c, "acme", &format!("fp-{i}"))?;
                }
                let oldest = has_worked(c, "acme", "fp-a")?;
                let newest = has_worked(c, "acme", &format!("fp-{}", KEEP - 1))?;
                Ok((before, after, other_org, other_token, oldest, newest))
            })
            .await
            .expect("db");
        assert!(!before && after);
        assert!(!other_org && !other_token, "per organization and token");
        assert!(!oldest && newest, "only the last {KEEP} pairs are kept");
    }

    #[tokio::test]
    async fn a_refusal_is_kept_until_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let refusal = Refusal {
            since: "2026-01-01T00:00:00.000Z".into(),
            attempts: 2,
            error: "Buildkite rejected the API token".into(),
            next_attempt_at: "2026-01-01T00:05:00.000Z".into(),
        };
        let kept = refusal.clone();
        let (during, after) = store
            .call(move |c| {
                set(c, &kept)?;
                let during = get(c)?;
                clear(c)?;
                Ok((during, get(c)?))
            })
            .await
            .expect("db");
        assert_eq!(during, Some(refusal));
        assert_eq!(after, None);
    }
}
