//! What only a local disk has: unfinished writes left by a killed process (the local store
//! writes `name#N` and renames it into place), and durable, owner-only writes.
use std::path::PathBuf;

use super::{StorageError, Store, classify_io};

impl Store {
    /// Files left on a local disk by writes that were killed before they finished (the
    /// local store writes `name#N` and renames it into place), older than `older_than`.
    pub fn partial_uploads(
        &self,
        older_than: jiff::SignedDuration,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let Some(root) = &self.local_root else {
            return Ok(Vec::new());
        };
        let cutoff: std::time::SystemTime = (self.now() - older_than).into();
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(classify_io(&self.display, &dir.display().to_string(), &e)),
            };
            for entry in entries.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                let path = entry.path();
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() && is_partial_name(&entry.file_name()) {
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t <= cutoff);
                    if old {
                        out.push(path);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Remove partial uploads found by `partial_uploads`; returns how many went.
    pub fn remove_partial(&self, files: &[PathBuf]) -> Result<usize, StorageError> {
        let mut removed = 0;
        for f in files {
            match std::fs::remove_file(f) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(classify_io(&self.display, &f.display().to_string(), &e)),
            }
        }
        Ok(removed)
    }
}

/// `name#123`: a local write that never reached its rename.
fn is_partial_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.rsplit_once('#').is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

pub(super) fn sync_file_and_dir(file: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::File::open(file)?;
    // Owner only: key files are plaintext JSON (their secret is wrapped, but offline guessing
    // of the passphrase starts from them), and nothing of a repository is for other users.
    // Best effort: FAT and exFAT disks, and some network mounts, refuse modes they cannot
    // store, and the write is sound without it.
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    f.sync_all()?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
