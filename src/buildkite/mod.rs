//! The source: Buildkite's REST API.

pub mod budget;
pub mod client;
pub mod model;
pub mod pace;
pub mod storage;

pub use budget::Budget;
pub use client::{BuildQuery, Client, SourceError};
pub use model::{Agent, Artifact, Build};
