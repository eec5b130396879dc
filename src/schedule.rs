//! Time-driven work: the service's jobs and the daemon loop that fires backups and drills on
//! their cron expressions (`crate::cron`) in the school's time zone, catches up runs missed
//! while the NAS was off, and never runs two jobs on one repository at once.

pub mod daemon;
pub mod service;
