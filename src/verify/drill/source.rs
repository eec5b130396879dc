//! Level 4: compare restored files with the live source. A file whose size and modification
//! time are what the snapshot recorded should hold the same bytes; if it does not, the backup
//! read it wrongly. One whose change time is the recorded one too should have the recorded
//! permissions, owner, ACLs and extended attributes (changing any of them moves the change
//! time). Files changed or deleted since are counted, not failed.

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
    /// Of the compared files, those whose change time is also the recorded one, whose
    /// metadata was compared (with ACLs and extended attributes when the snapshot has them).
    #[serde(default)]
    pub metadata_compared: u64,
}

/// A live file that should match and does not: its bytes (the hashes), or an attribute of
/// its metadata (`detail` says which).
pub struct SourceMismatch {
    pub path: String,
    pub expected: Option<FileHash>,
    pub actual: Option<FileHash>,
    pub detail: Option<String>,
}

/// What of the live file's metadata is not what the snapshot recorded.
fn metadata_differs(
    live: &Path,
    meta: &std::fs::Metadata,
    f: &PlannedFile,
    xattrs: bool,
) -> Vec<String> {
    let n = &f.node;
    let mut out = Vec::new();
    if meta.mode() & 0o7777 != n.mode {
        out.push(format!(
            "permissions: {:04o} recorded, {:04o} live",
            n.mode,
            meta.mode() & 0o7777
        ));
    }
    if (meta.uid(), meta.gid()) != (n.uid, n.gid) {
        out.push(format!(
            "owner: {}:{} recorded, {}:{} live",
            n.uid,
            n.gid,
            meta.uid(),
            meta.gid()
        ));
    }
    if xattrs {
        match crate::meta::path_xattrs(live) {
            Ok(present) if present.as_slice() != n.xattrs() => {
                let names = |xs: &[crate::repo::format::tree::Xattr]| {
                    xs.iter()
                        .map(|x| String::from_utf8_lossy(&x.name).into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                out.push(format!(
                    "ACLs and extended attributes: [{}] recorded, [{}] live (names; values compared too)",
                    names(n.xattrs()),
                    names(&present)
                ));
            }
            Ok(_) => {}
            Err(e) => out.push(format!("extended attributes unreadable: {e}")),
        }
    }
    out
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
pub(super) fn compare(
    files: &[&PlannedFile],
    xattrs_recorded: bool,
) -> (SourceComparison, Vec<SourceMismatch>) {
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
        let mtime_ns = crate::meta::time_ns(meta.mtime(), meta.mtime_nsec());
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
                        expected: Some(expected),
                        actual: Some(actual),
                        detail: None,
                    });
                }
            }
            Err(_) => {
                c.unreadable += 1;
                continue;
            }
        }
        let ctime_ns = crate::meta::time_ns(meta.ctime(), meta.ctime_nsec());
        if ctime_ns == f.node.ctime_ns {
            c.metadata_compared += 1;
            for d in metadata_differs(&live, &meta, f, xattrs_recorded) {
                bad.push(SourceMismatch {
                    path: live.display().to_string(),
                    expected: None,
                    actual: None,
                    detail: Some(d),
                });
            }
        }
    }
    (c, bad)
}
