//! Time-driven work: cron expressions in the school's time zone, and (with the service) the
//! daemon loop that fires backups and drills, catches up runs missed while the NAS was off,
//! and never runs two jobs on one repository at once.

pub mod cron;
pub mod daemon;
pub mod service;
