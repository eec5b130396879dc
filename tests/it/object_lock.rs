//! S3 Object Lock against a real S3 server (moto) on loopback: every object is written with
//! retention, a delete of a retained object is refused, forget and prune report what they
//! could not remove and carry on, prune extends what is still needed, and `vouch doctor`
//! reports the bucket's settings and proves enforcement with a canary, and whether mail can
//! go out.

use jiff::Timestamp;
use vouch::{Retention, RetentionMode};

use crate::support::{Env, Run, S3Repo, Smtp, assert_same_tree, noise, s3, text, write};

const DAYS: u32 = 7;

fn share(env: &Env) -> std::path::PathBuf {
    let src = env.path("share");
    write(&src.join("Staff/plan.txt"), &text(300_000, 1));
    // Three packs' worth, so that whichever way the backup groups its blobs, at least one
    // pack holds nothing else and falls unused once this file's snapshot is gone.
    write(&src.join("Photos/trip.jpg"), &noise(24_000_000, 2));
    src
}

/// The storage's clock: retention is judged by the S3 server against real time.
fn wall_clock() -> Timestamp {
    use vouch::Clock;
    vouch::SystemClock.now()
}

fn close_to(actual: Timestamp, expected: Timestamp) -> bool {
    actual.duration_since(expected).abs() < jiff::SignedDuration::from_mins(5)
}

#[test]
fn every_object_is_retained_and_prune_reports_what_it_cannot_delete() {
    let r = S3Repo::new("lock-retain", "nas1", true);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The mode must be chosen: COMPLIANCE cannot be undone by anyone.
    let no_mode = r.run(&["init", "--object-lock", "7"]).expect(1);
    assert!(
        no_mode.stderr.contains("--object-lock-mode") && no_mode.stderr.contains("compliance"),
        "{}",
        no_mode.stderr
    );
    assert!(r.keys(&rt, "").is_empty(), "nothing written on a refusal");

    let init = r
        .run(&[
            "init",
            "--object-lock",
            &DAYS.to_string(),
            "--object-lock-mode",
            "governance",
        ])
        .expect(0);
    assert!(
        init.stdout
            .contains("retained for 7 days in GOVERNANCE mode"),
        "{}",
        init.stdout
    );
    let src = share(&r.env);
    r.run(&["backup", "-q", src.to_str().unwrap()]).expect(0);
    write(&src.join("Photos/trip2.jpg"), &noise(2_000_000, 3));
    std::fs::remove_file(src.join("Photos/trip.jpg")).unwrap();
    r.run(&["backup", "-q", src.to_str().unwrap()]).expect(0);

    // Every object but lock files carries GOVERNANCE retention for DAYS from its writing.
    let now = wall_clock();
    let all = r.keys(&rt, "");
    for dir in ["config", "keys/", "data/", "index/", "snapshots/"] {
        assert!(
            all.iter().any(|k| k.starts_with(dir)),
            "no {dir} in {all:?}"
        );
    }
    for key in &all {
        let ret = rt.block_on(r.store().object_retention(key)).unwrap();
        assert_eq!(ret.mode, Some(RetentionMode::Governance), "{key}");
        let until = ret.until.unwrap();
        assert!(
            close_to(
                until,
                now + jiff::SignedDuration::from_hours(24 * i64::from(DAYS))
            ),
            "{key} retained until {until}"
        );
    }

    // A delete of a retained object is refused before anything is removed.
    let snaps = r.keys(&rt, "snapshots/");
    assert_eq!(snaps.len(), 2);
    let locked = r
        .store()
        .with_retention(Retention {
            mode: RetentionMode::Governance,
            days: DAYS,
        })
        .unwrap();
    let err = rt.block_on(locked.delete(&snaps[0])).unwrap_err();
    assert!(
        err.to_string()
            .contains("protected by S3 Object Lock until"),
        "{err}"
    );
    assert_eq!(r.keys(&rt, "snapshots/").len(), 2);

    // forget cannot remove a snapshot within its retention: it says so and removes nothing.
    let forget = r.run(&["forget", "--keep-last", "1"]).expect(0);
    assert!(
        forget.stdout.contains("Object Lock retains it until"),
        "{}",
        forget.stdout
    );
    assert_eq!(r.keys(&rt, "snapshots/").len(), 2);

    // An attacker with the NAS's credentials hides the first snapshot behind a delete marker
    // (a plain DELETE, which versioned buckets allow). Its data is now unused, and prune
    // tries to remove it: the storage refuses, prune reports each refusal and finishes.
    let first = r.run(&["snapshots", "--json"]).expect(0);
    let first: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    rt.block_on(r.store().delete(&format!("snapshots/{first_id}")))
        .unwrap();
    assert_eq!(r.keys(&rt, "snapshots/").len(), 1);
    let packs_before = r.keys(&rt, "data/");
    let prune = r.run(&["prune"]).expect(0);
    assert!(
        prune.stdout.contains("kept data/")
            && prune.stdout.contains("Object Lock retains it until"),
        "{}",
        prune.stdout
    );
    // The hidden snapshot's packs, which prune wanted gone.
    let unwanted: Vec<String> = prune
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("kept "))
        .filter_map(|l| l.split(':').next())
        .filter(|k| k.starts_with("data/"))
        .map(str::to_string)
        .collect();
    let packs_after = r.keys(&rt, "data/");
    for pack in &packs_before {
        assert!(packs_after.contains(pack), "retained {pack} was deleted");
    }
    r.run(&["check", "--read-data"]).expect(0);
    let target = r.env.path("restored");
    r.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &target);

    // A pack still needed whose retention is about to end is retained again by prune.
    let json = r.run(&["prune", "--json"]).expect(0);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["retention_extended"], 0, "nothing was near its end");
    // A pack the latest snapshot needs: not among those prune wanted gone, holding trip2.jpg.
    // (Those are now in no index and young, so this prune leaves them alone.)
    assert!(!unwanted.is_empty(), "{report}");
    assert_eq!(report["packs_recent"], unwanted.len(), "{report}");
    let kept_pack = packs_after
        .iter()
        .filter(|k| !unwanted.contains(k))
        .find(|k| {
            rt.block_on(r.store().get(k))
                .is_ok_and(|b| b.len() > 1_000_000)
        })
        .unwrap()
        .clone();
    let soon = wall_clock() + jiff::SignedDuration::from_hours(1);
    rt.block_on(locked.extend_retention(&kept_pack, soon))
        .unwrap();
    let prune = r.run(&["prune"]).expect(0);
    assert!(
        prune
            .stdout
            .contains("extended the Object Lock retention of 1 object(s) still needed"),
        "{}",
        prune.stdout
    );
    let ret = rt.block_on(r.store().object_retention(&kept_pack)).unwrap();
    assert!(
        close_to(
            ret.until.unwrap(),
            wall_clock() + jiff::SignedDuration::from_hours(24 * i64::from(DAYS))
        ),
        "{kept_pack} retained until {:?}",
        ret.until
    );

    // Once its retention has passed, an unused pack goes for good: every version of it, so
    // the space is really freed (a plain delete would only hide it). A third photo, backed
    // up once; the snapshot that holds it hidden as before.
    let before_trip3 = r.keys(&rt, "data/");
    write(&src.join("Photos/trip3.jpg"), &noise(2_000_000, 4));
    r.run(&["backup", "-q", src.to_str().unwrap()]).expect(0);
    let unused_pack = r
        .keys(&rt, "data/")
        .into_iter()
        .filter(|k| !before_trip3.contains(k))
        .find(|k| {
            rt.block_on(r.store().get(k))
                .is_ok_and(|b| b.len() > 1_000_000)
        })
        .unwrap();
    let listed = r.run(&["snapshots", "--json"]).expect(0);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let newest = listed.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(src.join("Photos/trip3.jpg")).unwrap();
    r.run(&["backup", "-q", src.to_str().unwrap()]).expect(0);
    rt.block_on(r.store().delete(&format!("snapshots/{newest}")))
        .unwrap();
    let moments = wall_clock() + jiff::SignedDuration::from_secs(2);
    rt.block_on(locked.extend_retention(&unused_pack, moments))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let json = r.run(&["prune", "--json"]).expect(0);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["packs_removed"], 1, "{report}");
    assert!(!r.keys(&rt, "data/").contains(&unused_pack));
    let versions = s3().list_versions(&r.bucket, &format!("nas1/{unused_pack}"));
    assert!(
        !versions.contains("<Key>") && versions.contains("</ListVersionsResult>"),
        "{versions}"
    );
    // Still there, for comparison: the versions of a live pack.
    let live = s3().list_versions(&r.bucket, &format!("nas1/{kept_pack}"));
    assert!(
        live.contains(&format!("<Key>nas1/{kept_pack}</Key>")),
        "{live}"
    );
    r.run(&["check", "--read-data"]).expect(0);
}

#[test]
fn doctor_reports_versioning_object_lock_and_proves_enforcement() {
    let r = S3Repo::new("lock-doctor", "nas1", true);
    r.run(&[
        "init",
        "--object-lock",
        "30",
        "--object-lock-mode",
        "compliance",
    ])
    .expect(0);
    let doctor = r.run(&["doctor"]).expect(0);
    let out = &doctor.stdout;
    for needle in [
        "versioning Enabled",
        "Object Lock enabled",
        "retained for 30 days in COMPLIANCE mode",
        "config object is retained (COMPLIANCE) until",
        "Object Lock is enforced: deleting a retained canary was refused",
        "these credentials can delete objects",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    assert!(!out.contains("PROBLEM"), "{out}");
    let json = r.run(&["doctor", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let report = &v["repositories"][0]["report"];
    assert_eq!(report["bucket"]["object_lock_enabled"], true);
    assert_eq!(report["enforced"], true);
    assert_eq!(report["can_delete"], true);
    assert_eq!(report["retention"]["mode"], "compliance");
    assert_eq!(report["retention"]["days"], 30);

    // The evidence pack states the retention as the storage reports it.
    let keys = r.env.path("keys");
    r.env
        .run(&["keygen", "--out", keys.to_str().unwrap(), "--unencrypted"])
        .expect(0);
    let pack = r.env.path("pack");
    r.run(&[
        "evidence",
        "build",
        "--school",
        "Preston Primary Academy",
        "--out",
        pack.to_str().unwrap(),
        "--signing-key",
        keys.join("evidence.key").to_str().unwrap(),
    ])
    .expect(0);
    let evidence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pack.join("evidence.json")).unwrap()).unwrap();
    let immutability = evidence["inputs"]["repositories"][0]["immutability"]
        .as_str()
        .unwrap();
    assert!(
        immutability.starts_with(
            "S3 Object Lock, COMPLIANCE mode: every object retained for 30 days from when it is written"
        ) && immutability.contains("config object retained until"),
        "{immutability}"
    );

    // A bucket without Object Lock: init with --object-lock is refused and writes nothing;
    // a plain repository there is reported as deletable by anyone with the credentials.
    let plain = S3Repo::new("lock-doctor-plain", "nas1", false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = plain
        .run(&[
            "init",
            "--object-lock",
            "30",
            "--object-lock-mode",
            "compliance",
        ])
        .expect(1);
    assert!(
        refused
            .stderr
            .contains("does not have S3 Object Lock enabled")
            && refused.stderr.contains("--object-lock-enabled-for-bucket"),
        "{}",
        refused.stderr
    );
    assert!(plain.keys(&rt, "").is_empty());
    plain.run(&["init"]).expect(0);
    let doctor = plain.run(&["doctor"]).expect(0);
    assert!(
        doctor
            .stdout
            .contains("versioning not enabled, Object Lock not enabled")
            && doctor.stdout.contains("no immutability"),
        "{}",
        doctor.stdout
    );
    // Only the repository's own objects: the delete probe left nothing behind.
    assert!(
        plain.keys(&rt, "doctor/").is_empty(),
        "{:?}",
        plain.keys(&rt, "doctor/")
    );

    // A local repository has no Object Lock at all.
    let env = Env::new();
    let local = env.path("repo");
    env.run(&["init", "--repo", local.to_str().unwrap()])
        .expect(0);
    let doctor = env
        .run(&["doctor", "--repo", local.to_str().unwrap()])
        .expect(0);
    assert!(
        doctor.stdout.contains("local storage has no Object Lock"),
        "{}",
        doctor.stdout
    );
}

/// The first hour on a NAS: `vouch doctor` with vouch.toml checks every repository there and
/// that alerts can leave (the SMTP server accepts a connection), and `--test-email` proves
/// they arrive.
#[test]
fn doctor_with_vouch_toml_checks_each_repository_and_the_mail_server() {
    let r = S3Repo::new("doctor-config", "nas1", true);
    r.run(&[
        "init",
        "--object-lock",
        "14",
        "--object-lock-mode",
        "governance",
    ])
    .expect(0);
    let env = &r.env;
    let mut smtp = Smtp::start(env.dir.path());
    std::fs::write(env.path("s3.secret"), "testing\n").unwrap();
    let config = env.path("vouch.toml");
    std::fs::write(
        &config,
        format!(
            "school = \"Preston Primary Academy\"\nstate_dir = \"{}\"\n\
             [repositories.offsite]\nurl = \"{}\"\npassword_file = \"{}\"\n\
             s3_endpoint = \"{}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"s3.secret\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"vouch <vouch@school.example>\"\n\
             [alerts]\nto = [\"network.manager@school.example\"]\n",
            env.path("state").display(),
            r.url,
            env.pass_file.display(),
            s3().endpoint,
            smtp.port
        ),
    )
    .unwrap();
    let doctor = |args: &[&str]| {
        Run::of(
            env.vouch()
                .env("VOUCH_CONFIG", &config)
                .env("AWS_ALLOW_HTTP", "true")
                .arg("doctor")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let ok = doctor(&["--test-email"]).expect(0);
    for needle in [
        "offsite (s3://",
        "retained for 14 days in GOVERNANCE mode",
        "GOVERNANCE mode: credentials with s3:BypassGovernanceRetention can still delete",
        "Object Lock is enforced",
        &format!(
            "the SMTP server 127.0.0.1:{} accepts a connection",
            smtp.port
        ),
        "a test email went to network.manager@school.example",
    ] {
        assert!(
            ok.stdout.contains(needle),
            "{needle:?} missing from:\n{}",
            ok.stdout
        );
    }
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(
        mail[0].contains("Subject: [vouch] Preston Primary Academy: test email")
            && mail[0].contains("To: network.manager@school.example"),
        "{}",
        mail[0]
    );

    // The mail server down: named, exit 4, and nothing else fails.
    smtp.stop();
    let down = doctor(&[]).expect(4);
    assert!(
        down.stdout
            .contains(&format!("PROBLEM SMTP server 127.0.0.1:{}", smtp.port))
            && down.stdout.contains("alerts wait in the outbox"),
        "{}",
        down.stdout
    );
    assert!(
        down.stdout.contains("Object Lock is enforced"),
        "{}",
        down.stdout
    );

    // A second repository that cannot be opened is named; the first is still checked.
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml = toml.replace(
        "[smtp]",
        &format!(
            "[repositories.usb]\nurl = \"{}\"\npassword_file = \"{}\"\n\n[smtp]",
            env.path("no-repository-here").display(),
            env.pass_file.display()
        ),
    );
    std::fs::write(&config, toml).unwrap();
    let broken = doctor(&[]).expect(4);
    assert!(
        broken.stdout.contains("usb (")
            && broken.stdout.contains("PROBLEM cannot open the repository")
            && broken.stdout.contains("Object Lock is enforced"),
        "{}",
        broken.stdout
    );
}

/// A bucket whose Object Lock has a default retention rule retains every object and refuses
/// writes without a checksum: a repository there must be created with --object-lock (vouch
/// says so), and then backups, lock files included, work.
#[test]
fn a_bucket_with_default_retention_needs_object_lock_and_then_works() {
    let r = S3Repo::new("lock-default", "nas1", true);
    s3().set_default_retention(&r.bucket, "GOVERNANCE", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plain = r.run(&["init"]).expect(1);
    assert!(
        plain
            .stderr
            .contains("retains every object by default (GOVERNANCE for 1 days)")
            && plain
                .stderr
                .contains("--object-lock DAYS --object-lock-mode MODE"),
        "{}",
        plain.stderr
    );
    assert!(r.keys(&rt, "").is_empty(), "nothing written on a refusal");
    r.run(&[
        "init",
        "--object-lock",
        "3",
        "--object-lock-mode",
        "governance",
    ])
    .expect(0);
    let src = share(&r.env);
    r.run(&["backup", "-q", src.to_str().unwrap()]).expect(0);
    r.run(&["check", "--read-data"]).expect(0);
    assert!(r.keys(&rt, "locks/").is_empty(), "lock files are released");
    let doctor = r.run(&["doctor"]).expect(0);
    assert!(
        doctor
            .stdout
            .contains("default retention GOVERNANCE for 1 days")
            && doctor.stdout.contains("also applies to lock files"),
        "{}",
        doctor.stdout
    );
}

/// An attacker who holds the NAS's credentials but not the passphrase plants an unreadable
/// snapshot, so that every prune stops: retention is still extended, or everything would
/// expire.
#[test]
fn a_planted_unreadable_snapshot_stops_prune_but_not_the_extension_of_retention() {
    let r = S3Repo::new("lock-planted", "nas1", true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    r.run(&[
        "init",
        "--object-lock",
        &DAYS.to_string(),
        "--object-lock-mode",
        "compliance",
    ])
    .expect(0);
    let src = share(&r.env);
    r.run(&["backup", "-q", src.to_str().unwrap()]).expect(0);
    let locked = r
        .store()
        .with_retention(Retention {
            mode: RetentionMode::Compliance,
            days: DAYS,
        })
        .unwrap();
    let pack = r.keys(&rt, "data/")[0].clone();
    rt.block_on(locked.extend_retention(&pack, wall_clock() + jiff::SignedDuration::from_hours(1)))
        .unwrap();
    let junk = format!("snapshots/{}", "ab".repeat(32));
    rt.block_on(
        r.store()
            .put(&junk, bytes::Bytes::from_static(b"not a snapshot")),
    )
    .unwrap();

    let prune = r.run(&["prune"]).expect(1);
    assert!(prune.stderr.contains(&junk), "{}", prune.stderr);

    // Key files are kept (and extended) for as long as the repository: removal says so.
    std::fs::write(r.env.path("bursar.pass"), "another passphrase\n").unwrap();
    let added = r
        .run(&[
            "key",
            "add",
            "--new-password-file",
            r.env.path("bursar.pass").to_str().unwrap(),
        ])
        .expect(0);
    let id = added.stdout.trim().rsplit(' ').next().unwrap().to_string();
    let removed = r.run(&["key", "remove", &id]).expect(1);
    assert!(
        removed.stderr.contains("cannot be removed")
            && removed.stderr.contains("prune extends them"),
        "{}",
        removed.stderr
    );
    assert_eq!(r.keys(&rt, "keys/").len(), 2);
    let ret = rt.block_on(r.store().object_retention(&pack)).unwrap();
    assert!(
        close_to(
            ret.until.unwrap(),
            wall_clock() + jiff::SignedDuration::from_hours(24 * i64::from(DAYS))
        ),
        "{pack} retained until {:?}",
        ret.until
    );
}
