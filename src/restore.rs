//! Restoring a snapshot, or chosen paths of it, into a directory. Files are written in
//! parallel, each sequentially, and the blake3 of every file is computed as it is written and
//! compared with the hash recorded at backup time (verification level 3). A file that fails
//! is removed and reported by path; the others are restored regardless.

mod reader;
mod target;
mod write;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use serde::Serialize;

use crate::repo::format::snapshot::Snapshot;
use crate::repo::format::tree::{Node, NodeKind};
use crate::repo::ids::{BlobId, FileHash};
use crate::repo::{RepoError, Repository, TreeLoader};

pub use crate::repo::PackVerifier;
pub use write::{Verification, write_plan};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Paths inside the snapshot to restore (everything when empty), e.g. `/srv/staff/Reports`.
    /// Bytes, as names are: a folder whose name is not UTF-8 can be chosen.
    pub include: Vec<std::ffi::OsString>,
    /// Replace files that already exist in the target.
    pub overwrite: bool,
    /// Set owners by the recorded numbers, not by the recorded names (`--numeric-ids`).
    pub numeric_ids: bool,
    pub threads: Option<usize>,
}

#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
}

/// A restored file whose bytes are not the bytes that were backed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Mismatch {
    pub path: String,
    pub expected: FileHash,
    pub actual: FileHash,
}

/// A file that could not be restored because stored data is damaged or missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DamagedFile {
    pub path: String,
    pub error: String,
    pub pack: Option<String>,
    /// The hash recorded at backup time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<FileHash>,
    /// The hash of what could be restored, unreadable parts zero-filled (drills only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<FileHash>,
}

/// A restored file or folder whose metadata, read back, is not what the snapshot recorded
/// (drills check it: a permission, owner, ACL or extended attribute the target did not take).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MetadataMismatch {
    pub path: String,
    /// `permissions`, `owner`, `group`, or the attribute's name (`security.NTACL`).
    pub attribute: String,
    pub expected: String,
    pub actual: String,
}

/// A file the target would not take (a name too long for its filesystem, no space, a
/// directory in the way): nothing stored is damaged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Unwritable {
    pub path: String,
    pub error: String,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Files restored as hard links of another restored file (counted in `files` too).
    #[serde(default)]
    pub hard_links: u64,
    /// FIFOs and devices made.
    #[serde(default)]
    pub special: u64,
    pub bytes: u64,
    /// Files whose blake3 matched the snapshot (all restored files, unless listed below).
    pub files_verified: u64,
    pub mismatches: Vec<Mismatch>,
    pub damaged: Vec<DamagedFile>,
    /// Files the target refused (restore exits 3).
    #[serde(default)]
    pub unwritable: Vec<Unwritable>,
    /// Files and folders whose metadata was read back and compared (drills), and what
    /// differed.
    #[serde(default)]
    pub metadata_checked: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_mismatches: Vec<MetadataMismatch>,
    /// Metadata that could not be applied, file by file (a `security.*` attribute without
    /// root, an ACL on a file system without them): the restore exits 3.
    pub warnings: Vec<String>,
    /// How the restore ran, for the person to know (read without a lock, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

impl RestoreReport {
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty() && self.damaged.is_empty() && self.metadata_mismatches.is_empty()
    }
    /// Everything was written (damage aside).
    pub fn is_complete(&self) -> bool {
        self.unwritable.is_empty()
    }
    /// Every recorded attribute, ACL, owner, permission and time was applied.
    pub fn metadata_applied(&self) -> bool {
        self.warnings.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "{count} path(s) already exist in the target, for example {first}; nothing was written (use --overwrite to replace them, or choose an empty --target)"
    )]
    TargetExists { count: usize, first: String },
    #[error(
        "{path} is a symlink or a file where the snapshot has a folder on the way to what is restored; restore never follows or replaces it, so nothing was written: choose a --target without it (the folder it points to, say)"
    )]
    InTheWay { path: String },
    #[error(
        "{path} is a folder where the snapshot has a file or symlink; restore does not replace folders, so nothing was written: move it aside, or choose another --target"
    )]
    FolderInTheWay { path: String },
    #[error("{path:?} is not in the snapshot; `vouch ls` shows what it holds")]
    IncludeNotFound { path: String },
    #[error("cannot write to the target {path}: {detail}")]
    Target { path: String, detail: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// One file to write. Both parts are boxed: a plan of 200,000 files is a vector of two
/// pointers each, not of 200-byte nodes that its growth would copy and hold twice.
#[derive(Clone, Debug)]
pub struct PlannedFile {
    pub rel: Box<Path>,
    pub node: Box<Node>,
}

/// What a restore will write, from walking the snapshot's trees.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub dirs: Vec<(PathBuf, Node)>,
    pub files: Vec<PlannedFile>,
    pub symlinks: Vec<(PathBuf, Node)>,
    /// FIFOs, sockets and devices.
    pub special: Vec<(PathBuf, Node)>,
    /// Files that are hard links of a file earlier in `files` (its index): made as links to
    /// it once it is written.
    pub links: Vec<(PathBuf, usize)>,
    /// The oldest tree revision met (1: extended attributes and names were not recorded).
    pub format: u32,
    /// Subtrees that could not be read.
    pub damaged: Vec<DamagedFile>,
    /// Folders that are only on the way to what `include` asked for: made when missing, but
    /// never replaced (a symlink there, such as a NAS's `/var/services/homes`, is the
    /// administrator's, not the restore's).
    pub through: std::collections::HashSet<PathBuf>,
}

fn components(p: &OsStr) -> Vec<Vec<u8>> {
    p.as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// Walk the snapshot and list what to restore; `include` limits it to some paths.
pub async fn plan(
    trees: &TreeLoader,
    root: &BlobId,
    include: &[std::ffi::OsString],
) -> Result<Plan, RestoreError> {
    let includes: Vec<Vec<Vec<u8>>> = include.iter().map(|p| components(p)).collect();
    let mut matched = vec![false; includes.len()];
    let mut plan = Plan {
        format: crate::repo::format::tree::TREE_FORMAT,
        ..Plan::default()
    };
    // The first file of each hard-link group, by (device, inode).
    let mut groups: std::collections::HashMap<(u64, u64), usize> = Default::default();
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
                    expected: None,
                    actual: None,
                });
                continue;
            }
        };
        plan.format = plan.format.min(tree.format);
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
                    if !wanted {
                        plan.through.insert(rel_path.clone());
                    }
                    plan.dirs.push((rel_path, node));
                }
                NodeKind::File if wanted => {
                    if let Some(group) = node.link_group() {
                        if let Some(&first) = groups.get(&group) {
                            plan.links.push((rel_path, first));
                            continue;
                        }
                        groups.insert(group, plan.files.len());
                    }
                    plan.files.push(PlannedFile {
                        rel: rel_path.into_boxed_path(),
                        node: Box::new(node),
                    })
                }
                NodeKind::Symlink if wanted => plan.symlinks.push((rel_path, node)),
                kind if wanted && kind.is_special() => plan.special.push((rel_path, node)),
                _ => {}
            }
        }
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(RestoreError::IncludeNotFound {
            path: include[i].to_string_lossy().into_owned(),
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
    let (lock, note) = repo.lock_for_reading("restore").await?;
    let result = restore_locked(&repo, snapshot, opts, progress).await;
    lock.release().await?;
    let mut report = result?;
    report.notes.extend(note);
    Ok(report)
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
    // The tree packs it keeps are not needed to write the files.
    drop(trees);
    let target = opts.target.clone();
    check_target(&target, &plan, opts.overwrite)?;
    let threads = opts.threads.unwrap_or_else(|| default_threads(repo, false));
    let handle = tokio::runtime::Handle::current();
    let overwrite = opts.overwrite;
    let numeric_ids = opts.numeric_ids;
    let repo = repo.clone();
    let mut report = tokio::task::spawn_blocking(move || {
        write_plan(
            &repo,
            &index,
            &plan,
            &target,
            overwrite,
            threads,
            &Verification {
                numeric_ids,
                ..Verification::default()
            },
            &progress,
            handle,
        )
    })
    .await
    .expect("restore threads")?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Refuse, before anything is written, what in the target is in the way of the plan, found
/// without following any symlink: without `overwrite`, anything where the plan puts a file or
/// symlink, and anything but a folder where it puts a folder; with it (which replaces what is
/// in the way), a folder where a file goes. A symlink or file where a folder only on the way
/// to an include goes is refused either way.
fn check_target(target: &Path, plan: &Plan, overwrite: bool) -> Result<(), RestoreError> {
    use target::Existing;
    let t = target::Target::open(target, true).map_err(|e| target_error(target, e))?;
    let empty = std::fs::read_dir(target)
        .map_err(|e| target_error(target, e))?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    let shown = |rel: &Path| target.join(rel).display().to_string();
    let look = |rel: &Path| {
        t.existing(rel)
            .map_err(|e| target_error(&target.join(rel), e))
    };
    let mut existing = Vec::new();
    for (rel, _) in &plan.dirs {
        match look(rel)? {
            // Something on the way is a symlink or a file: its own entry is reported.
            Existing::Nothing | Existing::Dir | Existing::Blocked => {}
            Existing::Other if plan.through.contains(rel) => {
                return Err(RestoreError::InTheWay { path: shown(rel) });
            }
            Existing::Other if !overwrite => existing.push(rel.as_path()),
            Existing::Other => {}
        }
    }
    for rel in plan
        .files
        .iter()
        .map(|f| &*f.rel)
        .chain(plan.symlinks.iter().map(|(p, _)| p.as_path()))
        .chain(plan.special.iter().map(|(p, _)| p.as_path()))
        .chain(plan.links.iter().map(|(p, _)| p.as_path()))
    {
        match look(rel)? {
            Existing::Nothing | Existing::Blocked => {}
            Existing::Dir => return Err(RestoreError::FolderInTheWay { path: shown(rel) }),
            Existing::Other if !overwrite => existing.push(rel),
            Existing::Other => {}
        }
    }
    match existing.first() {
        Some(first) => Err(RestoreError::TargetExists {
            count: existing.len(),
            first: shown(first),
        }),
        None => Ok(()),
    }
}

/// Threads for restoring: writes are mostly kernel time, so twice the cores on a local disk;
/// on S3, as many as the remote read budget allows, since each waits on the network. A drill
/// (`whole_packs`) reads packs whole, so each of its readers holds more.
pub fn default_threads(repo: &Repository, whole_packs: bool) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    if repo.store().is_local() {
        cores * 2
    } else {
        // Each reader holds the read it decodes and the one under way after it.
        let read = if whole_packs {
            repo.config().largest_pack()
        } else {
            reader::MAX_READ
        };
        let read = 2 * read;
        crate::repo::remote_readers(repo.config(), read, 16)
    }
}

pub(crate) fn target_error(target: &Path, e: std::io::Error) -> RestoreError {
    RestoreError::Target {
        path: target.display().to_string(),
        detail: e.to_string(),
    }
}

pub(crate) fn display(rel: &Path) -> String {
    format!("/{}", rel.display())
}
