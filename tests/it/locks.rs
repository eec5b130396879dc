//! Locks: a live exclusive lock stops a backup and names its holder; a lock left by a process
//! that died is stale and stops nothing; `vouch unlock` removes stale locks.

use std::sync::Arc;

use vouch::format::Kind;
use vouch::format::lock::LockFile;
use vouch::{LockMode, RepoUrl, Repository, Secret, Store};

use crate::support::{Env, PASSWORD, write};

fn open(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Arc<Repository> {
    rt.block_on(async {
        let store = Store::open(&RepoUrl::Local(dir.to_path_buf()), &Default::default()).unwrap();
        Arc::new(
            Repository::open(store, &Secret::new(PASSWORD))
                .await
                .unwrap(),
        )
    })
}

/// An exclusive lock as a prune on this host leaves it when killed: its process is gone.
fn plant_dead_lock(repo_dir: &std::path::Path) {
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = open(&rt, repo_dir);
    let lock = LockFile {
        version: 1,
        host: vouch::service::hostname(),
        pid: dead_pid,
        username: "vouch".into(),
        time: vouch::Clock::now(&vouch::SystemClock),
        exclusive: true,
        operation: "prune".into(),
    };
    rt.block_on(repo.save_document(Kind::Lock, "locks", &lock))
        .unwrap();
}

#[test]
fn a_live_exclusive_lock_stops_a_backup_and_names_its_holder() {
    let env = Env::new();
    let repo_dir = env.path("repo");
    let r = repo_dir.to_str().unwrap();
    env.run(&["init", "--repo", r]).expect(0);
    let src = env.path("share");
    write(&src.join("a.txt"), b"a");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = open(&rt, &repo_dir);
    let guard = rt
        .block_on(repo.lock(LockMode::Exclusive, "prune"))
        .unwrap();
    let out = env
        .run(&["backup", "--repo", r, src.to_str().unwrap()])
        .expect(11);
    assert!(
        out.stderr.contains("is locked by prune (pid"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&std::process::id().to_string()),
        "{}",
        out.stderr
    );
    rt.block_on(guard.release()).unwrap();
    env.run(&["backup", "--repo", r, src.to_str().unwrap()])
        .expect(0);
    assert!(
        crate::support::files_in(&repo_dir.join("locks")).is_empty(),
        "a finished backup removes its lock"
    );
}

#[test]
fn a_lock_left_by_a_dead_process_is_stale_and_unlock_removes_it() {
    let env = Env::new();
    let repo_dir = env.path("repo");
    let r = repo_dir.to_str().unwrap();
    env.run(&["init", "--repo", r]).expect(0);
    let src = env.path("share");
    write(&src.join("a.txt"), b"a");
    plant_dead_lock(&repo_dir);
    env.run(&["backup", "--repo", r, src.to_str().unwrap()])
        .expect(0);
    let out = env.run(&["unlock", "--repo", r]).expect(0);
    assert!(out.stdout.contains("removed 1 lock(s)"), "{}", out.stdout);
    assert!(crate::support::files_in(&repo_dir.join("locks")).is_empty());
}

/// `init --json` and `unlock --json`, for the scripts that set up and tidy a NAS's repository.
#[test]
fn init_and_unlock_say_what_they_did_as_json() {
    let env = Env::new();
    let repo_dir = env.path("repo");
    let r = repo_dir.to_str().unwrap();
    let made: serde_json::Value =
        serde_json::from_str(&env.run(&["init", "--repo", r, "--json"]).expect(0).stdout).unwrap();
    assert_eq!(made["repository"].as_str().unwrap().len(), 64, "{made:#}");
    assert!(
        made["url"].as_str().unwrap().contains(r),
        "the repository's location: {made:#}"
    );
    assert!(made["object_lock"].is_null(), "{made:#}");
    let none: serde_json::Value =
        serde_json::from_str(&env.run(&["unlock", "--repo", r, "--json"]).expect(0).stdout)
            .unwrap();
    assert_eq!(none["removed"], 0);
    plant_dead_lock(&repo_dir);
    let removed: serde_json::Value =
        serde_json::from_str(&env.run(&["unlock", "--repo", r, "--json"]).expect(0).stdout)
            .unwrap();
    assert_eq!(removed["removed"], 1, "{removed}");
    assert!(crate::support::files_in(&repo_dir.join("locks")).is_empty());
}
