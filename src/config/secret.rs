//! Secrets (the Buildkite token, BuildButler's API key): never printed, read from any scalar.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// A secret (API token or key). It never prints: `Debug` shows `***`, and it is read from any
/// scalar, so that a token that happens to look like a number is not echoed in a type error.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_json::Value;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Secret(s)),
            v @ (Value::Number(_) | Value::Bool(_)) => Ok(Secret(v.to_string())),
            _ => Err(serde::de::Error::custom("must be a string")),
        }
    }
}

/// The path of a secret file. Anything but a string is refused without being echoed: it may
/// be the secret itself, pasted where its path belongs.
pub(super) fn secret_path<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<PathBuf>, D::Error> {
    match serde_json::Value::deserialize(d) {
        Ok(serde_json::Value::String(s)) => Ok(Some(PathBuf::from(s))),
        _ => Err(serde::de::Error::custom(
            "must be the path of a file, as a string",
        )),
    }
}

impl Secret {
    /// Wraps a secret value.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for an HTTP header. Never log the result.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// A fingerprint that tells one secret from another without revealing it: 16 hex digits
    /// of a SHA-256 of the secret (domain-separated), for the state database.
    pub(crate) fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"kitesync secret fingerprint\0")
            .chain_update(self.0.as_bytes())
            .finalize();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
