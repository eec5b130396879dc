//! Storage faults that a real server cannot be made to produce on demand, injected by a
//! wrapper around the real local store: a full disk mid-backup loses nothing.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use vouch::storage::{Fault, FaultyStore};
use vouch::{BackupError, BackupOptions, Repository, Secret, StorageError, Store};

use crate::support::{Env, PASSWORD, noise, write};

#[test]
fn a_full_disk_stops_the_backup_with_a_clear_error_and_loses_nothing() {
    let env = Env::new();
    let repo_dir = env.path("repo");
    let r = repo_dir.to_str().unwrap();
    env.run(&["init", "--repo", r]).expect(0);
    let src = env.path("share");
    write(&src.join("a.jpg"), &noise(3 << 20, 1));
    env.run(&["backup", "--repo", r, src.to_str().unwrap()])
        .expect(0);
    write(&src.join("b.jpg"), &noise(20 << 20, 2));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        let faulty = FaultyStore::new(Arc::new(
            LocalFileSystem::new_with_prefix(&repo_dir).unwrap(),
        ));
        let store = Store::from_object_store(Arc::new(faulty.clone()), r);
        let repo = Arc::new(
            Repository::open(store, &Secret::new(PASSWORD))
                .await
                .unwrap(),
        );
        // The lock and the first pack are written; the disk fills up on the second pack.
        faulty.inject(Fault::DiskFullAfter(2));
        let opts = BackupOptions {
            paths: vec![src.clone()],
            ..Default::default()
        };
        vouch::backup(repo, opts, Default::default())
            .await
            .unwrap_err()
    });
    assert!(
        matches!(err, BackupError::Storage(StorageError::Full { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("no space left"), "{message}");
    assert!(message.contains("free space"), "{message}");

    // The earlier snapshot is intact and the repository passes a full check.
    let snaps = env.run(&["snapshots", "--repo", r]).expect(0);
    assert!(snaps.stdout.contains("1 snapshot(s)"), "{}", snaps.stdout);
    env.run(&["check", "--repo", r, "--read-data"]).expect(0);
    env.run(&["backup", "--repo", r, src.to_str().unwrap()])
        .expect(0);
}
