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

use crate::repo::format::tree::Node;

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
        })
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
        match rustix::fs::symlinkat(link, &dir, name) {
            Err(Errno::EXIST) if replace => {
                let temp = temp_name(name);
                rustix::fs::symlinkat(link, &dir, &temp).map_err(io)?;
                rustix::fs::renameat(&dir, &temp, &dir, name).map_err(|e| {
                    let _ = rustix::fs::unlinkat(&dir, &temp, AtFlags::empty());
                    io(e)
                })
            }
            other => other.map_err(io),
        }
    }

    /// Owner (when root), permissions and times of a directory, through its descriptor, if
    /// it is still the directory that `make_dir` made (not one moved into its place since).
    pub fn dir_meta(&self, rel: &Path, node: &Node, root: bool, expected: Made) -> Vec<String> {
        let mut warnings = Vec::new();
        let shown = self.path.join(rel);
        let dir = match self.open_dir(rel) {
            Ok(d) => d,
            Err(e) => {
                warnings.push(format!("{}: metadata not set: {e}", shown.display()));
                return warnings;
            }
        };
        match rustix::fs::fstat(&dir) {
            Ok(st) if made(&st) == expected => fd_meta(&dir, node, root, &shown, &mut warnings),
            Ok(_) => warnings.push(format!(
                "{}: metadata not set: the folder was replaced while the restore ran",
                shown.display()
            )),
            Err(e) => warnings.push(format!("{}: metadata not set: {}", shown.display(), io(e))),
        }
        warnings
    }

    /// Owner (when root) and times of a symlink itself. The owner is set through a
    /// descriptor of the link (`O_PATH | O_NOFOLLOW`) once it is known to be a symlink, so
    /// that nothing swapped into its place is given the snapshot's owner.
    pub fn symlink_meta(&self, rel: &Path, node: &Node, root: bool) -> Vec<String> {
        let mut warnings = Vec::new();
        let shown = self.path.join(rel);
        let parent = split(rel).and_then(|(p, n)| Ok((self.open_dir(p)?, n)));
        let (dir, name) = match parent {
            Ok(x) => x,
            Err(e) => {
                warnings.push(format!("{}: metadata not set: {e}", shown.display()));
                return warnings;
            }
        };
        let link = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| {
            let st = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                Ok(fd)
            } else {
                Err(Errno::NOTSUP)
            }
        });
        let link = match link {
            Ok(fd) => fd,
            Err(e) => {
                warnings.push(format!(
                    "{}: metadata not set: it is no longer the symlink restore made ({})",
                    shown.display(),
                    io(e)
                ));
                return warnings;
            }
        };
        if root {
            if let Err(e) = rustix::fs::chownat(
                &link,
                "",
                Some(rustix::fs::Uid::from_raw(node.uid)),
                Some(rustix::fs::Gid::from_raw(node.gid)),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            ) {
                warnings.push(format!("{}: owner not set: {}", shown.display(), io(e)));
            }
        }
        if let Err(e) =
            rustix::fs::utimensat(&dir, name, &timestamps(node), AtFlags::SYMLINK_NOFOLLOW)
        {
            warnings.push(format!(
                "{}: modification time not set: {}",
                shown.display(),
                io(e)
            ));
        }
        warnings
    }
}

/// Owner (when root), permissions and times through an open descriptor: no path is looked up.
pub fn fd_meta(fd: impl AsFd, node: &Node, root: bool, shown: &Path, warnings: &mut Vec<String>) {
    let fd = fd.as_fd();
    if root {
        if let Err(e) = rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
        ) {
            warnings.push(format!("{}: owner not set: {}", shown.display(), io(e)));
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
