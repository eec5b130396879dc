//! Restoring a snapshot, or chosen paths of it, into a directory. Files are written in
//! parallel, each sequentially, and the blake3 of every file is computed as it is written and
//! compared with the hash recorded at backup time (verification level 3). A file that fails
//! is removed and reported by path; the others are restored regardless.

mod reader;

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::repo::format::snapshot::Snapshot;
use crate::repo::format::tree::{Node, NodeKind};
use crate::repo::ids::{BlobId, FileHash};
use crate::repo::index::{BlobLocation, MasterIndex};
use crate::repo::{LockMode, RepoError, Repository, TreeLoader};

pub use reader::BlobReader;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Paths inside the snapshot to restore (everything when empty), e.g. `/srv/staff/Reports`.
    pub include: Vec<String>,
    /// Replace files that already exist in the target.
    pub overwrite: bool,
    pub threads: Option<usize>,
}

#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
}

/// A restored file whose bytes are not the bytes that were backed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub path: String,
    pub expected: FileHash,
    pub actual: FileHash,
}

/// A file that could not be restored because stored data is damaged or missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedFile {
    pub path: String,
    pub error: String,
    pub pack: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Files whose blake3 matched the snapshot (all restored files, unless listed below).
    pub files_verified: u64,
    pub mismatches: Vec<Mismatch>,
    pub damaged: Vec<DamagedFile>,
    /// Metadata that could not be applied (ownership without root, say).
    pub warnings: Vec<String>,
    pub duration_ms: u64,
}

impl RestoreReport {
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty() && self.damaged.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "{count} path(s) already exist in the target, for example {first}; nothing was written (use --overwrite to replace them, or choose an empty --target)"
    )]
    TargetExists { count: usize, first: String },
    #[error("{path:?} is not in the snapshot; `vouch ls` shows what it holds")]
    IncludeNotFound { path: String },
    #[error("cannot write to the target {path}: {detail}")]
    Target { path: String, detail: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// One file to write.
#[derive(Clone)]
pub struct PlannedFile {
    pub rel: PathBuf,
    pub node: Node,
}

/// What a restore will write, from walking the snapshot's trees.
#[derive(Default)]
pub struct Plan {
    pub dirs: Vec<(PathBuf, Node)>,
    pub files: Vec<PlannedFile>,
    pub symlinks: Vec<(PathBuf, Node)>,
    /// Subtrees that could not be read.
    pub damaged: Vec<DamagedFile>,
}

fn components(p: &str) -> Vec<Vec<u8>> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(|c| c.as_bytes().to_vec())
        .collect()
}

/// Walk the snapshot and list what to restore; `include` limits it to some paths.
pub async fn plan(
    trees: &TreeLoader,
    root: &BlobId,
    include: &[String],
) -> Result<Plan, RestoreError> {
    let includes: Vec<Vec<Vec<u8>>> = include.iter().map(|p| components(p)).collect();
    let mut matched = vec![false; includes.len()];
    let mut plan = Plan::default();
    let mut stack: Vec<(BlobId, Vec<Vec<u8>>)> = vec![(*root, Vec::new())];
    while let Some((tree_id, prefix)) = stack.pop() {
        let rel: PathBuf = prefix.iter().map(|c| OsStr::from_bytes(c)).collect();
        let tree = match trees.load(&tree_id).await {
            Ok(t) => t,
            Err(e) => {
                plan.damaged.push(DamagedFile {
                    path: format!("/{}", rel.display()),
                    error: format!("directory listing unreadable: {e}"),
                    pack: e.pack().map(|p| p.to_hex()),
                });
                continue;
            }
        };
        for node in tree.nodes {
            let mut path = prefix.clone();
            path.push(node.name.clone());
            // Included when no filter, when inside an include, or on the way to one.
            let mut wanted = includes.is_empty();
            let mut on_the_way = false;
            for (i, inc) in includes.iter().enumerate() {
                if path.starts_with(inc) {
                    wanted = true;
                    matched[i] = true;
                } else if inc.starts_with(&path) {
                    on_the_way = true;
                }
            }
            if !wanted && !on_the_way {
                continue;
            }
            let rel_path: PathBuf = path.iter().map(|c| OsStr::from_bytes(c)).collect();
            match node.kind {
                NodeKind::Dir => {
                    if let Some(sub) = node.subtree {
                        stack.push((sub, path));
                    }
                    plan.dirs.push((rel_path, node));
                }
                NodeKind::File if wanted => plan.files.push(PlannedFile {
                    rel: rel_path,
                    node,
                }),
                NodeKind::Symlink if wanted => plan.symlinks.push((rel_path, node)),
                _ => {}
            }
        }
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(RestoreError::IncludeNotFound {
            path: include[i].clone(),
        });
    }
    Ok(plan)
}

/// Restore `snapshot` into `opts.target`.
pub async fn restore(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<RestoreReport, RestoreError> {
    let lock = repo.lock(LockMode::Shared, "restore").await?;
    let result = restore_locked(&repo, snapshot, opts, progress).await;
    lock.release().await?;
    result
}

async fn restore_locked(
    repo: &Arc<Repository>,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let (index, _) = repo.load_index().await?;
    let index = Arc::new(index);
    let trees = TreeLoader::new(repo.clone(), index.clone());
    let plan = plan(&trees, &snapshot.tree, &opts.include).await?;
    let target = opts.target.clone();
    let target_err = |e: std::io::Error| RestoreError::Target {
        path: target.display().to_string(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(&target).map_err(target_err)?;
    let empty_target = std::fs::read_dir(&target)
        .map_err(target_err)?
        .next()
        .is_none();
    if !opts.overwrite && !empty_target {
        let existing: Vec<&PathBuf> = plan
            .files
            .iter()
            .map(|f| &f.rel)
            .chain(plan.symlinks.iter().map(|(p, _)| p))
            .filter(|p| std::fs::symlink_metadata(target.join(p)).is_ok())
            .collect();
        if let Some(first) = existing.first() {
            return Err(RestoreError::TargetExists {
                count: existing.len(),
                first: target.join(first).display().to_string(),
            });
        }
    }
    let mut report = RestoreReport {
        damaged: plan.damaged.clone(),
        ..Default::default()
    };
    // Parents come before their children in the plan.
    for (rel, _) in &plan.dirs {
        match std::fs::create_dir(target.join(rel)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                std::fs::create_dir_all(target.join(rel)).map_err(target_err)?
            }
            _ => {}
        }
    }
    report.dirs = plan.dirs.len() as u64;
    let root = crate::sys::euid() == 0;
    for (rel, node) in &plan.symlinks {
        let path = target.join(rel);
        if opts.overwrite && std::fs::symlink_metadata(&path).is_ok() {
            let _ = std::fs::remove_file(&path);
        }
        let link = OsStr::from_bytes(node.target.as_deref().unwrap_or_default());
        match std::os::unix::fs::symlink(link, &path) {
            Ok(()) => {
                report.symlinks += 1;
                apply_meta(&path, node, root, &mut report.warnings);
            }
            Err(e) => report.damaged.push(DamagedFile {
                path: display(rel),
                error: format!("symlink could not be created: {e}"),
                pack: None,
            }),
        }
    }

    progress.bytes_total.store(
        plan.files.iter().map(|f| f.node.size).sum(),
        Ordering::Relaxed,
    );
    let threads = opts.threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        if repo.store().is_local() {
            cores * 2
        } else {
            16
        }
    });
    let units = units(&plan.files, &index);
    let outcome = {
        let repo = repo.clone();
        let index = index.clone();
        let target = target.clone();
        let files = plan.files;
        let progress = progress.clone();
        let overwrite = opts.overwrite;
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            write_files(
                &repo, &index, &target, &files, &units, threads, overwrite, root, &progress, handle,
            )
        })
        .await
        .expect("restore threads")
    };
    report.files = outcome.files;
    report.bytes = outcome.bytes;
    report.files_verified = outcome.files;
    report.mismatches = outcome.mismatches;
    report.damaged.extend(outcome.damaged);
    report.warnings.extend(outcome.warnings);

    // Directory metadata last, deepest first: writing into a directory changes its mtime,
    // and a read-only directory must stay writable until its files are in.
    let mut dirs = plan.dirs;
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    let mut start = 0;
    while start < dirs.len() {
        let depth = dirs[start].0.components().count();
        let end = start
            + dirs[start..]
                .iter()
                .take_while(|(p, _)| p.components().count() == depth)
                .count();
        let level = &dirs[start..end];
        let per_thread = level.len().div_ceil(threads.max(1)).max(64);
        let warnings = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for part in level.chunks(per_thread) {
                let (target, warnings) = (&target, &warnings);
                s.spawn(move || {
                    let mut w = Vec::new();
                    for (rel, node) in part {
                        apply_meta(&target.join(rel), node, root, &mut w);
                    }
                    warnings.lock().expect("warnings").extend(w);
                });
            }
        });
        report
            .warnings
            .extend(warnings.into_inner().expect("warnings"));
        start = end;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn display(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// Files grouped into units of work in storage order, so that a unit's small files come
/// from one stretch of one pack and are fetched with one read.
fn units(files: &[PlannedFile], index: &MasterIndex) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| {
        files[i]
            .node
            .content
            .first()
            .and_then(|id| index.get(id))
            .map_or((u32::MAX, 0), |l| (l.pack, l.offset))
    });
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0u64;
    // Large files go first, each on its own, so that no core is left alone with a big
    // database dump at the end; the rest follow in storage order.
    let (big, small): (Vec<usize>, Vec<usize>) = order
        .into_iter()
        .partition(|&i| files[i].node.size >= 32 << 20);
    let mut big = big;
    big.sort_by_key(|&i| std::cmp::Reverse(files[i].node.size));
    out.extend(big.into_iter().map(|i| vec![i]));
    for i in small {
        let size = files[i].node.size;
        match out.last_mut() {
            Some(unit) if bytes + size <= 4 << 20 && unit.len() < 256 => unit.push(i),
            _ => {
                out.push(vec![i]);
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
    damaged: Vec<DamagedFile>,
    warnings: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn write_files(
    repo: &Repository,
    index: &MasterIndex,
    target: &Path,
    files: &[PlannedFile],
    units: &[Vec<usize>],
    threads: usize,
    overwrite: bool,
    root: bool,
    progress: &RestoreProgress,
    handle: tokio::runtime::Handle,
) -> WriteOutcome {
    let next = AtomicUsize::new(0);
    let total = Mutex::new(WriteOutcome::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut out = WriteOutcome::default();
                // Each file's blake3 is checked (level 3); that covers what the blob ids would.
                let mut reader = BlobReader::new(repo, index, handle.clone(), false);
                loop {
                    let u = next.fetch_add(1, Ordering::Relaxed);
                    let Some(unit) = units.get(u) else { break };
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
                        match located {
                            Some(v) => {
                                wanted.extend(v);
                                spans.push(Some(start..wanted.len()));
                            }
                            None => spans.push(None),
                        }
                    }
                    for (&i, span) in unit.iter().zip(spans) {
                        let file = &files[i];
                        let path = target.join(&file.rel);
                        let result = match span {
                            None => Err(FileFailure::Damaged(
                                "a blob of this file is missing from the index".into(),
                                None,
                            )),
                            Some(span) => write_file(
                                &path,
                                file,
                                &wanted,
                                span,
                                &mut reader,
                                overwrite,
                                progress,
                            ),
                        };
                        match result {
                            Ok(written) => {
                                out.files += 1;
                                out.bytes += file.node.size;
                                apply_file_meta(
                                    &written,
                                    &path,
                                    &file.node,
                                    root,
                                    &mut out.warnings,
                                );
                            }
                            Err(f) => {
                                let _ = std::fs::remove_file(&path);
                                match f {
                                    FileFailure::Mismatch(actual) => {
                                        out.mismatches.push(Mismatch {
                                            path: display(&file.rel),
                                            expected: file
                                                .node
                                                .hash
                                                .expect("file nodes have a hash"),
                                            actual,
                                        })
                                    }
                                    FileFailure::Damaged(error, pack) => {
                                        out.damaged.push(DamagedFile {
                                            path: display(&file.rel),
                                            error,
                                            pack,
                                        })
                                    }
                                }
                            }
                        }
                        progress.files_done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let mut t = total.lock().expect("restore totals");
                t.files += out.files;
                t.bytes += out.bytes;
                t.mismatches.extend(out.mismatches);
                t.damaged.extend(out.damaged);
                t.warnings.extend(out.warnings);
            });
        }
    });
    let mut t = total.into_inner().expect("restore totals");
    t.mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    t.damaged.sort_by(|a, b| a.path.cmp(&b.path));
    t
}

enum FileFailure {
    Mismatch(FileHash),
    Damaged(String, Option<String>),
}

fn write_file(
    path: &Path,
    file: &PlannedFile,
    wanted: &[(BlobId, BlobLocation)],
    span: std::ops::Range<usize>,
    reader: &mut BlobReader,
    overwrite: bool,
    progress: &RestoreProgress,
) -> Result<File, FileFailure> {
    let io = |e: std::io::Error| FileFailure::Damaged(format!("cannot write the file: {e}"), None);
    let mut out: File = if overwrite {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    } else {
        OpenOptions::new().write(true).create_new(true).open(path)
    }
    .map_err(io)?;
    let mut hasher = blake3::Hasher::new();
    for i in span {
        let plain = reader
            .read(wanted, i)
            .map_err(|e| FileFailure::Damaged(e.to_string(), e.pack().map(|p| p.to_hex())))?;
        hasher.update(plain);
        out.write_all(plain).map_err(io)?;
        progress
            .bytes_done
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
    }
    let actual = FileHash::from_bytes(*hasher.finalize().as_bytes());
    if Some(actual) != file.node.hash {
        return Err(FileFailure::Mismatch(actual));
    }
    Ok(out)
}

fn mtime_of(node: &Node) -> std::time::SystemTime {
    let d = std::time::Duration::new(
        node.mtime_ns.unsigned_abs() / 1_000_000_000,
        (node.mtime_ns.unsigned_abs() % 1_000_000_000) as u32,
    );
    if node.mtime_ns >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

/// Owner, permissions and times of a restored file, through its open descriptor (no path
/// lookups: a restore sets them on every file).
fn apply_file_meta(file: &File, path: &Path, node: &Node, root: bool, warnings: &mut Vec<String>) {
    if root {
        if let Err(e) = std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid)) {
            warnings.push(format!("{}: owner not set: {e}", path.display()));
        }
    }
    if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(node.mode)) {
        warnings.push(format!("{}: permissions not set: {e}", path.display()));
    }
    let t = mtime_of(node);
    if let Err(e) = file.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t)) {
        warnings.push(format!(
            "{}: modification time not set: {e}",
            path.display()
        ));
    }
}

/// Owner, permissions and times of a directory or symlink, by path (symlinks have no
/// permissions of their own, and their times are set on the link itself).
fn apply_meta(path: &Path, node: &Node, root: bool, warnings: &mut Vec<String>) {
    if root {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
            warnings.push(format!("{}: owner not set: {e}", path.display()));
        }
    }
    let symlink = node.kind == NodeKind::Symlink;
    if !symlink {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode)) {
            warnings.push(format!("{}: permissions not set: {e}", path.display()));
        }
    }
    let mtime = filetime::FileTime::from_system_time(mtime_of(node));
    let set = if symlink {
        filetime::set_symlink_file_times(path, mtime, mtime)
    } else {
        filetime::set_file_times(path, mtime, mtime)
    };
    if let Err(e) = set {
        warnings.push(format!(
            "{}: modification time not set: {e}",
            path.display()
        ));
    }
}
