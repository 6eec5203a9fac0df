//! kitesync behind a real forward proxy (`tinyproxy`, from Debian, on loopback): Buildkite's
//! API over TLS is reached only through `HTTPS_PROXY` (CONNECT), the artifact storage host
//! (TLS too, as S3 is: with an https API kitesync refuses plain http storage) the same way
//! without the token, and BuildButler directly (`NO_PROXY`); the proxy's credentials never
//! appear in what kitesync prints.

mod common;

use std::process::Stdio;

use common::*;
use kitesync_fakes::FakeBuildkite;

const PROXY_USER: &str = "kite";
const PROXY_PASSWORD: &str = "pr0xy-S3CRET-pass";

/// tinyproxy in the foreground on a free loopback port, logging every request to stderr;
/// with basic auth when `auth`.
struct Proxy {
    port: u16,
    log: std::path::PathBuf,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Proxy {
    async fn start(auth: bool) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\nLogLevel Connect\n"
        );
        if auth {
            conf.push_str(&format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}\n"));
        }
        // Run as root (CI), tinyproxy drops to an unprivileged user.
        conf.push_str("User nobody\nGroup nogroup\n");
        let path = dir.path().join("tinyproxy.conf");
        std::fs::write(&path, conf).expect("tinyproxy.conf");
        // In the foreground (-d), tinyproxy logs to stdout.
        let log = dir.path().join("tinyproxy.log");
        let child = tokio::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tinyproxy starts");
        until_async(|| async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Proxy {
            port,
            log,
            _child: child,
            _dir: dir,
        }
    }

    /// What the proxy logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The proxy URL, with the credentials when given.
    fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }
}

/// Buildkite over TLS as `https://localhost:PORT` and its storage host as `localhost` (both
/// proxied), BuildButler at 127.0.0.1 (not proxied), three builds, one with a JUnit report.
async fn behind(proxy: &Proxy, credentials: Option<(&str, &str)>) -> Harness {
    let bk = FakeBuildkite::start_tls(ORG, TOKEN).await;
    let mut h = Harness::with_buildkite(bk).await;
    let ca = h.dir.path().join("buildkite-ca.pem");
    std::fs::write(&ca, h.bk.ca_pem.as_deref().expect("a TLS fake")).expect("write CA");
    let api = h.bk.url.replace("127.0.0.1", "localhost");
    h.set_env("KITESYNC_BUILDKITE__API_URL", &api);
    h.set_env("KITESYNC_BUILDKITE__CA_FILE", &ca.display().to_string());
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[junit/*.xml]");
    h.bk.set_storage_host("localhost");
    h.bk.set_builds(recent_builds(3));
    let report =
        br#"<testsuite name="unit" tests="1"><testcase classname="a" name="b"/></testsuite>"#;
    h.bk.set_artifacts(2, vec![("junit/unit.xml".into(), report.to_vec())]);
    let url = proxy.url(credentials);
    h.set_env("HTTPS_PROXY", &url);
    h.set_env("HTTP_PROXY", &url);
    h.set_env("NO_PROXY", "127.0.0.1");
    h
}

fn port_of(url: &str) -> &str {
    url.rsplit(':').next().unwrap_or_default()
}

async fn everything_goes_where_it_should(auth: bool) {
    if !tool_available("tinyproxy", "tinyproxy") {
        return;
    }
    let proxy = Proxy::start(auth).await;
    let h = behind(&proxy, auth.then_some((PROXY_USER, PROXY_PASSWORD))).await;
    let run = h.once_ok().await;
    assert_eq!(h.bb.builds().len(), 3);
    let uris: Vec<String> = h.bk.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        h.bb.suites().len(),
        1,
        "{}\n{}\n{uris:?}",
        run.output(),
        proxy.log()
    );
    assert!(!run.output().contains(PROXY_PASSWORD), "{}", run.output());

    let log = proxy.log();
    let api_port = port_of(&h.bk.url);
    // Buildkite only through the proxy, as a CONNECT tunnel: the fake saw every request
    // the proxy passed on, and the proxy saw no plain request for the API.
    assert!(
        log.contains(&format!("CONNECT localhost:{api_port} ")),
        "{log}"
    );
    assert!(
        !log.contains(&format!("http://localhost:{api_port}/")),
        "{log}"
    );
    assert!(h.bk_requests() >= 3);
    // The storage host through the proxy too (a tunnel to its own port), without the token.
    let storage_tunnel = log.lines().any(|l| {
        l.contains("CONNECT localhost:") && !l.contains(&format!("CONNECT localhost:{api_port} "))
    });
    assert!(storage_tunnel, "{log}");
    let auths = h.bk.storage_authorizations();
    assert_eq!(auths.len(), 1);
    assert!(auths.iter().all(Option::is_none), "{auths:?}");
    // BuildButler directly (NO_PROXY).
    assert!(!log.contains(port_of(&h.bb.url)), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_proxy_with_basic_auth() {
    everything_goes_where_it_should(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_proxy_without_auth() {
    everything_goes_where_it_should(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_refusing_the_credentials_is_named_without_echoing_them() {
    if !tool_available("tinyproxy", "tinyproxy") {
        return;
    }
    let proxy = Proxy::start(true).await;
    let wrong = "wr0ng-PASSWORD-x";
    let h = behind(&proxy, Some((PROXY_USER, wrong))).await;
    let run = h.run(&["--once"]).await;
    assert_ne!(run.code, 0, "{}", run.output());
    assert!(h.bb.builds().is_empty());
    let out = run.output();
    assert!(
        !out.contains(wrong) && !out.contains(PROXY_PASSWORD),
        "{out}"
    );
    assert!(out.contains("HTTPS_PROXY is set"), "{out}");
}
