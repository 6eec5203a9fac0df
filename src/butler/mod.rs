//! The sink: BuildButler.

pub mod client;
pub mod webhook;
pub mod wire;

pub use client::{SendError, Sink};
