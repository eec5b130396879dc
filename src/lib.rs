//! vouch: backups for school file servers that prove they restore.
//!
//! The library holds every capability; `main.rs` only runs the command line. The modules are
//! the crate's own (docs/ARCHITECTURE.md maps them); what others may use is the list of
//! re-exports below, and nothing else: the jobs and their options and reports at the top, and
//! four groups beside them (the repository format, the records vouch keeps, what an auditor
//! is given, the service).

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

mod backup;
mod cli;
mod clock;
mod config;
mod cron;
mod doctor;
mod evidence;
mod journal;
mod meta;
mod notify;
mod prune;
mod repo;
mod restore;
mod retention;
mod schedule;
mod storage;
mod sys;
mod units;
mod verify;

/// The command line: `main.rs` exits with what it returns.
pub use cli::main;

// Repositories, their storage and their clock.
pub use clock::{Clock, ManualClock, SystemClock};
pub use repo::crypto::Secret;
pub use repo::{BlobDecoder, InitOptions, LockMode, RepoError, Repository, TreeLoader};
pub use storage::{
    Fault, FaultyStore, RepoUrl, Retention, RetentionMode, S3Options, StorageError, Store,
};

// The jobs, with their options and reports.
pub use backup::{BackupError, BackupOptions, BackupProgress, BackupReport, backup};
pub use prune::{PruneOptions, PruneReport, prune};
pub use restore::{RestoreError, RestoreOptions, RestoreProgress, RestoreReport, restore};
pub use retention::{Count, ForgetOptions, Hold, Policy, forget, hold};
pub use verify::{CheckOptions, CheckReport, ReadData, check};

/// The repository format as docs/FORMAT.md specifies it: keys, ids, the seal, packs and their
/// headers, index, trees, snapshots, locks. For tools that read a repository, and for the
/// tests that hold vouch to its specification.
pub mod format {
    pub use crate::repo::chunker::Chunker;
    pub use crate::repo::crypto::{Keys, Kind, MasterSecret};
    pub use crate::repo::format::{BlobKind, index, lock, pack, snapshot, tree};
    pub use crate::repo::ids::{BlobId, PackId, SnapshotId};
    pub use crate::repo::index::BlobLocation;
    pub use crate::repo::packer::pack_key;
}

/// The records vouch keeps: the hash-chained journal (and its copies in the repository), the
/// test restores' reports, the verification ledger.
pub mod records {
    pub use crate::journal::schema::VERSION as JOURNAL_VERSION;
    pub use crate::journal::{
        Entry, Journal, Outcome, Record, RowId, RunKind, Trigger, decode_mirror, store_chain_hash,
    };
    pub use crate::verify::drill::DrillReport;
    pub use crate::verify::ledger::LedgerRecord;
}

/// What an auditor is given and checks: the signed evidence pack and its keys.
pub mod audit {
    pub use crate::evidence::sign::{load_public_key, load_secret_key, public_of};
    pub use crate::evidence::{Evidence, VerifyOutcome, verify_pack, write_pack};
}

/// The service: vouch.toml, the daemon's timetable, the jobs it runs, the drill worker.
pub mod service {
    pub use crate::config::{Config, Plan, parse_duration, parse_size};
    pub use crate::cron::Cron;
    pub use crate::schedule::daemon::{due, jobs};
    pub use crate::schedule::service::Service;
    pub use crate::sys::hostname;
    pub use crate::verify::drill::set_worker_program;
}
