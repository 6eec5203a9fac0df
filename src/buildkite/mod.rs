//! The source: Buildkite's REST API.

pub mod budget;
pub mod client;
pub mod model;
pub(crate) mod pace;
pub(crate) mod storage;

pub(crate) use budget::Budget;
pub(crate) use client::{BuildQuery, Client, SourceError};
pub use model::{Agent, Artifact, Build};
