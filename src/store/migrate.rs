//! Schema migrations, applied in order; `PRAGMA user_version` is how many have run.

use rusqlite::{params, Connection, Transaction};
use serde_json::{json, Value};

/// One migration: SQL, or code for what SQL cannot say plainly.
enum Step {
    Sql(&'static str),
    Code(fn(&Transaction<'_>) -> rusqlite::Result<()>),
}
use Step::{Code, Sql};

const STEPS: &[Step] = &[
    // 1: cursor, seen builds, outbox.
    Sql("CREATE TABLE state (
         key   TEXT PRIMARY KEY,
         value TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE seen (
         build_id    TEXT NOT NULL,
         finished_at TEXT NOT NULL,
         PRIMARY KEY (build_id, finished_at)
     ) WITHOUT ROWID;
     CREATE INDEX seen_by_finish ON seen (finished_at);
     CREATE TABLE outbox (
         id              INTEGER PRIMARY KEY,
         kind            TEXT NOT NULL,
         key             TEXT NOT NULL,
         version         TEXT NOT NULL,
         label           TEXT NOT NULL,
         payload         TEXT NOT NULL,
         state           TEXT NOT NULL CHECK (state IN ('pending', 'dead')),
         attempts        INTEGER NOT NULL DEFAULT 0,
         next_attempt_at INTEGER NOT NULL DEFAULT 0,
         last_error      TEXT,
         enqueued_at     INTEGER NOT NULL,
         UNIQUE (kind, key)
     );
     CREATE INDEX outbox_due ON outbox (state, next_attempt_at);"),
    // 2: backfill checkpoints, one per (since, until) range; `open_ended` when the run had
    // no --until (its until is when it first started).
    Sql("CREATE TABLE backfill (
         since      TEXT NOT NULL,
         until      TEXT NOT NULL,
         open_ended INTEGER NOT NULL,
         upper      TEXT NOT NULL,
         done       INTEGER NOT NULL DEFAULT 0,
         pages      INTEGER NOT NULL DEFAULT 0,
         builds     INTEGER NOT NULL DEFAULT 0,
         updated_at TEXT NOT NULL,
         PRIMARY KEY (since, until)
     ) WITHOUT ROWID;"),
    // 3: the agent fleet as last sent (or about to be sent) to BuildButler.
    Sql("CREATE TABLE agents (
         id         TEXT PRIMARY KEY,
         wire       TEXT NOT NULL,
         gone_since TEXT
     ) WITHOUT ROWID;"),
    // 4: builds waiting for their test results and logs; items that must follow their build.
    Sql("CREATE TABLE enrich (
         build_id        TEXT PRIMARY KEY,
         version         TEXT NOT NULL,
         label           TEXT NOT NULL,
         payload         TEXT NOT NULL,
         attempts        INTEGER NOT NULL DEFAULT 0,
         next_attempt_at INTEGER NOT NULL DEFAULT 0,
         last_error      TEXT
     ) WITHOUT ROWID;
     ALTER TABLE outbox ADD COLUMN parent TEXT;"),
    // 5: reading the outbox in id order stops after a batch instead of sorting all of it.
    Sql("CREATE INDEX outbox_pending ON outbox (state, id);"),
    // 6: every outbox kind keeps Buildkite's facts (0.1 kept test results, logs and fleets
    // in BuildButler's wire format, rendered at poll time); the fleet table likewise.
    Code(facts_not_wire),
    // 7: enrichment in steps saved one by one: the listing, each JUnit file (its attempts
    // recorded before it is fetched), the logs; the queue's age.
    Sql(
        "ALTER TABLE enrich ADD COLUMN queued_at INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE enrich ADD COLUMN listed INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE enrich ADD COLUMN logs_done INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE enrich ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
     UPDATE enrich SET queued_at = CAST(unixepoch('subsec') * 1000 AS INTEGER);
     CREATE INDEX enrich_due ON enrich (next_attempt_at, queued_at);
     CREATE TABLE enrich_files (
         build_id     TEXT NOT NULL,
         artifact_id  TEXT NOT NULL,
         path         TEXT NOT NULL,
         download_url TEXT NOT NULL,
         size         INTEGER,
         attempts     INTEGER NOT NULL DEFAULT 0,
         failures     INTEGER NOT NULL DEFAULT 0,
         PRIMARY KEY (build_id, artifact_id)
     ) WITHOUT ROWID;",
    ),
    // 8: why a row is a dead letter (`outbox::DeadCause`); NULL for rows dead before.
    Sql("ALTER TABLE outbox ADD COLUMN dead_cause TEXT;"),
];

/// The schema version this kitesync writes.
pub(crate) const LATEST: usize = STEPS.len();

/// The schema version of a database.
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<usize> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Applies the missing migrations in one write transaction, so that two processes opening a
/// new database at once (a backfill next to the daemon) do not both migrate it. Returns the
/// version found; a newer one (a newer kitesync's) is left as it is.
pub(crate) fn run(conn: &mut Connection) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    for (i, step) in STEPS.iter().enumerate().skip(found) {
        match step {
            Sql(sql) => tx.execute_batch(sql)?,
            Code(f) => f(&tx)?,
        }
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(found)
}

/// Migration 6: 0.1's wire-format payloads of test results, logs and fleets as facts.
/// Payloads that are not JSON are left as they are (delivery makes them dead letters).
fn facts_not_wire(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE agents RENAME COLUMN wire TO facts")?;
    rewrite(
        tx,
        "SELECT id, kind, payload FROM outbox WHERE kind IN ('tests', 'log', 'agents')",
        "UPDATE outbox SET payload = ?2 WHERE id = ?1",
        |kind, wire| match kind {
            Some("tests") => suite_facts(wire),
            Some("log") => log_facts(wire),
            _ => json!({"agents": list(wire, "agents", |a| agent_facts(a, false))}),
        },
    )?;
    rewrite(
        tx,
        "SELECT id, gone_since, facts FROM agents",
        "UPDATE agents SET facts = ?2 WHERE id = ?1",
        |gone_since, wire| agent_facts(wire, gone_since.is_some()),
    )
}

/// Rewrites the JSON of each row `select` reads as (id, tag, JSON) with `convert(tag, JSON)`.
fn rewrite(
    tx: &Transaction<'_>,
    select: &str,
    update: &str,
    convert: impl Fn(Option<&str>, &Value) -> Value,
) -> rusqlite::Result<()> {
    let rows: Vec<(rusqlite::types::Value, Option<String>, String)> = tx
        .prepare(select)?
        .query_map([], |r| r.try_into())?
        .collect::<rusqlite::Result<_>>()?;
    for (id, tag, text) in rows {
        if let Ok(wire) = serde_json::from_str::<Value>(&text) {
            let facts = convert(tag.as_deref(), &wire).to_string();
            tx.execute(update, params![id, facts])?;
        }
    }
    Ok(())
}

/// `wire[key]` (an array), each element converted by `f`.
fn list(wire: &Value, key: &str, f: impl Fn(&Value) -> Value) -> Vec<Value> {
    wire[key]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(f).collect())
}

/// A `POST tests` body of 0.1 as [`crate::item::TestResults`].
fn suite_facts(wire: &Value) -> Value {
    let case = |c: &Value| {
        json!({
            "class_name": c["className"], "name": c["testName"],
            "status": c["status"].as_str().map(str::to_ascii_lowercase),
            "duration_ms": c["duration"], "message": c["errorMessage"],
            "trace": c["stackTrace"],
        })
    };
    json!({"build_id": wire["buildId"], "suite": {
        "name": wire["name"], "duration_ms": wire["duration"],
        "cases": list(wire, "testCases", case),
    }})
}

/// A `POST build-logs` body of 0.1 as [`crate::item::Log`]: the build as far as the body
/// tells it (logs are sent for failed builds only).
fn log_facts(wire: &Value) -> Value {
    let status = wire["status"].as_str().unwrap_or("").to_ascii_uppercase();
    let state = match status.as_str() {
        "SUCCESS" | "UNSTABLE" => "passed",
        "ABORTED" => "canceled",
        "NOT_BUILT" => "skipped",
        _ => "failed",
    };
    json!({"build": {
        "id": wire["buildId"], "number": wire["buildNumber"], "state": state,
        "branch": wire["branch"], "pipeline": {"slug": wire["jobName"]},
        "started_at": wire["startedAt"], "finished_at": wire["completedAt"],
    }, "content": wire["logContent"]})
}

/// An agent of a 0.1 fleet body as [`crate::item::Agent`].
fn agent_facts(wire: &Value, gone: bool) -> Value {
    let state = match wire["status"].as_str() {
        Some("UNKNOWN") => "never_connected",
        Some("OFFLINE") => "disconnected",
        _ => "connected",
    };
    let tags = wire["labels"]
        .as_str()
        .map_or_else(Vec::new, |l| l.split(',').collect());
    json!({
        "name": wire["name"], "connection_state": state, "job": wire["currentJob"],
        "tags": tags, "os": wire["os"], "arch": wire["arch"], "gone": gone,
    })
}
