//! Test results: a build's JUnit artifacts, downloaded through Buildkite's `/download`
//! redirect (the storage host never sees the token), parsed, one BuildButler suite each.
//!
//! A file that is malformed, too large or not JUnit is skipped with a warning naming the
//! build and the path; it never holds back the build.

use super::{junit, SyncError};
use crate::app::App;
use crate::buildkite::client::FetchError;
use crate::buildkite::Build;
use crate::item::{Kind, TestResults};
use crate::store::enrich::Fetched;

/// The JUnit suites of `build`'s matching artifacts, as outbox items.
pub async fn collect(app: &App, build: &Build, label: &str) -> Result<Vec<Fetched>, SyncError> {
    let cap = app.config.tests.max_file_bytes;
    let artifacts = app
        .client
        .artifacts(build.pipeline_slug(), build.number)
        .await?;
    let mut fetched = Vec::new();
    for artifact in artifacts.into_iter().filter_map(|a| a.decoded.ok()) {
        if !app.junit_globs.is_match(&artifact.path)
            || artifact.state.as_deref().is_some_and(|s| s != "finished")
        {
            continue;
        }
        let skip = |why: &str| {
            tracing::warn!(
                build = label,
                path = artifact.path,
                "JUnit file skipped: {why}"
            );
        };
        if artifact.file_size.is_some_and(|n| n > cap) {
            skip("larger than [tests] max_file_bytes");
            continue;
        }
        let Some(download) = &artifact.download_url else {
            skip("Buildkite gave no download_url");
            continue;
        };
        let location = app.client.artifact_location(download).await?;
        let bytes = match app.client.fetch_storage(&location, cap).await {
            Ok(bytes) => bytes,
            Err(FetchError::TooLarge) => {
                skip("larger than [tests] max_file_bytes");
                continue;
            }
            Err(e @ FetchError::Refused(_)) => {
                skip(&e.to_string());
                continue;
            }
            Err(FetchError::Failed(e)) => return Err(SyncError::Storage(e)),
        };
        match junit::parse(&bytes, stem(&artifact.path)) {
            Ok(suites) => {
                for (i, suite) in suites.into_iter().enumerate() {
                    let results = TestResults {
                        build_id: build.id.clone(),
                        suite,
                    };
                    let payload = serde_json::to_string(&results)
                        .map_err(SyncError::encode("test results"))?;
                    fetched.push(Fetched {
                        kind: Kind::Tests,
                        key: format!("{}/{}/{i}", build.id, artifact.id),
                        payload,
                    });
                }
            }
            Err(e) => skip(&e.to_string()),
        }
    }
    Ok(fetched)
}

/// The file's stem, which names a suite that has no name of its own (BuildButler refuses
/// empty names; `junit::parse` says how the rest are named).
pub fn stem(path: &str) -> &str {
    std::path::Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
}
