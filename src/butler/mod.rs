//! The sink: BuildButler.

pub(crate) mod client;
pub(crate) mod webhook;
pub(crate) mod wire;

pub(crate) use client::{SendError, Sink};
