//! The task runner and the daemon: its schedule, riding out outages.

pub mod daemon;
pub mod outage;
pub mod ride_out;
pub mod runner;
pub mod schedule;
