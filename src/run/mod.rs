//! The task runner and the daemon: its schedule, riding out outages.

pub(crate) mod daemon;
pub(crate) mod outage;
pub(crate) mod ride_out;
pub(crate) mod runner;
pub(crate) mod schedule;
