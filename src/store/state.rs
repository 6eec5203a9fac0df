//! The `state` table: single values kitesync keeps between runs, by [`Key`].

use rusqlite::{Connection, OptionalExtension};

/// The values of the `state` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// The latest `finished_at` of a fully walked poll (the cursor).
    HighWaterMark,
    LastPollOkAt,
    LastDeliveryOkAt,
    AgentsPolledAt,
    /// The Buildkite budgets as last seen (JSON of [`crate::buildkite::budget::Seen`]).
    RateLimit,
    /// The BuildButler ingest prefix that works, for a URL and configured prefix (JSON).
    IngestRoute,
    /// The organizations and token fingerprints a poll has succeeded with (a JSON list, kept
    /// by the `refusal` module).
    WorkedWith,
    /// The refusal from Buildkite the daemon is riding out, if any (JSON, kept by the
    /// `refusal` module).
    BuildkiteRefusal,
    /// What enrichment has spent and skipped (JSON of `Totals` in `store/enrich.rs`).
    EnrichTotals,
}

impl Key {
    /// The key as stored.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Key::HighWaterMark => "high_water_mark",
            Key::LastPollOkAt => "last_poll_ok_at",
            Key::LastDeliveryOkAt => "last_delivery_ok_at",
            Key::AgentsPolledAt => "agents_polled_at",
            Key::RateLimit => "rate_limit",
            Key::IngestRoute => "ingest_route",
            Key::WorkedWith => "worked_with",
            Key::BuildkiteRefusal => "buildkite_refusal",
            Key::EnrichTotals => "enrich_totals",
        }
    }
}

/// The value of `key`, if set.
pub(crate) fn get(conn: &Connection, key: Key) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM state WHERE key = ?1")?
        .query_row([key.as_str()], |r| r.get(0))
        .optional()
}

/// Sets `key` (inside the caller's transaction, if any).
pub(crate) fn set(conn: &Connection, key: Key, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO state (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key.as_str(), value])?;
    Ok(())
}

/// Removes `key`.
pub(crate) fn clear(conn: &Connection, key: Key) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM state WHERE key = ?1")?
        .execute([key.as_str()])?;
    Ok(())
}

/// Sets `key` only if it has no value yet.
pub(crate) fn set_if_unset(conn: &Connection, key: Key, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO state (key, value) VALUES (?1, ?2)",
        [key.as_str(), value],
    )?;
    Ok(())
}
