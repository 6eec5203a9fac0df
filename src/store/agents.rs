//! The agent fleet: what BuildButler was last told, to send a snapshot only when something
//! changed. An agent that leaves Buildkite's list (which shows only connected agents) stays
//! in the snapshot as OFFLINE for a day, then is dropped.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection};

use super::cursor::timestamp;
use super::outbox::{self, NewItem};
use crate::butler::wire::{self, WireAgent, WireFleet};

/// How long an agent that left the list is still shown as OFFLINE.
const KEEP_GONE: Duration = Duration::days(1);

/// Records the agents listed now; when the fleet differs from the one last recorded, queues
/// a snapshot of it, in the same transaction. Returns whether it changed.
pub fn record(
    conn: &mut Connection,
    org: &str,
    listed: &[(String, WireAgent)],
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let known: Vec<(String, String, Option<String>)> = tx
        .prepare("SELECT id, wire, gone_since FROM agents")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut changed = false;
    for (id, agent) in listed {
        let text = serde_json::to_string(agent).unwrap_or_default();
        let same = known
            .iter()
            .any(|(k, w, gone)| k == id && *w == text && gone.is_none());
        if !same {
            changed = true;
            tx.execute(
                "INSERT INTO agents (id, wire, gone_since) VALUES (?1, ?2, NULL)
                 ON CONFLICT (id) DO UPDATE SET wire = excluded.wire, gone_since = NULL",
                params![id, text],
            )?;
        }
    }
    let now_text = timestamp(now);
    for (id, text, gone) in &known {
        if listed.iter().any(|(l, _)| l == id) {
            continue;
        }
        match gone {
            None => {
                changed = true;
                let offline = serde_json::from_str::<WireAgent>(text)
                    .map(wire::gone)
                    .ok()
                    .and_then(|a| serde_json::to_string(&a).ok())
                    .unwrap_or_else(|| text.clone());
                tx.execute(
                    "UPDATE agents SET wire = ?2, gone_since = ?3 WHERE id = ?1",
                    params![id, offline, now_text],
                )?;
            }
            Some(since) if since.as_str() < timestamp(now - KEEP_GONE).as_str() => {
                changed = true;
                tx.execute("DELETE FROM agents WHERE id = ?1", [id])?;
            }
            Some(_) => {}
        }
    }
    tx.execute(
        "INSERT INTO state (key, value) VALUES ('agents_polled_at', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [&now_text],
    )?;
    if changed {
        let agents: Vec<WireAgent> = tx
            .prepare("SELECT wire FROM agents ORDER BY wire")?
            .query_map([], |r| r.get::<_, String>(0))?
            .filter_map(|w| serde_json::from_str(&w.ok()?).ok())
            .collect();
        let fleet = WireFleet {
            jenkins_instance_id: org,
            agents,
            queue_items: [],
        };
        let payload = serde_json::to_string(&fleet).unwrap_or_default();
        let item = NewItem {
            kind: "agents",
            key: "fleet",
            version: &now_text,
            label: &format!("{org} agents"),
            payload: &payload,
            dead: None,
            parent: None,
        };
        outbox::upsert(&tx, &item, now.timestamp_millis())?;
    }
    tx.commit()?;
    Ok(changed)
}

/// When the agents were last polled.
pub fn last_polled(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    use rusqlite::OptionalExtension;
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM state WHERE key = 'agents_polled_at'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(text
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{outbox, Store};

    fn agent(name: &str) -> WireAgent {
        WireAgent {
            name: name.into(),
            status: "ONLINE".into(),
            current_job: None,
            labels: None,
            os: None,
            arch: None,
            executors: 1,
        }
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
