//! Webhook-relay mode: each finished build is POSTed to `/webhooks/buildkite` exactly as
//! Buildkite's own `build.finished` webhook would send it.

mod common;

use common::*;
use kitesync_fakes::data;

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
