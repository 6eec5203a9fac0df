//! Webhook-relay mode: each finished build is POSTed to `/webhooks/buildkite` exactly as
//! Buildkite's own `build.finished` webhook would send it.

mod common;

use chrono::{DateTime, NaiveDateTime, Utc};
use common::*;
use kitesync_fakes::data;
use serde_json::{json, Value};

/// The documented `build.finished` payload's shape (sources in the folder's SOURCES.md).
fn documented() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fakes/data/buildkite/webhook-build-finished.json"
    );
    let text = std::fs::read_to_string(path).expect("the documented payload");
    serde_json::from_str(&text).expect("the documented payload is JSON")
}

fn key_set(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    keys.sort();
    keys
}

/// Every `(path, value)` under a key ending in `_at`, at any depth.
fn times(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let here = format!("{path}.{k}");
                if k.ends_with("_at") {
                    out.push((here.clone(), v.clone()));
                }
                times(v, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                times(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

const WEBHOOK_TIME: &str = "%Y-%m-%d %H:%M:%S UTC";

/// Every non-null `*_at` value in `v` is in the webhook form; returns how many were checked.
fn assert_webhook_times(v: &Value, path: &str) -> usize {
    let mut found = Vec::new();
    times(v, path, &mut found);
    let mut checked = 0;
    for (at, value) in found {
        if value.is_null() {
            continue;
        }
        let s = value
            .as_str()
            .unwrap_or_else(|| panic!("{at} is not a string: {value}"));
        NaiveDateTime::parse_from_str(s, WEBHOOK_TIME)
            .unwrap_or_else(|e| panic!("{at} = {s:?} is not \"{WEBHOOK_TIME}\": {e}"));
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_arrive_as_build_finished_webhooks() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__MODE", "webhook");
    h.bk.set_builds(recent_builds(3));
    h.once_ok().await;
    let hooks = h.bb.webhooks();
    assert_eq!(hooks.len(), 3);
    let hook = hooks
        .iter()
        .find(|w| w.body["build"]["number"] == 2)
        .expect("build 2 was relayed");
    assert_eq!(
        hook.uri, "/webhooks/buildkite",
        "no query: the Buildkite token is opt-in"
    );
    assert_eq!(hook.headers["x-buildkite-event"], "build.finished");
    assert_eq!(hook.headers["x-buildkite-token"], API_KEY);
    assert_eq!(hook.headers["content-type"], "application/json");
    assert!(!hook.headers.contains_key("x-buildkite-signature"));
    assert!(
        !hook.headers.contains_key("authorization"),
        "no ingest headers in webhook mode"
    );
    let body = &hook.body;
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["build", "event", "pipeline", "sender"]);
    assert_eq!(body["event"], "build.finished");
    assert_eq!(body["build"]["id"], data::build_id(2));
    assert_eq!(body["build"]["state"], "passed");
    assert_eq!(
        body["build"]["web_url"],
        "https://buildkite.com/acme/mobile/builds/2"
    );
    assert!(
        body["build"].get("jobs").is_none(),
        "a webhook build carries no jobs"
    );
    assert_eq!(body["pipeline"]["slug"], "mobile");
    assert_eq!(body["sender"]["name"], "kitesync");
    assert!(h.bb.stages().is_empty(), "no ingest calls");
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_webhooks_and_the_opt_in_buildkite_token() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__MODE", "webhook");
    h.set_env("KITESYNC_BUILDBUTLER__WEBHOOK_SIGNATURE", "true");
    h.set_env("KITESYNC_BUILDBUTLER__WEBHOOK_SEND_BUILDKITE_TOKEN", "true");
    h.set_env("RUST_LOG", "debug");
    h.bk.set_builds(recent_builds(2));
    let run = h.once_ok().await;
    let hooks = h.bb.webhooks();
    assert_eq!(hooks.len(), 2, "the fake verified each signature");
    for hook in &hooks {
        let sig = &hook.headers["x-buildkite-signature"];
        assert!(
            sig.starts_with("timestamp=") && sig.contains(",signature="),
            "{sig}"
        );
        assert!(!hook.headers.contains_key("x-buildkite-token"));
        assert_eq!(
            hook.uri,
            format!("/webhooks/buildkite?buildkiteToken={TOKEN}")
        );
    }
    assert!(
        !run.output().contains(TOKEN),
        "the URL with the token is never printed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_webhook_token_stops_delivery_without_printing_it() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__MODE", "webhook");
    h.set_env("KITESYNC_BUILDBUTLER__API_KEY", "bb_live_WRONG_WEBHOOK_KEY");
    h.set_env("KITESYNC_BUILDBUTLER__WEBHOOK_SEND_BUILDKITE_TOKEN", "true");
    h.bk.set_builds(recent_builds(2));
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stderr.contains("rejected the API key (401"),
        "{}",
        run.stderr
    );
    for secret in ["WRONG_WEBHOOK_KEY", TOKEN] {
        assert!(
            !run.output().contains(secret),
            "{secret} leaked: {}",
            run.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relayed_body_has_the_documented_shape_and_time_format() {
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_BUILDBUTLER__MODE", "webhook");
    // The fake's builds as the REST API lists them (RFC 3339 times with milliseconds, REST-only
    // keys, a future field), with a full creator and a timed pipeline so that nested times
    // are relayed too.
    let mut builds = recent_builds(3);
    for b in &mut builds {
        b["creator"] = json!({"id": "0189d2b0-5d55-4e84-af6a-3ab12c9d8e99",
                              "graphql_id": "VXNlcg==", "name": "CI Admin",
                              "email": "ci-admin@example.com",
                              "avatar_url": "https://www.gravatar.com/avatar/x",
                              "created_at": "2021-04-07T02:11:45.481Z"});
        b["pipeline"]["created_at"] = json!("2023-06-14T09:41:07.120Z");
        b["some_future_field"] = json!({"nested": [1, 2, 3]});
    }
    h.bk.set_builds(builds.clone());
    h.once_ok().await;
    let hooks = h.bb.webhooks();
    assert_eq!(hooks.len(), 3);
    let doc = documented();
    for hook in &hooks {
        let body = &hook.body;
        let number = body["build"]["number"].clone();
        let listed = builds
            .iter()
            .find(|b| b["number"] == number)
            .expect("a listed build");
        assert_eq!(key_set(body), key_set(&doc), "the envelope");
        assert_eq!(
            key_set(&body["build"]),
            key_set(&doc["build"]),
            "the build's keys are the documented webhook build's"
        );
        assert_eq!(key_set(&body["sender"]), key_set(&doc["sender"]));
        assert_eq!(
            key_set(&body["build"]["creator"]),
            key_set(&doc["build"]["creator"])
        );
        assert_eq!(body["sender"]["name"], "kitesync");
        // Times: the documented form everywhere, and the listed instant, truncated to seconds.
        assert!(
            assert_webhook_times(&doc, "doc") >= 6,
            "the reference itself"
        );
        assert_eq!(assert_webhook_times(&body["build"], "build"), 5);
        assert_eq!(assert_webhook_times(&body["pipeline"], "pipeline"), 1);
        for key in ["created_at", "started_at", "finished_at"] {
            let rest = listed[key].as_str().expect("a listed time");
            let rest: DateTime<Utc> = rest.parse().expect("RFC 3339");
            assert_eq!(
                body["build"][key],
                rest.format(WEBHOOK_TIME).to_string(),
                "{key}"
            );
        }
        assert_eq!(
            body["build"]["creator"]["created_at"],
            "2021-04-07 02:11:45 UTC"
        );
        assert_eq!(body["pipeline"]["created_at"], "2023-06-14 09:41:07 UTC");
        // The pipeline is the listed one, every key kept.
        assert_eq!(key_set(&body["pipeline"]), key_set(&listed["pipeline"]));
        assert_eq!(body["build"]["id"], listed["id"]);
        assert_eq!(body["build"]["commit"], listed["commit"]);
    }
}
