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

use std::path::Path;
use std::time::Duration;

/// A client builder with kitesync's user agent, the timeouts, no automatic redirects, and
/// the CA certificates of `ca_file` trusted besides the system's.
pub fn client(
    timeout: Duration,
    connect_timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder, String> {
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
