//! Walking the sources in name order and deciding, file by file, what must be read: a file
//! whose size, mtime, ctime and inode match the parent snapshot keeps its stored content.
//! Directories are handed to the tree builder in post-order (children before parents).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;

use crate::meta::{NameCache, time_ns};
use crate::repo::TreeLoader;
use crate::repo::format::snapshot::Problem;
use crate::repo::format::tree::{Node, NodeKind, Tree};
use crate::repo::index::MasterIndex;

use super::exclude::Excludes;
use super::pipeline::{FileJob, FileOutcome, ReadError};

/// One entry of a directory on its way to the tree builder.
pub(super) enum Entry {
    Ready(Node),
    /// A file being read; the node is completed from its outcome. The flag says whether
    /// the parent snapshot had a file of that name (changed, rather than new).
    Reading(
        Node,
        crossbeam_channel::Receiver<Result<FileOutcome, ReadError>>,
        bool,
    ),
    /// A directory whose tree the builder made earlier (post-order), by sequence number.
    Dir(Node, u64),
}

/// A directory, complete, in post-order.
pub(super) struct DirJob {
    pub seq: u64,
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

/// What the walk itself found (the reading outcome is counted by the tree builder).
#[derive(Default)]
pub(super) struct WalkStats {
    pub files_unmodified: u64,
    pub files_to_read: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub special: u64,
    pub problems: Vec<Problem>,
}

/// The top of the snapshot: the components leading to each source path.
#[derive(Default, Debug)]
pub(super) struct SourceTree {
    children: BTreeMap<Vec<u8>, SourceTree>,
    /// This component is itself a source path: walk everything under it.
    is_source: bool,
}

impl SourceTree {
    pub fn new(paths: &[PathBuf]) -> Self {
        let mut root = SourceTree::default();
        for p in paths {
            let mut node = &mut root;
            for c in p.components().skip(1) {
                node = node
                    .children
                    .entry(c.as_os_str().as_bytes().to_vec())
                    .or_default();
            }
            node.is_source = true;
        }
        root
    }
}

pub(super) struct Walker<'a> {
    pub handle: tokio::runtime::Handle,
    pub trees: Option<&'a TreeLoader>,
    pub index: &'a MasterIndex,
    pub excludes: &'a Excludes,
    pub files: Sender<FileJob>,
    pub dirs: Sender<DirJob>,
    pub next_seq: u64,
    pub stats: WalkStats,
    pub names: &'a NameCache,
    /// Whether the backup is stopping (a failure, a shutdown, the window closing).
    pub cancelled: &'a dyn Fn() -> bool,
}

/// A node from what `lstat` says (content, subtree, target and extended attributes are
/// filled in later).
pub(super) fn node_from_meta(name: &[u8], kind: NodeKind, m: &Metadata, names: &NameCache) -> Node {
    let mut node = Node {
        name: name.to_vec(),
        kind,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        size: 0,
        content: Vec::new(),
        hash: None,
        subtree: None,
        target: None,
        user: None,
        group: None,
        extra: None,
    };
    apply_stat(&mut node, m, names);
    node
}

/// What `stat` says of a node: permissions, owner (by number and name), times, inode, and
/// for a file with several links its link count and device, for a device its numbers.
pub(super) fn apply_stat(node: &mut Node, m: &Metadata, names: &NameCache) {
    node.mode = m.mode() & 0o7777;
    if node.uid != m.uid() || node.user.is_none() {
        node.user = names.user(m.uid());
    }
    if node.gid != m.gid() || node.group.is_none() {
        node.group = names.group(m.gid());
    }
    node.uid = m.uid();
    node.gid = m.gid();
    node.mtime_ns = time_ns(m.mtime(), m.mtime_nsec());
    node.ctime_ns = time_ns(m.ctime(), m.ctime_nsec());
    node.inode = m.ino();
    node.size = if node.kind == NodeKind::File {
        m.size()
    } else {
        0
    };
    if node.kind == NodeKind::File && m.nlink() > 1 {
        let e = node.extra_mut();
        e.links = m.nlink();
        e.device = m.dev();
    } else if let Some(e) = node.extra.as_deref_mut() {
        e.links = 0;
        e.device = 0;
    }
    if matches!(node.kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        let e = node.extra_mut();
        e.major = rustix::fs::major(m.rdev());
        e.minor = rustix::fs::minor(m.rdev());
    }
    node.tidy();
}

/// Whether the stored node's extended attributes still hold: they were recorded (a tree of
/// revision 2 or later) and the change time and inode are the same (setting an attribute or
/// an ACL moves the change time).
fn same_xattrs(old: Option<&Node>, new: &Node, recorded: bool) -> bool {
    old.is_some_and(|o| {
        recorded && o.kind == new.kind && o.ctime_ns == new.ctime_ns && o.inode == new.inode
    })
}

fn unchanged(old: &Node, new: &Node, index: &MasterIndex) -> bool {
    old.kind == NodeKind::File
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.inode == new.inode
        && old.hash.is_some()
        && old.content.iter().all(|id| index.contains(id))
}

impl Walker<'_> {
    fn problem(&mut self, path: &Path, error: impl ToString) {
        self.stats.problems.push(Problem {
            path: path.to_string_lossy().into_owned(),
            error: error.to_string(),
        });
    }

    fn parent_tree(&mut self, node: Option<&Node>) -> Option<Tree> {
        let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        // A parent tree that cannot be read only costs re-reading the files.
        self.trees?.load_blocking(&self.handle, &id).ok()
    }

    fn emit(&mut self, path: PathBuf, entries: Vec<Entry>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let _ = self.dirs.send(DirJob { seq, path, entries });
        seq
    }

    /// The extended attributes of `path` (not followed): the stored node's when they still
    /// hold, else read. One that cannot be read is a problem of the backup, named, and the
    /// node is kept without them.
    fn xattrs(&mut self, path: &Path, node: &mut Node, old: Option<&Node>, recorded: bool) {
        let xattrs = if same_xattrs(old, node, recorded) {
            old.map(|o| o.xattrs().to_vec()).unwrap_or_default()
        } else {
            match crate::meta::path_xattrs(path) {
                Ok(x) => x,
                Err(e) => {
                    self.problem(path, format!("extended attributes not recorded: {e}"));
                    Vec::new()
                }
            }
        };
        if !xattrs.is_empty() {
            node.extra_mut().xattrs = xattrs;
        }
    }

    /// Walk the components above and including the sources; returns the root's sequence.
    pub fn walk_sources(&mut self, tree: &SourceTree, path: &Path, parent: Option<Tree>) -> u64 {
        let recorded = parent.as_ref().is_some_and(|t| t.format >= 2);
        let mut entries = Vec::new();
        for (name, child) in &tree.children {
            let child_path = path.join(OsStr::from_bytes(name));
            let old = parent.as_ref().and_then(|t| t.find(name)).cloned();
            let meta = match std::fs::symlink_metadata(&child_path) {
                Ok(m) => m,
                Err(e) => {
                    self.problem(&child_path, e);
                    continue;
                }
            };
            if child.is_source {
                if let Some(e) = self.entry(&child_path, name, &meta, old.as_ref(), recorded) {
                    entries.push(e);
                }
            } else {
                let sub_parent = self.parent_tree(old.as_ref());
                let seq = self.walk_sources(child, &child_path, sub_parent);
                self.stats.dirs += 1;
                let mut node = node_from_meta(name, NodeKind::Dir, &meta, self.names);
                self.xattrs(&child_path, &mut node, old.as_ref(), recorded);
                entries.push(Entry::Dir(node, seq));
            }
        }
        self.emit(path.to_path_buf(), entries)
    }

    /// The entry for one path found by the walk, or `None` when it is left out. `recorded`:
    /// the parent snapshot's tree recorded extended attributes.
    fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        old: Option<&Node>,
        recorded: bool,
    ) -> Option<Entry> {
        let ft = meta.file_type();
        if ft.is_dir() {
            let parent = self.parent_tree(old);
            let seq = self.walk_dir(path, parent);
            self.stats.dirs += 1;
            let mut node = node_from_meta(name, NodeKind::Dir, meta, self.names);
            self.xattrs(path, &mut node, old, recorded);
            Some(Entry::Dir(node, seq))
        } else if ft.is_file() {
            let node = node_from_meta(name, NodeKind::File, meta, self.names);
            if let Some(old) = old.filter(|o| unchanged(o, &node, self.index)) {
                self.stats.files_unmodified += 1;
                let mut node = node;
                node.content = old.content.clone();
                node.hash = old.hash;
                if !old.holes().is_empty() {
                    node.extra_mut().holes = old.holes().to_vec();
                }
                self.xattrs(path, &mut node, Some(old), recorded);
                return Some(Entry::Ready(node));
            }
            // The reader records the attributes from the open file.
            self.stats.files_to_read += 1;
            let (tx, rx) = crossbeam_channel::bounded(1);
            let job = FileJob {
                path: path.to_path_buf(),
                size: meta.size(),
                result: tx,
            };
            if self.files.send(job).is_err() {
                return None;
            }
            let existed = old.is_some_and(|o| o.kind == NodeKind::File);
            Some(Entry::Reading(node, rx, existed))
        } else if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(target) => {
                    self.stats.symlinks += 1;
                    let mut node = node_from_meta(name, NodeKind::Symlink, meta, self.names);
                    node.target = Some(target.as_os_str().as_bytes().to_vec());
                    self.xattrs(path, &mut node, old, recorded);
                    Some(Entry::Ready(node))
                }
                Err(e) => {
                    self.problem(path, e);
                    None
                }
            }
        } else {
            let kind = if ft.is_fifo() {
                NodeKind::Fifo
            } else if ft.is_socket() {
                NodeKind::Socket
            } else if ft.is_char_device() {
                NodeKind::CharDevice
            } else {
                NodeKind::BlockDevice
            };
            self.stats.special += 1;
            let mut node = node_from_meta(name, kind, meta, self.names);
            self.xattrs(path, &mut node, old, recorded);
            Some(Entry::Ready(node))
        }
    }

    /// Walk a directory of a source; returns its sequence number.
    fn walk_dir(&mut self, path: &Path, parent: Option<Tree>) -> u64 {
        let recorded = parent.as_ref().is_some_and(|t| t.format >= 2);
        let mut names: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        match std::fs::read_dir(path) {
            Ok(rd) => {
                for entry in rd {
                    match entry {
                        Ok(e) => names.push((e.file_name().as_bytes().to_vec(), e.path())),
                        Err(e) => self.problem(path, e),
                    }
                }
            }
            Err(e) => self.problem(path, format!("directory cannot be listed: {e}")),
        }
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for (name, child) in names {
            if (self.cancelled)() {
                break;
            }
            if self.excludes.is_excluded(&child) {
                continue;
            }
            let meta = match std::fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.problem(&child, e);
                    continue;
                }
            };
            let old = parent.as_ref().and_then(|t| t.find(&name));
            if let Some(e) = self.entry(&child, &name, &meta, old, recorded) {
                entries.push(e);
            }
        }
        self.emit(path.to_path_buf(), entries)
    }
}

/// The size of the regular files under `paths`, by a walk that reads only metadata: how far an
/// initial seed has got is shown against it. `None` when `stop` is set before the end.
pub(super) fn measure(
    paths: &[PathBuf],
    excludes: &Excludes,
    stop: &std::sync::atomic::AtomicBool,
) -> Option<u64> {
    let mut total = 0u64;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => dirs.push(p.clone()),
            Ok(m) if m.is_file() => total += m.len(),
            _ => {}
        }
    }
    while let Some(dir) = dirs.pop() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if excludes.is_excluded(&path) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    Some(total)
}
