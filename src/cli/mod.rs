//! The commands: the command line, `check`, `status`, `--once`, their exit codes and progress.

pub mod check;
pub mod command;
pub mod exit;
pub mod oneshot;
pub(crate) mod progress;
pub(crate) mod status;
