//! Property test: random trees (empty files, large files, deep paths, symlinks, odd and
//! non-UTF-8 names, extended attributes in several namespaces, ACLs, hard links across
//! folders, sparse files, FIFOs, and devices as root) back up and restore byte-identical and
//! with the same metadata, through the library.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use vouch::{BackupOptions, InitOptions, RepoUrl, Repository, RestoreOptions, Secret, Store};

use crate::support::{assert_same_metadata, assert_same_tree, noise, text};

#[derive(Clone, Debug)]
enum Item {
    File {
        path: Vec<Vec<u8>>,
        size: usize,
        compressible: bool,
    },
    Link {
        path: Vec<Vec<u8>>,
        target: Vec<u8>,
    },
    EmptyDir {
        path: Vec<Vec<u8>>,
    },
    /// Attributes on the item before it (its file or folder).
    Attrs {
        xattrs: Vec<(&'static str, Vec<u8>)>,
        acl: bool,
    },
    /// A second name, in another folder, for an earlier file.
    HardLink {
        path: Vec<Vec<u8>>,
        of: usize,
    },
    /// A file of `len` MiB with 4 KiB of data at each of `data` (MiB offsets): holes at the
    /// start, between and at the end.
    Sparse {
        path: Vec<Vec<u8>>,
        len: u64,
        data: Vec<u64>,
    },
    Fifo {
        path: Vec<Vec<u8>>,
    },
    /// A character device (made only when the tests run as root).
    Device {
        path: Vec<Vec<u8>>,
        major: u32,
        minor: u32,
    },
}

fn attrs() -> impl Strategy<Value = Item> {
    let value = proptest::collection::vec(any::<u8>(), 0..300);
    let xattr = (
        prop_oneof![
            Just("user.DOSATTRIB"),
            Just("user.comment"),
            Just("trusted.vouch"),
            Just("security.NTACL"),
        ],
        value,
    );
    (proptest::collection::vec(xattr, 0..4), any::<bool>())
        .prop_map(|(xattrs, acl)| Item::Attrs { xattrs, acl })
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9 ()_.-]{1,12}".prop_map(|s| s.into_bytes()),
        Just("Zoë's report (final).docx".as_bytes().to_vec()),
        Just(b"caf\xe9".to_vec()),
        Just(b"new\nline".to_vec()),
        Just("Siobhán".as_bytes().to_vec()),
        proptest::collection::vec(1u8..=255, 1..10)
            .prop_map(|v| v.into_iter().filter(|b| *b != b'/').collect::<Vec<_>>()),
    ]
    .prop_filter("a usable name", |n| {
        !n.is_empty() && n != b"." && n != b".."
    })
}

fn path() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        3 => proptest::collection::vec(name(), 1..4),
        1 => proptest::collection::vec(name(), 8..14),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => (path(), prop_oneof![4 => 0usize..5000, 2 => 5000usize..200_000, 1 => 600_000usize..3_000_000], any::<bool>())
            .prop_map(|(path, size, compressible)| Item::File { path, size, compressible }),
        1 => (path(), name()).prop_map(|(path, target)| Item::Link { path, target }),
        1 => path().prop_map(|path| Item::EmptyDir { path }),
        3 => attrs(),
        1 => (path(), any::<usize>()).prop_map(|(path, of)| Item::HardLink { path, of }),
        1 => (path(), 1u64..12, proptest::collection::vec(0u64..12, 0..3))
            .prop_map(|(path, len, data)| Item::Sparse { path, len, data }),
        1 => path().prop_map(|path| Item::Fifo { path }),
        1 => (path(), 1u32..10, 0u32..10).prop_map(|(path, major, minor)| Item::Device { path, major, minor }),
    ]
}

fn build(root: &std::path::Path, items: &[Item]) {
    use std::io::{Seek, Write};
    let root_user = crate::support::is_root();
    let join = |p: &Vec<Vec<u8>>| -> PathBuf {
        p.iter()
            .fold(root.to_path_buf(), |acc, c| acc.join(OsStr::from_bytes(c)))
    };
    let make_parent = |p: &PathBuf| std::fs::create_dir_all(p.parent().unwrap()).is_ok();
    let free = |p: &PathBuf| make_parent(p) && std::fs::symlink_metadata(p).is_err();
    let mut files: Vec<PathBuf> = Vec::new();
    // The file or folder the next attributes go on.
    let mut last: Option<PathBuf> = None;
    for (i, it) in items.iter().enumerate() {
        match it {
            Item::File {
                path,
                size,
                compressible,
            } => {
                let p = join(path);
                if free(&p) {
                    let bytes = if *compressible {
                        text(*size, i as u64)
                    } else {
                        noise(*size, i as u64)
                    };
                    if std::fs::write(&p, bytes).is_ok() {
                        files.push(p.clone());
                        last = Some(p);
                    }
                }
            }
            Item::Link { path, target } => {
                let p = join(path);
                if free(&p) {
                    let _ = std::os::unix::fs::symlink(OsStr::from_bytes(target), &p);
                }
            }
            Item::EmptyDir { path } => {
                let p = join(path);
                if std::fs::symlink_metadata(&p).is_err() && std::fs::create_dir_all(&p).is_ok() {
                    last = Some(p);
                }
            }
            Item::Attrs { xattrs, acl } => {
                let Some(p) = &last else { continue };
                for (name, value) in xattrs {
                    if name.starts_with("user.") || root_user {
                        rustix::fs::lsetxattr(p, *name, value, rustix::fs::XattrFlags::empty())
                            .unwrap();
                    }
                }
                if *acl {
                    let mut cmd = std::process::Command::new("setfacl");
                    cmd.args(["-m", "u:65534:r--,g:65534:rw-"]);
                    if p.is_dir() {
                        // A default ACL too: what is made inside inherits it.
                        cmd.args(["-m", "d:u:65534:rwx"]);
                    }
                    assert!(cmd.arg(p).status().unwrap().success());
                }
            }
            Item::HardLink { path, of } => {
                let p = join(path);
                if !files.is_empty() && free(&p) {
                    let first = &files[of % files.len()];
                    std::fs::hard_link(first, &p).unwrap();
                }
            }
            Item::Sparse { path, len, data } => {
                let p = join(path);
                if free(&p) {
                    let mut f = std::fs::File::create(&p).unwrap();
                    for (k, at) in data.iter().filter(|at| **at < *len).enumerate() {
                        f.seek(std::io::SeekFrom::Start(at << 20)).unwrap();
                        f.write_all(&noise(4096, (i + k) as u64)).unwrap();
                    }
                    f.set_len(len << 20).unwrap();
                    files.push(p.clone());
                    last = Some(p);
                }
            }
            Item::Fifo { path } => {
                let p = join(path);
                if free(&p) {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &p,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o640),
                        0,
                    )
                    .unwrap();
                }
            }
            Item::Device { path, major, minor } => {
                let p = join(path);
                if root_user && free(&p) {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &p,
                        rustix::fs::FileType::CharacterDevice,
                        rustix::fs::Mode::from_raw_mode(0o600),
                        rustix::fs::makedev(*major, *minor),
                    )
                    .unwrap();
                }
            }
        }
    }
}

/// A restored sparse file takes no more room than its source, give or take a few blocks.
fn assert_holes_kept(source: &std::path::Path, target: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let inside = target.join(source.strip_prefix("/").unwrap());
    let mut stack = vec![source.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && m.blocks() * 512 < m.size() {
                let r = std::fs::metadata(inside.join(p.strip_prefix(source).unwrap())).unwrap();
                assert!(
                    r.blocks() <= m.blocks() + 64,
                    "{}: {} blocks restored, {} in the source",
                    p.display(),
                    r.blocks(),
                    m.blocks()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_restore_byte_identical(items in proptest::collection::vec(item(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        build(&src, &items);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = Store::create(&RepoUrl::Local(dir.path().join("repo")), &Default::default(), true).unwrap();
            let repo = Arc::new(Repository::init(store, &Secret::new("p"), &InitOptions::default()).await.unwrap());
            let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
            let report = vouch::backup(repo.clone(), opts, Default::default()).await.unwrap();
            assert!(!report.is_partial(), "{:?}", report.snapshot.summary.unreadable);
            let target = dir.path().join("restore");
            let restored = vouch::restore(repo, &report.snapshot, &RestoreOptions { target: target.clone(), ..Default::default() }, Default::default())
                .await
                .unwrap();
            assert!(restored.is_clean(), "{:?} {:?}", restored.mismatches, restored.damaged);
            assert_same_tree(&src, &target);
            assert_same_metadata(&src, &target);
            assert_holes_kept(&src, &target);
            assert!(restored.warnings.is_empty(), "{:?}", restored.warnings);
        });
    }
}
