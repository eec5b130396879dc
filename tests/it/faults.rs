//! Storage faults that a real server cannot be made to produce on demand, injected by a
//! wrapper around the real local store: a full disk mid-backup loses nothing; credentials
//! that cannot delete still back up, and forget and prune report the refusals.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use vouch::{BackupError, BackupOptions, Repository, Secret, StorageError, Store};
use vouch::{Fault, FaultyStore};

use crate::support::{Env, PASSWORD, noise, write};

/// A local repository with one backup of `share/a.jpg`, and the same repository opened
/// through a fault-injecting wrapper around the real store.
struct Faulty {
    env: Env,
    repo_dir: std::path::PathBuf,
    src: std::path::PathBuf,
    faulty: FaultyStore,
    repo: Arc<Repository>,
    rt: tokio::runtime::Runtime,
}

impl Faulty {
    fn new() -> Faulty {
        let env = Env::new();
        let repo_dir = env.path("repo");
        let r = repo_dir.to_str().unwrap();
        env.run(&["init", "--repo", r]).expect(0);
        let src = env.path("share");
        write(&src.join("a.jpg"), &noise(3 << 20, 1));
        env.run(&["backup", "--repo", r, src.to_str().unwrap()])
            .expect(0);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let faulty = FaultyStore::new(Arc::new(
            LocalFileSystem::new_with_prefix(&repo_dir).unwrap(),
        ));
        let store = Store::from_object_store(Arc::new(faulty.clone()), r);
        let repo = Arc::new(
            rt.block_on(Repository::open(store, &Secret::new(PASSWORD)))
                .unwrap(),
        );
        Faulty {
            env,
            repo_dir,
            src,
            faulty,
            repo,
            rt,
        }
    }

    fn r(&self) -> &str {
        self.repo_dir.to_str().unwrap()
    }

    fn backup(&self) -> Result<vouch::BackupReport, BackupError> {
        let opts = BackupOptions {
            paths: vec![self.src.clone()],
            ..Default::default()
        };
        self.rt
            .block_on(vouch::backup(self.repo.clone(), opts, Default::default()))
    }
}

#[test]
fn a_full_disk_stops_the_backup_with_a_clear_error_and_loses_nothing() {
    let f = Faulty::new();
    let (env, r, src) = (&f.env, f.r(), &f.src);
    write(&src.join("b.jpg"), &noise(20 << 20, 2));
    // The lock and the first pack are written; the disk fills up on the second pack.
    f.faulty.inject(Fault::DiskFullAfter(2));
    let err = f.backup().unwrap_err();
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

/// Credentials that may write but not delete (a backup-only key, or a bucket policy that
/// denies s3:DeleteObject): backups succeed, and forget and prune report what they could not
/// remove instead of failing.
#[test]
fn credentials_that_cannot_delete_still_back_up_and_prune_reports_the_refusals() {
    let f = Faulty::new();
    let (env, r, src, rt, repo_dir, repo) = (&f.env, f.r(), &f.src, &f.rt, &f.repo_dir, &f.repo);
    std::fs::remove_file(src.join("a.jpg")).unwrap();
    write(&src.join("b.jpg"), &noise(2 << 20, 2));
    f.faulty.inject(Fault::DenyDeletes);
    f.backup()
        .expect("a backup does not need to delete anything");
    let policy = vouch::Policy {
        last: Some(vouch::Count::N(1)),
        ..Default::default()
    };
    let forget = rt
        .block_on(vouch::forget(
            repo,
            &vouch::ForgetOptions {
                policy,
                tags: Vec::new(),
                schedule: None,
                dry_run: false,
            },
            &jiff::tz::TimeZone::UTC,
        ))
        .unwrap();
    assert!(forget.removed.is_empty());
    assert_eq!(forget.refused.len(), 1, "{:?}", forget.refused);
    assert!(
        forget.refused[0].1.contains("access to snapshots/")
            && forget.refused[0].1.contains("was refused"),
        "{:?}",
        forget.refused
    );
    let snaps = env.run(&["snapshots", "--repo", r]).expect(0);
    assert!(snaps.stdout.contains("2 snapshot(s)"), "{}", snaps.stdout);

    // With the first snapshot gone (removed by someone who may delete), its pack is unused:
    // prune with these credentials writes the new index, reports each refused delete and
    // finishes.
    let first = &forget.groups[0]
        .decisions
        .iter()
        .find(|d| !d.keep)
        .unwrap()
        .id;
    std::fs::remove_file(repo_dir.join(format!("snapshots/{}", first.to_hex()))).unwrap();
    let report = rt
        .block_on(vouch::prune(repo.clone(), &Default::default()))
        .expect("prune carries on past refused deletes");
    assert_eq!(report.packs_removed, 0);
    assert!(
        report
            .refused
            .iter()
            .any(|(k, why)| k.starts_with("data/") && why.contains("was refused")),
        "{:?}",
        report.refused
    );
    // The lock files those runs could not delete protect nothing; another process sees them
    // until this one ends (or 30 minutes pass), and `vouch unlock` clears them.
    let unlock = env.run(&["unlock", "--all", "--repo", r]).expect(0);
    assert!(
        unlock.stdout.starts_with("removed ") && !unlock.stdout.starts_with("removed 0"),
        "{}",
        unlock.stdout
    );
    env.run(&["backup", "--repo", r, src.to_str().unwrap()])
        .expect(0);
    env.run(&["check", "--repo", r, "--read-data"]).expect(0);
}
