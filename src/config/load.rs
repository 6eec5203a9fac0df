//! Loading: built-in defaults, then the TOML file, then `KITESYNC_SECTION__KEY` environment
//! variables (figment); then the secrets are read and everything validated.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use super::file::{ConfigError, ConfigFile};
use super::schema::{BuildkiteConfig, ButlerConfig, Config, FileConfig, ENV_PREFIX};
use super::secret::Secret;
use super::validate::validate;

/// The top-level keys and sections of the config.
const SECTIONS: [&str; 8] = [
    "metrics",
    "state_path",
    "buildkite",
    "buildbutler",
    "schedule",
    "tests",
    "logs",
    "enrich",
];

impl Config {
    /// Loads defaults, then `path` (which must exist), then `KITESYNC_*` variables; reads the
    /// secret files; validates everything.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = ConfigFile::read(path)?;
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                // Only kitesync's own sections: an unrelated KITESYNC_* variable is not
                // a typo in the config. Typos inside a section still are.
                .filter(|k| {
                    let section = k.as_str().split('.').next().unwrap_or("");
                    SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
                }),
        );
        let mut raw: FileConfig = figment.extract().map_err(|e| file.explain(&e))?;
        let (bk, bb) = (&mut raw.buildkite, &mut raw.buildbutler);
        let token = read_secret(&file, "buildkite", "token", bk.token.take(), &bk.token_file)?;
        let api_key = read_secret(
            &file,
            "buildbutler",
            "api_key",
            bb.api_key.take(),
            &bb.api_key_file,
        )?;
        let junit_globs = validate(&raw, &file)?;
        // Relative to the config file, not to wherever cron or systemd happens to start (an
        // absolute state_path stays as it is).
        let state_path = match path.parent() {
            Some(dir) => dir.join(&raw.state_path),
            None => raw.state_path,
        };
        Ok(Config {
            state_path,
            buildkite: with_token(raw.buildkite, token),
            buildbutler: with_api_key(raw.buildbutler, api_key),
            schedule: raw.schedule,
            tests: raw.tests,
            logs: raw.logs,
            enrich: raw.enrich,
            metrics: raw.metrics,
            junit_globs,
        })
    }
}

/// The secret `[section] key`: from the config value or from the file `from_file`, never
/// both, never empty.
fn read_secret(
    file: &ConfigFile,
    section: &str,
    key: &str,
    value: Option<Secret>,
    from_file: &Option<PathBuf>,
) -> Result<Secret, ConfigError> {
    let file_key = format!("{key}_file");
    let (secret, which) = match (value, from_file) {
        (Some(_), Some(_)) => {
            let problem = format!("and `{file_key}` are both set: keep only one");
            return Err(file.error(section, key, &problem));
        }
        (Some(v), None) => (v, key),
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| file.unreadable_secret_file(section, &file_key, p, &e))?;
            (Secret::new(text.trim()), file_key.as_str())
        }
        (None, None) => {
            let var = format!("{ENV_PREFIX}{section}__{key}").to_uppercase();
            let problem = format!("is missing: set `{key}` or `{file_key}` (or {var})");
            return Err(file.error(section, key, &problem));
        }
    };
    if secret.expose().trim().is_empty() {
        return Err(file.error(section, which, "is empty"));
    }
    Ok(secret)
}

// The sections with their secret read: the same fields, another type.

#[rustfmt::skip]
fn with_token(bk: BuildkiteConfig<Option<Secret>>, token: Secret) -> BuildkiteConfig {
    let BuildkiteConfig {
        organization, api_url, token: _, token_file, requests_per_minute, reserve_percent,
        pipelines, branches, overlap_seconds, first_poll_lookback_minutes, timeout_seconds,
        connect_timeout_seconds, ca_file, refused_retry_seconds,
    } = bk;
    BuildkiteConfig {
        organization, api_url, token, token_file, requests_per_minute, reserve_percent,
        pipelines, branches, overlap_seconds, first_poll_lookback_minutes, timeout_seconds,
        connect_timeout_seconds, ca_file, refused_retry_seconds,
    }
}

#[rustfmt::skip]
fn with_api_key(bb: ButlerConfig<Option<Secret>>, api_key: Secret) -> ButlerConfig {
    let ButlerConfig {
        url, api_key: _, api_key_file, mode, ingest_prefix, status_case, concurrency,
        timeout_seconds, webhook_signature, webhook_send_buildkite_token,
        connect_timeout_seconds, ca_file, retry_window_seconds,
    } = bb;
    ButlerConfig {
        url, api_key, api_key_file, mode, ingest_prefix, status_case, concurrency,
        timeout_seconds, webhook_signature, webhook_send_buildkite_token,
        connect_timeout_seconds, ca_file, retry_window_seconds,
    }
}
