//! HTTP clients as the network needs them: timeouts, extra CA certificates, and proxies.
//!
//! TLS (rustls with the ring crypto provider, via rustls-platform-verifier) trusts the
//! system's certificate store, read when a client is built: the files named by
//! `SSL_CERT_FILE` and/or `SSL_CERT_DIR` when either is set (they then replace the store),
//! else the distribution's bundle and `/etc/ssl/certs` (found by openssl-probe). There are
//! no built-in roots: with no store at all, building a client fails unless `ca_file` is
//! given. The certificates of `ca_file` are trusted besides the system's.
//!
//! Proxies come from the environment, as everywhere: `HTTPS_PROXY` (and `HTTP_PROXY`,
//! `ALL_PROXY`) with `NO_PROXY` exceptions, which reqwest reads by itself.

use std::error::Error;
use std::path::Path;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{AsHeaderName, HeaderMap};
use reqwest::ClientBuilder;

/// A client builder with kitesync's user agent, the timeouts, no automatic redirects, and
/// the CA certificates of `ca_file` trusted besides the system's.
pub(crate) fn client(
    timeout: Duration,
    connect_timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<ClientBuilder, String> {
    // reqwest is built without a crypto provider of its own (`rustls-no-provider`): it uses
    // the process default, which is ring. Err only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("kitesync/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

/// The header `name` of an answer, if present and text.
pub(crate) fn header(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name)?.to_str().ok()
}

/// The wait before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped, then
/// scaled by a random factor in [0.5, 1.0] so that many clients do not retry in step.
pub(crate) fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(cap).mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Why a body was not read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than the cap, declared (`Content-Length`) or sent: the rest was not read.
    TooLarge { cap: u64 },
    /// The connection failed mid-answer.
    Cut(reqwest::Error),
}

/// Reads `response`'s body in chunks, refusing more than `cap` bytes: a `Content-Length`
/// over the cap is refused before any of it is read, and a body that goes on past the cap
/// (an endless stream, say) is dropped there.
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
    cap: u64,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > cap) {
        return Err(BodyError::TooLarge { cap });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Cut)? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most the first `cap` bytes of a body that only explains an error: the rest is never
/// read, and a connection that fails mid-body leaves what came before.
pub(crate) async fn read_prefix(response: &mut reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        let Ok(Some(chunk)) = response.chunk().await else {
            break;
        };
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    body
}

/// The start of `text` as an error message may quote it: whitespace runs (newlines
/// included) as one space, at most `max_chars` characters, `…` where it was cut.
pub(crate) fn snippet(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut words = text.split_whitespace();
    let mut count = 0;
    for word in words.by_ref() {
        let room = max_chars.saturating_sub(count + usize::from(!out.is_empty()));
        if word.chars().count() > room {
            if !out.is_empty() && room > 0 {
                out.push(' ');
            }
            out.extend(word.chars().take(room));
            out.push('…');
            return out;
        }
        if !out.is_empty() {
            out.push(' ');
            count += 1;
        }
        out.push_str(word);
        count += word.chars().count();
    }
    out
}

/// A size as people read it: `32 MiB`, `64 KiB`, `1000 bytes`.
pub(crate) fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    match bytes {
        b if b >= KIB * KIB && b % (KIB * KIB) == 0 => format!("{} MiB", b / (KIB * KIB)),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

/// A transport error in one line, with its root cause ("connection refused", "operation
/// timed out") and without the URL's query.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection dropped mid-answer"
    } else if e.is_builder() {
        "cannot set up the HTTP client (TLS needs a CA store: ca-certificates, or SSL_CERT_FILE)"
    } else {
        "request failed"
    };
    let root = std::iter::successors(Some(e as &dyn Error), |&e| e.source()).last();
    let said = match root.map(ToString::to_string) {
        Some(cause) if cause != e.to_string() => format!("{what}: {cause}"),
        _ => what.to_string(),
    };
    let proxy = e.url().filter(|_| e.is_connect()).and_then(proxy_variable);
    match proxy {
        Some(var) => format!(
            "{said} ({var} is set: if this host is reached through that proxy, check the \
             proxy's address, credentials and allow list; NO_PROXY names hosts reached directly)"
        ),
        None => said,
    }
}

/// The environment variable naming a proxy for `url`'s scheme, when one is set (never its
/// value, which may hold credentials).
fn proxy_variable(url: &reqwest::Url) -> Option<&'static str> {
    let names: &[&'static str] = match url.scheme() {
        "https" => &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"],
        "http" => &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"],
        _ => &[],
    };
    names
        .iter()
        .copied()
        .find(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for _ in 0..50 {
            let first = backoff(1, base, cap);
            assert!(
                first >= Duration::from_millis(50) && first <= base,
                "{first:?}"
            );
            let third = backoff(3, base, cap);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(backoff(40, base, cap) <= cap);
        }
    }

    #[test]
    fn snippets_are_short_and_on_one_line() {
        assert_eq!(
            snippet("  <html>\n  <title>Access denied</title> ", 100),
            "<html> <title>Access denied</title>"
        );
        assert_eq!(snippet("one two three", 7), "one two…");
        assert_eq!(snippet("one two three", 5), "one t…");
        assert_eq!(
            snippet(&"x".repeat(10_000), 10),
            format!("{}…", "x".repeat(10))
        );
        assert_eq!(snippet("héllo wörld", 8), "héllo wö…");
        assert_eq!(snippet("", 8), "");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(32 * 1024 * 1024), "32 MiB");
        assert_eq!(size(64 * 1024), "64 KiB");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(size(1024 * 1024 + 1024), "1025 KiB");
    }
}
