//! Writing a restore plan: directories parents-first, then files in parallel, each written
//! sequentially while its blake3 is computed, then symlinks, then directory metadata
//! deepest-first. Every path goes through `Target`, which never follows a symlink.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::repo::Repository;
use crate::repo::format::tree::Node;
use crate::repo::ids::{BlobId, FileHash};
use crate::repo::index::{BlobLocation, MasterIndex};

use super::reader::BlobReader;
use super::target::Target;
use super::{
    DamagedFile, Mismatch, Plan, PlannedFile, RestoreError, RestoreProgress, RestoreReport,
    display, target_error,
};
use crate::repo::PackVerifier;

/// How much a restore verifies beyond each file's blake3 (level 3), which it always checks.
#[derive(Clone, Default)]
pub struct Verification {
    /// Read packs whole and check each one's blake3 against its name (level 1).
    pub packs: Option<Arc<PackVerifier>>,
    /// Check every blob's keyed hash against its id (level 2; the seal is always checked).
    pub blob_ids: bool,
    /// Write a damaged file out with its unreadable parts zero-filled and report the hash
    /// of what was written, instead of removing it (drills report expected against actual).
    pub keep_damaged: bool,
    /// Leave owners, permissions and times alone: a drill's sandbox is checked for content
    /// and then removed.
    pub skip_metadata: bool,
    /// Set owners by the recorded numbers, not names (`--numeric-ids`).
    pub numeric_ids: bool,
    /// Read each file's and folder's metadata back once it is applied and compare it with
    /// the snapshot's: permissions, owners (as root), and extended attributes and ACLs (when
    /// the snapshot recorded them). Drills do.
    pub check_metadata: bool,
}

/// Write `plan` under `target`. Blocks; call it from a thread outside the runtime.
#[allow(clippy::too_many_arguments)]
pub fn write_plan(
    repo: &Repository,
    index: &MasterIndex,
    plan: &Plan,
    target: &Path,
    overwrite: bool,
    threads: usize,
    verify: &Verification,
    progress: &RestoreProgress,
    handle: tokio::runtime::Handle,
) -> Result<RestoreReport, RestoreError> {
    let mut report = RestoreReport {
        damaged: plan.damaged.clone(),
        ..Default::default()
    };
    let mut target =
        Target::open(target, !verify.skip_metadata).map_err(|e| target_error(target, e))?;
    target.set_metadata(verify.numeric_ids, plan.format >= 2);
    // Parents come before their children in the plan. A folder the target refuses is
    // reported (its files will be too) and the rest goes on; a folder only on the way to what
    // was asked for is never replaced, even with --overwrite.
    let mut made = Vec::with_capacity(plan.dirs.len());
    for (rel, node) in &plan.dirs {
        match target.make_dir(rel, overwrite && !plan.through.contains(rel)) {
            Ok(m) => made.push((rel, node, m)),
            Err(e) => report.unwritable.push(super::Unwritable {
                path: display(rel),
                error: format!("the folder could not be made: {e}"),
            }),
        }
    }
    report.dirs = made.len() as u64;
    let root = crate::sys::euid() == 0;
    progress.bytes_total.store(
        plan.files.iter().map(|f| f.node.size).sum(),
        Ordering::Relaxed,
    );
    let units = units(&plan.files, index, verify.packs.is_some());
    let out = write_files(
        repo,
        index,
        &target,
        &plan.files,
        &units,
        threads,
        overwrite,
        root,
        verify,
        progress,
        handle,
    );
    report.files = out.files;
    report.bytes = out.bytes;
    report.files_verified = out.files;
    report.mismatches = out.mismatches;
    report.metadata_checked = out.metadata_checked;
    report.metadata_mismatches = out.metadata_mismatches;
    report.damaged.extend(out.damaged);
    report.unwritable.extend(out.unwritable);
    report.warnings.extend(out.warnings);
    // Hard links once the files they link to are in: they share its content and metadata.
    for (rel, first) in &plan.links {
        let first = &plan.files[*first].rel;
        match target.hard_link(first, rel, overwrite) {
            Ok(()) => {
                report.files += 1;
                report.hard_links += 1;
            }
            Err(e) => report.unwritable.push(super::Unwritable {
                path: display(rel),
                error: format!("the hard link to {} could not be made: {e}", display(first)),
            }),
        }
    }
    let mut sockets = Vec::new();
    for (rel, node) in &plan.special {
        if node.kind == crate::repo::format::tree::NodeKind::Socket {
            sockets.push(display(rel));
            continue;
        }
        match target.special(rel, node, overwrite) {
            Ok(()) => {
                report.special += 1;
                if !verify.skip_metadata {
                    report.warnings.extend(target.special_meta(rel, node, root));
                }
            }
            Err(e) => {
                let why = if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) {
                    format!("{e} (device files can be made only by root)")
                } else {
                    e.to_string()
                };
                report.unwritable.push(super::Unwritable {
                    path: display(rel),
                    error: format!("the {} could not be made: {why}", node.kind.describe()),
                });
            }
        }
    }
    if !sockets.is_empty() {
        report.notes.push(format!(
            "{} socket(s) are recorded in the snapshot and not recreated (the program that listens on a socket makes it): {}",
            sockets.len(),
            sockets.join(", ")
        ));
    }
    // Symlinks after the files: nothing is ever written through one (nothing is resolved
    // through any symlink), and none is in place while files are being written.
    for (rel, node) in &plan.symlinks {
        let link = OsStr::from_bytes(node.target.as_deref().unwrap_or_default());
        match target.symlink(rel, link, overwrite) {
            Ok(()) => {
                report.symlinks += 1;
                if !verify.skip_metadata {
                    report.warnings.extend(target.symlink_meta(rel, node, root));
                }
            }
            Err(e) => report.unwritable.push(super::Unwritable {
                path: display(rel),
                error: format!("symlink could not be created: {e}"),
            }),
        }
    }
    if !verify.skip_metadata {
        let checked = set_dir_meta(
            &target,
            &made,
            root,
            threads,
            verify.check_metadata,
            &mut report.warnings,
            &mut report.metadata_mismatches,
        );
        report.metadata_checked += checked;
        report
            .metadata_mismatches
            .sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(report)
}

/// Directory metadata last, deepest level first, each level in parallel: writing into a
/// directory changes its mtime, and a read-only directory must stay writable until its
/// files are in.
#[allow(clippy::too_many_arguments)]
fn set_dir_meta(
    target: &Target,
    dirs: &[(&std::path::PathBuf, &Node, super::target::Made)],
    root: bool,
    threads: usize,
    check: bool,
    warnings: &mut Vec<String>,
    mismatches: &mut Vec<super::MetadataMismatch>,
) -> u64 {
    let mut dirs: Vec<_> = dirs.iter().collect();
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    let mut checked = 0;
    let mut start = 0;
    while start < dirs.len() {
        let depth = dirs[start].0.components().count();
        let end = start
            + dirs[start..]
                .iter()
                .take_while(|(p, _, _)| p.components().count() == depth)
                .count();
        let level = &dirs[start..end];
        let per_thread = level.len().div_ceil(threads.max(1)).max(64);
        let found = Mutex::new((Vec::new(), Vec::new()));
        std::thread::scope(|s| {
            for part in level.chunks(per_thread) {
                let found = &found;
                s.spawn(move || {
                    let (mut w, mut m) = (Vec::new(), Vec::new());
                    for (rel, node, made) in part.iter().copied() {
                        let (dw, dm) = target.dir_meta(rel, node, root, *made, check);
                        w.extend(dw);
                        m.extend(dm);
                    }
                    let mut f = found.lock().expect("warnings");
                    f.0.extend(w);
                    f.1.extend(m);
                });
            }
        });
        let (w, m) = found.into_inner().expect("warnings");
        warnings.extend(w);
        mismatches.extend(m);
        if check {
            checked += level.len() as u64;
        }
        start = end;
    }
    checked
}

/// Files grouped into units of work: large files first, each on its own, so that no core is
/// left alone with a big database dump at the end; then small files in storage order, so that
/// a unit's files come from one stretch of one pack and are fetched with one read. When
/// packs are read whole, a unit is every small file that starts in one pack, so that each
/// pack is read by one thread, once.
fn units(files: &[PlannedFile], index: &MasterIndex, whole_packs: bool) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| {
        files[i]
            .node
            .content
            .first()
            .and_then(|id| index.get(id))
            .map_or((u32::MAX, 0), |l| (l.pack, l.offset))
    });
    let (mut big, small): (Vec<usize>, Vec<usize>) = order
        .into_iter()
        .partition(|&i| files[i].node.size >= 32 << 20);
    big.sort_by_key(|&i| std::cmp::Reverse(files[i].node.size));
    let mut out: Vec<Vec<usize>> = big.into_iter().map(|i| vec![i]).collect();
    let first_pack = |i: usize| {
        files[i]
            .node
            .content
            .first()
            .and_then(|id| index.get(id))
            .map(|l| l.pack)
    };
    let mut bytes = 0u64;
    let mut open: Option<Option<u32>> = None;
    for i in small {
        let size = files[i].node.size;
        let pack = first_pack(i);
        let fits = if whole_packs {
            open == Some(pack)
        } else {
            open.is_some() && bytes + size <= 4 << 20
        };
        match out.last_mut() {
            Some(unit) if fits && unit.len() < 1024 => unit.push(i),
            _ => {
                out.push(vec![i]);
                open = Some(pack);
                bytes = 0;
            }
        }
        bytes += size;
    }
    out
}

#[derive(Default)]
struct WriteOutcome {
    files: u64,
    bytes: u64,
    mismatches: Vec<Mismatch>,
    metadata_checked: u64,
    metadata_mismatches: Vec<super::MetadataMismatch>,
    damaged: Vec<DamagedFile>,
    unwritable: Vec<super::Unwritable>,
    warnings: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn write_files(
    repo: &Repository,
    index: &MasterIndex,
    target: &Target,
    files: &[PlannedFile],
    units: &[Vec<usize>],
    threads: usize,
    overwrite: bool,
    root: bool,
    verify: &Verification,
    progress: &RestoreProgress,
    handle: tokio::runtime::Handle,
) -> WriteOutcome {
    let next = AtomicUsize::new(0);
    let total = Mutex::new(WriteOutcome::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut out = WriteOutcome::default();
                let mut parents = ParentCache::default();
                let mut reader = BlobReader::new(
                    repo,
                    index,
                    handle.clone(),
                    verify.blob_ids,
                    verify.packs.clone(),
                );
                while let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
                    // The unit's blobs in the order they will be asked for.
                    let mut wanted: Vec<(BlobId, BlobLocation)> = Vec::new();
                    let mut spans = Vec::with_capacity(unit.len());
                    for &i in unit {
                        let start = wanted.len();
                        let located: Option<Vec<_>> = files[i]
                            .node
                            .content
                            .iter()
                            .map(|id| index.get(id).map(|l| (*id, *l)))
                            .collect();
                        spans.push(located.map(|v| {
                            wanted.extend(v);
                            start..wanted.len()
                        }));
                    }
                    for (&i, span) in unit.iter().zip(spans) {
                        let file = &files[i];
                        let path = target.path().join(&file.rel);
                        let created = match span {
                            None => Err(FileFailure::Damaged {
                                error: "a blob of this file is missing from the index".into(),
                                pack: None,
                                actual: None,
                            }),
                            Some(span) => parents
                                .open(target, &file.rel)
                                .and_then(|(dir, name)| target.create_in(dir, name, overwrite))
                                .map_err(|e| FileFailure::Io(e.to_string()))
                                .map(|new| (new, span)),
                        };
                        let result = created.and_then(|(mut new, span)| {
                            match write_file(
                                &mut new.file,
                                file,
                                &wanted,
                                span,
                                &mut reader,
                                verify.keep_damaged,
                                progress,
                            ) {
                                Ok(()) => Ok(new),
                                Err(failure) => {
                                    if !verify.keep_damaged {
                                        new.discard();
                                    } else if let Err(e) = new.commit() {
                                        out.warnings.push(format!("{}: {e}", path.display()));
                                    }
                                    Err(failure)
                                }
                            }
                        });
                        match result {
                            Ok(new) => {
                                if !verify.skip_metadata {
                                    target.fd_meta(
                                        &new.file,
                                        &file.node,
                                        root,
                                        &path,
                                        &mut out.warnings,
                                    );
                                    if verify.check_metadata {
                                        out.metadata_checked += 1;
                                        out.metadata_mismatches.extend(target.check_meta(
                                            &new.file,
                                            &file.node,
                                            root,
                                            &display(&file.rel),
                                        ));
                                    }
                                }
                                match new.commit() {
                                    Ok(()) => {
                                        out.files += 1;
                                        out.bytes += file.node.size;
                                    }
                                    Err(e) => record_failure(
                                        FileFailure::Io(e.to_string()),
                                        file,
                                        &mut out,
                                    ),
                                }
                            }
                            Err(failure) => record_failure(failure, file, &mut out),
                        }
                        progress.files_done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let mut t = total.lock().expect("restore totals");
                t.files += out.files;
                t.bytes += out.bytes;
                t.mismatches.extend(out.mismatches);
                t.metadata_checked += out.metadata_checked;
                t.metadata_mismatches.extend(out.metadata_mismatches);
                t.damaged.extend(out.damaged);
                t.unwritable.extend(out.unwritable);
                t.warnings.extend(out.warnings);
            });
        }
    });
    let mut t = total.into_inner().expect("restore totals");
    t.mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    t.metadata_mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    t.damaged.sort_by(|a, b| a.path.cmp(&b.path));
    t.unwritable.sort_by(|a, b| a.path.cmp(&b.path));
    t
}

fn record_failure(failure: FileFailure, file: &PlannedFile, out: &mut WriteOutcome) {
    let expected = file.node.hash.expect("file nodes have a hash");
    match failure {
        FileFailure::Mismatch(actual) => out.mismatches.push(Mismatch {
            path: display(&file.rel),
            expected,
            actual,
        }),
        FileFailure::Damaged {
            error,
            pack,
            actual,
        } => out.damaged.push(DamagedFile {
            path: display(&file.rel),
            error,
            pack,
            expected: Some(expected),
            actual,
        }),
        // The target refused the file: nothing stored is damaged.
        FileFailure::Io(error) => out.unwritable.push(super::Unwritable {
            path: display(&file.rel),
            error,
        }),
    }
}

enum FileFailure {
    Mismatch(FileHash),
    Damaged {
        error: String,
        pack: Option<String>,
        actual: Option<FileHash>,
    },
    /// The file could not be created or written in the target.
    Io(String),
}

/// The parent directory of the last file written, kept open: the files of a unit mostly
/// share one.
#[derive(Default)]
struct ParentCache {
    open: Option<(std::path::PathBuf, Arc<std::os::fd::OwnedFd>)>,
}

impl ParentCache {
    fn open<'a>(
        &mut self,
        target: &Target,
        rel: &'a Path,
    ) -> std::io::Result<(Arc<std::os::fd::OwnedFd>, &'a OsStr)> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a path inside the target",
            ));
        };
        if self.open.as_ref().map(|(p, _)| p.as_path()) != Some(parent) {
            self.open = Some((parent.to_path_buf(), Arc::new(target.open_dir(parent)?)));
        }
        let fd = self.open.as_ref().expect("just opened").1.clone();
        Ok((fd, name))
    }
}

fn write_file(
    out: &mut File,
    file: &PlannedFile,
    wanted: &[(BlobId, BlobLocation)],
    span: std::ops::Range<usize>,
    reader: &mut BlobReader,
    keep_damaged: bool,
    progress: &RestoreProgress,
) -> Result<(), FileFailure> {
    let io = |e: std::io::Error| FileFailure::Io(format!("cannot write the file: {e}"));
    let mut hasher = blake3::Hasher::new();
    let mut first_error = None;
    // A sparse file's data goes between its holes, which are left unwritten.
    let holes = file.node.holes();
    let (mut at, mut next_hole) = (0u64, 0usize);
    let mut put = |hasher: &mut blake3::Hasher, data: &[u8]| -> std::io::Result<()> {
        if holes.is_empty() {
            hasher.update(data);
            return out.write_all(data);
        }
        at = write_around_holes(out, hasher, at, data, holes, &mut next_hole)?;
        Ok(())
    };
    for i in span {
        let written = match reader.read(wanted, i) {
            Ok(plain) => {
                put(&mut hasher, plain).map_err(io)?;
                plain.len()
            }
            Err(e) if keep_damaged => {
                // Zero-fill the unreadable part and carry on, to report what was recoverable.
                first_error.get_or_insert((e.to_string(), e.pack().map(|p| p.to_hex())));
                let zeros = vec![0u8; wanted[i].1.raw_length as usize];
                put(&mut hasher, &zeros).map_err(io)?;
                zeros.len()
            }
            Err(e) => {
                return Err(FileFailure::Damaged {
                    error: e.to_string(),
                    pack: e.pack().map(|p| p.to_hex()),
                    actual: None,
                });
            }
        };
        progress
            .bytes_done
            .fetch_add(written as u64, Ordering::Relaxed);
    }
    if !holes.is_empty() {
        // The holes after the last data, and the length they give the file.
        let end =
            write_around_holes(out, &mut hasher, at, &[], holes, &mut next_hole).map_err(io)?;
        out.set_len(end).map_err(io)?;
        // The holes count towards what is done, as they do in the total.
        let hole: u64 = holes.iter().map(|h| h.length()).sum();
        progress.bytes_done.fetch_add(hole, Ordering::Relaxed);
    }
    let actual = FileHash::from_bytes(*hasher.finalize().as_bytes());
    if let Some((error, pack)) = first_error {
        return Err(FileFailure::Damaged {
            error,
            pack,
            actual: Some(actual),
        });
    }
    if Some(actual) != file.node.hash {
        return Err(FileFailure::Mismatch(actual));
    }
    Ok(())
}

/// Write data of a sparse file where it goes, skipping the holes (hashed as the zeros they
/// read as); returns where the next data goes.
fn write_around_holes(
    out: &File,
    hasher: &mut blake3::Hasher,
    at: u64,
    data: &[u8],
    holes: &[crate::repo::format::tree::Hole],
    next: &mut usize,
) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    crate::meta::pieces(at, data, holes, next, |p| {
        match p {
            crate::meta::Piece::Data(offset, d) => {
                hasher.update(d);
                out.write_all_at(d, offset)?;
            }
            crate::meta::Piece::Hole(h) => crate::meta::hash_zeros(hasher, h.length()),
        }
        Ok(())
    })
}
