//! The agent fleet: what BuildButler was last told, to send a snapshot only when something
//! changed. An agent that leaves Buildkite's list (which shows only connected agents) stays
//! in the snapshot, marked gone, for a day, then is dropped.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection};

use super::outbox::{self, NewItem};
use super::state::{self, Key};
use crate::clock::timestamp;
use crate::item::{Agent, AgentTags, Fleet, Kind};

/// How long an agent that left the list is still shown.
const KEEP_GONE: Duration = Duration::days(1);

/// Records the agents listed now (by id); when the fleet differs from the one last recorded,
/// queues a snapshot of it, in the same transaction. Returns whether it changed.
pub(crate) fn record(
    conn: &mut Connection,
    org: &str,
    listed: &[(String, Agent)],
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let stored: Vec<(String, String, Option<String>)> = tx
        .prepare("SELECT id, facts, gone_since FROM agents")?
        .query_map([], |r| r.try_into())?
        .collect::<rusqlite::Result<_>>()?;
    let mut changed = false;
    let mut known = Vec::with_capacity(stored.len());
    for (id, text, gone) in stored {
        match serde_json::from_str::<Agent>(&text) {
            Ok(agent) => known.push((id, text, gone, agent)),
            // Only kitesync writes these: a damaged row is dropped, and the agent recorded
            // afresh if it is still listed.
            Err(e) => {
                tracing::warn!(
                    agent = id,
                    "a stored agent is unreadable ({e}): dropped from the fleet snapshot"
                );
                tx.execute("DELETE FROM agents WHERE id = ?1", [&id])?;
                changed = true;
            }
        }
    }
    for (id, agent) in listed {
        let text = encode(agent)?;
        let same = |(k, t, gone, _): &(String, String, Option<String>, Agent)| {
            k == id && *t == text && gone.is_none()
        };
        if !known.iter().any(same) {
            changed = true;
            tx.execute(
                "INSERT INTO agents (id, facts, gone_since) VALUES (?1, ?2, NULL)
                 ON CONFLICT (id) DO UPDATE SET facts = excluded.facts, gone_since = NULL",
                params![id, text],
            )?;
        }
    }
    let now_text = timestamp(now);
    for (id, _, _, agent) in known.into_iter().filter(|(_, _, gone, _)| gone.is_none()) {
        if listed.iter().any(|(l, _)| *l == id) {
            continue;
        }
        changed = true;
        let left = encode(&Agent {
            gone: true,
            job: None,
            ..agent
        })?;
        tx.execute(
            "UPDATE agents SET facts = ?2, gone_since = ?3 WHERE id = ?1",
            params![id, left, now_text],
        )?;
    }
    // Every agent listed now has no `gone_since` any more.
    let horizon = timestamp(now - KEEP_GONE);
    changed |= tx.execute("DELETE FROM agents WHERE gone_since < ?1", [horizon])? > 0;
    state::set(&tx, Key::AgentsPolledAt, &now_text)?;
    if changed {
        // Every row was read above or written since: one that does not read is an error.
        let agents: Vec<Agent> = tx
            .prepare("SELECT facts FROM agents ORDER BY facts")?
            .query_map([], |r| r.get::<_, String>(0))?
            .map(|f| decode(&f?))
            .collect::<rusqlite::Result<_>>()?;
        let item = NewItem {
            kind: Kind::Agents,
            key: "fleet",
            version: &now_text,
            label: &format!("{org} agents"),
            payload: &encode(&Fleet { agents })?,
            dead: None,
            parent: None,
        };
        outbox::upsert(&tx, &item, now.timestamp_millis())?;
    }
    tx.commit()?;
    Ok(changed)
}

/// JSON for the database; a failure is SQLite's to report.
fn encode<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

/// A stored agent; a failure is SQLite's to report.
fn decode(text: &str) -> rusqlite::Result<Agent> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

/// The tags of every agent polled (gone ones included), by agent id.
pub(crate) fn tags(conn: &Connection) -> rusqlite::Result<AgentTags> {
    let mut stmt = conn.prepare_cached("SELECT id, facts FROM agents")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut tags = AgentTags::new();
    for row in rows {
        let (id, facts) = row?;
        if let Ok(agent) = serde_json::from_str::<Agent>(&facts) {
            tags.insert(id, agent.tags);
        }
    }
    Ok(tags)
}

/// When the agents were last polled.
pub(crate) fn last_polled(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(state::get(conn, Key::AgentsPolledAt)?
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{outbox, Store};

    fn agent(name: &str) -> Agent {
        Agent {
            name: name.into(),
            connection_state: Some("connected".into()),
            job: None,
            tags: Vec::new(),
            os: None,
            arch: None,
            gone: false,
        }
    }

    #[tokio::test]
    async fn an_unreadable_stored_agent_is_dropped_and_the_snapshot_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let t0 = Utc::now();
        let (changed, left, fleet) = store
            .call(move |c| {
                let listed = vec![("a1".to_string(), agent("ci-1"))];
                record(c, "acme", &listed, t0)?;
                let _ = outbox::due(c, i64::MAX, 10)?;
                c.execute(
                    "INSERT INTO agents (id, facts, gone_since) VALUES ('a2', '{\"name\": 7', NULL)",
                    [],
                )?;
                // The same listing: only the damaged row differs.
                let changed = record(c, "acme", &listed, t0 + Duration::minutes(1))?;
                let left: Vec<String> = c
                    .prepare("SELECT id FROM agents ORDER BY id")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let fleet = outbox::due(c, i64::MAX, 10)?.remove(0).payload;
                Ok((changed, left, fleet))
            })
            .await
            .expect("db");
        assert!(changed, "the snapshot changed: the damaged agent left it");
        assert_eq!(left, ["a1"]);
        assert!(fleet.contains("ci-1"), "{fleet}");
    }

    #[tokio::test]
    async fn an_agent_gone_for_a_day_leaves_the_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let t0 = Utc::now() - Duration::days(3);
        let changes = store
            .call(move |c| {
                let listed = vec![("a1".to_string(), agent("ci-1"))];
                let first = record(c, "acme", &listed, t0)?;
                let gone = record(c, "acme", &[], t0 + Duration::hours(1))?;
                let still_gone = record(c, "acme", &[], t0 + Duration::hours(2))?;
                let dropped = record(c, "acme", &[], t0 + Duration::days(2))?;
                let fleet = outbox::due(c, i64::MAX, 10)?.remove(0).payload;
                Ok((first, gone, still_gone, dropped, fleet))
            })
            .await
            .expect("db");
        assert_eq!(
            (changes.0, changes.1, changes.2, changes.3),
            (true, true, false, true)
        );
        assert!(changes.4.contains("\"agents\":[]"), "{}", changes.4);
    }
}
