//! Networks behind firewalls: a corporate CA for a self-hosted BuildButler, and proxies
//! from the environment (HTTPS_PROXY/HTTP_PROXY with NO_PROXY).

mod common;

use common::*;
use kitesync_fakes::{data, FakeButler};

/// `builds` builds and a BuildButler behind TLS with a CA of its own, after a `--once` that
/// found its certificate refused: nothing delivered, the reason given.
async fn refused_without_its_ca(builds: u64) -> (Harness, FakeButler) {
    let mut h = Harness::start().await;
    let tls = FakeButler::start_tls(API_KEY).await;
    h.bk.set_builds(recent_builds(builds));
    h.set_env("KITESYNC_BUILDBUTLER__URL", &tls.url);
    h.set_env("KITESYNC_BUILDBUTLER__RETRY_WINDOW_SECONDS", "0");
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
    assert!(tls.builds().is_empty());
    (h, tls)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_buildbutler_with_its_own_ca_is_trusted_through_ca_file() {
    let (mut h, tls) = refused_without_its_ca(4).await;

    let ca = h.dir.path().join("corporate-ca.pem");
    std::fs::write(&ca, tls.ca_pem.as_deref().expect("a TLS fake has a CA")).expect("write CA");
    h.set_env("KITESYNC_BUILDBUTLER__CA_FILE", &ca.display().to_string());
    until_retries_due(&h).await; // the retry backoff
    h.once_ok().await;
    assert_eq!(tls.builds().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_buildbutler_whose_ca_is_in_the_system_store_is_trusted_without_ca_file() {
    // With the machine's own store (whatever SSL_CERT_FILE/SSL_CERT_DIR this process has, or
    // the distribution's bundle), the fake's CA is unknown.
    let (mut h, tls) = refused_without_its_ca(3).await;

    // The standard variable names the store (here holding only the fake's CA); no ca_file.
    let store = h.dir.path().join("system-store.pem");
    std::fs::write(&store, tls.ca_pem.as_deref().expect("a TLS fake has a CA")).expect("write");
    h.set_env("SSL_CERT_FILE", &store.display().to_string());
    h.set_env("SSL_CERT_DIR", ""); // an inherited directory would be read too
    until_retries_due(&h).await; // the retry backoff
    h.once_ok().await;
    assert_eq!(tls.builds().len(), 3);

    // A ca_file adds to that store; it does not replace it.
    let other = FakeButler::start_tls(API_KEY).await;
    let ca = h.dir.path().join("other-ca.pem");
    std::fs::write(&ca, other.ca_pem.as_deref().expect("a TLS fake has a CA")).expect("write");
    h.set_env("KITESYNC_BUILDBUTLER__CA_FILE", &ca.display().to_string());
    let mut builds = recent_builds(3);
    builds.push(data::just_finished(ORG, 4, "web"));
    h.bk.set_builds(builds);
    h.once_ok().await;
    assert_eq!(tls.builds().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn buildkite_is_reached_through_the_proxy_from_the_environment() {
    let mut h = Harness::start().await;
    h.bk.set_builds(recent_builds(3));
    // A name that does not resolve: only the proxy (here the fake itself) can answer it.
    h.set_env("KITESYNC_BUILDKITE__API_URL", "http://buildkite.invalid");
    h.set_env("http_proxy", &h.bk.url.clone());
    h.set_env("no_proxy", "127.0.0.1");
    h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 3);
    assert!(h
        .bk
        .requests()
        .iter()
        .all(|r| r.uri.starts_with("http://buildkite.invalid/v2/")));

    // NO_PROXY is honoured too: then the name must resolve, and does not.
    h.set_env("no_proxy", "127.0.0.1,buildkite.invalid");
    h.set_env("KITESYNC_BUILDKITE__TIMEOUT_SECONDS", "2");
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(run.stderr.contains("buildkite.invalid"), "{}", run.stderr);
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").expect("write");
    let config = dir.path().join("kitesync.toml");
    std::fs::write(
        &config,
        format!(
            "[buildkite]\norganization = \"acme\"\ntoken = \"t\"\n\n[buildbutler]\nurl = \"https://bb.example\"\napi_key = \"k\"\nca_file = \"{}\"\n",
            ca.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kitesync"))
        .args(["--once", "--config"])
        .arg(&config)
        .output()
        .expect("ran");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 8: [buildbutler] ca_file"), "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
}
