//! What a step's outcome comes to, written once for every step (a build's artifact listing,
//! one JUnit file, the logs): the error ladder, its limits and its backoff. Pure, so that
//! every rung is a row of a table test.

use std::time::Duration;

use crate::buildkite::SourceError;
use crate::net;
use crate::store::enrich::File;
use crate::sync::SyncError;

/// Attempts at a build's artifact listing, or at its logs, before they are given up.
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// Failed fetches of a JUnit file before it is given up.
pub(crate) const MAX_FILE_FAILURES: u32 = 5;
/// Attempts at a JUnit file that never finished (kitesync was killed or stopped while
/// fetching it) before it is given up.
pub(crate) const MAX_FILE_UNFINISHED: u32 = 3;
/// The first wait before a failed step is tried again; it doubles with each failure.
const RETRY_FIRST: Duration = Duration::from_secs(30);
/// The longest wait before a failed step is tried again.
const RETRY_MAX: Duration = Duration::from_secs(1800);

/// What to do with a step's outcome.
#[derive(Debug)]
pub(crate) enum Verdict<T> {
    /// It gave `T`.
    Got(T),
    /// It was stopped on purpose: its attempt is taken back.
    Stopped,
    /// What it fetches no longer exists (Buildkite's 404): go on without it.
    Gone(SyncError),
    /// It failed too often: go on without it, counted as given up.
    GiveUp(SyncError),
    /// Try it again later, after [`retry_wait`] for this failure.
    Retry(SyncError),
    /// No retry of this build can help (the token, its scopes, the state database): the
    /// pass ends with the error.
    Fail(SyncError),
}

/// The verdict on a step's `outcome` (`None`: stopped), when a failure would be its
/// `failure`th of at most `max`.
pub(crate) fn judge<T>(
    outcome: Option<Result<T, SyncError>>,
    failure: u32,
    max: u32,
) -> Verdict<T> {
    match outcome {
        None => Verdict::Stopped,
        Some(Ok(value)) => Verdict::Got(value),
        Some(Err(e @ SyncError::Source(SourceError::Gone { .. }))) => Verdict::Gone(e),
        Some(Err(e @ SyncError::Store(_))) => Verdict::Fail(e),
        Some(Err(e)) if e.is_configuration() => Verdict::Fail(e),
        Some(Err(e)) if failure >= max => Verdict::GiveUp(e),
        Some(Err(e)) => Verdict::Retry(e),
    }
}

/// The verdict on a fetch of `file` (`None`: stopped), after its earlier failures.
pub(crate) fn judge_file<T>(outcome: Option<Result<T, SyncError>>, file: &File) -> Verdict<T> {
    judge(outcome, file.failures + 1, MAX_FILE_FAILURES)
}

/// How often `file` was started and never finished, when that is reason to give it up
/// before trying it again (it may be what kills kitesync).
pub(crate) fn unfinished(file: &File) -> Option<u32> {
    let n = file.attempts.saturating_sub(file.failures);
    (n >= MAX_FILE_UNFINISHED).then_some(n)
}

/// How long to wait before trying a step again after its `failure`th failure (jittered).
pub(crate) fn retry_wait(failure: u32) -> Duration {
    net::backoff(failure, RETRY_FIRST, RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Cause, StoreError};

    fn file(attempts: u32, failures: u32) -> File {
        File {
            artifact_id: "a1".into(),
            path: "junit.xml".into(),
            download_url: "https://api.buildkite.com/x/download".into(),
            size: None,
            attempts,
            failures,
        }
    }

    fn gone() -> SyncError {
        SyncError::Source(SourceError::Gone {
            endpoint: "artifacts".into(),
        })
    }

    fn forbidden() -> SyncError {
        SyncError::Source(SourceError::Forbidden {
            endpoint: "artifacts".into(),
            scope: "read_artifacts".into(),
        })
    }

    fn unavailable() -> SyncError {
        SyncError::Source(SourceError::Unavailable {
            endpoint: "artifacts".into(),
            attempts: 5,
            reason: "503".into(),
            timed_out: false,
        })
    }

    fn storage() -> SyncError {
        SyncError::Storage("connection reset".into())
    }

    fn store() -> SyncError {
        SyncError::Store(StoreError {
            path: "state.db".into(),
            doing: "reading the enrich queue",
            cause: Cause::Sqlite(rusqlite::Error::InvalidQuery),
        })
    }

    /// The rung a verdict stands on, for the tables.
    fn rung<T>(v: &Verdict<T>) -> &'static str {
        match v {
            Verdict::Got(_) => "got",
            Verdict::Stopped => "stopped",
            Verdict::Gone(_) => "gone",
            Verdict::GiveUp(_) => "give up",
            Verdict::Retry(_) => "retry",
            Verdict::Fail(_) => "fail",
        }
    }

    #[test]
    fn a_file_fetch_outcome_has_one_verdict_per_cause() {
        type Outcome = Option<Result<u64, SyncError>>;
        let table: Vec<(&str, Outcome, File, &str)> = vec![
            ("stopped", None, file(1, 0), "stopped"),
            ("fetched", Some(Ok(42)), file(1, 0), "got"),
            ("fetched after failures", Some(Ok(42)), file(5, 4), "got"),
            ("deleted (404)", Some(Err(gone())), file(1, 0), "gone"),
            ("scope missing", Some(Err(forbidden())), file(1, 0), "fail"),
            (
                "scope missing, last try",
                Some(Err(forbidden())),
                file(5, 4),
                "fail",
            ),
            ("state database", Some(Err(store())), file(5, 4), "fail"),
            (
                "storage failed, first",
                Some(Err(storage())),
                file(1, 0),
                "retry",
            ),
            (
                "Buildkite down, 4th",
                Some(Err(unavailable())),
                file(4, 3),
                "retry",
            ),
            (
                "storage failed, 5th",
                Some(Err(storage())),
                file(5, 4),
                "give up",
            ),
            (
                "Buildkite down, 5th",
                Some(Err(unavailable())),
                file(5, 4),
                "give up",
            ),
        ];
        for (case, outcome, file, want) in table {
            assert_eq!(rung(&judge_file(outcome, &file)), want, "{case}");
        }
    }

    #[test]
    fn a_listing_or_logs_attempt_climbs_the_same_ladder() {
        let table: Vec<(SyncError, u32, &str)> = vec![
            (gone(), 1, "gone"),
            (forbidden(), 1, "fail"),
            (store(), 1, "fail"),
            (unavailable(), 1, "retry"),
            (unavailable(), MAX_ATTEMPTS - 1, "retry"),
            (unavailable(), MAX_ATTEMPTS, "give up"),
            (storage(), MAX_ATTEMPTS, "give up"),
        ];
        for (error, attempt, want) in table {
            let case = format!("{error} at attempt {attempt}");
            let v = judge::<()>(Some(Err(error)), attempt, MAX_ATTEMPTS);
            assert_eq!(rung(&v), want, "{case}");
        }
    }

    #[test]
    fn a_file_started_three_times_without_finishing_is_given_up() {
        let table = [
            (0, 0, None),
            (2, 0, None),
            (3, 0, Some(3)),
            // Failures finished: only the attempts that never came back count.
            (4, 2, None),
            (6, 3, Some(3)),
        ];
        for (attempts, failures, want) in table {
            assert_eq!(
                unfinished(&file(attempts, failures)),
                want,
                "{attempts}/{failures}"
            );
        }
    }

    #[test]
    fn the_retry_wait_doubles_from_half_a_minute_to_half_an_hour() {
        // Jittered down to half: the bounds hold whatever the draw.
        let table = [(1, 30), (2, 60), (3, 120), (7, 1800), (30, 1800)];
        for (failure, most) in table {
            let wait = retry_wait(failure);
            let most = Duration::from_secs(most);
            assert!(wait <= most && wait >= most / 2, "{failure}: {wait:?}");
        }
    }
}
