//! File metadata beyond `stat`, read at backup and applied at restore: extended attributes
//! (POSIX ACLs and Samba's Windows ACLs among them), owner and group names, and the holes
//! of sparse files.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustix::fs::SeekFrom;
use rustix::io::Errno;

use crate::repo::format::tree::{Hole, Xattr};

/// The list of names, then each value: one `listxattr` and one `getxattr` per attribute
/// (a file without attributes costs the one call). A file system without extended
/// attributes has none; an attribute removed between the two calls is left out.
fn read_xattrs(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> std::io::Result<Vec<Xattr>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match list(&mut names) {
            Ok(n) => break n,
            Err(Errno::RANGE) if names.len() < 1 << 20 => names.resize(names.len() * 8, 0),
            Err(Errno::NOTSUP | Errno::NOSYS) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; 4096];
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let n = loop {
            match get(name, &mut value) {
                Ok(n) => break Some(n),
                Err(Errno::RANGE) if value.len() < 1 << 20 => value.resize(value.len() * 8, 0),
                Err(Errno::NODATA) => break None,
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "extended attribute {} cannot be read: {}",
                        String::from_utf8_lossy(name),
                        std::io::Error::from(e)
                    )));
                }
            }
        };
        if let Some(n) = n {
            out.push(Xattr {
                name: name.into(),
                value: Arc::from(&value[..n]),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The extended attributes of an open file.
pub fn fd_xattrs(fd: BorrowedFd<'_>) -> std::io::Result<Vec<Xattr>> {
    read_xattrs(
        |buf| rustix::fs::flistxattr(fd, buf),
        |name, buf| rustix::fs::fgetxattr(fd, name, buf),
    )
}

/// The extended attributes of `path` itself, never followed if it is a symlink.
pub fn path_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    read_xattrs(
        |buf| rustix::fs::llistxattr(path, buf),
        |name, buf| rustix::fs::lgetxattr(path, name, buf),
    )
}

/// Set one attribute through a descriptor.
pub fn fd_set_xattr(fd: BorrowedFd<'_>, x: &Xattr) -> std::io::Result<()> {
    rustix::fs::fsetxattr(fd, &*x.name, &x.value, rustix::fs::XattrFlags::empty())
        .map_err(Into::into)
}

/// Set one attribute on `name` in the directory `dir`, not following `name` if it is a
/// symlink: the directory is reached through its descriptor (`/proc/self/fd`), so no path
/// above it is looked up again.
pub fn set_xattr_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr, x: &Xattr) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut path = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(name);
    rustix::fs::lsetxattr(&path, &*x.name, &x.value, rustix::fs::XattrFlags::empty())
        .map_err(Into::into)
}

/// The holes of a file of `size` bytes, found with `SEEK_DATA`/`SEEK_HOLE`; none where the
/// file system does not say. Only asked when the file has fewer blocks than bytes.
pub fn holes(fd: impl AsFd, size: u64) -> Vec<Hole> {
    let fd = fd.as_fd();
    let mut out: Vec<Hole> = Vec::new();
    let mut pos = 0u64;
    let mut looked_again = None;
    while pos < size {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d.min(size),
            // No data after `pos`: the rest is a hole.
            Err(Errno::NXIO) => size,
            Err(_) => return Vec::new(),
        };
        if data > pos {
            // A hole punched between the two seeks can make this one touch the last: one.
            match out.last_mut() {
                Some(last) if last.end() == pos => last.1 += data - pos,
                _ => out.push(Hole(pos, data - pos)),
            }
        }
        if data >= size {
            break;
        }
        pos = match rustix::fs::seek(fd, SeekFrom::Hole(data)) {
            // No data at `data` after all (punched meanwhile): look again from there on, once;
            // a file system that keeps saying both is read whole instead.
            Ok(h) if h <= data => {
                if looked_again == Some(data) {
                    return Vec::new();
                }
                looked_again = Some(data);
                data
            }
            Ok(h) => h.min(size),
            Err(_) => return Vec::new(),
        };
    }
    out
}

/// Nanoseconds since the epoch, from `stat`'s seconds and nanoseconds.
pub fn time_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Feed `len` zero bytes to a hasher: a hole reads as zeros.
pub fn hash_zeros(hasher: &mut blake3::Hasher, mut len: u64) {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// The parts of a stretch of content that lie outside holes, and the holes between them, in
/// order: `at` is where the stretch starts in the file, `data` its bytes (holes excluded);
/// `next` is the first hole not yet passed and is moved on.
pub enum Piece<'a> {
    Data(u64, &'a [u8]),
    Hole(Hole),
}

pub fn pieces<'a>(
    mut at: u64,
    mut data: &'a [u8],
    holes: &[Hole],
    next: &mut usize,
    mut on: impl FnMut(Piece<'a>) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    loop {
        while let Some(h) = holes.get(*next).filter(|h| h.offset() <= at) {
            on(Piece::Hole(*h))?;
            at = at.max(h.end());
            *next += 1;
        }
        if data.is_empty() {
            return Ok(at);
        }
        let room = holes
            .get(*next)
            .map_or(data.len() as u64, |h| h.offset() - at)
            .min(data.len() as u64) as usize;
        on(Piece::Data(at, &data[..room]))?;
        at += room as u64;
        data = &data[room..];
    }
}

/// Owner and group names by number, looked up once each (backup).
#[derive(Default)]
pub struct NameCache {
    users: Mutex<HashMap<u32, Option<Arc<str>>>>,
    groups: Mutex<HashMap<u32, Option<Arc<str>>>>,
}

impl NameCache {
    pub fn user(&self, uid: u32) -> Option<Arc<str>> {
        self.users
            .lock()
            .expect("names")
            .entry(uid)
            .or_insert_with(|| {
                let u = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid));
                u.ok().flatten().map(|u| Arc::from(u.name.as_str()))
            })
            .clone()
    }

    pub fn group(&self, gid: u32) -> Option<Arc<str>> {
        self.groups
            .lock()
            .expect("names")
            .entry(gid)
            .or_insert_with(|| {
                let g = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid));
                g.ok().flatten().map(|g| Arc::from(g.name.as_str()))
            })
            .clone()
    }
}

/// Numbers for the recorded names on the machine restored to (restore): by name where the
/// name exists here, by the recorded number otherwise, or always by number (`--numeric-ids`).
#[derive(Default)]
pub struct Owners {
    numeric: bool,
    users: Mutex<HashMap<Arc<str>, Option<u32>>>,
    groups: Mutex<HashMap<Arc<str>, Option<u32>>>,
}

impl Owners {
    pub fn new(numeric: bool) -> Self {
        Owners {
            numeric,
            ..Default::default()
        }
    }

    pub fn uid(&self, name: Option<&Arc<str>>, uid: u32) -> u32 {
        let Some(name) = name.filter(|_| !self.numeric) else {
            return uid;
        };
        self.users
            .lock()
            .expect("owners")
            .entry(name.clone())
            .or_insert_with(|| {
                let u = nix::unistd::User::from_name(name);
                u.ok().flatten().map(|u| u.uid.as_raw())
            })
            .unwrap_or(uid)
    }

    pub fn gid(&self, name: Option<&Arc<str>>, gid: u32) -> u32 {
        let Some(name) = name.filter(|_| !self.numeric) else {
            return gid;
        };
        self.groups
            .lock()
            .expect("owners")
            .entry(name.clone())
            .or_insert_with(|| {
                let g = nix::unistd::Group::from_name(name);
                g.ok().flatten().map(|g| g.gid.as_raw())
            })
            .unwrap_or(gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_at_the_start_middle_and_end_are_found() {
        use std::io::{Seek, Write};
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let mut f = std::fs::File::create(&path).unwrap();
        let mb = 1u64 << 20;
        f.seek(std::io::SeekFrom::Start(mb)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.seek(std::io::SeekFrom::Start(3 * mb)).unwrap();
        f.write_all(&[2u8; 4096]).unwrap();
        f.set_len(5 * mb).unwrap();
        let size = f.metadata().unwrap().size();
        let holes = holes(&f, size);
        assert_eq!(
            holes,
            vec![
                Hole(0, mb),
                Hole(mb + 4096, 2 * mb - 4096),
                Hole(3 * mb + 4096, 2 * mb - 4096)
            ]
        );
    }

    #[test]
    fn owners_go_by_name_where_it_exists_here_and_by_number_otherwise() {
        let root: Arc<str> = Arc::from("root");
        let gone: Arc<str> = Arc::from("vouch-no-such-user");
        let by_name = Owners::new(false);
        assert_eq!(by_name.uid(Some(&root), 4242), 0);
        assert_eq!(by_name.gid(Some(&root), 4242), 0);
        assert_eq!(by_name.uid(Some(&gone), 4242), 4242);
        assert_eq!(by_name.uid(None, 4242), 4242);
        let numeric = Owners::new(true);
        assert_eq!(numeric.uid(Some(&root), 4242), 4242);
        assert_eq!(NameCache::default().user(0).as_deref(), Some("root"));
    }

    #[test]
    fn pieces_split_content_around_holes() {
        let holes = [Hole(0, 2), Hole(5, 3), Hole(10, 4)];
        let mut next = 0;
        let mut seen = Vec::new();
        let data = b"abcdefghij";
        // Data stretches: 2..5 "abc", 8..10 "de"; the trailing hole comes with the last.
        let end = pieces(0, &data[..3], &holes, &mut next, |p| {
            seen.push(match p {
                Piece::Data(at, d) => format!("{at}:{}", String::from_utf8_lossy(d)),
                Piece::Hole(h) => format!("hole {}+{}", h.offset(), h.length()),
            });
            Ok(())
        })
        .unwrap();
        // A hole right after the data is passed at once.
        assert_eq!(end, 8);
        let end = pieces(end, &data[3..5], &holes, &mut next, |p| {
            seen.push(match p {
                Piece::Data(at, d) => format!("{at}:{}", String::from_utf8_lossy(d)),
                Piece::Hole(h) => format!("hole {}+{}", h.offset(), h.length()),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(end, 14);
        let end = pieces(end, &[], &holes, &mut next, |p| {
            if let Piece::Hole(h) = p {
                seen.push(format!("hole {}+{}", h.offset(), h.length()));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(end, 14);
        assert_eq!(seen, ["hole 0+2", "2:abc", "hole 5+3", "8:de", "hole 10+4"]);
    }
}
