//! Test results: a build's JUnit artifacts, downloaded through Buildkite's `/download`
//! redirect (the storage host never sees the token), parsed, one BuildButler suite each.
//!
//! A file that is malformed, too large or not JUnit is skipped with a warning naming the
//! build and the path; it never holds back the build. So are the files over the caps of a
//! build: `[enrich] max_files_per_build` and `max_bytes_per_build`.

use crate::buildkite::client::FetchError;
use crate::buildkite::Build;
use crate::item::{Kind, TestResults};
use crate::store::enrich::{Cap, Fetched, File};
use crate::sync::Parts;
use crate::sync::{junit, SyncError};

/// A build's JUnit files as listed: those to fetch, within the caps, and those skipped.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) files: Vec<File>,
    /// Files skipped, by the cap that skipped them.
    pub(crate) skipped: Vec<(Cap, u64)>,
}

/// Lists `build`'s artifacts (1 request per 100) and picks its JUnit files, in path order:
/// at most `[enrich] max_files_per_build` of them, as many as fit in `max_bytes_per_build`
/// by their listed sizes, none larger than `[tests] max_file_bytes`. What is skipped is
/// warned about with the build's `label`.
pub(crate) async fn list(app: Parts<'_>, build: &Build, label: &str) -> Result<Listing, SyncError> {
    let (file_cap, caps) = (app.config.tests.max_file_bytes, &app.config.enrich);
    let artifacts = app
        .client
        .artifacts(build.pipeline_slug(), build.number)
        .await?;
    let mut junit: Vec<_> = artifacts
        .into_iter()
        .filter_map(|a| a.decoded.ok())
        .filter(|a| {
            app.junit_globs.is_match(&a.path) && a.state.as_deref().is_none_or(|s| s == "finished")
        })
        .collect();
    junit.sort_by(|a, b| a.path.cmp(&b.path));
    let mut listing = Listing::default();
    // Files over a cap of the build: how many, and the first one's path.
    let mut over: Vec<(Cap, u64, String)> = Vec::new();
    let mut bytes = 0;
    for artifact in junit {
        let path = artifact.path;
        let size = artifact.file_size.unwrap_or(0);
        let cap = if artifact.file_size.is_some_and(|n| n > file_cap) {
            Some(Cap::FileBytes)
        } else if listing.files.len() as u64 >= caps.max_files_per_build {
            Some(Cap::FilesPerBuild)
        } else if bytes + size > caps.max_bytes_per_build {
            Some(Cap::BytesPerBuild)
        } else {
            None
        };
        if let Some(cap) = cap {
            match over.iter_mut().find(|(c, _, _)| *c == cap) {
                Some((_, n, _)) => *n += 1,
                None => over.push((cap, 1, path)),
            }
            continue;
        }
        let Some(download_url) = artifact.download_url else {
            tracing::warn!(
                build = label,
                path,
                "JUnit file skipped: Buildkite gave no download_url"
            );
            continue;
        };
        bytes += size;
        listing.files.push(File {
            artifact_id: artifact.id,
            path,
            download_url,
            size: artifact.file_size,
            attempts: 0,
            failures: 0,
        });
    }
    for (cap, n, path) in over {
        let key = cap.key();
        match n {
            1 => tracing::warn!(build = label, path, "JUnit file skipped: over {key}"),
            n => tracing::warn!(
                build = label,
                path,
                "{n} JUnit files skipped: over {key} (the first named here)"
            ),
        }
        listing.skipped.push((cap, n));
    }
    Ok(listing)
}

/// What fetching one JUnit file came to.
#[derive(Debug)]
pub(crate) enum Fetch {
    /// Its suites as outbox items, and the bytes read.
    Suites(Vec<Fetched>, u64),
    /// Skipped with a warning: malformed, not JUnit, refused storage, or over a cap (named).
    Skipped(Option<Cap>),
}

/// Downloads `file` of `build` through Buildkite's `/download` 302 (the storage host never
/// sees the token) and parses it; at most `[tests] max_file_bytes`, and at most `left` bytes,
/// what `[enrich] max_bytes_per_build` leaves of the build's.
pub(crate) async fn fetch(
    app: Parts<'_>,
    build: &Build,
    label: &str,
    file: &File,
    left: u64,
) -> Result<Fetch, SyncError> {
    let file_cap = app.config.tests.max_file_bytes;
    let (limit, cap) = match left < file_cap {
        true => (left, Cap::BytesPerBuild),
        false => (file_cap, Cap::FileBytes),
    };
    let skip =
        |why: &str| tracing::warn!(build = label, path = file.path, "JUnit file skipped: {why}");
    let location = app.client.artifact_location(&file.download_url).await?;
    let bytes = match app.client.fetch_storage(&location, limit).await {
        Ok(bytes) => bytes,
        Err(FetchError::TooLarge) => {
            skip(&format!("over {}", cap.key()));
            return Ok(Fetch::Skipped(Some(cap)));
        }
        Err(e @ FetchError::Refused(_)) => {
            skip(&e.to_string());
            return Ok(Fetch::Skipped(None));
        }
        Err(FetchError::Failed(e)) => return Err(SyncError::Storage(e)),
    };
    let suites = match junit::parse(&bytes, stem(&file.path)) {
        Ok(suites) => suites,
        Err(e) => {
            skip(&e.to_string());
            return Ok(Fetch::Skipped(None));
        }
    };
    let mut fetched = Vec::new();
    for (i, suite) in suites.into_iter().enumerate() {
        let results = TestResults {
            build_id: build.id.clone(),
            suite,
        };
        let payload = serde_json::to_string(&results).map_err(SyncError::encode("test results"))?;
        fetched.push(Fetched {
            kind: Kind::Tests,
            key: format!("{}/{}/{i}", build.id, file.artifact_id),
            payload,
        });
    }
    Ok(Fetch::Suites(fetched, bytes.len() as u64))
}

/// The file's stem, which names a suite that has no name of its own (BuildButler refuses
/// empty names; `junit::parse` says how the rest are named).
pub fn stem(path: &str) -> &str {
    std::path::Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
}
