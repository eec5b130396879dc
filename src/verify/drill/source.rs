//! Level 4: compare restored files with the live source. A file whose size and modification
//! time are what the snapshot recorded should hold the same bytes; if it does not, the backup
//! read it wrongly. Files changed or deleted since are counted, not failed.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::repo::ids::FileHash;
use crate::restore::PlannedFile;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SourceComparison {
    /// Restored files whose live copy is unchanged and was compared.
    pub compared: u64,
    pub identical: u64,
    /// Live copy changed since the snapshot (size or mtime differ): not comparable.
    pub changed: u64,
    /// Live copy gone.
    pub missing: u64,
    /// Live copy unreadable.
    pub unreadable: u64,
}

/// A live file that should match and does not.
pub struct SourceMismatch {
    pub path: String,
    pub expected: FileHash,
    pub actual: FileHash,
}

fn hash_file(path: &Path) -> std::io::Result<FileHash> {
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(FileHash::from_bytes(*h.finalize().as_bytes()))
}

/// Compare the restored `files` (all of which passed level 3) with the live files at their
/// original absolute paths.
pub(super) fn compare(files: &[&PlannedFile]) -> (SourceComparison, Vec<SourceMismatch>) {
    let mut c = SourceComparison::default();
    let mut bad = Vec::new();
    for f in files {
        let live = Path::new("/").join(&f.rel);
        let meta = match std::fs::metadata(&live) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                c.missing += 1;
                continue;
            }
            Err(_) => {
                c.unreadable += 1;
                continue;
            }
        };
        let mtime_ns = meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec());
        if meta.len() != f.node.size || mtime_ns != f.node.mtime_ns {
            c.changed += 1;
            continue;
        }
        let Some(expected) = f.node.hash else {
            continue;
        };
        match hash_file(&live) {
            Ok(actual) => {
                c.compared += 1;
                if actual == expected {
                    c.identical += 1;
                } else {
                    bad.push(SourceMismatch {
                        path: live.display().to_string(),
                        expected,
                        actual,
                    });
                }
            }
            Err(_) => c.unreadable += 1,
        }
    }
    (c, bad)
}
