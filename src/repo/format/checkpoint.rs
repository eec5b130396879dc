//! `checkpoints/<id>`: one interval of a backup that has not stored its snapshot yet. Each
//! lists the packs stored in that interval (an index file lists them too); together the
//! checkpoints of a source say what an unfinished backup has stored, so that prune keeps it
//! for the backup that resumes and the service can show how far an initial seed has got.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::repo::ids::{IndexId, PackId};

/// How long the checkpoints of a backup that stopped keep its packs from prune. A school's
/// first upload is paused and resumed night after night; a NAS switched off over a holiday
/// resumes when it is back. After this, prune treats the packs like any others no snapshot
/// uses, and removes the checkpoints.
pub const RESUMABLE_FOR: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The backup that wrote it: a random id, one per run.
    pub backup: String,
    /// 1 for the run's first checkpoint, then 2, 3…
    pub seq: u32,
    pub host: String,
    pub paths: Vec<String>,
    /// When the run started, and when this checkpoint was written.
    #[serde(with = "super::rfc3339")]
    pub started: Timestamp,
    #[serde(with = "super::rfc3339")]
    pub time: Timestamp,
    /// The packs stored since the run's previous checkpoint.
    pub packs: Vec<PackId>,
    /// The index file that lists them (written just after this checkpoint).
    pub index: Option<IndexId>,
    /// Bytes stored for this source by every unfinished run so far, this one included.
    pub stored_bytes: u64,
    /// Bytes of the source's files read and stored (or found already stored) so far: the
    /// furthest any run of the source has got.
    pub source_bytes_done: u64,
    /// The size of the source's files, when the run has measured it.
    pub source_bytes_total: Option<u64>,
}

impl Checkpoint {
    pub fn same_source(&self, host: &str, paths: &[String]) -> bool {
        super::same_source(&self.host, &self.paths, host, paths)
    }

    /// Whether prune must still keep its packs, judged at `now`.
    pub fn is_resumable(&self, now: Timestamp) -> bool {
        now.duration_since(self.time) < RESUMABLE_FOR
    }
}
