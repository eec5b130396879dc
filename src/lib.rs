//! vouch: backups for school file servers that prove they restore.
//!
//! The library holds every capability; `main.rs` only parses the command line. The public
//! surface is the list of re-exports below.

/// `println!` that never panics: a closed standard output (`vouch … | head`, a cron job whose
/// mail pipe is gone) must not turn finished work into a crash. A closed pipe is ignored;
/// any other write error (a full disk under `--json > file`) is remembered, and the command
/// then says so and exits 1 (`sys::output_error`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            crate::sys::output_failed(&e);
        }
    }};
}

/// `eprintln!` that never panics: where the errors go cannot be told of its own failure.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub mod clock;
pub mod config;
pub mod cron;
pub mod doctor;
pub mod evidence;
pub mod journal;
pub mod notify;
pub mod prune;
pub mod repo;
pub mod retention;
pub mod schedule;
pub mod storage;
pub mod sys;
pub mod units;

pub use clock::{Clock, ManualClock, SystemClock};
pub use repo::crypto::Secret;
pub use repo::{InitOptions, LockMode, RepoError, Repository};
pub use storage::{RepoUrl, Retention, RetentionMode, S3Options, StorageError, Store};
pub mod backup;
pub use backup::{BackupError, BackupOptions, BackupProgress, BackupReport, backup};
pub mod restore;
pub use restore::{RestoreError, RestoreOptions, RestoreProgress, RestoreReport, restore};
pub mod verify;
pub use verify::{CheckOptions, CheckReport, ReadData, check};
pub mod cli;
