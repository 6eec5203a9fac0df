//! Validation: what the types cannot say (required values, URLs, ranges, readable files,
//! globs), each refusal naming the key and its line.

use globset::{Glob, GlobSet, GlobSetBuilder};
use url::Url;

use super::file::{ConfigError, ConfigFile};
use super::schema::{FileConfig, Mode};

/// The packaged config's placeholders (`config.packaged.toml`), refused by name: a config
/// nobody filled in fails with a plain error before any request.
const PLACEHOLDER_ORGANIZATION: &str = "<your-organization-slug>";
/// The packaged `[buildbutler] url`'s host (under `.invalid`, which never resolves).
const PLACEHOLDER_HOST: &str = "your-buildbutler.invalid";

/// Checks every value the types do not: required values, URLs, ranges, files, globs. Returns
/// the JUnit globs, compiled.
pub(super) fn validate(config: &FileConfig, file: &ConfigFile) -> Result<GlobSet, ConfigError> {
    let (bk, bb) = (&config.buildkite, &config.buildbutler);
    if bk.organization.trim().is_empty() {
        let problem =
            "is missing: set it to your organization's slug (as in https://buildkite.com/<slug>)";
        return Err(file.error("buildkite", "organization", problem));
    }
    if bk.organization == PLACEHOLDER_ORGANIZATION {
        let problem = format!(
            "= \"{PLACEHOLDER_ORGANIZATION}\" is the packaged placeholder: set it to your \
             organization's slug (as in https://buildkite.com/<slug>)"
        );
        return Err(file.error("buildkite", "organization", &problem));
    }
    check_http_url(file, "buildkite", "api_url", &bk.api_url)?;
    if bk.api_url.path().trim_end_matches('/').ends_with("/v2") {
        let problem = "must be the base URL without /v2, e.g. \"https://api.buildkite.com\"";
        return Err(file.error("buildkite", "api_url", problem));
    }
    check_http_url(file, "buildbutler", "url", &bb.url)?;
    if bb.url.host_str() == Some(PLACEHOLDER_HOST) {
        let problem = format!(
            "= \"{}\" is the packaged placeholder: set it to your BuildButler server's URL",
            redacted(&bb.url)
        );
        return Err(file.error("buildbutler", "url", &problem));
    }
    let sends_token = bb.mode == Mode::Webhook && bb.webhook_send_buildkite_token;
    if sends_token && bb.url.scheme() == "http" && !is_loopback(&bb.url) {
        let host = bb.url.host_str().unwrap_or_default();
        let problem = format!(
            "= true with a plain http:// [buildbutler] url would send your Buildkite token in clear \
             text to {host} (and into the access log of every proxy on the way): use an https:// \
             url, or turn it off (http:// is allowed only to a loopback host)"
        );
        return Err(file.error("buildbutler", "webhook_send_buildkite_token", &problem));
    }
    if !bb.ingest_prefix.is_empty() && !bb.ingest_prefix.starts_with('/') {
        let problem = "must start with '/', e.g. \"/api/v1/ingest\"";
        return Err(file.error("buildbutler", "ingest_prefix", problem));
    }
    #[rustfmt::skip]
    let ranges = [
        ("buildkite", "requests_per_minute", u64::from(bk.requests_per_minute), 1, 10_000),
        ("buildkite", "reserve_percent", u64::from(bk.reserve_percent), 0, 90),
        ("buildkite", "overlap_seconds", bk.overlap_seconds, 10, 86_400),
        ("buildkite", "first_poll_lookback_minutes", bk.first_poll_lookback_minutes, 1, 525_600),
        ("buildkite", "timeout_seconds", bk.timeout_seconds, 1, 3_600),
        ("buildkite", "connect_timeout_seconds", bk.connect_timeout_seconds, 1, 600),
        ("buildkite", "refused_retry_seconds", bk.refused_retry_seconds, 1, 3_600),
        ("buildbutler", "connect_timeout_seconds", bb.connect_timeout_seconds, 1, 600),
        ("buildbutler", "concurrency", bb.concurrency as u64, 1, 256),
        ("buildbutler", "timeout_seconds", bb.timeout_seconds, 1, 3_600),
        ("buildbutler", "retry_window_seconds", bb.retry_window_seconds, 0, 86_400),
        ("buildbutler", "ingest_prefix", bb.ingest_prefix.len() as u64, 0, 200),
        ("tests", "max_file_bytes", config.tests.max_file_bytes, 1, 1 << 30),
        ("logs", "max_bytes", config.logs.max_bytes, 1, 1 << 30),
        ("enrich", "max_share_percent", u64::from(config.enrich.max_share_percent), 1, 100),
        ("enrich", "max_files_per_build", config.enrich.max_files_per_build, 1, 100_000),
        ("enrich", "max_bytes_per_build", config.enrich.max_bytes_per_build, 1, 1 << 40),
    ];
    for (section, key, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            let problem = format!("= {value} is out of range: it must be from {min} to {max}");
            return Err(file.error(section, key, &problem));
        }
    }
    for (section, ca) in [("buildkite", &bk.ca_file), ("buildbutler", &bb.ca_file)] {
        let Some(path) = ca else { continue };
        let pem = std::fs::read(path).map_err(|e| file.unreadable(section, "ca_file", path, &e))?;
        if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) {
            let problem = format!("names {}, which holds no PEM certificate", path.display());
            return Err(file.error(section, "ca_file", &problem));
        }
    }
    let mut globs = GlobSetBuilder::new();
    for glob in &config.tests.junit_artifact_globs {
        let compiled = Glob::new(glob).map_err(|e| {
            let problem = format!("has an invalid glob {glob:?}: {}", e.kind());
            file.error("tests", "junit_artifact_globs", &problem)
        })?;
        globs.add(compiled);
    }
    let globs = globs.build().map_err(|e| {
        let problem = format!("cannot be compiled: {}", e.kind());
        file.error("tests", "junit_artifact_globs", &problem)
    })?;
    let listen = &config.metrics.listen;
    if listen.parse::<std::net::SocketAddr>().is_err() {
        let problem = format!("= {listen:?} is not an address and port, e.g. \"127.0.0.1:9187\"");
        return Err(file.error("metrics", "listen", &problem));
    }
    Ok(globs)
}

/// Refuses anything but an http:// or https:// URL with a host.
fn check_http_url(
    file: &ConfigFile,
    section: &str,
    key: &str,
    url: &Url,
) -> Result<(), ConfigError> {
    if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
        return Ok(());
    }
    let problem = format!("= \"{}\" is not an http:// or https:// URL", redacted(url));
    Err(file.error(section, key, &problem))
}

/// True when `url`'s host is this machine: `localhost` or a loopback address.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// A URL as it may be shown: without a password.
pub(crate) fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}
