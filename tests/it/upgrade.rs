//! What a school that upgrades vouch keeps: a state database written by the first release is
//! opened, migrated to the current schema and verified, and carries on where it was.

use std::path::Path;

use crate::support::{Env, Run};

#[test]
fn a_journal_from_the_first_release_is_migrated_and_nothing_is_lost() {
    let env = Env::new();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/journal-v0");
    let state = env.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(sample.join("journal.sqlite"), state.join("journal.sqlite")).unwrap();
    let repo = env.path("repo");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(sample.join("repo"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(copied.success());
    // The rows' copies are filed under the host that wrote them; this machine is that host.
    let hosts = crate::support::files_in(&repo.join("journal"));
    assert_eq!(hosts.len(), 1);
    let here = repo.join("journal").join(vouch::service::hostname());
    if hosts[0] != here {
        std::fs::rename(&hosts[0], &here).unwrap();
    }
    let etc = env.path("etc");
    std::fs::create_dir_all(etc.join("schedules")).unwrap();
    std::fs::write(etc.join("offsite.pass"), "journal sample passphrase\n").unwrap();
    let share = env.path("share");
    crate::support::write(&share.join("Staff/notes.txt"), b"lesson");
    std::fs::write(
        etc.join("vouch.toml"),
        format!(
            "school = \"Preston Primary Academy\"\nstate_dir = \"{}\"\n[repositories.offsite]\nurl = \"{}\"\npassword_file = \"offsite.pass\"\n[alerts]\nto = [\"network.manager@school.example\"]\n",
            state.display(),
            repo.display()
        ),
    )
    .unwrap();
    std::fs::write(
        etc.join("schedules/staff-nightly.toml"),
        format!(
            "repository = \"offsite\"\nlabel = \"Staff share\"\npaths = [\"{}\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\n",
            share.display()
        ),
    )
    .unwrap();
    let vouch = |args: &[&str]| {
        Run::of(
            env.vouch()
                .env("VOUCH_CONFIG", etc.join("vouch.toml"))
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let db = state.join("journal.sqlite");
    assert_eq!(
        sqlite(&db, "PRAGMA user_version"),
        "0",
        "the sample is a first-release journal"
    );

    // The six rows, their chain, the annotation.
    let list = vouch(&["journal", "list"]).expect(0);
    assert_eq!(list.stdout.lines().count(), 6, "{}", list.stdout);
    assert!(
        list.stdout.contains("note on #2 by J. Smith"),
        "{}",
        list.stdout
    );
    let verify = vouch(&["journal", "verify"]).expect(0);
    assert!(
        verify.stdout.contains("6 row(s)")
            && verify.stdout.contains("6 of 6 row(s) mirrored")
            && verify.stdout.contains("the journal verifies"),
        "{}",
        verify.stdout
    );
    assert_eq!(
        sqlite(&db, "PRAGMA user_version"),
        vouch::records::JOURNAL_VERSION.to_string(),
        "migrated on first open"
    );
    // The open incident and the email still waiting.
    let status = vouch(&["status"]).expect(4);
    assert!(
        status.stdout.contains("OPEN since")
            && status.stdout.contains("backup staff-nightly failed"),
        "{}",
        status.stdout
    );
    let outbox = vouch(&["outbox"]).expect(0);
    assert!(
        outbox.stdout.contains("backup staff-nightly failed")
            && outbox.stdout.contains("Connection refused"),
        "{}",
        outbox.stdout
    );
    // And it carries on: the next good backup is row 7, chained to row 6, and resolves it.
    vouch(&["run", "staff-nightly"]).expect(0);
    let verify = vouch(&["journal", "verify"]).expect(0);
    assert!(
        verify.stdout.contains("7 of 7 row(s) mirrored")
            && verify.stdout.contains("the journal verifies"),
        "{}",
        verify.stdout
    );
    let status = vouch(&["status"]).expect(0);
    assert!(
        status.stdout.contains("no open incidents"),
        "{}",
        status.stdout
    );
}

fn sqlite(db: &Path, query: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository written by the first release, whose trees recorded no extended attributes,
/// names, links or holes: its snapshots restore and drill as before, and the next backup
/// into it records everything.
#[test]
fn a_first_release_repository_restores_drills_and_takes_new_backups() {
    let env = Env::new();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/journal-v0/repo");
    let repo = env.path("repo");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&sample)
        .arg(&repo)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::write(&env.pass_file, "journal sample passphrase\n").unwrap();
    let r = repo.to_str().unwrap();
    let target = env.path("restore");
    let out = env
        .run(&[
            "restore",
            "latest",
            "--repo",
            r,
            "--target",
            target.to_str().unwrap(),
        ])
        .expect(0);
    assert!(
        out.stdout.contains("every restored file matched"),
        "{}",
        out.stdout
    );
    assert!(!crate::support::files_in(&target).is_empty());
    let plan = env.path("first-release.toml");
    std::fs::write(
        &plan,
        format!("name = \"first-release\"\nrepository = \"{r}\"\n[select]\npercent = 100\n"),
    )
    .unwrap();
    let scratch = env.path("scratch");
    let drill = env
        .run(&[
            "drill",
            plan.to_str().unwrap(),
            "--scratch",
            scratch.to_str().unwrap(),
        ])
        .expect(0);
    assert!(drill.stdout.contains("PASSED"), "{}", drill.stdout);
    // A new backup into it records the metadata the first release did not.
    let share = env.path("share");
    crate::support::write(&share.join("HR/review.docx"), b"confidential");
    rustix::fs::lsetxattr(
        share.join("HR/review.docx"),
        "user.DOSATTRIB",
        b"0x20",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    env.run(&["backup", "--repo", r, share.to_str().unwrap()])
        .expect(0);
    let file = format!("{}/HR/review.docx", share.display());
    let ls = env
        .run(&["ls", "latest", &file, "--repo", r, "--json"])
        .expect(0);
    assert!(ls.stdout.contains("user.DOSATTRIB"), "{}", ls.stdout);
    let target = env.path("restore-new");
    env.run(&[
        "restore",
        "latest",
        "--repo",
        r,
        "--target",
        target.to_str().unwrap(),
    ])
    .expect(0);
    crate::support::assert_same_metadata(&share, &target);
}
