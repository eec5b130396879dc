//! Where a restore writes. Every path is resolved beneath a descriptor of the target directory
//! without following any symlink (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; on
//! kernels older than 5.6, one component at a time with `O_NOFOLLOW`), and every change is
//! made through a descriptor or relative to the parent's. A symlink already in the target,
//! planted there or left by an earlier restore, can therefore never make a restore write,
//! chmod or chown anything outside it: restores run as root, into live shares and drill
//! sandboxes, and following one would be a privilege escalation.
//!
//! With `--overwrite`, what is in the way is replaced, never followed: a regular file of the
//! target's own (one link) is rewritten in place, checked through the descriptor that writes
//! it; a symlink, a hard link (which may share its inode with a file elsewhere) or anything
//! else is replaced by a new file renamed over it, so the file it pointed at is untouched; a
//! symlink or file where the snapshot has a directory is removed and the directory made.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::meta::Owners;
use crate::repo::format::tree::{Node, NodeKind, Xattr};

/// What is at a path of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Nothing,
    Dir,
    /// A file, symlink or special file.
    Other,
    /// A component on the way is a symlink or not a directory.
    Blocked,
}

/// The restore target, open.
pub struct Target {
    root: OwnedFd,
    path: PathBuf,
    /// Cleared when the kernel has no `openat2` (Linux before 5.6, or a seccomp filter).
    openat2: AtomicBool,
    /// Made owner-only until their metadata is applied (a restore); otherwise by the umask
    /// (a drill's sandbox, whose checks may run as another user).
    private: bool,
    /// Owners by name where the name exists here, else by number.
    owners: Owners,
    /// The snapshot recorded extended attributes: any other on what is restored (an ACL
    /// inherited from the folder, an old file's) is removed.
    exact_xattrs: bool,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// The parent of `rel` and its last component.
fn split(rel: &Path) -> std::io::Result<(&Path, &OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a path inside the target", rel.display()),
        )),
    }
}

/// Names inside a snapshot are single components; anything else is refused rather than
/// resolved.
fn check_relative(rel: &Path) -> std::io::Result<()> {
    if rel
        .components()
        .all(|c| matches!(c, Component::Normal(n) if !n.as_bytes().contains(&b'/')))
    {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} does not stay inside the target", rel.display()),
        ))
    }
}

fn timestamps(node: &Node) -> Timestamps {
    let t = Timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000) as _,
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// A file being restored: written under its own name, or with `--overwrite` under a
/// temporary name that `commit` renames over the old entry. A temporary file that is never
/// committed is removed when this is dropped.
pub struct NewFile {
    pub file: File,
    parent: Arc<OwnedFd>,
    name: OsString,
    temp: Option<OsString>,
}

impl NewFile {
    /// Put the file in place (a no-op unless it replaces something).
    pub fn commit(mut self) -> std::io::Result<()> {
        if let Some(temp) = self.temp.take() {
            if let Err(e) = rustix::fs::renameat(&*self.parent, &temp, &*self.parent, &self.name) {
                let _ = rustix::fs::unlinkat(&*self.parent, &temp, AtFlags::empty());
                return Err(io(e));
            }
        }
        Ok(())
    }

    /// Remove what was written; with `--overwrite`, the old file stays as it was.
    pub fn discard(mut self) {
        let name = self.temp.take().unwrap_or_else(|| self.name.clone());
        let _ = rustix::fs::unlinkat(&*self.parent, &name, AtFlags::empty());
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = rustix::fs::unlinkat(&*self.parent, &temp, AtFlags::empty());
        }
    }
}

/// Which object a path named when it was made: metadata is applied only to that object.
pub type Made = (u64, u64);

fn made(st: &rustix::fs::Stat) -> Made {
    (st.st_dev, st.st_ino)
}

impl Target {
    /// Open the target directory, creating it (and its parents) if needed. The target's own
    /// path is the one the person gave; only what lies beneath it is resolved without
    /// following symlinks. `private`: files and folders are made owner-only until their
    /// metadata is applied.
    pub fn open(path: &Path, private: bool) -> std::io::Result<Target> {
        std::fs::create_dir_all(path)?;
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        Ok(Target {
            root,
            path: path.to_path_buf(),
            openat2: AtomicBool::new(true),
            private,
            owners: Owners::default(),
            exact_xattrs: false,
        })
    }

    /// How metadata is applied: `numeric_ids` sets owners by the recorded numbers only;
    /// `recorded` (the snapshot recorded extended attributes) removes any others found.
    pub fn set_metadata(&mut self, numeric_ids: bool, recorded: bool) {
        self.owners = Owners::new(numeric_ids);
        self.exact_xattrs = recorded;
    }

    fn uid(&self, node: &Node) -> rustix::fs::Uid {
        rustix::fs::Uid::from_raw(self.owners.uid(node.user.as_ref(), node.uid))
    }

    fn gid(&self, node: &Node) -> rustix::fs::Gid {
        rustix::fs::Gid::from_raw(self.owners.gid(node.group.as_ref(), node.gid))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A descriptor of the directory `rel` (the target itself when empty), reached without
    /// following a symlink.
    pub fn open_dir(&self, rel: &Path) -> std::io::Result<OwnedFd> {
        check_relative(rel)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if rel.as_os_str().is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(io);
        }
        if self.openat2.load(Ordering::Relaxed) {
            match rustix::fs::openat2(
                &self.root,
                rel,
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::NOSYS) | Err(Errno::PERM) => {
                    self.openat2.store(false, Ordering::Relaxed)
                }
                other => return other.map_err(io),
            }
        }
        // One component at a time, none of them followed if it is a symlink; the folders on
        // the way only need to be searchable (O_PATH), as with openat2.
        let mut fd = rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(io)?;
        let parts: Vec<_> = rel.components().collect();
        let through = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for (i, c) in parts.iter().enumerate() {
            let f = if i + 1 == parts.len() { flags } else { through };
            fd = rustix::fs::openat(&fd, c.as_os_str(), f, Mode::empty()).map_err(io)?;
        }
        Ok(fd)
    }

    /// What is at `rel`, without following a symlink anywhere on the way.
    pub fn existing(&self, rel: &Path) -> std::io::Result<Existing> {
        let (parent, name) = split(rel)?;
        let dir = match self.open_dir(parent) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                return Ok(Existing::Nothing);
            }
            Err(e)
                if [Errno::LOOP, Errno::NOTDIR, Errno::XDEV]
                    .iter()
                    .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
            {
                return Ok(Existing::Blocked);
            }
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                Ok(Existing::Dir)
            }
            Ok(_) => Ok(Existing::Other),
            Err(Errno::NOENT) => Ok(Existing::Nothing),
            Err(e) => Err(io(e)),
        }
    }

    fn dir_mode(&self) -> Mode {
        if self.private {
            Mode::RWXU
        } else {
            Mode::from_raw_mode(0o777)
        }
    }

    /// Make the directory `rel` (its parent exists) and say which object it is. One already
    /// there is used; with `replace`, a file or symlink in its place is removed first (never
    /// followed).
    pub fn make_dir(&self, rel: &Path, replace: bool) -> std::io::Result<Made> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        match rustix::fs::mkdirat(&dir, name, self.dir_mode()) {
            Ok(()) => {}
            Err(Errno::EXIST) => match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                Ok(_) if replace => {
                    rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io)?;
                    rustix::fs::mkdirat(&dir, name, self.dir_mode()).map_err(io)?;
                }
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file or symlink is where the snapshot has a directory",
                    ));
                }
                Err(e) => return Err(io(e)),
            },
            Err(e) => return Err(io(e)),
        }
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        Ok(made(&rustix::fs::fstat(&fd).map_err(io)?))
    }

    /// Create the file `rel` for writing, readable by its owner only until its metadata is
    /// applied. Without `replace` nothing may be there; with it, the file is written under a
    /// temporary name and `NewFile::commit` renames it over whatever is there.
    #[cfg(test)]
    pub fn create_file(&self, rel: &Path, replace: bool) -> std::io::Result<NewFile> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        self.create_in(Arc::new(dir), name, replace)
    }

    /// As `create_file`, in an already open parent directory (shared by the files written
    /// into it, so that none costs another descriptor).
    pub fn create_in(
        &self,
        dir: Arc<OwnedFd>,
        name: &OsStr,
        replace: bool,
    ) -> std::io::Result<NewFile> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = if self.private {
            Mode::RUSR | Mode::WUSR
        } else {
            Mode::from_raw_mode(0o666)
        };
        let temp = if replace {
            match rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a directory is where the snapshot has a file",
                    ));
                }
                // A file of the target's own (not a symlink, not a hard link that may be
                // shared with a file elsewhere) is rewritten in place, as restic and borg do:
                // it is checked through the descriptor that will write it, so nothing can be
                // swapped in between. Anything else is replaced by a new file renamed over it.
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    if let Some(file) = own_file(&dir, name)? {
                        return Ok(NewFile {
                            file,
                            parent: dir,
                            name: name.to_os_string(),
                            temp: None,
                        });
                    }
                    Some(temp_name(name))
                }
                Ok(_) => Some(temp_name(name)),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(io(e)),
            }
        } else {
            None
        };
        let fd =
            rustix::fs::openat(&dir, temp.as_deref().unwrap_or(name), flags, mode).map_err(io)?;
        Ok(NewFile {
            file: File::from(fd),
            parent: dir,
            name: name.to_os_string(),
            temp,
        })
    }

    /// Make the symlink `rel`; with `replace`, a file or symlink already there is replaced.
    pub fn symlink(&self, rel: &Path, link: &OsStr, replace: bool) -> std::io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        make_or_replace(&dir, name, replace, |at| {
            rustix::fs::symlinkat(link, &dir, at)
        })
    }

    /// Attributes, owner (when root), permissions and times of a directory, through its
    /// descriptor, if it is still the directory that `make_dir` made (not one moved into its
    /// place since); with `check`, read back and compared.
    pub fn dir_meta(
        &self,
        rel: &Path,
        node: &Node,
        root: bool,
        expected: Made,
        check: bool,
    ) -> (Vec<String>, Vec<crate::restore::MetadataMismatch>) {
        let mut warnings = Vec::new();
        let shown = self.path.join(rel);
        let dir = match self.open_dir(rel) {
            Ok(d) => d,
            Err(e) => {
                warnings.push(format!("{}: metadata not set: {e}", shown.display()));
                return (warnings, Vec::new());
            }
        };
        match rustix::fs::fstat(&dir) {
            Ok(st) if made(&st) == expected => {
                self.fd_meta(&dir, node, root, &shown, &mut warnings);
                if check {
                    let path = crate::restore::display(rel);
                    return (warnings, self.check_meta(&dir, node, root, &path));
                }
            }
            Ok(_) => warnings.push(format!(
                "{}: metadata not set: the folder was replaced while the restore ran",
                shown.display()
            )),
            Err(e) => warnings.push(format!("{}: metadata not set: {}", shown.display(), io(e))),
        }
        (warnings, Vec::new())
    }

    /// Attributes, owner (when root) and times of a symlink itself.
    pub fn symlink_meta(&self, rel: &Path, node: &Node, root: bool) -> Vec<String> {
        self.meta_by_path(rel, node, root, FileType::Symlink)
    }

    /// Attributes, owner (when root), permissions and times of what `rel` is, applied only if
    /// it is still the `kind` restore made there, and without opening it for reading or
    /// writing (opening a device can act on it; a symlink cannot be opened at all): through
    /// an `O_PATH | O_NOFOLLOW` descriptor, and its directory's.
    fn meta_by_path(&self, rel: &Path, node: &Node, root: bool, kind: FileType) -> Vec<String> {
        let mut warnings = Vec::new();
        let shown = self.path.join(rel);
        let fail = |warnings: &mut Vec<String>, what: &str, e: std::io::Error| {
            warnings.push(format!("{}: {what} not set: {e}", shown.display()))
        };
        let parent = split(rel).and_then(|(p, n)| Ok((self.open_dir(p)?, n)));
        let (dir, name) = match parent {
            Ok(x) => x,
            Err(e) => {
                fail(&mut warnings, "metadata", e);
                return warnings;
            }
        };
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| {
            let st = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(st.st_mode) == kind {
                Ok(fd)
            } else {
                Err(Errno::NOTSUP)
            }
        });
        let fd = match fd {
            Ok(fd) => fd,
            Err(e) => {
                warnings.push(format!(
                    "{}: metadata not set: it is no longer what restore made there ({})",
                    shown.display(),
                    io(e)
                ));
                return warnings;
            }
        };
        for x in node.xattrs() {
            if let Err(e) = crate::meta::set_xattr_at(dir.as_fd(), name, x) {
                warnings.push(xattr_warning(&shown, x, &e));
            }
        }
        if root {
            if let Err(e) = rustix::fs::chownat(
                &fd,
                "",
                Some(self.uid(node)),
                Some(self.gid(node)),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            ) {
                fail(&mut warnings, "owner", io(e));
            }
        }
        if kind != FileType::Symlink {
            // Through the descriptor's /proc entry: the object it holds, whatever the name
            // points at now.
            let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            if let Err(e) = rustix::fs::chmod(&*by_fd, Mode::from_raw_mode(node.mode & 0o7777)) {
                fail(&mut warnings, "permissions", io(e));
            }
        }
        if let Err(e) =
            rustix::fs::utimensat(&dir, name, &timestamps(node), AtFlags::SYMLINK_NOFOLLOW)
        {
            fail(&mut warnings, "modification time", io(e));
        }
        warnings
    }
}

impl Target {
    /// Extended attributes and ACLs, then owner (when root), permissions and times, through
    /// an open descriptor: no path is looked up. Changing the owner clears a file's
    /// capabilities (`security.capability`), so they are set again after it.
    pub fn fd_meta(
        &self,
        fd: impl AsFd,
        node: &Node,
        root: bool,
        shown: &Path,
        warnings: &mut Vec<String>,
    ) {
        let fd = fd.as_fd();
        if self.exact_xattrs {
            // What the new file inherited (a default ACL) or the old one had.
            if let Ok(present) = crate::meta::fd_xattrs(fd) {
                for x in present {
                    let kept = node.xattrs().iter().any(|r| r.name == x.name);
                    if !kept && removable(&x.name, root) {
                        if let Err(e) = rustix::fs::fremovexattr(fd, &*x.name) {
                            warnings.push(format!(
                                "{}: extended attribute {} not in the snapshot, and not removed: {}",
                                shown.display(),
                                String::from_utf8_lossy(&x.name),
                                io(e)
                            ));
                        }
                    }
                }
            }
        }
        for x in node.xattrs() {
            if let Err(e) = crate::meta::fd_set_xattr(fd, x) {
                warnings.push(xattr_warning(shown, x, &e));
            }
        }
        if root {
            match rustix::fs::fchown(fd, Some(self.uid(node)), Some(self.gid(node))) {
                Ok(()) => {
                    for x in node
                        .xattrs()
                        .iter()
                        .filter(|x| &*x.name == b"security.capability")
                    {
                        if let Err(e) = crate::meta::fd_set_xattr(fd, x) {
                            warnings.push(xattr_warning(shown, x, &e));
                        }
                    }
                }
                Err(e) => warnings.push(format!("{}: owner not set: {}", shown.display(), io(e))),
            }
        }
        if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(node.mode & 0o7777)) {
            warnings.push(format!(
                "{}: permissions not set: {}",
                shown.display(),
                io(e)
            ));
        }
        if let Err(e) = rustix::fs::futimens(fd, &timestamps(node)) {
            warnings.push(format!(
                "{}: modification time not set: {}",
                shown.display(),
                io(e)
            ));
        }
    }

    /// Make the FIFO or device `rel` (a socket is recorded, never made: the program that
    /// listens on it makes it). Devices need root; with `replace`, a file, symlink or special
    /// file in the way is replaced, never followed.
    pub fn special(&self, rel: &Path, node: &Node, replace: bool) -> std::io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        let make = |at: &OsStr| {
            let mode = Mode::RUSR | Mode::WUSR;
            let e = node.extra.as_deref();
            let dev = rustix::fs::makedev(e.map_or(0, |e| e.major), e.map_or(0, |e| e.minor));
            match node.kind {
                NodeKind::Fifo => rustix::fs::mkfifoat(&dir, at, mode),
                NodeKind::CharDevice => {
                    rustix::fs::mknodat(&dir, at, FileType::CharacterDevice, mode, dev)
                }
                NodeKind::BlockDevice => {
                    rustix::fs::mknodat(&dir, at, FileType::BlockDevice, mode, dev)
                }
                _ => Err(Errno::INVAL),
            }
        };
        make_or_replace(&dir, name, replace, make)
    }

    /// Metadata of a FIFO or device made by `special`.
    pub fn special_meta(&self, rel: &Path, node: &Node, root: bool) -> Vec<String> {
        let kind = match node.kind {
            NodeKind::Fifo => FileType::Fifo,
            NodeKind::CharDevice => FileType::CharacterDevice,
            _ => FileType::BlockDevice,
        };
        self.meta_by_path(rel, node, root, kind)
    }

    /// Make `rel` a hard link of `first` (restored earlier in the same restore); with
    /// `replace`, what is in the way is replaced, never followed.
    pub fn hard_link(&self, first: &Path, rel: &Path, replace: bool) -> std::io::Result<()> {
        let (from_parent, from_name) = split(first)?;
        let (parent, name) = split(rel)?;
        let from_dir = self.open_dir(from_parent)?;
        let dir = self.open_dir(parent)?;
        make_or_replace(&dir, name, replace, |at| {
            rustix::fs::linkat(&from_dir, from_name, &dir, at, AtFlags::empty())
        })
    }
}

impl Target {
    /// What of `node`'s metadata the object behind `fd` does not have: permissions, owner and
    /// group (as root, who alone sets them), and, when the snapshot recorded them, every
    /// extended attribute and ACL, none missing and none extra.
    pub fn check_meta(
        &self,
        fd: impl AsFd,
        node: &Node,
        root: bool,
        path: &str,
    ) -> Vec<crate::restore::MetadataMismatch> {
        let fd = fd.as_fd();
        let mut out = Vec::new();
        let mut differs = |attribute: &str, expected: String, actual: String| {
            out.push(crate::restore::MetadataMismatch {
                path: path.to_string(),
                attribute: attribute.to_string(),
                expected,
                actual,
            })
        };
        let st = match rustix::fs::fstat(fd) {
            Ok(st) => st,
            Err(e) => {
                differs("stat", "readable".into(), io(e).to_string());
                return out;
            }
        };
        if st.st_mode & 0o7777 != node.mode & 0o7777 {
            differs(
                "permissions",
                format!("{:04o}", node.mode & 0o7777),
                format!("{:04o}", st.st_mode & 0o7777),
            );
        }
        if root {
            let (uid, gid) = (self.uid(node).as_raw(), self.gid(node).as_raw());
            if st.st_uid != uid {
                differs("owner", uid.to_string(), st.st_uid.to_string());
            }
            if st.st_gid != gid {
                differs("group", gid.to_string(), st.st_gid.to_string());
            }
        }
        if self.exact_xattrs {
            let present = match crate::meta::fd_xattrs(fd) {
                Ok(x) => x,
                Err(e) => {
                    differs("extended attributes", "readable".into(), e.to_string());
                    return out;
                }
            };
            let mut names: Vec<&[u8]> = present
                .iter()
                .chain(node.xattrs())
                .map(|x| &*x.name)
                .filter(|n| removable(n, root) || node.xattrs().iter().any(|x| &*x.name == *n))
                .collect();
            names.sort();
            names.dedup();
            for name in names {
                let find = |xs: &[Xattr]| {
                    xs.iter()
                        .find(|x| &*x.name == name)
                        .map(|x| x.value.clone())
                };
                let (want, have) = (find(node.xattrs()), find(&present));
                if want != have {
                    let show = |v: Option<std::sync::Arc<[u8]>>| match v {
                        None => "absent".to_string(),
                        Some(v) => format!(
                            "{} bytes, blake3 {}",
                            v.len(),
                            &blake3::hash(&v).to_hex()[..16]
                        ),
                    };
                    let missing = want.is_some() && have.is_none();
                    let mut found = show(have);
                    if missing {
                        found.push_str(" (the target did not take it)");
                    }
                    differs(&String::from_utf8_lossy(name), show(want), found);
                }
            }
        }
        out
    }
}

/// Attributes a restore may remove when the snapshot does not have them: the namespaces it
/// records (`trusted.*` and `security.*` only as root, who alone can read them all).
/// A security module's label (SELinux, Smack) is the machine's, set by its policy, and kept.
fn removable(name: &[u8], root: bool) -> bool {
    if name == b"security.selinux" || name.starts_with(b"security.SMACK64") {
        return false;
    }
    name.starts_with(b"user.")
        || name.starts_with(b"system.posix_acl_")
        || (root && (name.starts_with(b"trusted.") || name.starts_with(b"security.")))
}

fn xattr_warning(shown: &Path, x: &Xattr, e: &std::io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(n) if n == Errno::NOTSUP.raw_os_error() => {
            "the target's file system does not support it".to_string()
        }
        Some(n) if n == Errno::PERM.raw_os_error() => {
            "not permitted (security.* and trusted.* attributes need root)".to_string()
        }
        _ => e.to_string(),
    };
    let what = if crate::repo::format::tree::is_acl(&x.name) {
        "ACL"
    } else {
        "extended attribute"
    };
    format!(
        "{}: {what} {} not set: {why}",
        shown.display(),
        String::from_utf8_lossy(&x.name)
    )
}

/// `name` opened for rewriting and emptied, if it is a regular file with one link; `None`
/// when it is anything else (it is then replaced, not written through).
fn own_file(dir: &OwnedFd, name: &OsStr) -> std::io::Result<Option<File>> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A symlink (ELOOP), a FIFO with no reader (ENXIO), gone meanwhile: replace it.
        Err(Errno::LOOP | Errno::NXIO | Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(io)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_nlink != 1 {
        return Ok(None);
    }
    rustix::fs::ftruncate(&fd, 0).map_err(io)?;
    // Back to blocking writes.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(io)?;
    Ok(Some(File::from(fd)))
}

/// Make `name` in `dir` with `make`; with `replace`, what is already there (a file, symlink or
/// special file, never a directory) is replaced: the new entry is made under a temporary name
/// and renamed over it, so nothing in the way is followed or written through.
fn make_or_replace(
    dir: &OwnedFd,
    name: &OsStr,
    replace: bool,
    make: impl Fn(&OsStr) -> rustix::io::Result<()>,
) -> std::io::Result<()> {
    match make(name) {
        Err(Errno::EXIST) if replace => {
            if let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a directory is where the snapshot has something else",
                    ));
                }
            }
            let temp = temp_name(name);
            make(&temp).map_err(io)?;
            rustix::fs::renameat(dir, &temp, dir, name).map_err(|e| {
                let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
                io(e)
            })
        }
        other => other.map_err(io),
    }
}

/// A name beside `name` for writing a replacement before renaming it into place.
fn temp_name(name: &OsStr) -> OsString {
    let mut t = OsString::from(".vouch-");
    t.push(hex::encode(crate::repo::crypto::random_array::<6>()));
    t.push("-");
    // Keep the temporary name within NAME_MAX.
    let bytes = name.as_bytes();
    t.push(OsStr::from_bytes(&bytes[..bytes.len().min(200)]));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_beneath_the_target_is_followed_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let t = Target::open(&dir.path().join("target"), true).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("target/Staff")).unwrap();
        assert_eq!(t.existing(Path::new("Staff")).unwrap(), Existing::Other);
        assert_eq!(
            t.existing(Path::new("Staff/a.txt")).unwrap(),
            Existing::Blocked
        );
        assert!(t.create_file(Path::new("Staff/a.txt"), false).is_err());
        assert!(t.create_file(Path::new("Staff/a.txt"), true).is_err());
        assert!(t.make_dir(Path::new("Staff"), false).is_err());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // Replaced, not followed.
        t.make_dir(Path::new("Staff"), true).unwrap();
        assert!(
            std::fs::symlink_metadata(dir.path().join("target/Staff"))
                .unwrap()
                .is_dir()
        );
        assert!(t.open_dir(Path::new("../outside")).is_err());
    }

    #[test]
    fn the_component_walk_refuses_symlinks_as_openat2_does() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::open(&dir.path().join("target"), true).unwrap();
        t.openat2.store(false, Ordering::Relaxed);
        std::fs::create_dir(dir.path().join("target/real")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("target/real/link")).unwrap();
        assert!(t.open_dir(Path::new("real")).is_ok());
        assert!(t.open_dir(Path::new("real/link")).is_err());
        assert_eq!(
            t.existing(Path::new("real/link/x")).unwrap(),
            Existing::Blocked
        );
    }
}
