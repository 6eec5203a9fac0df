//! Configuration: built-in defaults, then the TOML file, then `KITESYNC_SECTION__KEY`
//! environment variables (figment), validated once at start-up into a [`Config`] whose
//! readers need not check again.
//!
//! Every error is one sentence naming the file, the key and (when the key is in the file)
//! its line, so an operator can fix it without reading the source.

mod file;
mod lint;
mod load;
mod schema;
mod secret;
mod validate;

pub(crate) use file::ConfigError;
pub use schema::{
    BuildkiteConfig, ButlerConfig, Config, EnrichConfig, ListArtifacts, LogsConfig, MetricsConfig,
    Mode, ScheduleConfig, StatusCase, TestsConfig,
};
pub(crate) use secret::Secret;
pub(crate) use validate::redacted;

#[cfg(test)]
mod tests;
