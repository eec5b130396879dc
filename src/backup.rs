//! Backing up: walk the sources, read what changed, store new blobs in packs, write the
//! index, then the snapshot. That order is the crash-safety argument: a snapshot is written
//! only after every pack and index it depends on is stored.

pub mod changes;
mod checkpoint;
mod exclude;
mod pipeline;
mod walk;

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::repo::chunker::Chunker;
use crate::repo::format::BlobKind;
use crate::repo::format::FORMAT_VERSION;
use crate::repo::format::index::IndexFile;
use crate::repo::format::snapshot::{BackupSummary, Problem, Snapshot};
use crate::repo::format::tree::{Node, Tree};
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::{LockMode, RepoError, Repository, TreeLoader};
use crate::storage::StorageError;

pub use checkpoint::{SeedProgress, checkpoints};
pub use exclude::{ExcludeError, Excludes};
pub use pipeline::BackupProgress;

use pipeline::{Sealer, Shared, Stats};
use walk::{DirJob, Entry, SourceTree, Walker};

/// What to back up and how to mark it.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub label: Option<String>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub schedule: Option<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    pub host: Option<String>,
    /// Reader and sealer threads each (default: the number of cores).
    pub threads: Option<usize>,
    /// Compare against this snapshot instead of the latest one of the same paths.
    pub parent: Option<SnapshotId>,
    /// Read every file, ignoring the parent snapshot.
    pub force_read: bool,
    /// Set from outside to stop the backup: it stops reading, checkpoints what it stored
    /// (the next backup reuses it), stores no snapshot, and returns `Interrupted`.
    pub abort: Option<Arc<AtomicBool>>,
    /// The same, when the schedule's window closes: returns `Paused`.
    pub pause: Option<Arc<AtomicBool>>,
}

/// The result of a backup that ran to the end.
#[derive(Debug)]
pub struct BackupReport {
    pub snapshot_id: SnapshotId,
    pub snapshot: Snapshot,
}

impl BackupReport {
    /// Some files could not be read: the snapshot is partial (exit code 3).
    pub fn is_partial(&self) -> bool {
        !self.snapshot.summary.unreadable.is_empty()
    }
}

/// Why a backup could not run (files that cannot be read are not errors: they are recorded).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("source {path} does not exist: check the path (is the share mounted?)")]
    SourceMissing { path: String },
    #[error("source {path} cannot be used: {detail}")]
    SourceInvalid { path: String, detail: String },
    #[error(transparent)]
    Exclude(#[from] ExcludeError),
    #[error(transparent)]
    Repo(RepoError),
    #[error(
        "backup stopped: {0}; no snapshot was recorded, and the next backup reuses what was stored up to the last checkpoint"
    )]
    Storage(#[from] StorageError),
    #[error(
        "backup stopped before the end (the service was shutting down) with {} stored; no snapshot was recorded yet, and the next backup reuses what was stored",
        crate::units::size(.0.stored_bytes)
    )]
    Interrupted(SeedProgress),
    #[error(
        "backup paused at the end of its window with {}; the next run continues it",
        .0.describe()
    )]
    Paused(SeedProgress),
}

impl BackupError {
    /// Stopped from outside (a shutdown, the window closing): not a failure of the backup.
    pub fn progress(&self) -> Option<SeedProgress> {
        match self {
            BackupError::Interrupted(p) | BackupError::Paused(p) => Some(*p),
            _ => None,
        }
    }
}

impl From<RepoError> for BackupError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Storage(s) => BackupError::Storage(s),
            other => BackupError::Repo(other),
        }
    }
}

/// Make a source path absolute and clean; refuse `..`.
fn normalize_source(p: &Path) -> Result<PathBuf, BackupError> {
    let abs = std::path::absolute(p).map_err(|e| BackupError::SourceInvalid {
        path: p.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(BackupError::SourceInvalid {
                    path: p.display().to_string(),
                    detail: "give the path without `..`".into(),
                });
            }
            _ => {}
        }
    }
    if std::fs::symlink_metadata(&out).is_err() {
        return Err(BackupError::SourceMissing {
            path: out.display().to_string(),
        });
    }
    Ok(out)
}

/// Back up `opts.paths` into `repo`.
pub async fn backup(
    repo: Arc<Repository>,
    opts: BackupOptions,
    progress: Arc<BackupProgress>,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let time = repo.clock().now();
    let mut paths = opts
        .paths
        .iter()
        .map(|p| normalize_source(p))
        .collect::<Result<Vec<_>, _>>()?;
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return Err(BackupError::SourceInvalid {
            path: String::new(),
            detail: "no source path given".into(),
        });
    }
    for w in paths.windows(2) {
        if w[1].starts_with(&w[0]) {
            return Err(BackupError::SourceInvalid {
                path: w[1].display().to_string(),
                detail: format!(
                    "it is inside {}, which is already backed up",
                    w[0].display()
                ),
            });
        }
    }
    let mut excludes = Excludes::new(&opts.excludes)?;
    if let Some(root) = repo_dir_inside(&repo, &paths) {
        excludes.add_dir(root);
    }
    let host = opts.host.clone().unwrap_or_else(crate::sys::hostname);
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();

    // The lock covers everything up to and including the stored snapshot: until the snapshot
    // exists, nothing else says that its new packs, and the old blobs it reuses, are in use.
    let lock = repo.lock(LockMode::Shared, "backup").await?;
    let result = async {
        let (mut snapshot, parent_id, checkpointed) = run(
            &repo,
            &opts,
            &paths,
            &path_strings,
            &host,
            excludes,
            time,
            progress,
        )
        .await?;
        snapshot.summary.duration_ms = started.elapsed().as_millis() as u64;
        snapshot.parent = parent_id;
        crate::sys::test_pause("VOUCH_TEST_BACKUP_PAUSE", "snapshot");
        lock.check()?;
        let snapshot_id = repo.save_snapshot(&snapshot).await?;
        if checkpointed {
            checkpoint::remove_for_source(&repo, &host, &path_strings).await;
        }
        Ok::<_, BackupError>(BackupReport {
            snapshot_id,
            snapshot,
        })
    }
    .await;
    let released = lock.release().await;
    let report = result?;
    released?;
    Ok(report)
}

/// A local repository inside one of the sources is left out of its own backup.
fn repo_dir_inside(repo: &Repository, paths: &[PathBuf]) -> Option<PathBuf> {
    if !repo.store().is_local() {
        return None;
    }
    let dir = PathBuf::from(repo.url());
    let dir = normalize_source(&dir).ok()?;
    paths.iter().any(|p| dir.starts_with(p)).then_some(dir)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    paths: &[PathBuf],
    path_strings: &[String],
    host: &str,
    excludes: Excludes,
    time: jiff::Timestamp,
    progress: Arc<BackupProgress>,
) -> Result<(Snapshot, Option<SnapshotId>, bool), BackupError> {
    // The index, the parent and the checkpoints are listed at once: over a link each listing
    // is a round trip, and a nightly backup is mostly these.
    let find_parent = async {
        if opts.force_read {
            Ok(None)
        } else if let Some(id) = opts.parent {
            repo.find_snapshot(&id.to_hex()).await.map(Some)
        } else {
            let (all, _) = repo.snapshots().await?;
            Ok(all
                .into_iter()
                .rev()
                .find(|(_, s)| s.same_source(host, path_strings)))
        }
    };
    let (loaded, parent, listed) = tokio::join!(
        repo.load_index(),
        find_parent,
        checkpoint::checkpoints(repo)
    );
    let (index, _unreadable) = loaded?;
    let index = Arc::new(index);
    let parent = parent?;
    let (found, _) = listed?;
    let resumed = checkpoint::resumed(&found, host, path_strings);
    if resumed.checkpoints > 0 {
        tracing::info!(
            packs = resumed.packs,
            stored = %crate::units::size(resumed.stored_bytes),
            "continuing an unfinished backup of these paths: what it stored is reused"
        );
    }
    let checkpoints = Arc::new(checkpoint::Checkpointer::new(
        repo.clone(),
        host,
        path_strings,
        time,
        resumed,
        progress.clone(),
    ));
    // An initial seed measures its sources beside the backup, to show how far it has got.
    let measuring = Arc::new(AtomicBool::new(false));
    if parent.is_none() {
        let (paths, excludes, stop, total) = (
            paths.to_vec(),
            excludes.clone(),
            measuring.clone(),
            checkpoints.source_total.clone(),
        );
        std::thread::spawn(move || {
            if let Some(n) = walk::measure(&paths, &excludes, &stop) {
                total.store(n, Ordering::Relaxed);
            }
        });
    }
    let _stop_measuring = crate::sys::StopOnDrop(measuring);
    let trees = TreeLoader::new(repo.clone(), index.clone());
    let parent_root = match &parent {
        Some((_, s)) => trees.load(&s.tree).await.ok(),
        None => None,
    };
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let config = repo.config();
    let shared = Shared {
        keys: repo.keys().clone(),
        chunker: Chunker::new(&config.chunker, repo.keys().chunker_seed()),
        level: config.compression.level,
        pack_size: config.pack_size as usize,
        store: repo.store().clone(),
        handle: tokio::runtime::Handle::current(),
        known: Mutex::new(index.blob_ids().copied().collect::<HashSet<BlobId>>()),
        uploads: Arc::new(Semaphore::new(env_threads("VOUCH_UPLOADS").unwrap_or(2))),
        upload_tasks: Mutex::new(Vec::new()),
        checkpoints,
        failure: Arc::new(Mutex::new(None)),
        cancelled: Arc::new(AtomicBool::new(false)),
        progress,
        stats: Stats::default(),
        chunk_buffers: Arc::new(pipeline::BufferPool::new(threads * 3 + 2, usize::MAX)),
        pack_buffers: Arc::new(pipeline::BufferPool::new(threads + 2, usize::MAX)),
        abort: opts.abort.clone(),
        pause: opts.pause.clone(),
        names: crate::meta::NameCache::default(),
    };
    let source_tree = SourceTree::new(paths);
    let (summary, root, shared, index) = tokio::task::spawn_blocking(move || {
        let (mut summary, root) = run_threads(
            &shared,
            &trees,
            &index,
            &excludes,
            &source_tree,
            parent_root,
            threads,
        );
        shared.wait_uploads();
        let st = &shared.stats;
        summary.data_blobs_added = st.data_blobs.load(Ordering::Relaxed);
        summary.tree_blobs_added = st.tree_blobs.load(Ordering::Relaxed);
        summary.bytes_added_raw = st.raw_added.load(Ordering::Relaxed);
        summary.bytes_added_stored = st.stored_added.load(Ordering::Relaxed);
        summary.packs_added = st.packs.load(Ordering::Relaxed);
        summary.bytes_read = shared.progress.bytes_read.load(Ordering::Relaxed);
        drop(trees);
        (summary, root, shared, index)
    })
    .await
    .expect("backup threads");

    let failure = shared.failure.lock().expect("failure").take();
    if failure.is_some() || shared.aborted() || shared.paused() {
        // A consistent point: every pack stored is checkpointed, for the next run to reuse.
        let progress = shared.checkpoints.stop().await;
        if let Some(err) = failure {
            if let Err(e) = &progress {
                tracing::warn!(error = %e, "could not checkpoint what was stored before the backup stopped");
            }
            return Err(err.into());
        }
        let progress = progress?;
        return Err(if shared.paused() {
            BackupError::Paused(progress)
        } else {
            BackupError::Interrupted(progress)
        });
    }
    let root = root.ok_or_else(|| BackupError::SourceInvalid {
        path: path_strings.join(", "),
        detail: "the walk produced no tree".into(),
    })?;
    let packs = shared.checkpoints.take_pending().await;
    crate::sys::test_pause("VOUCH_TEST_BACKUP_PAUSE", "index");
    let mut summary = summary;
    let mut index = Arc::try_unwrap(index).unwrap_or_else(|shared| (*shared).clone());
    if !packs.is_empty() {
        let file = IndexFile {
            version: FORMAT_VERSION,
            supersedes: Vec::new(),
            packs,
        };
        let id = repo.save_index(&file).await?;
        index.add(id, &file);
    }
    // What changed since the parent, for the monitoring's ransomware check. A comparison that
    // fails does not fail the backup: the snapshot is sound, the statistics are just missing.
    if let Some((_, p)) = &parent {
        let trees = TreeLoader::new(repo.clone(), Arc::new(index));
        match changes::compare(&trees, p.tree, root, p.summary.total_files).await {
            Ok(c) => summary.changes = Some(c),
            Err(e) => tracing::warn!(error = %e, "could not compare the backup with its parent"),
        }
    }
    let snapshot = Snapshot {
        version: FORMAT_VERSION,
        time,
        host: host.to_string(),
        username: crate::sys::username(),
        paths: path_strings.to_vec(),
        label: opts.label.clone(),
        tags: opts.tags.clone(),
        schedule: opts.schedule.clone(),
        excludes: opts.excludes.clone(),
        tree: root,
        parent: None,
        summary,
        program: format!("vouch {}", env!("CARGO_PKG_VERSION")),
    };
    let checkpointed = shared.checkpoints.any().await;
    Ok((snapshot, parent.map(|(id, _)| id), checkpointed))
}

/// Sealer threads: on a local disk one per reader; with fewer, the cores idle (one sealer on
/// two cores: 8.5 s instead of 6 s for the 2 GiB corpus, about 250 MB/s). Over S3 one: the
/// link is the limit well below that, and each sealer holds a pack of its own, filling or
/// finished and waiting for an upload slot (the mixed tree over 100 Mbit/s: 15.7 s either
/// way, 70 MiB instead of 85). `VOUCH_SEALERS` overrides it for measurements.
fn sealers(threads: usize, local: bool) -> usize {
    env_threads("VOUCH_SEALERS").unwrap_or(if local { threads } else { 1 })
}

fn env_threads(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok().filter(|n| *n > 0)
}

/// Start the stages, walk, and build the trees; returns the summary and the root tree id.
fn run_threads(
    shared: &Shared,
    trees: &TreeLoader,
    index: &crate::repo::index::MasterIndex,
    excludes: &Excludes,
    source_tree: &SourceTree,
    parent_root: Option<Tree>,
    threads: usize,
) -> (BackupSummary, Option<BlobId>) {
    let (file_tx, file_rx) = crossbeam_channel::bounded(threads * 8);
    let (seal_tx, seal_rx) = crossbeam_channel::bounded(threads);
    let (dir_tx, dir_rx) = crossbeam_channel::bounded::<DirJob>(256);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (rx, seal) = (file_rx.clone(), seal_tx.clone());
            s.spawn(move || pipeline::read_loop(shared, rx, seal));
        }
        drop((file_rx, seal_tx));
        for _ in 0..sealers(threads, shared.store.is_local()) {
            let rx = seal_rx.clone();
            s.spawn(move || pipeline::seal_loop(shared, rx));
        }
        drop(seal_rx);
        let builder = s.spawn(move || build_trees(shared, dir_rx));
        let mut walker = Walker {
            handle: shared.handle.clone(),
            trees: Some(trees),
            index,
            excludes,
            files: file_tx,
            dirs: dir_tx,
            next_seq: 0,
            stats: Default::default(),
            names: &shared.names,
            cancelled: &|| shared.is_cancelled(),
        };
        walker.walk_sources(source_tree, Path::new("/"), parent_root);
        let Walker {
            stats, files, dirs, ..
        } = walker;
        drop((files, dirs));
        let (mut summary, root) = builder.join().expect("tree builder");
        summary.files_unmodified = stats.files_unmodified;
        summary.dirs = stats.dirs;
        summary.symlinks = stats.symlinks;
        summary.unreadable.extend(stats.problems);
        summary.special = stats.special;
        (summary, root)
    })
}

/// The tree builder: completes each directory's nodes (waiting for its files), stores its
/// tree blob, and remembers its id for the parent directory.
fn build_trees(
    shared: &Shared,
    dirs: crossbeam_channel::Receiver<DirJob>,
) -> (BackupSummary, Option<BlobId>) {
    let mut summary = BackupSummary::default();
    let mut done: std::collections::HashMap<u64, BlobId> = Default::default();
    let mut sealer = Sealer::new(shared, BlobKind::Tree);
    let mut root = None;
    for job in dirs {
        let mut tree = Tree {
            nodes: Vec::with_capacity(job.entries.len()),
            format: crate::repo::format::tree::TREE_FORMAT,
        };
        for entry in job.entries {
            let node = match entry {
                Entry::Ready(node) => node,
                Entry::Dir(mut node, seq) => {
                    node.subtree = done.remove(&seq);
                    if node.subtree.is_none() {
                        continue;
                    }
                    node
                }
                Entry::Reading(node, rx, existed) => {
                    let path = job.path.join(
                        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&node.name),
                    );
                    match rx.recv() {
                        Ok(Ok(out)) => {
                            complete_file(node, out, existed, &path, &shared.names, &mut summary)
                        }
                        Ok(Err(error)) => {
                            summary.unreadable.push(Problem {
                                path: path.to_string_lossy().into_owned(),
                                error: error.to_string(),
                            });
                            continue;
                        }
                        Err(_) => continue,
                    }
                }
            };
            if node.kind == crate::repo::format::tree::NodeKind::File {
                summary.total_files += 1;
                summary.total_bytes += node.size;
            }
            tree.nodes.push(node);
        }
        let json = serde_json::to_vec(&tree).expect("trees serialize");
        let id = shared.keys.blob_id(&json);
        if shared.claim(id) && !shared.is_cancelled() {
            sealer.add(shared, id, &json);
        }
        done.insert(job.seq, id);
        root = Some(id);
    }
    if !shared.is_cancelled() {
        sealer.flush(shared);
    }
    (summary, root)
}

fn complete_file(
    mut node: Node,
    out: pipeline::FileOutcome,
    existed: bool,
    path: &Path,
    names: &crate::meta::NameCache,
    summary: &mut BackupSummary,
) -> Node {
    // The metadata as of the read, which the content and attributes are of.
    if let Some(m) = &out.meta {
        walk::apply_stat(&mut node, m, names);
    }
    match out.xattrs {
        Ok(x) if !x.is_empty() => node.extra_mut().xattrs = x,
        Ok(_) => {}
        Err(e) => summary.unreadable.push(Problem {
            path: path.to_string_lossy().into_owned(),
            error: format!("extended attributes not recorded: {e}"),
        }),
    }
    if !out.holes.is_empty() {
        node.extra_mut().holes = out.holes;
    }
    node.content = out.content;
    node.hash = Some(out.hash);
    node.size = out.size;
    if out.changed {
        summary
            .changed_during_read
            .push(path.to_string_lossy().into_owned());
    }
    if existed {
        summary.files_changed += 1;
    } else {
        summary.files_new += 1;
    }
    node
}
