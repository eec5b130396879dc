//! A backup killed with SIGKILL part-way leaves a repository that passes `check`, and the
//! next backup completes.

use std::time::{Duration, Instant};

use crate::support::{Env, assert_same_tree, noise, packs, write};

#[test]
fn a_backup_killed_mid_way_leaves_a_sound_repository_and_the_next_backup_succeeds() {
    let env = Env::new();
    let repo = env.path("repo");
    let r = repo.to_str().unwrap().to_string();
    env.run(&["init", "--repo", &r]).expect(0);
    let src = env.path("share");
    for i in 0..60 {
        write(&src.join(format!("photos/{i:03}.jpg")), &noise(4 << 20, i));
    }
    let mut child = env
        .vouch()
        .args(["backup", "--repo", &r, src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some packs are stored but long before the end.
    let deadline = Instant::now() + Duration::from_secs(120);
    while packs(&repo).len() < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no packs appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        crate::support::files_in(&repo.join("snapshots")).is_empty(),
        "no snapshot from a killed backup"
    );

    let check = env.run(&["check", "--repo", &r, "--read-data"]).expect(0);
    assert!(check.stdout.contains("no damage found"), "{}", check.stdout);
    env.run(&["backup", "--repo", &r, src.to_str().unwrap()])
        .expect(0);
    env.run(&["check", "--repo", &r, "--read-data"]).expect(0);
    let target = env.path("restore");
    env.run(&[
        "restore",
        "--repo",
        &r,
        "latest",
        "--target",
        target.to_str().unwrap(),
    ])
    .expect(0);
    assert_same_tree(&src, &target);
}
