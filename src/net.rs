//! HTTP clients as the network needs them: timeouts, extra CA certificates, and proxies.
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
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}
