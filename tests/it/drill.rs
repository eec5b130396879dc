//! Drills: sandboxed test restores, verified at every level, with application checks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Env, Run, bucket_name, noise, s3, text, write};

struct Fixture {
    env: Env,
    repo: String,
    src: PathBuf,
    scratch: PathBuf,
}

/// A share with staff documents, an MIS database (real SQLite) and photos, backed up once.
fn fixture() -> Fixture {
    let env = Env::new();
    let repo = env.path("repo").display().to_string();
    env.run(&["init", "--repo", &repo]).expect(0);
    let src = env.path("share");
    for i in 0..12 {
        write(
            &src.join(format!("staff/plans/week-{i:02}.txt")),
            &text(30_000 + i * 997, i as u64),
        );
    }
    write(&src.join("photos/IMG_0001.jpg"), &noise(1_500_000, 1));
    write(&src.join("photos/IMG_0002.jpg"), &noise(900_000, 2));
    let db = src.join("admin/SIMS/school.sqlite");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let sql = "CREATE TABLE pupils (id INTEGER PRIMARY KEY, name TEXT, year INT);\
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 5000) \
               INSERT INTO pupils SELECT i, 'Pupil ' || i, i % 7 FROM n;";
    let ok = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(sql)
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "sqlite3 (installed by scripts/test) makes the test database"
    );
    env.run(&[
        "backup",
        "--repo",
        &repo,
        src.to_str().unwrap(),
        "--label",
        "Staff and admin",
    ])
    .expect(0);
    let scratch = env.path("scratch");
    Fixture {
        env,
        repo,
        src,
        scratch,
    }
}

impl Fixture {
    fn plan(&self, name: &str, body: &str) -> PathBuf {
        let p = self.env.path(&format!("{name}.toml"));
        std::fs::write(
            &p,
            format!("name = \"{name}\"\nrepository = \"{}\"\n{body}", self.repo),
        )
        .unwrap();
        p
    }
    fn drill(&self, plan: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "drill",
            plan.to_str().unwrap(),
            "--scratch",
            self.scratch.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.env.run(&args)
    }
    fn drill_json(&self, plan: &Path, code: i32) -> serde_json::Value {
        let out = self.drill(plan, &["--json"]).expect(code);
        serde_json::from_str(&out.stdout).unwrap()
    }
    fn scratch_is_empty(&self) -> bool {
        std::fs::read_dir(&self.scratch)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }
}

const SQLITE_CHECK: &str = r#"
[[verify.command]]
glob = "*.sqlite"
run = ["sqlite3", "{file}", "PRAGMA integrity_check"]
timeout = "60s"
"#;

#[test]
fn a_clean_drill_passes_at_every_level_and_leaves_no_sandbox() {
    let f = fixture();
    let plan = f.plan(
        "monthly",
        &format!("[select]\npercent = 40\nmust_include = [\"admin/SIMS/\"]\n[verify]\ncompare_with_source = true\nrestore_time_objective = \"8h\"\n{SQLITE_CHECK}"),
    );
    let human = f.drill(&plan, &[]).expect(0);
    assert!(
        human.stdout.contains("drill monthly: PASSED"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("confined by Landlock"),
        "{}",
        human.stdout
    );
    let r = f.drill_json(&plan, 0);
    assert_eq!(r["passed"], true);
    assert!(r["levels"]["packs_verified"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["levels"]["files_verified"], r["selection"]["files"]);
    assert_eq!(r["levels"]["source"]["identical"], r["selection"]["files"]);
    assert_eq!(r["checks"][0]["passed"], true);
    assert!(
        r["checks"][0]["output"].as_str().unwrap().contains("ok"),
        "{r}"
    );
    assert_eq!(r["objective_met"], true);
    assert_eq!(r["sandbox"]["removed"], true);
    assert!(r["restore"]["bytes_per_second"].as_f64().unwrap() > 0.0);
    assert!(f.scratch_is_empty());
    // The report is stored in the repository.
    let id = r["report_id"].as_str().unwrap();
    assert!(Path::new(&f.repo).join("drills").join(id).exists());
}

#[test]
fn a_flipped_byte_under_a_sampled_file_fails_the_drill_and_names_file_and_hashes() {
    let f = fixture();
    let target = format!("{}/admin/SIMS/school.sqlite", f.src.display());
    let (pack, offset) = crate::support::blob_location(Path::new(&f.repo), &target);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[offset + 60] ^= 0x10;
    std::fs::write(&pack, bytes).unwrap();
    let plan = f.plan(
        "sampled",
        "[select]\nfiles = 1\nmust_include = [\"admin/SIMS/school.sqlite\"]\n",
    );
    let out = f.drill(&plan, &[]).expect(4);
    assert!(
        out.stdout.contains("drill sampled: FAILED"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("admin/SIMS/school.sqlite"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("expected blake3"), "{}", out.stdout);
    let r = f.drill_json(&plan, 4);
    let failures = r["failures"].as_array().unwrap();
    let file = failures
        .iter()
        .find(|x| {
            x["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("school.sqlite"))
        })
        .unwrap();
    assert_ne!(file["expected"], file["actual"]);
    assert_eq!(file["expected"].as_str().unwrap().len(), 64);
    assert_eq!(file["actual"].as_str().unwrap().len(), 64);
    assert!(
        failures.iter().any(|x| x["level"] == 1),
        "the altered pack fails level 1: {r}"
    );
    assert!(
        f.scratch_is_empty(),
        "the sandbox is removed after a failure too"
    );
}

#[test]
fn live_changes_are_counted_but_a_wrongly_read_file_fails_level_4() {
    let f = fixture();
    // Changed since the backup: new size and mtime.
    write(
        &f.src.join("staff/plans/week-00.txt"),
        b"rewritten after the backup",
    );
    // Same size and mtime, different bytes: the backup must have read it wrongly.
    let victim = f.src.join("staff/plans/week-01.txt");
    let mtime =
        filetime::FileTime::from_last_modification_time(&std::fs::metadata(&victim).unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&victim, &bytes).unwrap();
    filetime::set_file_mtime(&victim, mtime).unwrap();
    let plan = f.plan(
        "all",
        "[select]\nall = true\n[verify]\ncompare_with_source = true\n",
    );
    let r = f.drill_json(&plan, 4);
    assert_eq!(r["levels"]["source"]["changed"], 1, "{r}");
    let l4: Vec<_> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["level"] == 4)
        .collect();
    assert_eq!(l4.len(), 1, "{r}");
    assert!(
        l4[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("staff/plans/week-01.txt")
    );
}

#[test]
fn a_failing_application_check_fails_the_drill_with_its_output() {
    let f = fixture();
    // A truncated database in the share, backed up as it is.
    let db = f.src.join("admin/SIMS/school.sqlite");
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 3]).unwrap();
    f.env
        .run(&["backup", "--repo", &f.repo, f.src.to_str().unwrap()])
        .expect(0);
    let plan = f.plan(
        "mis",
        &format!("[select]\nfiles = 1\nmust_include = [\"admin/SIMS/\"]\n{SQLITE_CHECK}"),
    );
    let r = f.drill_json(&plan, 4);
    let check = &r["checks"][0];
    assert_eq!(check["passed"], false, "{r}");
    assert_ne!(check["exit_code"], 0);
    assert!(
        !check["output"].as_str().unwrap().trim().is_empty(),
        "the check's output is kept: {r}"
    );
    assert!(
        r["reasons"][0]
            .as_str()
            .unwrap()
            .contains("application check"),
        "{r}"
    );
}

#[test]
fn a_check_that_writes_outside_the_sandbox_is_refused() {
    let f = fixture();
    let outside = f.env.path("escaped.txt");
    let plan = f.plan(
        "escape",
        &format!(
            "[select]\nfiles = 1\nmust_include = [\"admin/SIMS/\"]\n[[verify.command]]\nglob = \"*.sqlite\"\nrun = [\"sh\", \"-c\", \"echo inside > ./written-inside && echo out > {} && test -s {{file}}\"]\n",
            outside.display()
        ),
    );
    let r = f.drill_json(&plan, 4);
    assert_eq!(r["sandbox"]["confinement"], "enforced", "{r}");
    assert_eq!(r["checks"][0]["passed"], false, "{r}");
    assert!(
        r["checks"][0]["output"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{r}"
    );
    assert!(
        !outside.exists(),
        "a confined check wrote outside the sandbox"
    );
}

#[test]
fn a_drill_killed_mid_way_leaves_a_sandbox_that_the_next_drill_removes() {
    let f = fixture();
    let plan = f.plan(
        "slow",
        "[select]\nfiles = 1\nmust_include = [\"admin/SIMS/\"]\n[[verify.command]]\nglob = \"*.sqlite\"\nrun = [\"sh\", \"-c\", \"sleep 3; test -s {file}\"]\n",
    );
    let mut child = f
        .env
        .vouch()
        .args([
            "drill",
            plan.to_str().unwrap(),
            "--scratch",
            f.scratch.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait until the check is running: the restored database is in the sandbox.
    while !sandbox_has_restore(&f.scratch) {
        assert!(
            Instant::now() < deadline,
            "the drill did not get to its check"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!f.scratch_is_empty(), "a killed drill leaves its sandbox");
    let quick = f.plan("quick", "[select]\nfiles = 1\n");
    let r = f.drill_json(&quick, 0);
    assert_eq!(r["sandbox"]["stale_removed"], 1, "{r}");
    assert!(f.scratch_is_empty());
}

fn sandbox_has_restore(scratch: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(scratch) else {
        return false;
    };
    rd.flatten().any(|e| {
        let mut stack = vec![e.path().join("restore")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "sqlite") {
                    return true;
                }
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        false
    })
}

#[test]
fn not_enough_scratch_space_is_refused_before_anything_is_restored() {
    let f = fixture();
    let small = f.env.path("small-scratch");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            small.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "the test mounts a 1 MiB tmpfs (it runs as root, like CI)"
    );
    let plan = f.plan("too-big", "[select]\nall = true\n");
    let out = f.env.run(&[
        "drill",
        plan.to_str().unwrap(),
        "--scratch",
        small.to_str().unwrap(),
    ]);
    let empty = std::fs::read_dir(&small).unwrap().next().is_none();
    std::process::Command::new("umount")
        .arg(&small)
        .status()
        .unwrap();
    let out = out.expect(1);
    assert!(
        out.stderr.contains("free but the selection needs"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nothing was restored"),
        "{}",
        out.stderr
    );
    assert!(empty, "nothing was written to the scratch volume");
}

#[test]
fn four_quarter_samples_cover_every_stored_byte() {
    let f = fixture();
    let before: serde_json::Value = serde_json::from_str(
        &f.env
            .run(&["coverage", "--repo", &f.repo, "--json"])
            .expect(0)
            .stdout,
    )
    .unwrap();
    assert_eq!(before["percent"], 0.0);
    let plan = f.plan("quarter", "[select]\npercent = 25\n");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = f.drill_json(&plan, 0);
        assert!(r["selection"]["files"].as_u64().unwrap() > 0);
        seen.insert(r["selection"]["seed"].as_u64().unwrap());
    }
    let after: serde_json::Value = serde_json::from_str(
        &f.env
            .run(&["coverage", "--repo", &f.repo, "--json"])
            .expect(0)
            .stdout,
    )
    .unwrap();
    assert_eq!(after["percent"], 100.0, "{after}");
    assert!(after["never_verified"].as_array().unwrap().is_empty());
    let human = f.env.run(&["coverage", "--repo", &f.repo]).expect(0);
    assert!(
        human.stdout.contains("100.0% of stored bytes"),
        "{}",
        human.stdout
    );
}

#[test]
fn a_drill_against_s3_passes() {
    let server = s3();
    let bucket = bucket_name("drill");
    server.create_bucket(&bucket);
    let env = Env::new();
    let url = format!("s3://{bucket}/nas1");
    let run = |args: &[&str]| {
        let mut cmd = env.vouch();
        server.apply(&mut cmd);
        Run::of(cmd.args(args).output().unwrap())
    };
    run(&["init", "--repo", &url]).expect(0);
    let src = env.path("share");
    write(&src.join("a.txt"), &text(200_000, 1));
    write(&src.join("b.jpg"), &noise(2_000_000, 2));
    run(&["backup", "--repo", &url, src.to_str().unwrap()]).expect(0);
    let plan = env.path("s3.toml");
    std::fs::write(
        &plan,
        format!(
            "repository = \"{url}\"\n[select]\nall = true\n[verify]\ncompare_with_source = true\n"
        ),
    )
    .unwrap();
    let scratch = env.path("scratch");
    let out = run(&[
        "drill",
        plan.to_str().unwrap(),
        "--scratch",
        scratch.to_str().unwrap(),
        "--json",
    ])
    .expect(0);
    let r: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["levels"]["files_verified"], 2);
    assert_eq!(r["levels"]["source"]["identical"], 2);
}
