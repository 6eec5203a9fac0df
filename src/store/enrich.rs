//! Builds waiting for their test results and logs, and the JUnit files still to fetch.
//!
//! A build is added in the same transaction that queues it. Its work is done in steps, each
//! saved on its own: the artifact listing (which records the build's JUnit files, after the
//! caps), one step per file (its suites queued and the file forgotten in one transaction), and
//! the logs. A crash only repeats the step under way. Every attempt is recorded before it is
//! made, so that a file that kills kitesync can be given up instead of being first in line
//! forever. What was fetched follows its build: delivered only after it, dead with it.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::outbox::{self, NewItem};
use super::state::{self, Key};
use crate::item::Kind;

/// A build to enrich, and how far it has got.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) build_id: String,
    pub(crate) version: String,
    pub(crate) label: String,
    pub(crate) payload: String,
    /// Its artifacts were listed and its JUnit files recorded (or none are wanted).
    pub(crate) listed: bool,
    /// Its logs were fetched (or none are wanted).
    pub(crate) logs_done: bool,
    /// Bytes of JUnit files fetched so far.
    pub(crate) bytes: u64,
}

/// An item fetched for a build: its outbox kind, key within the kind, and payload.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) kind: Kind,
    pub(crate) key: String,
    pub(crate) payload: String,
}

/// A JUnit file of a build, still to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct File {
    pub(crate) artifact_id: String,
    pub(crate) path: String,
    pub(crate) download_url: String,
    /// As listed, when Buildkite said.
    pub(crate) size: Option<u64>,
    /// Attempts started (recorded before each), and how many of them failed; the others
    /// never finished (kitesync was killed, or it is the one under way).
    pub(crate) attempts: u32,
    pub(crate) failures: u32,
}

/// A cap that skips JUnit files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// `[enrich] max_files_per_build`.
    FilesPerBuild,
    /// `[enrich] max_bytes_per_build`.
    BytesPerBuild,
    /// `[tests] max_file_bytes`.
    FileBytes,
}

impl Cap {
    /// The `cap` label of the skipped-files metric.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cap::FilesPerBuild => "files_per_build",
            Cap::BytesPerBuild => "bytes_per_build",
            Cap::FileBytes => "file_bytes",
        }
    }

    /// The config key, for people.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Cap::FilesPerBuild => "[enrich] max_files_per_build",
            Cap::BytesPerBuild => "[enrich] max_bytes_per_build",
            Cap::FileBytes => "[tests] max_file_bytes",
        }
    }
}

/// What enrichment has spent and skipped since the state database was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Totals {
    /// Buildkite requests: artifact listings, artifact downloads, log tails.
    pub(crate) listings: u64,
    pub(crate) downloads: u64,
    pub(crate) logs: u64,
    /// JUnit files skipped, by cap.
    pub(crate) skipped_files_per_build: u64,
    pub(crate) skipped_bytes_per_build: u64,
    pub(crate) skipped_file_bytes: u64,
    /// JUnit files given up after failing, or never finishing, too often.
    pub(crate) given_up: u64,
}

impl Totals {
    /// Counts `n` files skipped by `cap`.
    pub(crate) fn skip(&mut self, cap: Cap, n: u64) {
        let count = match cap {
            Cap::FilesPerBuild => &mut self.skipped_files_per_build,
            Cap::BytesPerBuild => &mut self.skipped_bytes_per_build,
            Cap::FileBytes => &mut self.skipped_file_bytes,
        };
        *count += n;
    }

    /// Files skipped by every cap.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped_files_per_build + self.skipped_bytes_per_build + self.skipped_file_bytes
    }

    fn add(&mut self, other: &Totals) {
        self.listings += other.listings;
        self.downloads += other.downloads;
        self.logs += other.logs;
        self.skipped_files_per_build += other.skipped_files_per_build;
        self.skipped_bytes_per_build += other.skipped_bytes_per_build;
        self.skipped_file_bytes += other.skipped_file_bytes;
        self.given_up += other.given_up;
    }
}

/// How much is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub(crate) builds: u64,
    /// JUnit files listed and not fetched yet (builds not listed yet have more).
    pub(crate) files: u64,
    /// When the oldest waiting build was queued (ms since the epoch).
    pub(crate) oldest_queued_at: Option<i64>,
}

/// Adds (or refreshes, for a re-finished build) the build queued as `item` to enrich.
pub(crate) fn add(tx: &Transaction<'_>, item: &NewItem<'_>, now_ms: i64) -> rusqlite::Result<()> {
    let changed = tx
        .prepare_cached(
            "INSERT INTO enrich (build_id, version, label, payload, queued_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (build_id) DO UPDATE SET version = excluded.version,
                 label = excluded.label, payload = excluded.payload,
                 attempts = 0, next_attempt_at = 0, last_error = NULL,
                 listed = 0, logs_done = 0, bytes = 0, queued_at = excluded.queued_at
             WHERE excluded.version >= enrich.version",
        )?
        .execute(params![
            item.key,
            item.version,
            item.label,
            item.payload,
            now_ms
        ])?;
    if changed == 1 {
        // A new finish of the build has artifacts of its own.
        tx.prepare_cached("DELETE FROM enrich_files WHERE build_id = ?1")?
            .execute([item.key])?;
    }
    Ok(())
}

/// The next build due by `now_ms`: new ones first, oldest first, then those retried.
pub(crate) fn next(conn: &Connection, now_ms: i64) -> rusqlite::Result<Option<Pending>> {
    conn.prepare_cached(
        "SELECT build_id, version, label, payload, listed, logs_done, bytes
         FROM enrich WHERE next_attempt_at <= ?1
         ORDER BY next_attempt_at, queued_at, build_id LIMIT 1",
    )?
    .query_row([now_ms], |r| {
        Ok(Pending {
            build_id: r.get(0)?,
            version: r.get(1)?,
            label: r.get(2)?,
            payload: r.get(3)?,
            listed: r.get(4)?,
            logs_done: r.get(5)?,
            bytes: r.get(6)?,
        })
    })
    .optional()
}

/// When the next waiting build is due (ms since the epoch), if any waits.
pub(crate) fn next_attempt_at(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT min(next_attempt_at) FROM enrich", [], |r| r.get(0))
}

/// Records an attempt at the build's current step before it is made. Returns the attempts
/// so far, this one included; `None` when the build changed meanwhile (finished again).
pub(crate) fn begin(conn: &Connection, build: &Pending) -> rusqlite::Result<Option<u32>> {
    conn.prepare_cached(
        "UPDATE enrich SET attempts = attempts + 1 WHERE build_id = ?1 AND version = ?2
         RETURNING attempts",
    )?
    .query_row(params![build.build_id, build.version], |r| r.get(0))
    .optional()
}

/// Takes back an attempt that was stopped on purpose (a `--once` out of time), not lost.
pub(crate) fn undo(conn: &Connection, build: &Pending) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE enrich SET attempts = max(attempts - 1, 0) WHERE build_id = ?1 AND version = ?2",
        params![build.build_id, build.version],
    )?;
    Ok(())
}

/// Records the build's JUnit files (the listing is done). Returns false when the build
/// changed meanwhile.
pub(crate) fn listed(
    conn: &mut Connection,
    build: &Pending,
    files: &[File],
) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let current = tx.execute(
        "UPDATE enrich SET listed = 1, attempts = 0, last_error = NULL
         WHERE build_id = ?1 AND version = ?2",
        params![build.build_id, build.version],
    )? == 1;
    if current {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO enrich_files (build_id, artifact_id, path, download_url, size)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for f in files {
            insert.execute(params![
                build.build_id,
                f.artifact_id,
                f.path,
                f.download_url,
                f.size
            ])?;
        }
    }
    tx.commit()?;
    Ok(current)
}

/// The build's JUnit files still to fetch: those tried least first, then by path.
pub(crate) fn files(conn: &Connection, build: &Pending) -> rusqlite::Result<Vec<File>> {
    let mut stmt = conn.prepare_cached(
        "SELECT artifact_id, path, download_url, size, attempts, failures FROM enrich_files
         WHERE build_id = ?1 ORDER BY attempts, path",
    )?;
    let rows = stmt.query_map([&build.build_id], |r| {
        Ok(File {
            artifact_id: r.get(0)?,
            path: r.get(1)?,
            download_url: r.get(2)?,
            size: r.get(3)?,
            attempts: r.get(4)?,
            failures: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Records an attempt at a file before it is fetched; `false` when the file is no longer
/// waiting (fetched, or its build finished again).
pub(crate) fn begin_file(
    conn: &Connection,
    build: &Pending,
    file: &File,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE enrich_files SET attempts = attempts + 1 WHERE build_id = ?1 AND artifact_id = ?2",
        params![build.build_id, file.artifact_id],
    )?;
    Ok(n == 1)
}

/// Takes back an attempt at a file that was stopped on purpose (a `--once` out of time).
pub(crate) fn undo_file(conn: &Connection, build: &Pending, file: &File) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE enrich_files SET attempts = max(attempts - 1, 0)
         WHERE build_id = ?1 AND artifact_id = ?2",
        params![build.build_id, file.artifact_id],
    )?;
    Ok(())
}

/// Records that fetching a file failed: the build is tried again at `at_ms`.
pub(crate) fn file_failed(
    conn: &mut Connection,
    build: &Pending,
    file: &File,
    at_ms: i64,
    error: &str,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE enrich_files SET failures = failures + 1 WHERE build_id = ?1 AND artifact_id = ?2",
        params![build.build_id, file.artifact_id],
    )?;
    retry_at(&tx, build, at_ms, error)?;
    tx.commit()
}

/// Queues what was fetched from a file (after its build) and forgets the file, adding
/// `bytes` to the build's total, in one transaction. Nothing is queued when the file is no
/// longer waiting or its build finished again meanwhile.
pub(crate) fn file_done(
    conn: &mut Connection,
    build: &Pending,
    file: &File,
    fetched: &[Fetched],
    bytes: u64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let current = tx.execute(
        "UPDATE enrich SET bytes = bytes + ?3 WHERE build_id = ?1 AND version = ?2",
        params![build.build_id, build.version, bytes],
    )? == 1;
    let waiting = current
        && tx.execute(
            "DELETE FROM enrich_files WHERE build_id = ?1 AND artifact_id = ?2",
            params![build.build_id, file.artifact_id],
        )? == 1;
    if waiting {
        queue(&tx, build, fetched, now_ms)?;
        tx.commit()
    } else {
        tx.rollback()
    }
}

/// Queues the build's log (if it has one to send) and marks its logs done.
pub(crate) fn logs_done(
    conn: &mut Connection,
    build: &Pending,
    fetched: Option<&Fetched>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let current = tx.execute(
        "UPDATE enrich SET logs_done = 1, attempts = 0, last_error = NULL
         WHERE build_id = ?1 AND version = ?2",
        params![build.build_id, build.version],
    )? == 1;
    if current {
        queue(
            &tx,
            build,
            fetched.map(std::slice::from_ref).unwrap_or_default(),
            now_ms,
        )?;
    }
    tx.commit()
}

/// Forgets the build (done, or given up), unless it finished again meanwhile.
pub(crate) fn finish(conn: &mut Connection, build: &Pending) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let removed = tx.execute(
        "DELETE FROM enrich WHERE build_id = ?1 AND version = ?2",
        params![build.build_id, build.version],
    )?;
    if removed == 1 {
        tx.execute(
            "DELETE FROM enrich_files WHERE build_id = ?1",
            [&build.build_id],
        )?;
    }
    tx.commit()
}

/// Tries the build again at `at_ms`, after `error`.
pub(crate) fn retry_at(
    conn: &Connection,
    build: &Pending,
    at_ms: i64,
    error: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE enrich SET next_attempt_at = ?3, last_error = ?4
         WHERE build_id = ?1 AND version = ?2",
        params![build.build_id, build.version, at_ms, error],
    )?;
    Ok(())
}

/// Queues what was fetched for `build`, after it; as dead letters if it already is one.
fn queue(
    tx: &Transaction<'_>,
    build: &Pending,
    fetched: &[Fetched],
    now_ms: i64,
) -> rusqlite::Result<()> {
    // Children of a build that is already a dead letter are kept with it.
    let parent_dead = tx
        .prepare_cached("SELECT 1 FROM outbox WHERE kind = ?2 AND key = ?1 AND state = 'dead'")?
        .exists(params![build.build_id, Kind::Build])?;
    let dead = parent_dead.then_some("its build is a dead letter");
    for item in fetched {
        let new = NewItem {
            kind: item.kind,
            key: &item.key,
            version: &build.version,
            label: &build.label,
            payload: &item.payload,
            dead,
            parent: Some(&build.build_id),
        };
        outbox::upsert(tx, &new, now_ms)?;
    }
    Ok(())
}

/// Adds `delta` to what enrichment has spent and skipped.
pub(crate) fn add_totals(conn: &Connection, delta: &Totals) -> rusqlite::Result<()> {
    if *delta == Totals::default() {
        return Ok(());
    }
    let mut sum = totals(conn)?;
    sum.add(delta);
    let text = serde_json::to_string(&sum)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    state::set(conn, Key::EnrichTotals, &text)
}

/// What enrichment has spent and skipped since the state database was created.
pub(crate) fn totals(conn: &Connection) -> rusqlite::Result<Totals> {
    let text = state::get(conn, Key::EnrichTotals)?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

/// How much is waiting.
pub(crate) fn backlog(conn: &Connection) -> rusqlite::Result<Backlog> {
    let (builds, oldest_queued_at) =
        conn.query_row("SELECT count(*), min(queued_at) FROM enrich", [], |r| {
            r.try_into()
        })?;
    let files = conn.query_row("SELECT count(*) FROM enrich_files", [], |r| r.get(0))?;
    Ok(Backlog {
        builds,
        files,
        oldest_queued_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox::{self, Outcome};
    use crate::store::Store;

    fn build_item(version: &str) -> NewItem<'_> {
        NewItem {
            kind: Kind::Build,
            key: "b1",
            version,
            label: "acme/web#1",
            payload: "{}",
            dead: None,
            parent: None,
        }
    }

    fn file(id: &str) -> File {
        File {
            artifact_id: id.into(),
            path: format!("junit/{id}.xml"),
            download_url: format!("/download/{id}"),
            size: Some(10),
            attempts: 0,
            failures: 0,
        }
    }

    fn suite(key: &str) -> Fetched {
        Fetched {
            kind: Kind::Tests,
            key: key.into(),
            payload: "{}".into(),
        }
    }

    /// Queues build b1 at `version` for delivery and enrichment; returns it as pending.
    fn queue_build(c: &mut Connection, version: &str) -> rusqlite::Result<Pending> {
        let tx = c.transaction()?;
        outbox::upsert(&tx, &build_item(version), 0)?;
        add(&tx, &build_item(version), 0)?;
        tx.commit()?;
        Ok(next(c, 0)?.expect("due"))
    }

    #[tokio::test]
    async fn what_belongs_to_a_dead_build_waits_and_dies_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let (due_before, due_after, dead) = store
            .call(|c| {
                let pending = queue_build(c, "v")?;
                assert!(listed(c, &pending, &[file("a")])?);
                let a = files(c, &pending)?.remove(0);
                assert!(begin_file(c, &pending, &a)?);
                file_done(c, &pending, &a, &[suite("b1/a/0")], 10, 0)?;
                let due_before: Vec<Kind> =
                    outbox::due(c, 0, 10)?.into_iter().map(|r| r.kind).collect();
                let row = outbox::due(c, 0, 10)?.remove(0);
                let dead = Outcome::Dead(outbox::DeadCause::Content, "400".into());
                outbox::settle(c, &[(row, dead)])?;
                let due_after = outbox::due(c, 0, 10)?.len();
                let dead = outbox::summary(c)?.dead;
                Ok((due_before, due_after, dead))
            })
            .await
            .expect("db");
        assert_eq!(due_before, [Kind::Build], "the suite waits for its build");
        assert_eq!(due_after, 0, "nothing of a dead build is sent");
        assert_eq!(dead, 2, "the suite is a dead letter with its build");
    }

    #[tokio::test]
    async fn progress_is_saved_per_file_and_a_new_finish_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        store
            .call(|c| {
                let old = queue_build(c, "v1")?;
                assert!(listed(c, &old, &[file("a"), file("b")])?);
                let [a, b] = <[File; 2]>::try_from(files(c, &old)?).expect("two files");
                assert!(begin_file(c, &old, &a)?);
                file_done(c, &old, &a, &[suite("b1/a/0")], 10, 0)?;
                // Only b is left; its attempt is recorded before it is fetched.
                assert!(begin_file(c, &old, &b)?);
                let left = files(c, &old)?;
                assert_eq!(left.len(), 1);
                assert_eq!((left[0].attempts, left[0].failures), (1, 0));
                assert_eq!(backlog(c)?.files, 1);

                // The build finishes again: what was fetched for the old finish is dropped.
                let new = queue_build(c, "v2")?;
                assert!(!new.listed, "the new finish is listed again");
                assert!(files(c, &new)?.is_empty());
                file_done(c, &old, &b, &[suite("b1/b/0")], 10, 0)?;
                let suites = outbox::depth(c)?
                    .into_iter()
                    .filter(|(k, _, _)| *k == Kind::Tests)
                    .map(|(_, _, n)| n)
                    .sum::<u64>();
                assert_eq!(suites, 1, "b of the old finish is not queued");
                assert!(!begin_file(c, &old, &b)?, "no longer waiting");
                finish(c, &old)?;
                assert_eq!(backlog(c)?.builds, 1, "the new finish still waits");
                finish(c, &new)?;
                assert_eq!(backlog(c)?, Backlog::default());
                Ok(())
            })
            .await
            .expect("db");
    }

    #[tokio::test]
    async fn totals_add_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let sum = store
            .call(|c| {
                let mut delta = Totals {
                    listings: 1,
                    downloads: 2,
                    ..Totals::default()
                };
                delta.skip(Cap::FilesPerBuild, 3);
                add_totals(c, &delta)?;
                add_totals(c, &delta)?;
                totals(c)
            })
            .await
            .expect("db");
        assert_eq!((sum.listings, sum.downloads), (2, 4));
        assert_eq!(sum.skipped(), 6);
    }
}
