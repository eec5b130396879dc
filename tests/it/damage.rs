//! Damage made by code, each kind detected by `check`, named, and survived by `restore` for
//! the files it does not touch.

use std::path::{Path, PathBuf};

use crate::support::{Env, Run, files_in, noise, text, tree_map, write};

struct Fixture {
    env: Env,
    repo: String,
    src: PathBuf,
}

/// Two backups: the first of `Staff` and `Admin`, the second after `Pupils` was added. Each
/// backup writes its own index file and snapshot.
fn fixture() -> Fixture {
    let env = Env::new();
    let repo = env.path("repo").display().to_string();
    env.run(&["init", "--repo", &repo]).expect(0);
    let src = env.path("share");
    for i in 0..6 {
        write(
            &src.join(format!("Staff/plan-{i}.txt")),
            &text(40_000 + i * 1000, i as u64),
        );
    }
    write(&src.join("Admin/mis.sql"), &text(2_000_000, 99));
    write(&src.join("Staff/photo.jpg"), &noise(3_000_000, 7));
    env.run(&["backup", "--repo", &repo, src.to_str().unwrap()])
        .expect(0);
    write(&src.join("Pupils/story.txt"), &noise(1_500_000, 8));
    env.run(&["backup", "--repo", &repo, src.to_str().unwrap()])
        .expect(0);
    Fixture { env, repo, src }
}

impl Fixture {
    fn repo_dir(&self) -> PathBuf {
        PathBuf::from(&self.repo)
    }
    fn check(&self, args: &[&str]) -> Run {
        let mut a = vec!["check", "--repo", &self.repo];
        a.extend_from_slice(args);
        self.env.run(&a)
    }
    /// The pack holding the first blob of a file of the latest snapshot, and that blob's offset.
    fn pack_with(&self, rel: &str) -> (PathBuf, usize) {
        let path = format!("{}/{rel}", self.src.display());
        crate::support::blob_location(&self.repo_dir(), &path)
    }
    fn restore(&self, target: &Path, extra: &[&str]) -> Run {
        let mut a = vec![
            "restore",
            "--repo",
            &self.repo,
            "latest",
            "--target",
            target.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        self.env.run(&a)
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_named_and_restore_saves_the_rest() {
    let f = fixture();
    let (pack, offset) = f.pack_with("Admin/mis.sql");
    flip_byte(&pack, offset + 40);
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();

    // Structure alone cannot see it; reading the data does.
    f.check(&[]).expect(0);
    let out = f.check(&["--read-data"]).expect(4);
    assert!(
        out.stdout
            .contains(&format!("DAMAGE: data/{}/{name}", &name[..2])),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("hash to"), "{}", out.stdout);
    assert!(out.stdout.contains("Admin/mis.sql"), "{}", out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&f.check(&["--read-data", "--json"]).expect(4).stdout).unwrap();
    let damaged: Vec<&serde_json::Value> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["severity"] == "damage")
        .collect();
    assert!(damaged.iter().any(|x| x["kind"] == "pack-hash"), "{json}");
    assert!(
        damaged
            .iter()
            .flat_map(|x| x["affected"].as_array().unwrap())
            .any(|a| a["path"].as_str().unwrap().ends_with("/Admin/mis.sql"))
    );

    let target = f.env.path("restore");
    let r = f.restore(&target, &[]).expect(4);
    assert!(r.stderr.contains("Admin/mis.sql"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&name),
        "the damaged pack is named: {}",
        r.stderr
    );
    let inside = target.join(f.src.strip_prefix("/").unwrap());
    assert!(
        !inside.join("Admin/mis.sql").exists(),
        "a damaged file is not left behind"
    );
    let mut want = tree_map(&f.src);
    let got = tree_map(&inside);
    want.retain(|k, _| !k.starts_with("Admin"));
    for (k, v) in &want {
        if !k.as_os_str().is_empty() && !v.starts_with("dir") {
            assert_eq!(
                got.get(k),
                Some(v),
                "{} was not restored intact",
                k.display()
            );
        }
    }
}

#[test]
fn a_deleted_pack_is_named_with_the_files_it_takes_and_other_paths_still_restore() {
    let f = fixture();
    let (pack, _) = f.pack_with("Pupils/story.txt");
    std::fs::remove_file(&pack).unwrap();
    let out = f.check(&[]).expect(4);
    assert!(
        out.stdout.contains("pack is missing from storage"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Pupils/story.txt"), "{}", out.stdout);
    let target = f.env.path("restore");
    let staff = format!("{}/Staff", f.src.display());
    f.restore(&target, &["--include", &staff]).expect(0);
    let inside = target.join(f.src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(inside.join("Staff/photo.jpg")).unwrap(),
        noise(3_000_000, 7)
    );
}

#[test]
fn a_deleted_index_is_detected_and_repair_rebuilds_it() {
    let f = fixture();
    let indexes = files_in(&f.repo_dir().join("index"));
    assert_eq!(indexes.len(), 2);
    // The newest index lists the second backup's packs (Pupils, and that snapshot's trees).
    let newest = indexes
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    std::fs::remove_file(newest).unwrap();
    let out = f.check(&[]).expect(4);
    assert!(out.stdout.contains("in no index"), "{}", out.stdout);
    assert!(
        out.stdout.contains("not listed in any index"),
        "{}",
        out.stdout
    );
    // The first snapshot is untouched and restores.
    let snaps: serde_json::Value = serde_json::from_str(
        &f.env
            .run(&["snapshots", "--repo", &f.repo, "--json"])
            .expect(0)
            .stdout,
    )
    .unwrap();
    let first = snaps[0]["id"].as_str().unwrap();
    let target = f.env.path("restore-first");
    f.env
        .run(&[
            "restore",
            "--repo",
            &f.repo,
            first,
            "--target",
            target.to_str().unwrap(),
        ])
        .expect(0);
    // Rebuilding the index from the pack headers brings the rest back.
    let repair = f.env.run(&["repair", "index", "--repo", &f.repo]).expect(0);
    assert!(repair.stdout.contains("indexed"), "{}", repair.stdout);
    f.check(&["--read-data"]).expect(0);
    let target = f.env.path("restore");
    f.restore(&target, &[]).expect(0);
    crate::support::assert_same_tree(&f.src, &target);
}

#[test]
fn a_truncated_snapshot_is_named_and_the_other_snapshots_still_restore() {
    let f = fixture();
    let snaps = files_in(&f.repo_dir().join("snapshots"));
    let victim = &snaps[0];
    let bytes = std::fs::read(victim).unwrap();
    std::fs::write(victim, &bytes[..bytes.len() / 2]).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap();
    let out = f.check(&[]).expect(4);
    assert!(
        out.stdout.contains(&format!("DAMAGE: snapshots/{name}")),
        "{}",
        out.stdout
    );
    let listed = f.env.run(&["snapshots", "--repo", &f.repo]).expect(4);
    assert!(listed.stderr.contains(name), "{}", listed.stderr);
    assert!(listed.stdout.contains("1 snapshot(s)"), "{}", listed.stdout);
    let target = f.env.path("restore");
    f.restore(&target, &[]).expect(0);
}
