//! A school's uplink: a first backup cut off half-way resumes from its checkpoints instead of
//! starting again (and prune keeps what it stored meanwhile), bandwidth limits hold, and a
//! backup window that closes pauses the backup, journalled as `paused` without an alert.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Env, Run, S3Repo, assert_same_tree, noise, s3, write};

/// Bytes of the objects under `dir` of an S3 repository.
fn stored(repo: &S3Repo, rt: &tokio::runtime::Runtime, dir: &str) -> u64 {
    rt.block_on(repo.store().list(dir))
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// A share of incompressible files, `files` × 2 MiB.
fn share(env: &Env, files: u64) -> std::path::PathBuf {
    let share = env.path("share");
    for i in 0..files {
        write(
            &share.join(format!("Year {}/scan-{i:02}.pdf", i % 3 + 4)),
            &noise(2 << 20, 100 + i),
        );
    }
    share
}

#[test]
fn an_initial_backup_killed_half_way_resumes_from_its_checkpoints_and_prune_keeps_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = S3Repo::new("resume-seed", "school", false);
    repo.run(&["init", "--pack-size", "1"]).expect(0);
    // 80 MiB: what a cut loses is a few packs (the interval, the uploads in flight), whatever
    // the size of the seed; against 40 MiB a slow CI machine's few packs came to 11%.
    let share = share(&repo.env, 40);
    let share_arg = share.to_str().unwrap();

    // What one uninterrupted backup stores.
    let reference = S3Repo::new("resume-reference", "school", false);
    reference.run(&["init", "--pack-size", "1"]).expect(0);
    reference.run(&["backup", share_arg]).expect(0);
    let whole = stored(&reference, &rt, "data/");
    assert!(whole > 80 << 20, "{whole}");

    // The first backup, over a slow link, is killed once half of it is stored.
    let mut cmd = repo.env.vouch();
    s3().apply(&mut cmd);
    let mut child = cmd
        .args(["backup", share_arg, "--repo", &repo.url])
        .args(["--limit-upload", "8MiB/s"])
        .env("VOUCH_CHECKPOINT_PACKS", "2")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored(&repo, &rt, "data/") < whole / 2 {
        assert!(Instant::now() < deadline, "the backup did not get half-way");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = stored(&repo, &rt, "data/");
    assert!(
        !repo.keys(&rt, "checkpoints/").is_empty(),
        "no checkpoint was written"
    );
    assert!(
        repo.run(&["snapshots"])
            .expect(0)
            .stdout
            .contains("no snapshots")
    );

    // A prune meanwhile keeps what the unfinished backup stored for it.
    let pruned = repo.run(&["prune"]).expect(0);
    assert!(
        pruned.stdout.contains("kept for an unfinished backup"),
        "{}",
        pruned.stdout
    );
    assert_eq!(stored(&repo, &rt, "data/"), first, "prune removed packs");

    // The next backup reuses what was checkpointed: all told, little more than one backup.
    repo.run(&["backup", share_arg]).expect(0);
    let total = stored(&repo, &rt, "data/");
    assert!(
        total as f64 <= whole as f64 * 1.10,
        "an interrupted and a resumed backup stored {total} bytes, one backup {whole}"
    );
    assert!(
        repo.keys(&rt, "checkpoints/").is_empty(),
        "the snapshot leaves no checkpoint behind"
    );
    let target = repo.env.path("restored");
    repo.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&share, &target);
    let check = repo.run(&["check", "--read-data"]).expect(0);
    assert!(check.stdout.contains("no damage found"), "{}", check.stdout);
}

#[test]
fn bandwidth_limits_hold_for_uploads_and_downloads() {
    let repo = S3Repo::new("limits", "school", false);
    repo.run(&["init"]).expect(0);
    let share = share(&repo.env, 10);
    let started = Instant::now();
    repo.run(&[
        "backup",
        share.to_str().unwrap(),
        "--limit-upload",
        "2MiB/s",
    ])
    .expect(0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9),
        "20 MiB went up in {took:?} at 2 MiB/s"
    );
    let target = repo.env.path("restored");
    let started = Instant::now();
    repo.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--limit-download",
        "4MiB/s",
    ])
    .expect(0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(4500),
        "20 MiB came down in {took:?} at 4 MiB/s"
    );
    assert_same_tree(&share, &target);
    let bad = repo.run(&["snapshots", "--limit-upload", "fast"]).expect(2);
    assert!(
        bad.stderr.contains("\"fast\" is not a rate"),
        "{}",
        bad.stderr
    );
}

/// A school with a local repository and one schedule whose window is `window`.
fn school(env: &Env, share: &Path, window: &str) -> std::path::PathBuf {
    let dir = env.path("etc");
    std::fs::create_dir_all(dir.join("schedules")).unwrap();
    std::fs::copy(&env.pass_file, dir.join("offsite.pass")).unwrap();
    let repo = env.path("repo");
    if !repo.exists() {
        env.run(&["init", "--repo", repo.to_str().unwrap()])
            .expect(0);
    }
    std::fs::write(
        dir.join("vouch.toml"),
        format!(
            "school = \"Preston Primary Academy\"\ntime_zone = \"UTC\"\nstate_dir = \"{}\"\nscratch_dir = \"{}\"\n[repositories.offsite]\nurl = \"{}\"\npassword_file = \"offsite.pass\"\n[alerts]\nto = [\"network.manager@school.example\"]\n",
            env.path("state").display(),
            env.path("scratch").display(),
            repo.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("schedules/staff-nightly.toml"),
        format!(
            "repository = \"offsite\"\npaths = [\"{}\"]\ncron = \"0 19 * * *\"\nrpo = \"26h\"\nwindow = \"{window}\"\n",
            share.display()
        ),
    )
    .unwrap();
    dir.join("vouch.toml")
}

/// Hours from an hour ago until `secs` seconds from now, in UTC.
fn window_closing_in(secs: i64) -> String {
    let now = vouch::Clock::now(&vouch::SystemClock).to_zoned(jiff::tz::TimeZone::UTC);
    let from = &now - jiff::SignedDuration::from_hours(1);
    let to = &now + jiff::SignedDuration::from_secs(secs);
    format!("{}-{}", from.strftime("%H:%M:%S"), to.strftime("%H:%M:%S"))
}

#[test]
fn a_window_that_closes_pauses_the_backup_without_an_alert_and_the_next_run_completes_it() {
    let env = Env::new();
    let share = share(&env, 6);
    let config = school(&env, &share, &window_closing_in(3));
    let vouch = |args: &[&str]| {
        Run::of(
            env.vouch()
                .env("VOUCH_CONFIG", &config)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    // The journal's latest row.
    let last_run = || {
        let list: serde_json::Value =
            serde_json::from_str(&vouch(&["journal", "list", "--json"]).expect(0).stdout).unwrap();
        list.as_array().unwrap().last().unwrap()["record"].clone()
    };

    // The backup is held at its first checkpoint until the window has closed.
    let resume = env.path("resume");
    let mut child = env
        .vouch()
        .env("VOUCH_CONFIG", &config)
        .args(["run", "staff-nightly", "--scheduled"])
        .env("VOUCH_CHECKPOINT_PACKS", "1")
        .env("VOUCH_TEST_BACKUP_PAUSE", "checkpoint-index")
        .env("VOUCH_TEST_RESUME", &resume)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l == "backup: paused before checkpoint-index"),
        "the backup never reached a checkpoint"
    );
    std::thread::sleep(Duration::from_secs(5));
    std::fs::write(&resume, b"go").unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{}", rest.join("\n"));

    let row = &last_run();
    assert_eq!(row["outcome"], "paused", "{row}");
    let summary = row["summary"].as_str().unwrap();
    assert!(summary.starts_with("backup paused: "), "{summary}");
    assert!(summary.contains("stored"), "{summary}");
    assert_eq!(
        row["details"]["unfinished"]["source_bytes_total"],
        12 << 20,
        "{row}"
    );
    assert!(
        crate::support::files_in(&env.path("state/mail")).is_empty(),
        "a paused backup sent mail"
    );
    let status = vouch(&["status"]).expect(0);
    assert!(
        status.stdout.contains("paused") && status.stdout.contains("of 12.0 MiB read"),
        "{}",
        status.stdout
    );
    assert!(
        env.path("repo/checkpoints")
            .read_dir()
            .unwrap()
            .next()
            .is_some(),
        "the pause left no checkpoint"
    );

    // Outside the window a scheduled run does not start (a window an hour long, ending an
    // hour ago).
    let outside_window = {
        let now = vouch::Clock::now(&vouch::SystemClock).to_zoned(jiff::tz::TimeZone::UTC);
        let from = &now - jiff::SignedDuration::from_hours(2);
        let to = &now - jiff::SignedDuration::from_hours(1);
        format!("{}-{}", from.strftime("%H:%M"), to.strftime("%H:%M"))
    };
    school(&env, &share, &outside_window);
    let outside = vouch(&["run", "staff-nightly", "--scheduled"]);
    assert_eq!(outside.code, 5, "{}", outside.stderr);
    let row = last_run();
    assert_eq!(row["outcome"], "paused", "{row}");
    assert!(
        row["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("outside its window ({outside_window})")),
        "{row}"
    );

    // The next run in the window completes the backup.
    school(&env, &share, &window_closing_in(3600));
    vouch(&["run", "staff-nightly", "--scheduled"]).expect(0);
    let row = last_run();
    assert_eq!(row["outcome"], "success", "{row}");
    assert!(
        env.path("repo/checkpoints")
            .read_dir()
            .unwrap()
            .next()
            .is_none(),
        "checkpoints left after the snapshot"
    );
    let target = env.path("restored");
    let repo = env.path("repo");
    env.run(&[
        "restore",
        "latest",
        "--repo",
        repo.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ])
    .expect(0);
    assert_same_tree(&share, &target);
    assert!(
        crate::support::files_in(&env.path("state/mail")).is_empty(),
        "mail was sent"
    );
}

/// The cached copies under `cache/<repository id>/` (key, bytes).
fn cached(env: &Env) -> Vec<(String, Vec<u8>)> {
    let root = env.path("cache");
    crate::corpus::files(&root)
        .into_iter()
        .map(|p| {
            let key = p.strip_prefix(&root).unwrap().to_str().unwrap();
            // Past the repository id.
            let key = key.split_once('/').unwrap().1.to_string();
            (key, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn the_metadata_cache_is_checked_on_every_use_and_follows_what_another_machine_changes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = S3Repo::new("cache", "school", false);
    repo.run(&["init"]).expect(0);
    let share = repo.env.path("share");
    write(&share.join("Staff/plan.docx"), &noise(300_000, 1));
    write(&share.join("Admin/budget.xlsx"), &noise(200_000, 2));
    repo.run(&["backup", share.to_str().unwrap()]).expect(0);

    // The backup keeps copies of the metadata it wrote, named by their hashes: index files,
    // snapshots, tree packs; never a data pack. Reading the snapshot needs nothing more.
    let copies = cached(&repo.env);
    let listing = repo.run(&["ls", "latest"]).expect(0).stdout;
    assert!(listing.contains("plan.docx"), "{listing}");
    assert_eq!(cached(&repo.env), copies, "ls found the cache incomplete");
    let dirs = |copies: &[(String, Vec<u8>)], dir: &str| {
        copies.iter().filter(|(k, _)| k.starts_with(dir)).count()
    };
    assert!(
        dirs(&copies, "index/") > 0 && dirs(&copies, "snapshots/") == 1,
        "{copies:?}"
    );
    assert_eq!(dirs(&copies, "data/"), 1, "one tree pack, no data pack");
    let store = repo.store();
    for (key, bytes) in &copies {
        assert_eq!(
            &rt.block_on(store.get(key)).unwrap()[..],
            &bytes[..],
            "{key}"
        );
    }
    let report = repo.run(&["cache"]).expect(0).stdout;
    assert!(
        report.contains(&format!("{} file(s)", copies.len())),
        "{report}"
    );

    // A copy damaged on disk is noticed, fetched again and used no more.
    let root = repo.env.path("cache");
    for (key, bytes) in &copies {
        let path = crate::corpus::files(&root)
            .into_iter()
            .find(|p| p.to_str().unwrap().ends_with(key.as_str()))
            .unwrap();
        let mut bad = bytes.clone();
        bad[bytes.len() / 2] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
    }
    let again = repo.run(&["ls", "latest"]).expect(0).stdout;
    assert_eq!(again, listing);
    assert_eq!(
        cached(&repo.env),
        copies,
        "the damaged copies were replaced"
    );

    // Another machine (no cache) backs up a change, forgets the first snapshot and prunes:
    // this one sees the repository as it is now, and its cache drops what is gone.
    write(&share.join("Staff/minutes.txt"), &noise(50_000, 3));
    let elsewhere = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("--no-cache");
        repo.run(&all)
    };
    elsewhere(&["backup", share.to_str().unwrap()]).expect(0);
    elsewhere(&["forget", "--keep-last", "1"]).expect(0);
    elsewhere(&["prune"]).expect(0);
    assert!(cached(&repo.env) == copies, "--no-cache wrote to the cache");
    let snapshots = repo.run(&["snapshots"]).expect(0).stdout;
    assert!(snapshots.contains("\n1 snapshot(s)"), "{snapshots}");
    let listing = repo.run(&["ls", "latest"]).expect(0).stdout;
    assert!(listing.contains("minutes.txt"), "{listing}");
    let target = repo.env.path("restored");
    repo.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&share, &target);
    let now = cached(&repo.env);
    for (key, _) in &now {
        assert!(
            rt.block_on(store.get(key)).is_ok(),
            "the cache keeps {key}, which the repository no longer has"
        );
    }
    let gone = copies.iter().filter(|c| !now.contains(c)).count();
    assert!(gone > 0, "nothing left the cache after the prune");

    // Cleared, it is filled again as needed.
    repo.run(&["cache", "--clear"]).expect(0);
    assert!(cached(&repo.env).is_empty());
    repo.run(&["ls", "latest"]).expect(0);
    assert!(!cached(&repo.env).is_empty());
}
