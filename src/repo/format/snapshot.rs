//! `snapshots/<id>`: one backup: when, of what, by whom, labelled how, and its root tree.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::repo::ids::{BlobId, SnapshotId};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    #[serde(with = "super::rfc3339")]
    pub time: Timestamp,
    pub host: String,
    pub username: String,
    /// The backed-up paths, absolute, as given.
    pub paths: Vec<String>,
    /// What the backup is ("Staff and admin shares"): the policy asks that backups be marked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Root tree: mirrors the absolute paths (`/volume1/staff` is `volume1` → `staff`).
    pub tree: BlobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    pub summary: BackupSummary,
    /// The program that wrote it ("vouch 0.1.0").
    pub program: String,
}

/// What a backup did, recorded in its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Files and bytes in the snapshot.
    pub total_files: u64,
    pub total_bytes: u64,
    /// Bytes read from the source (unchanged files are not re-read).
    pub bytes_read: u64,
    /// Blobs and bytes this backup added to the repository (after dedup and compression).
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    pub bytes_added_raw: u64,
    pub bytes_added_stored: u64,
    pub packs_added: u64,
    pub duration_ms: u64,
    /// Files that could not be read; the snapshot is partial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Problem>,
    /// Files whose size or times changed while they were being read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_during_read: Vec<String>,
    /// FIFOs, sockets and devices recorded (tree revision 2 on).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub special: u64,
    /// Entries that the first release left out (FIFOs, sockets, devices); later backups
    /// record them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_special: Vec<String>,
    /// What changed since the parent snapshot, and how much of it looks encrypted (absent
    /// for a first backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangeStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub path: String,
    pub error: String,
}

impl Snapshot {
    /// True when a backup of `paths` by `host` should use this snapshot as its parent.
    pub fn same_source(&self, host: &str, paths: &[String]) -> bool {
        super::same_source(&self.host, &self.paths, host, paths)
    }
}

/// What changed since the parent snapshot, and how much of it looks encrypted (§7.4): written
/// by the backup, read by the monitoring's ransomware check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeStats {
    /// Files in the parent snapshot.
    pub files_before: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_removed: u64,
    /// New or changed files whose content looks encrypted (see the module comment).
    pub files_encrypted_looking: u64,
    /// A few of them, for the alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// New files named like ransom notes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ransom_notes: Vec<String>,
}

impl ChangeStats {
    fn percent(&self, n: u64) -> f64 {
        if self.files_before == 0 {
            0.0
        } else {
            n as f64 * 100.0 / self.files_before as f64
        }
    }

    /// Encrypted-looking files as a percentage of the files there were.
    pub fn encrypted_percent(&self) -> f64 {
        self.percent(self.files_encrypted_looking)
    }

    /// Changed and removed files as a percentage of the files there were.
    pub fn changed_percent(&self) -> f64 {
        self.percent(self.files_changed + self.files_removed)
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
