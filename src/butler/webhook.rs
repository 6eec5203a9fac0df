//! Webhook-relay mode: a finished build as Buildkite's own `build.finished` webhook would
//! deliver it, for BuildButler's `/webhooks/buildkite` receiver.
//!
//! The reference is the documented `build.finished` payload
//! (`fakes/data/buildkite/webhook-build-finished.json`, sources in its `SOURCES.md`); a
//! receiver may parse it strictly, so the body follows its shape rather than the REST API's:
//!
//! - **Envelope**: `{event, build, pipeline, sender}`, nothing else.
//! - **`build`**: exactly the documented webhook build's keys ([`BUILD_KEYS`]).
//!   Values are Buildkite's own, as the REST API listed the build. REST-only keys (`jobs`,
//!   `graphql_id`, `env`, `meta_data`, `pipeline`, `pull_request`, `job_state_counts`,
//!   `failing_at`, `cancel_reason`, `rebuilt_from`, `cluster_*`, …, and any key Buildkite adds
//!   later) are dropped: the captured webhook build has none of them. A documented key the
//!   listing lacks (the REST build sometimes omits `tag` or `author`) is sent as `null`, so
//!   the key set never varies. `author` and `creator`, when objects, keep only the
//!   documented webhook keys they have (`{username, name, email}`,
//!   `{id, name, email, created_at}`); the REST creator's `graphql_id` and the like go.
//! - **`pipeline`**: the build's REST `pipeline` object, all its keys kept. No source shows
//!   a webhook's pipeline (the fixture's is an unverified guess), so nothing is dropped on
//!   that guess's say-so.
//! - **Times**: every string under a key ending in `_at`, at any depth of `build` and
//!   `pipeline`, that parses as RFC 3339 is rewritten in the webhook form
//!   `"%Y-%m-%d %H:%M:%S UTC"`: converted to UTC, fractional seconds truncated. Values
//!   already in that form, `null`s and strings that are not RFC 3339 are left as they are.
//! - **`sender`**: Buildkite's is the user who created the webhook, `{id, name}`. kitesync
//!   has no such user, so it sends the same shape naming itself:
//!   `{"id": "kitesync", "name": "kitesync"}` (the `id` is not a Buildkite user UUID).
//!
//! Authentication: `X-Buildkite-Token: <api key>`, or with `webhook_signature` an
//! `X-Buildkite-Signature: timestamp=<unix>,signature=<hex>` HMAC-SHA256 keyed with the API
//! key over `"<timestamp>.<body>"`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::config::Secret;

/// The documented webhook build's keys (serde_json writes object keys sorted, not in this
/// order).
pub(crate) const BUILD_KEYS: [&str; 17] = [
    "id",
    "url",
    "web_url",
    "number",
    "state",
    "blocked",
    "message",
    "commit",
    "branch",
    "tag",
    "source",
    "author",
    "creator",
    "created_at",
    "scheduled_at",
    "started_at",
    "finished_at",
];

/// The documented webhook build's `author` keys.
const AUTHOR_KEYS: [&str; 3] = ["username", "name", "email"];

/// The documented webhook build's `creator` keys.
const CREATOR_KEYS: [&str; 4] = ["id", "name", "email", "created_at"];

/// The webhook time format: UTC, whole seconds, a literal ` UTC`.
pub(crate) const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S UTC";

/// The webhook body for a build, from the build's JSON as Buildkite listed it.
pub(crate) fn payload(raw_build: &str) -> Result<Vec<u8>, String> {
    let listed: Value = serde_json::from_str(raw_build).map_err(|e| e.to_string())?;
    let Value::Object(mut listed) = listed else {
        return Err("the build is not a JSON object".to_string());
    };
    let mut pipeline = listed.remove("pipeline").unwrap_or(Value::Null);
    let mut build = Map::new();
    for key in BUILD_KEYS {
        let value = listed.remove(key).unwrap_or(Value::Null);
        let value = match key {
            "author" => only_keys(value, &AUTHOR_KEYS),
            "creator" => only_keys(value, &CREATOR_KEYS),
            _ => value,
        };
        build.insert(key.to_string(), value);
    }
    let mut build = Value::Object(build);
    webhook_times(&mut build);
    webhook_times(&mut pipeline);
    let body = json!({
        "event": "build.finished",
        "build": build,
        "pipeline": pipeline,
        "sender": {"id": "kitesync", "name": "kitesync"},
    });
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

/// An object reduced to those of `keys` it has; anything else unchanged.
fn only_keys(value: Value, keys: &[&str]) -> Value {
    match value {
        Value::Object(mut object) => Value::Object(
            keys.iter()
                .filter_map(|k| Some((k.to_string(), object.remove(*k)?)))
                .collect(),
        ),
        other => other,
    }
}

/// Rewrites, at any depth, each RFC 3339 string under a key ending in `_at` in the webhook
/// form (see the module doc).
fn webhook_times(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, v) in object.iter_mut() {
                if key.ends_with("_at") {
                    if let Some(t) = v.as_str().and_then(webhook_time) {
                        *v = Value::String(t);
                        continue;
                    }
                }
                webhook_times(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(webhook_times),
        _ => {}
    }
}

/// `s` in the webhook form if it is an RFC 3339 time.
fn webhook_time(s: &str) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.with_timezone(&Utc).format(TIME_FORMAT).to_string())
}

/// The `X-Buildkite-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub(crate) fn signature(key: &Secret, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("timestamp={timestamp},signature={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(raw: &str) -> Value {
        serde_json::from_slice(&payload(raw).expect("payload")).expect("json")
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn body_is_a_build_finished_event_without_jobs() {
        let raw = r#"{"id": "u", "number": 3, "state": "passed", "jobs": [{"id": "j"}],
                      "pipeline": {"slug": "web", "name": "Web"}}"#;
        let body = body(raw);
        assert_eq!(body["event"], "build.finished");
        assert_eq!(body["build"]["number"], 3);
        assert!(body["build"].get("jobs").is_none());
        assert_eq!(body["pipeline"]["slug"], "web");
        assert_eq!(
            body["sender"],
            json!({"id": "kitesync", "name": "kitesync"})
        );
    }

    #[test]
    fn the_build_has_exactly_the_webhook_keys_missing_ones_null() {
        let raw = r#"{"id": "u", "graphql_id": "QnVpbGQ=", "number": 3, "env": {"A": "1"},
                      "meta_data": {}, "pull_request": {}, "some_future_field": 1,
                      "state": "passed", "pipeline": {"slug": "web"}}"#;
        let body = body(raw);
        let mut want = BUILD_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys(&body["build"]), want);
        assert_eq!(body["build"]["tag"], Value::Null);
        assert_eq!(body["build"]["author"], Value::Null);
        assert_eq!(body["build"]["id"], "u");
    }

    #[test]
    fn author_and_creator_keep_only_the_webhook_keys() {
        let raw = r#"{"author": {"username": "a", "name": "A", "email": "a@x", "avatar": "i"},
                      "creator": {"id": "c", "graphql_id": "VXNlcg==", "name": "C",
                                  "avatar_url": "https://x", "created_at": "2021-04-07T02:11:45.123Z"}}"#;
        let body = body(raw);
        assert_eq!(
            body["build"]["author"],
            json!({"username": "a", "name": "A", "email": "a@x"})
        );
        assert_eq!(
            body["build"]["creator"],
            json!({"id": "c", "name": "C", "created_at": "2021-04-07 02:11:45 UTC"})
        );
        let null_creator = body_of_creator(Value::Null);
        assert_eq!(null_creator, Value::Null);
    }

    fn body_of_creator(creator: Value) -> Value {
        let raw = json!({"id": "u", "creator": creator}).to_string();
        body(&raw)["build"]["creator"].clone()
    }

    #[test]
    fn times_are_in_the_webhook_form_utc_and_whole_seconds() {
        let raw = r#"{"created_at": "2026-03-02T10:15:00.944Z",
                      "started_at": "2026-03-02T12:15:04.999+02:00",
                      "scheduled_at": "2026-03-02 10:15:00 UTC",
                      "finished_at": null,
                      "message": "2026-03-02T10:15:00Z",
                      "pipeline": {"created_at": "2023-06-14T09:41:07.000Z",
                                   "provider": {"settings": {"seen_at": "2023-06-14T09:41:07Z"}},
                                   "steps": [{"updated_at": "2023-06-14T09:41:07.5Z"}],
                                   "odd_at": "yesterday"}}"#;
        let body = body(raw);
        let build = &body["build"];
        assert_eq!(build["created_at"], "2026-03-02 10:15:00 UTC");
        assert_eq!(
            build["started_at"], "2026-03-02 10:15:04 UTC",
            "UTC, truncated"
        );
        assert_eq!(
            build["scheduled_at"], "2026-03-02 10:15:00 UTC",
            "already so"
        );
        assert_eq!(build["finished_at"], Value::Null);
        assert_eq!(build["message"], "2026-03-02T10:15:00Z", "not an _at key");
        let pipeline = &body["pipeline"];
        assert_eq!(pipeline["created_at"], "2023-06-14 09:41:07 UTC");
        assert_eq!(
            pipeline["provider"]["settings"]["seen_at"],
            "2023-06-14 09:41:07 UTC"
        );
        assert_eq!(
            pipeline["steps"][0]["updated_at"],
            "2023-06-14 09:41:07 UTC"
        );
        assert_eq!(pipeline["odd_at"], "yesterday");
    }

    #[test]
    fn the_documented_rest_build_becomes_the_documented_webhook_shape() {
        let rest = include_str!("../../fakes/data/buildkite/build.json");
        let documented: Value = serde_json::from_str(include_str!(
            "../../fakes/data/buildkite/webhook-build-finished.json"
        ))
        .expect("fixture");
        let body = body(rest);
        assert_eq!(keys(&body), keys(&documented));
        assert_eq!(keys(&body["build"]), keys(&documented["build"]));
        assert_eq!(keys(&body["sender"]), keys(&documented["sender"]));
        for (key, value) in body["build"].as_object().expect("build") {
            if key.ends_with("_at") && !value.is_null() {
                let s = value.as_str().expect("a string time");
                chrono::NaiveDateTime::parse_from_str(s, TIME_FORMAT).expect(s);
            }
        }
    }

    #[test]
    fn signature_matches_a_known_hmac() {
        // echo -n '1700000000.{}' | openssl dgst -sha256 -hmac secret
        let s = signature(&Secret::new("secret"), 1_700_000_000, b"{}");
        assert_eq!(
            s,
            "timestamp=1700000000,signature=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
