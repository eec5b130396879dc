//! The commands as a network manager uses them: what they print and how they exit.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Env, Run, assert_same_tree, noise, text, write};

fn init(env: &Env) -> String {
    let repo = env.path("repo").display().to_string();
    env.run(&["init", "--repo", &repo]).expect(0);
    repo
}

/// A small share with the awkward cases: odd names, a non-UTF-8 name, an empty file, an
/// empty directory, a symlink, a big file, permissions.
fn share(env: &Env) -> std::path::PathBuf {
    let src = env.path("share");
    write(
        &src.join("Staff/Report (final) Zoë.docx"),
        &noise(70_000, 1),
    );
    write(&src.join("Staff/empty.txt"), b"");
    write(&src.join("Admin/MIS/mis-nightly.sql"), &text(3_000_000, 2));
    write(
        &src.join("Pupils/Year 3/Siobhán/story.txt"),
        &text(5_000, 3),
    );
    write(&src.join("big/photo.jpg"), &noise(9_000_000, 4));
    std::fs::create_dir_all(src.join("Shared/empty folder")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9 latin1 name.txt");
    write(
        &src.join("Shared").join(odd),
        b"bytes of a file with a latin-1 name",
    );
    std::os::unix::fs::symlink("../Staff/empty.txt", src.join("Shared/link to empty")).unwrap();
    std::fs::set_permissions(
        src.join("Staff/empty.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    src
}

#[test]
fn backup_then_restore_gives_back_an_identical_tree() {
    let env = Env::new();
    let repo = init(&env);
    let src = share(&env);
    let out = env
        .run(&[
            "backup",
            "--repo",
            &repo,
            src.to_str().unwrap(),
            "--label",
            "Staff and admin shares",
            "--tag",
            "nightly",
        ])
        .expect(0);
    assert!(out.stdout.contains("snapshot "), "{}", out.stdout);
    assert!(
        out.stdout.contains("(Staff and admin shares)"),
        "{}",
        out.stdout
    );
    let snaps = env.run(&["snapshots", "--repo", &repo]).expect(0);
    assert!(
        snaps.stdout.contains("Staff and admin shares"),
        "{}",
        snaps.stdout
    );
    assert!(snaps.stdout.contains("[nightly]"), "{}", snaps.stdout);

    let target = env.path("restore");
    let r = env
        .run(&[
            "restore",
            "--repo",
            &repo,
            "latest",
            "--target",
            target.to_str().unwrap(),
        ])
        .expect(0);
    assert!(r.stdout.contains("matched its blake3 hash"), "{}", r.stdout);
    assert_same_tree(&src, &target);
}

#[test]
fn snapshots_json_carries_label_paths_and_summary() {
    let env = Env::new();
    let repo = init(&env);
    let src = share(&env);
    env.run(&[
        "backup",
        "--repo",
        &repo,
        src.to_str().unwrap(),
        "--label",
        "Admin",
    ])
    .expect(0);
    let out = env.run(&["snapshots", "--repo", &repo, "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let s = &v[0];
    assert_eq!(s["label"], "Admin");
    assert_eq!(s["paths"][0], src.to_str().unwrap());
    assert_eq!(s["summary"]["total_files"], 6);
    assert_eq!(s["summary"]["symlinks"], 1);
    assert_eq!(s["id"].as_str().unwrap().len(), 64);
}

#[test]
fn restore_of_chosen_paths_and_by_id_prefix() {
    let env = Env::new();
    let repo = init(&env);
    let src = share(&env);
    env.run(&["backup", "--repo", &repo, src.to_str().unwrap()])
        .expect(0);
    let v: serde_json::Value = serde_json::from_str(
        &env.run(&["snapshots", "--repo", &repo, "--json"])
            .expect(0)
            .stdout,
    )
    .unwrap();
    let prefix = &v[0]["id"].as_str().unwrap()[..6];
    let target = env.path("partial");
    let include = format!("{}/Pupils", src.display());
    env.run(&[
        "restore",
        "--repo",
        &repo,
        prefix,
        "--target",
        target.to_str().unwrap(),
        "--include",
        &include,
    ])
    .expect(0);
    let inside = target.join(src.strip_prefix("/").unwrap());
    assert!(inside.join("Pupils/Year 3/Siobhán/story.txt").exists());
    assert!(!inside.join("Staff").exists());

    let missing = env.run(&[
        "restore",
        "--repo",
        &repo,
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        "/no/such/path",
    ]);
    let missing = missing.expect(1);
    assert!(
        missing
            .stderr
            .contains("\"/no/such/path\" is not in the snapshot"),
        "{}",
        missing.stderr
    );
}

#[test]
fn restore_never_overwrites_without_overwrite() {
    let env = Env::new();
    let repo = init(&env);
    let src = share(&env);
    env.run(&["backup", "--repo", &repo, src.to_str().unwrap()])
        .expect(0);
    let target = env.path("restore");
    let t = target.to_str().unwrap();
    env.run(&["restore", "--repo", &repo, "latest", "--target", t])
        .expect(0);
    let victim = target
        .join(src.strip_prefix("/").unwrap())
        .join("Staff/empty.txt");
    std::fs::write(&victim, b"edited after the restore").unwrap();
    let again = env
        .run(&["restore", "--repo", &repo, "latest", "--target", t])
        .expect(1);
    assert!(again.stderr.contains("already exist"), "{}", again.stderr);
    assert!(again.stderr.contains("--overwrite"), "{}", again.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"edited after the restore");
    env.run(&[
        "restore",
        "--repo",
        &repo,
        "latest",
        "--target",
        t,
        "--overwrite",
    ])
    .expect(0);
    assert_eq!(std::fs::read(&victim).unwrap(), b"");
}

#[test]
fn ls_lists_a_snapshot_and_a_path_in_it() {
    let env = Env::new();
    let repo = init(&env);
    let src = share(&env);
    env.run(&["backup", "--repo", &repo, src.to_str().unwrap()])
        .expect(0);
    let all = env.run(&["ls", "--repo", &repo, "latest"]).expect(0);
    assert!(
        all.stdout.contains("/Staff/Report (final) Zoë.docx"),
        "{}",
        all.stdout
    );
    let admin = format!("{}/Admin", src.display());
    let part = env
        .run(&["ls", "--repo", &repo, "latest", &admin, "--long"])
        .expect(0);
    assert!(part.stdout.contains("mis-nightly.sql"), "{}", part.stdout);
    assert!(part.stdout.contains("3000000"), "{}", part.stdout);
    assert!(!part.stdout.contains("Staff"), "{}", part.stdout);
}

/// `ls --json`: a line for the snapshot, then a line per entry, each one JSON object that a
/// script can read as it comes.
#[test]
fn ls_json_gives_a_line_for_the_snapshot_and_each_entry() {
    let env = Env::new();
    let repo = init(&env);
    let src = share(&env);
    env.run(&["backup", "--repo", &repo, src.to_str().unwrap()])
        .expect(0);
    let out = env
        .run(&["ls", "--repo", &repo, "latest", "--json"])
        .expect(0);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        lines[0]["paths"][0],
        src.display().to_string(),
        "{}",
        out.stdout
    );
    assert_eq!(lines[0]["snapshot"].as_str().unwrap().len(), 64);
    let entry = |suffix: &str| {
        lines[1..]
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} in {}", out.stdout))
    };
    let report = entry("/Staff/Report (final) Zoë.docx");
    assert_eq!(report["type"], "file");
    assert_eq!(report["size"], 70_000);
    assert!(
        report["mtime"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert_eq!(entry("/Shared/empty folder")["type"], "dir");
    assert_eq!(entry("/Admin/MIS/mis-nightly.sql")["size"], 3_000_000);
    let link = lines[1..]
        .iter()
        .find(|e| e["type"] == "symlink")
        .expect("the share's symlink");
    assert!(link["target"].is_string(), "{link}");
}

#[test]
fn a_wrong_passphrase_is_a_clear_error_with_exit_1() {
    let env = Env::new();
    let repo = init(&env);
    let out = Run::of(
        env.vouch()
            .env("VOUCH_PASSWORD_FILE", "/dev/null")
            .env("VOUCH_PASSWORD", "not the passphrase")
            .env_remove("VOUCH_PASSWORD_FILE")
            .args(["snapshots", "--repo", &repo])
            .output()
            .unwrap(),
    )
    .expect(12);
    assert!(
        out.stderr
            .contains("the passphrase does not open the repository"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("not the passphrase"),
        "the passphrase was printed: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn a_missing_repository_says_how_to_create_one() {
    let env = Env::new();
    let repo = env.path("nothing-here").display().to_string();
    let out = env.run(&["snapshots", "--repo", &repo]).expect(10);
    assert!(
        out.stderr.contains("there is no vouch repository at"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("vouch init"), "{}", out.stderr);
}

#[test]
fn a_missing_passphrase_without_a_terminal_names_the_options() {
    let env = Env::new();
    let repo = init(&env);
    let out = Run::of(
        env.vouch()
            .env_remove("VOUCH_PASSWORD_FILE")
            .args(["snapshots", "--repo", &repo])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(out.stderr.contains("--password-file"), "{}", out.stderr);
}

#[test]
fn init_twice_changes_nothing() {
    let env = Env::new();
    let repo = init(&env);
    let out = env.run(&["init", "--repo", &repo]).expect(1);
    assert!(
        out.stderr.contains("already holds a vouch repository"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_source_path_fails_the_backup() {
    let env = Env::new();
    let repo = init(&env);
    let out = env
        .run(&["backup", "--repo", &repo, "/no/such/share"])
        .expect(1);
    assert!(
        out.stderr.contains("/no/such/share does not exist"),
        "{}",
        out.stderr
    );
}

/// Root reads any file, so the backup runs as `nobody` when the tests run as root.
#[test]
fn an_unreadable_file_is_named_and_the_backup_finishes_with_exit_3() {
    let env = Env::new();
    let repo = init(&env);
    let src = env.path("share");
    write(&src.join("readable.txt"), b"fine");
    write(&src.join("secret.txt"), b"locked away");
    std::fs::set_permissions(
        src.join("secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let mut cmd = env.vouch();
    if is_root() {
        // Everything but the locked file must be usable by `nobody`.
        for p in [env.dir.path(), &src, &env.path("repo")] {
            chmod_recursive(p);
        }
        std::fs::set_permissions(
            src.join("secret.txt"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_vouch"),
        ])
        .env("VOUCH_PASSWORD_FILE", &env.pass_file)
        .env("VOUCH_LOG", "error");
    }
    let out = Run::of(
        cmd.args(["backup", "--repo", &repo, src.to_str().unwrap()])
            .output()
            .unwrap(),
    )
    .expect(3);
    assert!(out.stderr.contains("secret.txt"), "{}", out.stderr);
    assert!(out.stderr.contains("ermission denied"), "{}", out.stderr);
    let snaps = env.run(&["snapshots", "--repo", &repo]).expect(0);
    assert!(snaps.stdout.contains("[partial]"), "{}", snaps.stdout);
    let ls = env.run(&["ls", "--repo", &repo, "latest"]).expect(0);
    assert!(
        ls.stdout.contains("readable.txt") && !ls.stdout.contains("secret.txt"),
        "{}",
        ls.stdout
    );
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn chmod_recursive(p: &std::path::Path) {
    let m = std::fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
        for e in std::fs::read_dir(p).unwrap() {
            chmod_recursive(&e.unwrap().path());
        }
    } else if m.is_file() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

#[test]
fn several_passphrases_open_one_repository() {
    let env = Env::new();
    let repo = init(&env);
    let second = env.path("second-pass");
    std::fs::write(&second, "another passphrase for the bursar\n").unwrap();
    let out = env
        .run(&[
            "key",
            "add",
            "--repo",
            &repo,
            "--new-password-file",
            second.to_str().unwrap(),
        ])
        .expect(0);
    let new_id = out.stdout.trim().rsplit(' ').next().unwrap().to_string();
    let list = env.run(&["key", "list", "--repo", &repo]).expect(0);
    assert_eq!(list.stdout.lines().count(), 2, "{}", list.stdout);
    let with_second = |args: &[&str]| {
        Run::of(
            env.vouch()
                .env("VOUCH_PASSWORD_FILE", &second)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    with_second(&["snapshots", "--repo", &repo]).expect(0);
    // The key in use cannot remove itself; the other passphrase can.
    let own = with_second(&["key", "remove", "--repo", &repo, &new_id]).expect(1);
    assert!(
        own.stderr.contains("this passphrase opened"),
        "{}",
        own.stderr
    );
    env.run(&["key", "remove", "--repo", &repo, &new_id])
        .expect(0);
    let gone = with_second(&["snapshots", "--repo", &repo]).expect(12);
    assert!(
        gone.stderr.contains("passphrase does not open"),
        "{}",
        gone.stderr
    );
}

#[test]
fn excludes_leave_out_matching_names_and_paths() {
    let env = Env::new();
    let repo = init(&env);
    let src = env.path("share");
    write(&src.join("Staff/Thumbs.db"), b"x");
    write(&src.join("Staff/~$Report.docx"), b"x");
    write(&src.join("Staff/Report.docx"), b"kept");
    write(&src.join("tmp/scratch.bin"), b"x");
    let tmp = format!("{}/tmp", src.display());
    env.run(&[
        "backup",
        "--repo",
        &repo,
        src.to_str().unwrap(),
        "--exclude",
        "Thumbs.db",
        "--exclude",
        "~$*",
        "--exclude",
        &tmp,
    ])
    .expect(0);
    let ls = env.run(&["ls", "--repo", &repo, "latest"]).expect(0);
    assert!(ls.stdout.contains("Report.docx"));
    assert!(
        !ls.stdout.contains("Thumbs.db")
            && !ls.stdout.contains("~$")
            && !ls.stdout.contains("scratch"),
        "{}",
        ls.stdout
    );
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.run(&["backup"]).expect(2);
    env.run(&["frobnicate"]).expect(2);
}

#[test]
fn a_file_that_changes_while_it_is_read_is_reported() {
    let env = Env::new();
    let repo = init(&env);
    let src = env.path("share");
    write(&src.join("steady.txt"), b"unchanging");
    let growing = src.join("Admin/MIS/live-export.sql");
    write(&growing, &text(40 << 20, 9));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&growing)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"INSERT INTO attendance VALUES (1,'present');\n")
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = env.run(&["backup", "--repo", &repo, src.to_str().unwrap(), "--json"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let out = out.expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let changed = v["summary"]["changed_during_read"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{}", out.stdout);
    assert!(
        changed[0]
            .as_str()
            .unwrap()
            .ends_with("Admin/MIS/live-export.sql")
    );
    let human = env
        .run(&["backup", "--repo", &repo, src.to_str().unwrap(), "--force"])
        .expect(0);
    assert!(
        !human.stdout.contains("changed while being read"),
        "{}",
        human.stdout
    );
}

/// The manual pages a package installs: one for vouch and one for each command, each a page
/// `man` renders with the command's options.
#[test]
fn man_writes_a_page_for_vouch_and_every_command_that_man_renders() {
    let env = Env::new();
    let dir = env.path("man1");
    let out = env.run(&["man", "--out", dir.to_str().unwrap()]).expect(0);
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert!(
        out.stdout.contains(&format!(
            "{} manual page(s) in {}",
            pages.len(),
            dir.display()
        )),
        "{}",
        out.stdout
    );
    for page in [
        "vouch.1",
        "vouch-backup.1",
        "vouch-restore.1",
        "vouch-journal-verify.1",
        "vouch-evidence-verify.1",
        "vouch-completions.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} in {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.contains("__")),
        "no page for internal entry points: {pages:?}"
    );
    let render = |page: &str| {
        let out = std::process::Command::new("man")
            .args(["-l", "-E", "UTF-8"])
            .arg(dir.join(page))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(out.status.success(), "man -l {page}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = render("vouch.1");
    assert!(
        top.contains("Backups for school file servers that prove they restore"),
        "{top}"
    );
    assert!(
        top.contains("12 wrong passphrase"),
        "the exit codes are in the page: {top}"
    );
    let backup = render("vouch-backup.1");
    assert!(backup.contains("vouch-backup"), "{backup}");
    assert!(
        backup.contains("--exclude"),
        "the options are in the page: {backup}"
    );
    assert!(backup.contains(env!("CARGO_PKG_VERSION")), "{backup}");
}

/// `vouch completions SHELL` prints a script that the shell itself accepts, naming the commands.
#[test]
fn completions_are_scripts_each_shell_accepts() {
    let env = Env::new();
    for (shell, check) in [
        ("bash", ["bash", "-n"]),
        ("zsh", ["zsh", "-n"]),
        ("fish", ["fish", "--no-execute"]),
    ] {
        let out = env.run(&["completions", shell]).expect(0);
        for word in ["backup", "restore", "drill", "evidence"] {
            assert!(out.stdout.contains(word), "{shell}: {word}");
        }
        let file = env.path(&format!("vouch.{shell}"));
        std::fs::write(&file, &out.stdout).unwrap();
        let syntax = std::process::Command::new(check[0])
            .arg(check[1])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "{shell} rejects its completion script: {}",
            String::from_utf8_lossy(&syntax.stderr)
        );
    }
    env.run(&["completions", "powershell"]).expect(2);
}
