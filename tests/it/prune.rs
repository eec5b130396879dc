//! Retention and prune: `forget` says what it keeps and why, prune frees what only forgotten
//! snapshots used and keeps every byte a kept snapshot needs, mostly unused packs are
//! repacked, and a prune killed with SIGKILL at any phase leaves a repository that passes
//! `check --read-data` and restores.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use crate::support::{Env, noise, packs, text, tree_map, write};

/// A repository with two snapshots of a changing share, and a copy of the share as each
/// backup saw it.
struct Shelf {
    env: Env,
    repo: String,
    share: PathBuf,
    states: Vec<PathBuf>,
}

impl Shelf {
    fn new() -> Shelf {
        let env = Env::new();
        let repo = env.path("repo").to_str().unwrap().to_string();
        env.run(&["init", "--repo", &repo]).expect(0);
        Shelf {
            share: env.path("share"),
            env,
            repo,
            states: Vec::new(),
        }
    }

    fn backup(&mut self) {
        self.env
            .run(&[
                "backup",
                "-q",
                "--repo",
                &self.repo,
                self.share.to_str().unwrap(),
            ])
            .expect(0);
        let copy = self.env.path(&format!("state-{}", self.states.len()));
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(&self.share)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(ok.success());
        self.states.push(copy);
    }

    fn run(&self, args: &[&str]) -> crate::support::Run {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--repo", &self.repo]);
        self.env.run(&all)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.run(&all).expect(0).stdout).unwrap()
    }

    fn stored_bytes(&self) -> u64 {
        packs(Path::new(&self.repo))
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    }

    /// Each snapshot left restores to exactly the share it was taken of.
    fn every_snapshot_restores(&self, expect: &[usize]) {
        let snaps = self.json(&["snapshots"]);
        let snaps = snaps.as_array().unwrap();
        assert_eq!(snaps.len(), expect.len(), "{snaps:#?}");
        for (snap, state) in snaps.iter().zip(expect) {
            let id = snap["id"].as_str().unwrap();
            let target = self.env.path(&format!("restore-{id}"));
            self.run(&["restore", id, "--target", target.to_str().unwrap()])
                .expect(0);
            let restored = target.join(self.share.strip_prefix("/").unwrap());
            assert_eq!(
                tree_map(&self.states[*state]),
                tree_map(&restored),
                "snapshot {id} is the share as backup {state} saw it"
            );
            std::fs::remove_dir_all(&target).unwrap();
        }
    }

    fn check(&self) {
        let out = self.run(&["check", "--read-data"]).expect(0);
        assert!(out.stdout.contains("no damage found"), "{}", out.stdout);
    }
}

/// Two backups: the second after most small files and two of three photos were deleted.
fn two_days() -> Shelf {
    let mut s = Shelf::new();
    for i in 0..120 {
        write(
            &s.share.join(format!("letters/{i:03}.txt")),
            &text(60_000, i),
        );
    }
    for i in 0..3 {
        write(
            &s.share.join(format!("photos/{i}.jpg")),
            &noise(4 << 20, 100 + i),
        );
    }
    s.backup();
    for i in 0..110 {
        std::fs::remove_file(s.share.join(format!("letters/{i:03}.txt"))).unwrap();
    }
    for i in 0..2 {
        std::fs::remove_file(s.share.join(format!("photos/{i}.jpg"))).unwrap();
    }
    write(&s.share.join("photos/new.jpg"), &noise(3 << 20, 200));
    s.backup();
    s
}

#[test]
fn forget_says_what_it_keeps_and_why_and_prune_frees_only_what_forgotten_snapshots_used() {
    let mut s = Shelf::new();
    for day in 0..4u64 {
        write(
            &s.share.join(format!("day-{day}.bin")),
            &noise(3 << 20, day),
        );
        if day > 0 {
            std::fs::remove_file(s.share.join(format!("day-{}.bin", day - 1))).unwrap();
        }
        write(&s.share.join("register.csv"), &text(100_000, 50 + day));
        s.backup();
    }

    let dry = s
        .run(&["forget", "--keep-last", "2", "--dry-run"])
        .expect(0);
    assert_eq!(dry.stdout.matches("  keep   ").count(), 2, "{}", dry.stdout);
    assert_eq!(dry.stdout.matches("  remove ").count(), 2, "{}", dry.stdout);
    assert!(dry.stdout.contains("last snapshot"), "{}", dry.stdout);
    assert!(
        dry.stdout
            .contains("dry run: 2 snapshot(s) would be removed; nothing was changed"),
        "{}",
        dry.stdout
    );
    assert_eq!(s.json(&["snapshots"]).as_array().unwrap().len(), 4);
    let refused = s.run(&["forget"]).expect(1);
    assert!(
        refused.stderr.contains("no policy given"),
        "{}",
        refused.stderr
    );

    s.run(&["forget", "--keep-last", "2"]).expect(0);
    let before = s.stored_bytes();
    let dry = s.json(&["prune", "--dry-run"]);
    assert_eq!(s.stored_bytes(), before, "a dry run changes nothing");
    let report = s.json(&["prune"]);
    let after = s.stored_bytes();
    assert_eq!(report["bytes_freed"], dry["bytes_freed"], "{report:#}");
    // Two 3 MiB files only the forgotten snapshots had, and their registers: about 6 MiB.
    let freed = before - after;
    assert!(
        (6 << 20..7 << 20).contains(&freed),
        "freed {freed} bytes: {report:#}"
    );
    assert_eq!(report["bytes_after"].as_u64().unwrap(), after);
    s.check();
    s.every_snapshot_restores(&[2, 3]);
    // Nothing left to free: a second prune changes nothing.
    let again = s.json(&["prune"]);
    assert_eq!(again["packs_removed"], 0, "{again:#}");
    assert_eq!(again["index_files_written"], 0, "{again:#}");
}

#[test]
fn mostly_unused_packs_are_repacked_and_every_kept_byte_survives() {
    let s = two_days();
    s.run(&["forget", "--keep-last", "1"]).expect(0);
    let before = s.stored_bytes();
    let report = s.json(&["prune"]);
    assert!(
        report["packs_repacked"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    assert!(report["packs_written"].as_u64().unwrap() >= 1, "{report:#}");
    assert!(report["packs_unused"].as_u64().unwrap() >= 1, "{report:#}");
    // What stays unused is under the 5% threshold.
    let used = report["used_bytes"].as_u64().unwrap();
    assert!(
        report["bytes_unused_kept"].as_u64().unwrap() * 20 <= used,
        "{report:#}"
    );
    assert!(s.stored_bytes() < before - (8 << 20), "{report:#}");
    s.check();
    s.every_snapshot_restores(&[1]);
}

#[test]
fn a_prune_killed_at_any_phase_leaves_a_repository_that_checks_and_restores() {
    let base = two_days();
    base.run(&["forget", "--keep-last", "1"]).expect(0);
    for phase in [
        "repack",
        "index",
        "delete-index",
        "delete-packs",
        "delete-more-packs",
    ] {
        // A fresh copy of the repository for each phase.
        let repo = base.env.path(&format!("repo-{phase}"));
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(&base.repo)
            .arg(&repo)
            .status()
            .unwrap();
        assert!(ok.success());
        let s = Shelf {
            env: Env::new(),
            repo: repo.to_str().unwrap().to_string(),
            share: base.share.clone(),
            states: base.states.clone(),
        };
        let mut child = s
            .env
            .vouch()
            .args(["prune", "--repo", &s.repo])
            .env("VOUCH_TEST_PRUNE_PAUSE", phase)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let reached = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l == format!("prune: paused before {phase}"));
        assert!(reached, "prune did not reach {phase}");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // The dead prune's lock is stale (its process is gone) and does not block anyone.
        s.check();
        s.every_snapshot_restores(&[1]);
        let report = s.json(&["prune"]);
        assert!(
            report["refused"].as_array().unwrap().is_empty(),
            "{phase}: {report:#}"
        );
        s.check();
        s.every_snapshot_restores(&[1]);
        let again = s.json(&["prune"]);
        assert_eq!(
            again["packs_removed"], 0,
            "{phase}: the second prune finished the job"
        );
    }
}
