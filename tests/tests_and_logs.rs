//! Test results from JUnit artifacts and the tails of failed jobs' logs.

mod common;

use common::*;
use kitesync_fakes::data;
use serde_json::Value;

const DIALECTS: [&str; 6] = [
    "junit4-surefire.xml",
    "junit5-nested.xml",
    "pytest.xml",
    "jest.xml",
    "gotestsum.xml",
    "rspec.xml",
];
/// Suites in each dialect's fixture.
const SUITES: [usize; 6] = [1, 2, 1, 2, 2, 1];

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/junit/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

#[tokio::test(flavor = "multi_thread")]
async fn junit_artifacts_become_suites_and_the_storage_host_never_sees_the_token() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[tmp/junit-*.xml]");
    h.set_env("KITESYNC_TESTS__MAX_FILE_BYTES", "100000");
    // More than the token owner's default 50 a minute: this run needs 82.
    h.bk.set_budgets(1000, 1000, std::time::Duration::from_secs(60));
    h.bk.set_builds(recent_builds(40));
    let mut expected_suites = 0;
    for n in 1..=40u64 {
        let d = (n % 6) as usize;
        expected_suites += SUITES[d];
        let mut files = vec![
            (format!("tmp/junit-{n}.xml"), fixture(DIALECTS[d])),
            ("coverage/index.html".to_string(), b"<html></html>".to_vec()),
        ];
        if n == 3 {
            files.push(("tmp/junit-broken.xml".to_string(), fixture("malformed.xml")));
        }
        if n == 4 {
            files.push(("tmp/junit-huge.xml".to_string(), vec![b' '; 200_000]));
        }
        h.bk.set_artifacts(n, files);
    }
    let run = h.once_ok().await;

    let suites = h.bb.suites();
    assert_eq!(suites.len(), expected_suites);
    let requests = h.bk_requests();
    println!("--once over 40 builds with JUnit artifacts: {requests} Buildkite requests");
    // 1 page of builds, 1 artifact listing per build, 1 download per matching file (41:
    // the broken one too; the huge one is skipped by its listed size).
    assert_eq!(requests, 1 + 40 + 41);
    let auths = h.bk.storage_authorizations();
    assert_eq!(auths.len(), 41);
    assert!(
        auths.iter().all(Option::is_none),
        "a token reached the storage host"
    );

    // One suite, field by field: build 6 is JUnit 4 (surefire).
    let id6 = data::build_id(6);
    let s: &Value = suites
        .iter()
        .find(|s| s["buildId"] == id6.as_str())
        .expect("suite of build 6");
    assert_eq!(s["name"], "com.acme.CartTest");
    assert_eq!(
        (s["totalCount"].as_u64(), s["passCount"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(
        (s["failCount"].as_u64(), s["skipCount"].as_u64()),
        (Some(2), Some(1)),
        "errors count as failures"
    );
    assert_eq!(s["duration"], 1234);
    let failed = &s["testCases"][1];
    assert_eq!(failed["className"], "com.acme.CartTest");
    assert_eq!(failed["testName"], "removesItem");
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["errorMessage"], "expected:<1> but was:<2>");
    assert!(failed["stackTrace"]
        .as_str()
        .is_some_and(|t| t.contains("CartTest.java:42")));
    assert_eq!(s["testCases"][2]["status"], "ERROR");

    for (path, build) in [
        ("tmp/junit-broken.xml", "acme/web#3"),
        ("tmp/junit-huge.xml", "acme/api#4"),
    ] {
        let warned = run
            .stderr
            .lines()
            .any(|l| l.contains("JUnit file skipped") && l.contains(path) && l.contains(build));
        assert!(warned, "no warning for {path} of {build}:\n{}", run.stderr);
    }
    assert_eq!(h.bb.builds().len(), 40, "every build delivered regardless");

    // Nothing new: nothing fetched again.
    h.bk.clear_requests();
    h.once_ok().await;
    assert_eq!(h.bk_requests(), 1);
    assert_eq!(h.bb.suites().len(), expected_suites);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_artifact_listing_when_test_results_are_off() {
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(40));
    h.bk.set_artifacts(1, vec![("tmp/junit-1.xml".into(), fixture("pytest.xml"))]);
    h.once_ok().await;
    assert_eq!(h.bk_requests(), 1);
    assert!(h.bb.suites().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_builds_send_the_capped_tail_of_their_failed_jobs_logs() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_LOGS__ENABLED", "true");
    h.set_env("KITESYNC_LOGS__MAX_BYTES", "1000");
    h.bk.set_builds(recent_builds(14));
    // Builds 7 and 14 failed; both their script steps failed.
    for n in [7, 14] {
        let id = data::build_id(n);
        h.bk.set_log(
            &format!("{id}-j1"),
            &format!("{}\nspecs failed: FINAL LINE {n}\n", "noise ".repeat(2000)),
        );
        h.bk.set_log(&format!("{id}-j3"), "");
    }
    h.once_ok().await;
    let logs = h.bb.logs();
    assert_eq!(logs.len(), 2);
    for log in &logs {
        let n = log["buildNumber"].as_u64().expect("number");
        let content = log["logContent"].as_str().expect("content");
        assert!(content.len() <= 1000, "capped: {}", content.len());
        assert!(content.contains(&format!("FINAL LINE {n}")), "{content}");
        assert!(
            content.contains(":docker: Build"),
            "each failed job has its header: {content}"
        );
        assert_eq!(log["status"], "FAILURE");
        assert_eq!(log["jenkinsInstanceId"], ORG);
    }
    let log_requests =
        h.bk.requests()
            .iter()
            .filter(|r| r.uri.ends_with("/log"))
            .count();
    assert_eq!(
        log_requests, 4,
        "two failed jobs in each of two failed builds, nothing else"
    );
}

/// A failed job whose log is gone (404: deleted or expired) costs only its own tail: the
/// other failed job's tail is still sent, and the gone one is named under its header.
#[tokio::test(flavor = "multi_thread")]
async fn a_gone_job_log_costs_only_that_jobs_tail() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_LOGS__ENABLED", "true");
    h.bk.set_builds(recent_builds(7));
    // Build 7 failed in two jobs: j1's log is there, j3's answers 404.
    let id = data::build_id(7);
    h.bk.set_log(&format!("{id}-j1"), "specs failed: FINAL LINE\n");
    let run = h.once_ok().await;
    let logs = h.bb.logs();
    assert_eq!(logs.len(), 1, "{}", run.stderr);
    let content = logs[0]["logContent"].as_str().expect("content");
    assert!(content.contains("FINAL LINE"), "{content}");
    assert!(
        content.contains(&format!("({id}-j3) ---\n(log no longer available")),
        "{content}"
    );
    assert!(run.stderr.contains("job log skipped"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_artifact_or_a_missing_route_costs_only_that_item() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[tmp/junit-*.xml]");
    h.bk.set_builds(recent_builds(3));
    for n in 1..=3 {
        h.bk.set_artifacts(
            n,
            vec![(format!("tmp/junit-{n}.xml"), fixture("rspec.xml"))],
        );
    }
    // Build 2's artifacts expired: its download answers 404.
    h.bk.expire_artifacts(2);
    let run = h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 3);
    assert_eq!(h.bb.suites().len(), 2, "builds 1 and 3 have their suites");
    let warned = run.stderr.lines().any(|l| {
        l.contains("JUnit file skipped")
            && l.contains("no longer exists")
            && l.contains("acme/mobile#2")
    });
    assert!(warned, "{}", run.stderr);
}

/// Four builds whose steps declare no `artifact_paths`; build 2 uploaded a JUnit report from
/// its command (`buildkite-agent artifact upload "junit/*.xml"`).
fn script_uploads(h: &mut Harness) {
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[junit/*.xml]");
    h.bk.set_builds(recent_builds(4));
    for n in 1..=4 {
        h.bk.update_build(&data::build_id(n), |b| {
            for job in b["jobs"].as_array_mut().expect("jobs") {
                job["artifact_paths"] = Value::Null;
            }
        });
    }
    h.bk.set_artifacts(2, vec![("junit/report.xml".into(), fixture("pytest.xml"))]);
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_uploaded_by_a_script_are_found() {
    let mut h = Harness::start().await;
    script_uploads(&mut h);
    h.once_ok().await;
    assert_eq!(h.bb.suites().len(), 1, "the uploaded report is found");
    // 1 page, 1 listing per build that ran a command step, 1 download.
    assert_eq!(h.bk_requests(), 1 + 4 + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_artifacts_declared_lists_only_builds_with_artifact_paths() {
    let mut h = Harness::start().await;
    script_uploads(&mut h);
    h.set_env("KITESYNC_TESTS__LIST_ARTIFACTS", "declared");
    h.once_ok().await;
    assert!(h.bb.suites().is_empty(), "blind to uploads, as documented");
    assert_eq!(
        h.bk_requests(),
        1,
        "no listing for builds that declare no paths"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_junit_names_get_sensible_ones_and_nothing_is_refused() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[tmp/junit-*.xml]");
    h.bk.set_builds(recent_builds(1));
    // As real runners write them: JUnit 5 failing in @BeforeAll leaves the case's name empty,
    // Jest leaves classname empty, and some tools leave the suite's name empty.
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="" tests="2" failures="1">
    <testcase name="" classname="com.acme.CartTest" time="0.01">
      <failure message="@BeforeAll failed">java.lang.IllegalStateException</failure>
    </testcase>
    <testcase name="renders" classname="" time="0.02"/>
  </testsuite>
</testsuites>"#;
    h.bk.set_artifacts(
        1,
        vec![("tmp/junit-empty.xml".into(), xml.as_bytes().to_vec())],
    );
    let run = h.once_ok().await;
    assert!(run.stdout.contains("0 dead"), "{}", run.output());
    let suites = h.bb.suites();
    assert_eq!(suites.len(), 1, "BuildButler accepted the suite");
    assert_eq!(suites[0]["name"], "junit-empty", "the file's stem");
    let cases = suites[0]["testCases"].as_array().expect("cases");
    assert_eq!(cases[0]["testName"], "com.acme.CartTest", "its class name");
    assert_eq!(cases[1]["className"], "junit-empty", "its suite's name");
}
