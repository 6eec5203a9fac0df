//! Property tests ("fuzzing"): the parsers of untrusted input never panic, whatever they
//! are given. Short by default (CI); longer with `PROPTEST_CASES=100000 cargo test --test fuzz`.

use kitesync::buildkite::budget::Snapshot;
use kitesync::buildkite::client::parse_next_link;
use kitesync::buildkite::Build;
use kitesync::config::Config;
use kitesync::sync::junit;
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    ProptestConfig::with_cases(cases)
}

/// Bits of JUnit, shuffled into documents that are nearly, but not quite, JUnit.
fn junitish() -> impl Strategy<Value = String> {
    let parts = prop::sample::select(vec![
        "<testsuites>",
        "</testsuites>",
        "<testsuite name=\"s\" time=\"1.5\">",
        "</testsuite>",
        "<testcase classname=\"c\" name=\"ü\" time=\"x\">",
        "</testcase>",
        "<testcase/>",
        "<failure message=\"m\">",
        "</failure>",
        "<error/>",
        "<skipped/>",
        "<![CDATA[trace]]>",
        "&amp;",
        "&#xA;",
        "&bogus;",
        "<system-out>",
        "</system-out>",
        "text",
        "<?xml version=\"1.0\"?>",
    ]);
    prop::collection::vec(parts, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn junit_never_panics(xml in junitish(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = junit::parse(xml.as_bytes(), "fuzz");
        let _ = junit::parse(&bytes, "fuzz");
    }

    #[test]
    fn build_json_never_panics(json in "\\PC{0,200}", n in any::<i64>(), state in "\\PC{0,12}") {
        let _ = serde_json::from_str::<Build>(&json);
        let near = format!(r#"{{"id":"x","number":{n},"state":{state:?},"finished_at":{json:?},"jobs":[{{"type":{state:?}}}]}}"#);
        if let Ok(b) = serde_json::from_str::<Build>(&near) {
            let _ = b.finished();
            let _ = b.steps().count();
        }
    }

    #[test]
    fn link_headers_never_panic(header in "\\PC{0,300}") {
        let _ = parse_next_link(&header);
    }

    #[test]
    fn ratelimit_headers_never_panic(values in prop::collection::vec("[ -~]{0,24}", 6)) {
        let names = ["ratelimit-remaining", "ratelimit-limit", "ratelimit-reset",
                     "ratelimit-user-remaining", "ratelimit-user-limit", "ratelimit-user-reset"];
        let mut h = HeaderMap::new();
        for (name, value) in names.iter().zip(&values) {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        let _ = Snapshot::from_headers(&h);
    }

    #[test]
    fn config_loading_never_panics(text in "\\PC{0,300}", value in "\\PC{0,20}") {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kitesync.toml");
        for candidate in [
            text.clone(),
            format!("[buildkite]\norganization = \"a\"\ntoken = \"t\"\nrequests_per_minute = {value}\n[buildbutler]\nurl = \"{value}\"\napi_key = \"k\"\n"),
        ] {
            std::fs::write(&path, candidate).expect("write");
            let _ = Config::load(&path);
        }
    }
}
