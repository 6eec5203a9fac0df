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

pub use file::ConfigError;
pub use lint::Ignored;
pub use schema::{
    BuildkiteConfig, ButlerConfig, Config, EnrichConfig, ListArtifacts, LogsConfig, MetricsConfig,
    Mode, ScheduleConfig, StatusCase, TestsConfig,
};
pub use secret::Secret;
pub use validate::redacted;

#[cfg(test)]
mod tests;
