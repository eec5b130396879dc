//! The journal: one row per run (backup, drill, check, and later prune and evidence) and per
//! annotation, in SQLite in the state directory, each row hash-chained to the one before it so
//! that an edit anywhere shows. Every row is also mirrored, sealed, into the repository of its
//! run (`journal/<host>/<n>-<id>`), so that the history survives the loss of the NAS and
//! `journal verify` can hold the local chain against it.

mod mirror;
pub mod schema;
mod store;

pub use mirror::{MirrorCheck, decode_mirror, load_mirror, mirror_entry, verify_mirror};
pub use store::{
    Annotation, Details, Entry, GENESIS, Journal, JournalError, Outcome, Record, RowId, RunDetails,
    RunKind, RunRecord, Trigger, VerifyReport, chain_hash as store_chain_hash,
};

/// The hash before the first row, as an owned string.
pub fn store_genesis() -> String {
    GENESIS.to_string()
}
