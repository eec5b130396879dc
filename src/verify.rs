//! Verification: repository checks (structure, and re-reading stored data), and later the
//! test restores ("drills"). Findings are data: a check that finds damage returns a report
//! that lists it; `Err` means the check could not run.

mod check;
pub mod drill;
pub mod finding;
pub mod ledger;

pub use check::{CheckOptions, CheckReport, ReadData, check};
pub use finding::Severity;
