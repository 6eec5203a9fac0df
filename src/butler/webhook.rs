//! Webhook-relay mode: a finished build as Buildkite's own `build.finished` webhook would
//! deliver it, for BuildButler's `/webhooks/buildkite` receiver.
//!
//! Body: `{event, build, pipeline, sender}`; the build without its jobs, as Buildkite sends
//! it. Buildkite's `sender` is the user who created the webhook; kitesync names itself.
//! Authentication: `X-Buildkite-Token: <api key>`, or with `webhook_signature` an
//! `X-Buildkite-Signature: timestamp=<unix>,signature=<hex>` HMAC-SHA256 keyed with the API
//! key over `"<timestamp>.<body>"`.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::Secret;

/// The webhook body for a build, from the build's JSON as Buildkite listed it.
pub fn payload(raw_build: &str) -> Result<Vec<u8>, String> {
    let mut build: Value = serde_json::from_str(raw_build).map_err(|e| e.to_string())?;
    let object = build
        .as_object_mut()
        .ok_or_else(|| "the build is not a JSON object".to_string())?;
    object.remove("jobs");
    let pipeline = object.get("pipeline").cloned().unwrap_or(Value::Null);
    let body = json!({
        "event": "build.finished",
        "build": build,
        "pipeline": pipeline,
        "sender": {"id": "kitesync", "name": "kitesync"},
    });
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

/// The `X-Buildkite-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(key: &Secret, timestamp: i64, body: &[u8]) -> String {
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

    #[test]
    fn body_is_a_build_finished_event_without_jobs() {
        let raw = r#"{"id": "u", "number": 3, "state": "passed", "jobs": [{"id": "j"}],
                      "pipeline": {"slug": "web", "name": "Web"}}"#;
        let body: Value = serde_json::from_slice(&payload(raw).expect("payload")).expect("json");
        assert_eq!(body["event"], "build.finished");
        assert_eq!(body["build"]["number"], 3);
        assert!(body["build"].get("jobs").is_none());
        assert_eq!(body["pipeline"]["slug"], "web");
        assert_eq!(body["sender"]["name"], "kitesync");
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
