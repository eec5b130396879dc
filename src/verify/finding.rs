//! One model of what verification finds wrong, whichever job finds it: `check` (the
//! repository's structure, and the packs it re-reads), a restore (files whose bytes are damaged,
//! do not match, or were refused by the target) and a drill (all of a restore's, and the live
//! source compared). A finding names its kind, the object it is about (a pack, another stored
//! object, a file), what was expected and what was found; its severity and the verification
//! level it belongs to follow from its kind. Drill reports, and the evidence built from them,
//! are computed from findings.

use serde::{Serialize, Serializer};

use crate::repo::ids::{BlobId, FileHash, PackId};
use crate::repo::packer::pack_key;
use crate::restore::RestoreReport;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Data is missing or altered: some snapshot cannot be fully restored.
    Damage,
    /// Something to tidy that loses nothing.
    Warning,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    PackMissing,
    PackSize,
    PackHash,
    PackHeader,
    PackIndexMismatch,
    BlobDamaged,
    BlobMissing,
    IndexUnreadable,
    SnapshotUnreadable,
    TreeUnreadable,
    FileSize,
    PackUnindexed,
    LockStale,
    /// A key file that cannot be read: its passphrase no longer opens the repository.
    KeyUnreadable,
    /// A lock file that cannot be read (it protects nothing; `vouch unlock` removes it).
    LockUnreadable,
    /// A drill report, ledger record, hold or journal copy that cannot be read.
    RecordUnreadable,
    /// A write killed before it finished, left on a local disk.
    PartialUpload,
    /// A restored file whose bytes are not the bytes recorded at backup time.
    ContentMismatch,
    /// A file the restore target would not take: it was not verified.
    Unwritable,
    /// A live file with the size and time the snapshot recorded but other bytes: the backup
    /// read it wrongly.
    SourceDiffers,
    /// A restored file or folder whose permissions, owner, ACL or extended attributes, read
    /// back, are not the ones recorded.
    MetadataMismatch,
}

impl FindingKind {
    /// Damage, or something to tidy.
    pub fn severity(self) -> Severity {
        match self {
            FindingKind::PackUnindexed
            | FindingKind::LockStale
            | FindingKind::LockUnreadable
            | FindingKind::PartialUpload => Severity::Warning,
            _ => Severity::Damage,
        }
    }

    /// The verification level (docs/FORMAT.md §9) whose check found it: 1 the stored pack,
    /// 2 the blob, 3 the restored file, 4 the live source; 0 for the repository's structure.
    pub fn level(self) -> u8 {
        match self {
            FindingKind::PackMissing
            | FindingKind::PackSize
            | FindingKind::PackHash
            | FindingKind::PackHeader => 1,
            FindingKind::BlobDamaged | FindingKind::BlobMissing => 2,
            FindingKind::ContentMismatch
            | FindingKind::Unwritable
            | FindingKind::FileSize
            | FindingKind::MetadataMismatch => 3,
            FindingKind::SourceDiffers => 4,
            _ => 0,
        }
    }
}

/// What a finding is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// A pack, shown by its key (`data/ab/ab12…`).
    Pack(PackId),
    /// Another stored object or place, by its key (`index/…`, `snapshots/…`, `keys/…`), or a
    /// partial upload by its path.
    Stored(String),
    /// A file of a snapshot, by its path there.
    File(String),
}

impl Object {
    pub fn pack(&self) -> Option<PackId> {
        match self {
            Object::Pack(p) => Some(*p),
            _ => None,
        }
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Pack(p) => f.write_str(&pack_key(p)),
            Object::Stored(key) | Object::File(key) => f.write_str(key),
        }
    }
}

/// Shown as it is named: `data/ab/ab12…`, `index/…`, `/staff/report.docx`.
impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<String> for Object {
    fn from(key: String) -> Object {
        Object::Stored(key)
    }
}

impl From<&String> for Object {
    fn from(key: &String) -> Object {
        Object::Stored(key.clone())
    }
}

impl From<&str> for Object {
    fn from(key: &str) -> Object {
        Object::Stored(key.to_string())
    }
}

impl From<PackId> for Object {
    fn from(p: PackId) -> Object {
        Object::Pack(p)
    }
}

/// A file that damage makes unrestorable.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Affected {
    pub snapshot: String,
    pub path: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    /// The object it is about.
    pub object: Object,
    pub message: String,
    /// The file it concerns, when that is not the object (a damaged blob's file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The hash recorded at backup time, and the hash of what was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<FileHash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<FileHash>,
    /// Files that cannot be restored because of it (first 100).
    pub affected: Vec<Affected>,
    pub affected_total: usize,
    #[serde(skip)]
    pub(crate) blobs: Vec<BlobId>,
}

impl Finding {
    pub fn new(kind: FindingKind, object: impl Into<Object>, message: impl Into<String>) -> Self {
        Finding {
            severity: kind.severity(),
            kind,
            object: object.into(),
            message: message.into(),
            path: None,
            expected: None,
            actual: None,
            affected: Vec::new(),
            affected_total: 0,
            blobs: Vec::new(),
        }
    }

    /// A finding about a file, with the hash recorded for it and the hash found.
    pub fn file(
        kind: FindingKind,
        path: &str,
        expected: Option<FileHash>,
        actual: Option<FileHash>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            expected,
            actual,
            ..Finding::new(kind, Object::File(path.to_string()), message)
        }
    }

    pub fn level(&self) -> u8 {
        self.kind.level()
    }

    /// The file it concerns: the object, or the file a damaged pack or blob belongs to.
    pub fn file_path(&self) -> Option<&str> {
        match &self.object {
            Object::File(p) => Some(p),
            _ => self.path.as_deref(),
        }
    }
}

/// What a restore found, as findings: damaged files (level 2), files the target refused and
/// files whose bytes do not match (level 3), in that order.
pub fn of_restore(report: &RestoreReport) -> Vec<Finding> {
    let damaged = report.damaged.iter().map(|d| {
        let pack = d.pack.as_deref().and_then(|p| p.parse::<PackId>().ok());
        Finding {
            path: Some(d.path.clone()),
            expected: d.expected,
            actual: d.actual,
            ..Finding::new(
                FindingKind::BlobDamaged,
                pack.map_or(Object::File(d.path.clone()), Object::Pack),
                d.error.clone(),
            )
        }
    });
    let refused = report.unwritable.iter().map(|u| {
        Finding::file(
            FindingKind::Unwritable,
            &u.path,
            None,
            None,
            format!("not verified: the target refused it ({})", u.error),
        )
    });
    let mismatched = report.mismatches.iter().map(|m| {
        Finding::file(
            FindingKind::ContentMismatch,
            &m.path,
            Some(m.expected),
            Some(m.actual),
            "the restored file does not match the hash recorded at backup time",
        )
    });
    let metadata = report.metadata_mismatches.iter().map(|m| {
        Finding::file(
            FindingKind::MetadataMismatch,
            &m.path,
            None,
            None,
            format!(
                "restored {} is not the one recorded at backup time: expected {}, found {}",
                m.attribute, m.expected, m.actual
            ),
        )
    });
    damaged
        .chain(refused)
        .chain(mismatched)
        .chain(metadata)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_carry_their_severity_and_level() {
        assert_eq!(FindingKind::PackHash.level(), 1);
        assert_eq!(FindingKind::BlobDamaged.level(), 2);
        assert_eq!(FindingKind::ContentMismatch.level(), 3);
        assert_eq!(FindingKind::SourceDiffers.level(), 4);
        assert_eq!(FindingKind::IndexUnreadable.level(), 0);
        assert_eq!(FindingKind::LockStale.severity(), Severity::Warning);
        assert_eq!(FindingKind::Unwritable.severity(), Severity::Damage);
    }

    #[test]
    fn a_finding_names_its_object_as_stored() {
        let pack = PackId::from_bytes([0xab; 32]);
        let f = Finding::new(
            FindingKind::PackHash,
            pack,
            "its bytes do not match its name",
        );
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["object"], pack_key(&pack));
        assert_eq!(json["kind"], "pack-hash");
        assert_eq!(json["severity"], "damage");
        assert!(json.get("expected").is_none());
        assert_eq!(f.object.pack(), Some(pack));
        let m = Finding::file(
            FindingKind::ContentMismatch,
            "/staff/a.txt",
            Some(FileHash::from_bytes([1; 32])),
            Some(FileHash::from_bytes([2; 32])),
            "differs",
        );
        assert_eq!(m.file_path(), Some("/staff/a.txt"));
        assert_eq!(m.object.to_string(), "/staff/a.txt");
    }

    #[test]
    fn a_restores_problems_become_findings_in_level_order() {
        use crate::restore::{DamagedFile, Mismatch, Unwritable};
        let (h1, h2) = (FileHash::from_bytes([1; 32]), FileHash::from_bytes([2; 32]));
        let pack = PackId::from_bytes([3; 32]);
        let report = RestoreReport {
            mismatches: vec![Mismatch {
                path: "/c".into(),
                expected: h1,
                actual: h2,
            }],
            damaged: vec![DamagedFile {
                path: "/a".into(),
                error: "blob damaged".into(),
                pack: Some(pack.to_hex()),
                expected: Some(h1),
                actual: None,
            }],
            unwritable: vec![Unwritable {
                path: "/b".into(),
                error: "No space left on device".into(),
            }],
            ..Default::default()
        };
        let found = of_restore(&report);
        let levels: Vec<u8> = found.iter().map(Finding::level).collect();
        let paths: Vec<&str> = found.iter().filter_map(Finding::file_path).collect();
        assert_eq!(levels, [2, 3, 3]);
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(found[0].object.pack(), Some(pack));
        assert_eq!((found[2].expected, found[2].actual), (Some(h1), Some(h2)));
        assert!(found.iter().all(|f| f.severity == Severity::Damage));
    }
}
