//! Test results: a build's JUnit artifacts, downloaded through Buildkite's `/download`
//! redirect (the storage host never sees the token), parsed, one BuildButler suite each.
//!
//! A file that is malformed, too large or not JUnit is skipped with a warning naming the
//! build and the path; it never holds back the build.

use super::{junit, SyncError};
use crate::app::App;
use crate::buildkite::client::FetchError;
use crate::buildkite::Build;
use crate::item::{Kind, Suite, TestResults};
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
        match junit::parse(&bytes) {
            Ok(suites) => {
                for (i, suite) in suites.into_iter().enumerate() {
                    let results = TestResults {
                        build_id: build.id.clone(),
                        suite: named(suite, &artifact.path),
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
            Err(e) => skip(&e),
        }
    }
    Ok(fetched)
}

/// Names BuildButler accepts (it refuses empty ones): a suite without a name takes the file's
/// stem, a case without a class name its suite's name, a case without a name its class name.
fn named(mut suite: Suite, path: &str) -> Suite {
    if suite.name.trim().is_empty() {
        let stem = std::path::Path::new(path)
            .file_stem()
            .and_then(|s| s.to_str());
        suite.name = stem
            .filter(|s| !s.is_empty())
            .unwrap_or("tests")
            .to_string();
    }
    for case in &mut suite.cases {
        if case.class_name.trim().is_empty() {
            case.class_name.clone_from(&suite.name);
        }
        if case.name.trim().is_empty() {
            case.name.clone_from(&case.class_name);
        }
    }
    suite
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Case, TestStatus};

    #[test]
    fn empty_names_get_sensible_ones() {
        let case = |class_name: &str, name: &str| Case {
            class_name: class_name.into(),
            name: name.into(),
            status: TestStatus::Failed,
            duration_ms: 0,
            message: None,
            trace: None,
        };
        let suite = Suite {
            name: " ".into(),
            duration_ms: 0,
            cases: vec![
                case("", "adds"),
                case("com.acme.CartTest", ""),
                case("", ""),
            ],
        };
        let s = named(suite, "reports/junit-web.xml");
        assert_eq!(s.name, "junit-web");
        let names: Vec<(&str, &str)> = s
            .cases
            .iter()
            .map(|c| (c.class_name.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("junit-web", "adds"),
                ("com.acme.CartTest", "com.acme.CartTest"),
                ("junit-web", "junit-web")
            ]
        );
    }
}
