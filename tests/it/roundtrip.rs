//! Property test: random trees (empty files, large files, deep paths, symlinks, odd and
//! non-UTF-8 names) back up and restore byte-identical, through the library.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use vouch::{BackupOptions, InitOptions, RepoUrl, Repository, RestoreOptions, Secret, Store};

use crate::support::{assert_same_tree, noise, text};

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
    ]
}

fn build(root: &std::path::Path, items: &[Item]) {
    for (i, it) in items.iter().enumerate() {
        let join = |p: &Vec<Vec<u8>>| -> PathBuf {
            p.iter()
                .fold(root.to_path_buf(), |acc, c| acc.join(OsStr::from_bytes(c)))
        };
        let make_parent = |p: &PathBuf| std::fs::create_dir_all(p.parent().unwrap()).is_ok();
        match it {
            Item::File {
                path,
                size,
                compressible,
            } => {
                let p = join(path);
                if make_parent(&p) && !p.exists() {
                    let bytes = if *compressible {
                        text(*size, i as u64)
                    } else {
                        noise(*size, i as u64)
                    };
                    let _ = std::fs::write(&p, bytes);
                }
            }
            Item::Link { path, target } => {
                let p = join(path);
                if make_parent(&p) && std::fs::symlink_metadata(&p).is_err() {
                    let _ = std::os::unix::fs::symlink(OsStr::from_bytes(target), &p);
                }
            }
            Item::EmptyDir { path } => {
                let p = join(path);
                if std::fs::symlink_metadata(&p).is_err() {
                    let _ = std::fs::create_dir_all(&p);
                }
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
        });
    }
}
