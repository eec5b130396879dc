//! The defects found when vouch was tried as an attacker and an unlucky network manager would:
//! one test each, named after what broke, against the real binary, real files and real servers
//! (a fault-injecting wrapper around the real store where nothing real produces the case).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vouch::Fault;
use vouch::{InitOptions, Repository, Secret};

use crate::support::{
    Env, PASSWORD, Run, assert_same_tree, noise, packs, text, with_faults, write,
};

/// A repository with one backup of a small share.
struct Shelf {
    env: Env,
    repo: PathBuf,
    share: PathBuf,
}

impl Shelf {
    fn new() -> Shelf {
        let env = Env::new();
        let repo = env.path("repo");
        env.run(&["init", "--repo", repo.to_str().unwrap()])
            .expect(0);
        let share = env.path("share");
        write(&share.join("Staff/plan.docx"), &noise(300_000, 1));
        write(&share.join("Staff/Reports/y6.txt"), &text(80_000, 2));
        write(&share.join("Admin/mis.sql"), &text(400_000, 3));
        let s = Shelf { env, repo, share };
        s.run(&["backup", s.share.to_str().unwrap()]).expect(0);
        s
    }

    fn r(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    /// `vouch ARGS --repo REPO`.
    fn run(&self, args: &[&str]) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--repo", self.r()]);
        self.env.run(&all)
    }

    /// Start `vouch ARGS --repo REPO` paused at `phase` (`VAR=phase`), and wait until it
    /// says so. It carries on once `resume()` is called.
    fn paused(&self, var: &str, phase: &str, args: &[&str]) -> Paused {
        let resume = self.env.path(&format!("resume-{phase}"));
        let mut child = self
            .env
            .vouch()
            .args(args)
            .args(["--repo", self.r()])
            .env(var, phase)
            .env("VOUCH_TEST_RESUME", &resume)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let what = var
            .trim_start_matches("VOUCH_TEST_")
            .trim_end_matches("_PAUSE")
            .to_lowercase();
        let wanted = format!("{what}: paused before {phase}");
        let reached = lines.by_ref().map_while(Result::ok).any(|l| l == wanted);
        assert!(reached, "vouch {args:?} never reached {phase}");
        Paused {
            child,
            resume,
            stderr: lines,
        }
    }
}

struct Paused {
    child: Child,
    resume: PathBuf,
    stderr: std::io::Lines<BufReader<std::process::ChildStderr>>,
}

impl Paused {
    fn resume(mut self) -> Run {
        std::fs::write(&self.resume, b"go").unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let stderr: Vec<String> = self.stderr.map_while(Result::ok).collect();
        let status = self.child.wait().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: stderr.join("\n"),
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A prune can delete a running backup's data.

#[test]
fn a_prune_while_a_backup_stores_its_snapshot_is_refused_and_the_snapshot_restores() {
    let s = Shelf::new();
    write(&s.share.join("Staff/new term.docx"), &noise(2_000_000, 7));
    std::fs::remove_file(s.share.join("Admin/mis.sql")).unwrap();
    // The backup has stored its packs and index; its snapshot is next. Until it exists,
    // nothing but the backup's lock says that those packs are in use.
    let backup = s.paused(
        "VOUCH_TEST_BACKUP_PAUSE",
        "snapshot",
        &["backup", s.share.to_str().unwrap()],
    );
    let prune = s.run(&["prune"]).expect(11);
    assert!(
        prune.stderr.contains("is locked by backup"),
        "prune must wait for the backup: {}",
        prune.stderr
    );
    let done = backup.resume().expect(0);
    assert!(done.stdout.contains("snapshot "), "{}", done.stdout);
    // Now prune may run, and the new snapshot keeps everything it needs.
    s.run(&["prune"]).expect(0);
    s.run(&["check", "--read-data"]).expect(0);
    let target = s.env.path("restored");
    s.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&s.share, &target);
}

#[test]
fn packs_that_no_index_lists_yet_are_kept_by_prune_while_young_and_removed_once_old() {
    let s = Shelf::new();
    let before = packs(&s.repo);
    write(&s.share.join("Staff/video.mp4"), &noise(6_000_000, 8));
    // Killed with its packs uploaded and no index yet: as a backup that is still running
    // looks to a prune whose view of the locks says otherwise.
    s.paused(
        "VOUCH_TEST_BACKUP_PAUSE",
        "index",
        &["backup", s.share.to_str().unwrap()],
    )
    .kill();
    let leftovers: Vec<PathBuf> = packs(&s.repo)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!leftovers.is_empty(), "the killed backup stored packs");
    let young = json(&s.run(&["prune", "--json"]).expect(0));
    assert_eq!(young["packs_recent"], leftovers.len(), "{young:#}");
    assert_eq!(young["packs_removed"], 0, "{young:#}");
    assert!(leftovers.iter().all(|p| p.exists()), "young packs stay");
    // An hour later nothing can still be writing them.
    for p in &leftovers {
        age(p, "2 hours ago");
    }
    let old = json(&s.run(&["prune", "--json"]).expect(0));
    assert_eq!(old["packs_removed"], leftovers.len(), "{old:#}");
    assert!(leftovers.iter().all(|p| !p.exists()));
    s.run(&["check", "--read-data"]).expect(0);
}

/// Set a file's modification time, as `touch -d` does.
fn age(path: &Path, when: &str) {
    let ok = Command::new("touch")
        .args(["-d", when])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

// ---------------------------------------------------------------------------------------------
// 2. Restore writes through symlinks that already exist in the target.

/// The share's path inside a restore target.
fn inside(target: &Path, share: &Path) -> PathBuf {
    target.join(share.strip_prefix("/").unwrap())
}

/// A directory outside the target that restore must never touch: its listing and mode.
struct Outside {
    dir: PathBuf,
}

impl Outside {
    fn new(env: &Env) -> Outside {
        let dir = env.path("outside");
        write(&dir.join("secret.txt"), b"the bursar's secret");
        std::fs::set_permissions(dir.join("secret.txt"), PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o750)).unwrap();
        Outside { dir }
    }

    #[track_caller]
    fn untouched(&self) {
        let names: Vec<_> = crate::support::files_in(&self.dir);
        assert_eq!(
            names,
            vec![self.dir.join("secret.txt")],
            "restore wrote outside"
        );
        assert_eq!(
            std::fs::read(self.dir.join("secret.txt")).unwrap(),
            b"the bursar's secret"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&self.dir), 0o750, "restore changed a mode outside");
        assert_eq!(mode(&self.dir.join("secret.txt")), 0o600);
    }
}

#[test]
fn restore_never_writes_through_a_directory_symlink_in_the_target() {
    let s = Shelf::new();
    let outside = Outside::new(&s.env);
    let target = s.env.path("restore");
    let staff = inside(&target, &s.share).join("Staff");
    std::fs::create_dir_all(staff.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside.dir, &staff).unwrap();
    let t = target.to_str().unwrap();
    let refused = s.run(&["restore", "latest", "--target", t]).expect(1);
    assert!(
        refused.stderr.contains("already exist") && refused.stderr.contains("Staff"),
        "{}",
        refused.stderr
    );
    outside.untouched();
    // With --overwrite the symlink is replaced by the directory, never followed.
    s.run(&["restore", "latest", "--target", t, "--overwrite"])
        .expect(0);
    outside.untouched();
    assert!(std::fs::symlink_metadata(&staff).unwrap().is_dir());
    assert_same_tree(&s.share, &target);
}

#[test]
fn restore_with_overwrite_replaces_a_file_symlink_or_hard_link_and_leaves_its_target_alone() {
    let s = Shelf::new();
    let outside = Outside::new(&s.env);
    let target = s.env.path("restore");
    let t = target.to_str().unwrap();
    s.run(&["restore", "latest", "--target", t]).expect(0);
    let mine = inside(&target, &s.share);
    // A symlink where a file was, and a hard link to a file outside where another was.
    std::fs::remove_file(mine.join("Staff/plan.docx")).unwrap();
    std::os::unix::fs::symlink(outside.dir.join("secret.txt"), mine.join("Staff/plan.docx"))
        .unwrap();
    std::fs::remove_file(mine.join("Admin/mis.sql")).unwrap();
    std::fs::hard_link(outside.dir.join("secret.txt"), mine.join("Admin/mis.sql")).unwrap();
    s.run(&["restore", "latest", "--target", t, "--overwrite"])
        .expect(0);
    outside.untouched();
    assert_same_tree(&s.share, &target);
}

#[test]
fn a_symlink_at_the_top_of_the_restored_path_leaves_the_directory_it_points_to_alone() {
    let s = Shelf::new();
    let outside = Outside::new(&s.env);
    let target = s.env.path("restore");
    // The first component of the share's path (`tmp`, mode 1777 on the NAS) is a symlink in
    // the target.
    let top = s.share.components().nth(1).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside.dir, target.join(top)).unwrap();
    let t = target.to_str().unwrap();
    s.run(&["restore", "latest", "--target", t]).expect(1);
    outside.untouched();
    s.run(&["restore", "latest", "--target", t, "--overwrite"])
        .expect(0);
    outside.untouched();
    assert_same_tree(&s.share, &target);
}

#[test]
fn a_symlink_on_the_way_to_an_included_folder_is_never_replaced_even_with_overwrite() {
    let s = Shelf::new();
    let outside = Outside::new(&s.env);
    // An in-place restore of one folder, where a folder above it is the administrator's
    // symlink (a NAS's /var/services/homes, say).
    let target = s.env.path("restore");
    let top = s.share.components().nth(1).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside.dir, target.join(top)).unwrap();
    let include = s.share.join("Staff");
    let t = target.to_str().unwrap();
    for overwrite in [false, true] {
        let mut args = vec![
            "restore",
            "latest",
            "--target",
            t,
            "--include",
            include.to_str().unwrap(),
        ];
        if overwrite {
            args.push("--overwrite");
        }
        let out = s.run(&args).expect(1);
        assert!(
            out.stderr.contains("never follows or replaces it"),
            "{}",
            out.stderr
        );
        outside.untouched();
        assert!(
            std::fs::symlink_metadata(target.join(top))
                .unwrap()
                .file_type()
                .is_symlink(),
            "the symlink is left as it was"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. One damaged key file locks out every passphrase.

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn one_damaged_key_file_does_not_lock_out_the_other_passphrases() {
    let s = Shelf::new();
    let bursar = s.env.path("bursar.pass");
    std::fs::write(&bursar, "the bursar's own passphrase\n").unwrap();
    s.run(&[
        "key",
        "add",
        "--new-password-file",
        bursar.to_str().unwrap(),
    ])
    .expect(0);
    // The first key (the network manager's, written by init) is damaged.
    let mut keys = crate::support::files_in(&s.repo.join("keys"));
    assert_eq!(keys.len(), 2);
    keys.sort_by_key(|k| std::fs::metadata(k).unwrap().modified().unwrap());
    let damaged = keys[0].clone();
    flip_byte(&damaged, 40);
    let name = format!("keys/{}", damaged.file_name().unwrap().to_str().unwrap());

    // The bursar's passphrase still opens the repository.
    let ok = Run::of(
        s.env
            .vouch()
            .env("VOUCH_PASSWORD_FILE", &bursar)
            .args(["snapshots", "--repo", s.r()])
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(
        ok.stdout.contains(s.share.to_str().unwrap()),
        "{}",
        ok.stdout
    );
    // The damaged key's passphrase fails, and says a key was damaged.
    let wrong = s.run(&["snapshots"]).expect(12);
    assert!(
        wrong.stderr.contains("does not open") && wrong.stderr.contains("1 damaged key file"),
        "{}",
        wrong.stderr
    );
    // check names it.
    let check = Run::of(
        s.env
            .vouch()
            .env("VOUCH_PASSWORD_FILE", &bursar)
            .args(["check", "--repo", s.r()])
            .output()
            .unwrap(),
    )
    .expect(4);
    assert!(
        check.stdout.contains(&name) && check.stdout.contains("key file cannot be read"),
        "{}",
        check.stdout
    );
}

#[test]
fn a_key_left_by_an_interrupted_init_does_not_break_the_repository() {
    let s = Shelf::new();
    // Another init with the same passphrase (as a re-run after a failed first try would
    // leave): its key opens with this passphrase but holds another master key.
    let other = s.env.path("other");
    s.env
        .run(&["init", "--repo", other.to_str().unwrap()])
        .expect(0);
    for k in crate::support::files_in(&other.join("keys")) {
        std::fs::copy(&k, s.repo.join("keys").join(k.file_name().unwrap())).unwrap();
    }
    s.run(&["snapshots"]).expect(0);
    s.run(&["check"]).expect(0);
}

// ---------------------------------------------------------------------------------------------
// 5. `init` on S3 with one lost reply leaves an unusable repository.

#[test]
fn init_whose_replies_are_lost_makes_a_repository_that_opens_and_says_so_honestly_when_rerun() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = crate::support::S3Repo::new("lost-replies", "nas1", false);
    let (store, fault) = with_faults(repo.store());
    // The key file and the config are both stored, and both replies lost.
    fault.inject(Fault::LoseReplies(2));
    rt.block_on(Repository::init(
        store,
        &Secret::new(PASSWORD),
        &InitOptions::default(),
    ))
    .unwrap();
    assert_eq!(repo.keys(&rt, "keys/").len(), 1, "one key, not two");
    repo.run(&["check"]).expect(0);
    let again = repo.run(&["init"]).expect(1);
    assert!(
        again.stderr.contains("already holds a vouch repository"),
        "{}",
        again.stderr
    );
    // A backup whose writes lose their replies finishes and restores.
    let (store, fault) = with_faults(repo.store());
    let r = Arc::new(
        rt.block_on(Repository::open(store, &Secret::new(PASSWORD)))
            .unwrap(),
    );
    let share = repo.env.path("share");
    write(&share.join("a.txt"), &text(50_000, 4));
    fault.inject(Fault::LoseReplies(3));
    rt.block_on(vouch::backup(
        r,
        vouch::BackupOptions {
            paths: vec![share.clone()],
            ..Default::default()
        },
        Default::default(),
    ))
    .unwrap();
    let target = repo.env.path("restored");
    repo.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&share, &target);
}

// ---------------------------------------------------------------------------------------------
// 4. A mail server that accepts and never answers stops the daemon from backing up.

/// A mail server that accepts every connection and never says a word.
fn silent_mail_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    port
}

/// vouch.toml, a repository and one schedule whose share is missing (so each run fails and
/// alerts), mail to `smtp_port`.
struct Site {
    env: Env,
    dir: PathBuf,
}

impl Site {
    fn new(smtp_port: u16, cron: &str) -> Site {
        let env = Env::new();
        let dir = env.path("etc");
        std::fs::create_dir_all(dir.join("schedules")).unwrap();
        std::fs::copy(&env.pass_file, dir.join("offsite.pass")).unwrap();
        let repo = env.path("repo");
        std::fs::write(
            dir.join("vouch.toml"),
            format!(
                "school = \"Preston Primary Academy\"\nstate_dir = \"{}\"\n[repositories.offsite]\nurl = \"{}\"\npassword_file = \"offsite.pass\"\n[smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\nfrom = \"vouch <vouch@school.example>\"\n[alerts]\nto = [\"network.manager@school.example\"]\n",
                env.path("state").display(),
                repo.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("schedules/staff.toml"),
            format!(
                "repository = \"offsite\"\npaths = [\"{}\"]\ncron = \"{cron}\"\nrpo = \"26h\"\n",
                env.path("share-not-mounted").display()
            ),
        )
        .unwrap();
        env.run(&["init", "--repo", repo.to_str().unwrap()])
            .expect(0);
        Site { env, dir }
    }

    fn vouch(&self) -> Command {
        let mut c = self.env.vouch();
        c.env("VOUCH_CONFIG", self.dir.join("vouch.toml"));
        c
    }

    /// Run with a time limit; a run still going then is killed and the test fails.
    #[track_caller]
    fn run_within(&self, args: &[&str], limit: Duration) -> Run {
        let mut child = self
            .vouch()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                child.kill().unwrap();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "vouch {args:?} was still running after {limit:?} (hung on the mail server)\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Run::of(child.wait_with_output().unwrap())
    }
}

#[test]
fn a_mail_server_that_never_answers_does_not_hang_run_outbox_or_doctor() {
    let port = silent_mail_server();
    let site = Site::new(port, "0 1 * * *");
    // The mail deadline is 30 s; a hang is several times that.
    let limit = Duration::from_secs(100);
    let run = site.run_within(&["run", "staff"], limit).expect(1);
    assert!(run.stdout.contains("backup staff failed"), "{}", run.stdout);
    assert!(run.stdout.contains("1 waiting"), "{}", run.stdout);
    let flush = site.run_within(&["outbox", "--flush"], limit).expect(0);
    assert!(flush.stdout.contains("0 sent"), "{}", flush.stdout);
    let outbox = site.run_within(&["outbox"], limit).expect(0);
    assert!(
        outbox.stdout.contains("no answer within 30 s"),
        "the outbox says why: {}",
        outbox.stdout
    );
    // Queued thirteen hours ago and still not out: status says mail is not going out.
    let then =
        (vouch::Clock::now(&vouch::SystemClock) - jiff::SignedDuration::from_hours(13)).to_string();
    sqlite(
        &site.env.path("state/journal.sqlite"),
        &format!("UPDATE outbox SET created = '{then}'"),
    );
    let status = site.run_within(&["status"], limit).expect(4);
    assert!(
        status
            .stdout
            .contains("MAIL NOT GOING OUT: 1 email(s) waiting since"),
        "{}",
        status.stdout
    );
    let doctor = site.run_within(&["doctor", "--test-email"], limit);
    assert_eq!(doctor.code, 4, "{}\n{}", doctor.stdout, doctor.stderr);
    assert!(
        doctor.stdout.contains("no answer within 30 s"),
        "{}",
        doctor.stdout
    );
}

#[test]
fn the_daemon_backs_up_on_time_while_the_mail_server_never_answers() {
    let port = silent_mail_server();
    let site = Site::new(port, "* * * * *");
    let mut daemon = site
        .vouch()
        .arg("daemon")
        .env("VOUCH_DAEMON_TICK_MS", "500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Three per-minute slots: each must run, although every run queues an email that
    // cannot go out (one alert, then the same incident).
    let journal = site.env.path("state/journal.sqlite");
    let deadline = Instant::now() + Duration::from_secs(260);
    let mut starts: Vec<String> = Vec::new();
    while Instant::now() < deadline && starts.len() < 3 {
        std::thread::sleep(Duration::from_secs(2));
        starts = sqlite(
            &journal,
            "SELECT json_extract(record, '$.started') FROM journal WHERE json_extract(record, '$.kind') = 'backup' ORDER BY seq",
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let stopped = Instant::now();
    while daemon.try_wait().unwrap().is_none() && stopped.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        starts.len() >= 3,
        "the daemon ran {} backup(s) in three per-minute slots: {starts:?}",
        starts.len()
    );
    // Each started within its minute: none waited for the mail server.
    let times: Vec<jiff::Timestamp> = starts
        .iter()
        .map(|t| t.parse::<jiff::Timestamp>().unwrap())
        .collect();
    for w in times.windows(2) {
        let gap = w[1].duration_since(w[0]);
        assert!(
            gap < jiff::SignedDuration::from_secs(90),
            "backups {gap} apart on a per-minute schedule: {starts:?}"
        );
    }
    let pending = sqlite(&journal, "SELECT count(*) FROM outbox WHERE sent IS NULL");
    assert_eq!(pending, ["1"], "the alert waits in the outbox");
}

/// Rows of a query on an SQLite file, one string per row (first column).
fn sqlite(db: &Path, query: &str) -> Vec<String> {
    if !db.exists() {
        return Vec::new();
    }
    let out = Command::new("sqlite3").arg(db).arg(query).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn mail_stuck_for_hours_fails_the_heartbeat_and_shows_in_status() {
    use vouch::service::Service;
    let port = silent_mail_server();
    let site = Site::new(port, "0 1 * * *");
    // A heartbeat receiver on loopback that records the paths it is asked for.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hb_port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                let mut c = c;
                let mut buf = [0u8; 2048];
                let n = std::io::Read::read(&mut c, &mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                if let Some(path) = req.split_whitespace().nth(1) {
                    seen.lock().unwrap().push(path.to_string());
                }
                let _ = std::io::Write::write_all(
                    &mut c,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                );
            }
        });
    }
    let schedule = site.dir.join("schedules/staff.toml");
    let share = site.env.path("share");
    write(&share.join("a.txt"), b"lesson plan");
    std::fs::write(
        &schedule,
        format!(
            "repository = \"offsite\"\npaths = [\"{}\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\nheartbeat_url = \"http://127.0.0.1:{hb_port}/ping/staff\"\n",
            share.display()
        ),
    )
    .unwrap();
    let clock = vouch::ManualClock::new("2026-05-11T00:30:00Z".parse::<jiff::Timestamp>().unwrap());
    let config = vouch::service::Config::load(&site.dir.join("vouch.toml")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The SMTP transport is built inside a runtime.
    let _inside = rt.enter();
    let service = Service::new(config, Arc::new(clock.clone())).unwrap();
    rt.block_on(async {
        let s = service.config.schedule("staff").unwrap().clone();
        // A failure queues an alert that cannot go out.
        std::fs::rename(&share, site.env.path("away")).unwrap();
        service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        std::fs::rename(site.env.path("away"), &share).unwrap();
        service.flush_outbox().await.unwrap();
        assert!(service.outbox_stuck().unwrap().is_none(), "not yet hours");
        // The next good backup, an hour later: the heartbeat says success.
        clock.advance(jiff::SignedDuration::from_hours(1));
        let o = service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        assert_eq!(o.record.outcome, vouch::records::Outcome::Success);
        // Thirteen hours on, mail has still not gone: a good backup pings /fail.
        clock.advance(jiff::SignedDuration::from_hours(13));
        service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        let stuck = service.outbox_stuck().unwrap().expect("stuck");
        assert!(stuck.waiting >= 1, "{stuck:?}");
    });
    let seen = seen.lock().unwrap().clone();
    let ends: Vec<&str> = seen
        .iter()
        .filter(|p| !p.ends_with("/start"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        ends,
        ["/ping/staff/fail", "/ping/staff", "/ping/staff/fail"],
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. `check --read-data` did not read drills/, journal/, ledger/, keys/ or locks/.

/// A school whose repository holds one of every kind of record: a journalled backup, a
/// drill report, ledger records, two keys.
fn school_with_records() -> (Env, PathBuf, PathBuf) {
    let env = Env::new();
    let dir = env.path("etc");
    std::fs::create_dir_all(dir.join("schedules")).unwrap();
    std::fs::create_dir_all(dir.join("restore-tests")).unwrap();
    std::fs::copy(&env.pass_file, dir.join("offsite.pass")).unwrap();
    let repo = env.path("repo");
    let share = env.path("share");
    write(&share.join("Staff/plan.docx"), &noise(200_000, 1));
    std::fs::write(
        dir.join("vouch.toml"),
        format!(
            "school = \"Preston Primary Academy\"\nstate_dir = \"{}\"\nscratch_dir = \"{}\"\n[repositories.offsite]\nurl = \"{}\"\npassword_file = \"offsite.pass\"\n[alerts]\nto = [\"network.manager@school.example\"]\n",
            env.path("state").display(),
            env.path("scratch").display(),
            repo.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("schedules/staff.toml"),
        format!(
            "repository = \"offsite\"\npaths = [\"{}\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\n",
            share.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("restore-tests/monthly.toml"),
        "repository = \"offsite\"\nschedule = \"staff\"\ncron = \"0 3 1 * *\"\n[select]\nall = true\n",
    )
    .unwrap();
    env.run(&["init", "--repo", repo.to_str().unwrap()])
        .expect(0);
    let config = dir.join("vouch.toml");
    let run = |args: &[&str]| {
        Run::of(
            env.vouch()
                .env("VOUCH_CONFIG", &config)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    run(&["run", "staff"]).expect(0);
    run(&["run", "monthly"]).expect(0);
    let r = repo.to_str().unwrap();
    env.run(&["check", "--read-data", "--repo", r]).expect(0);
    let second = env.path("second.pass");
    std::fs::write(&second, "a second passphrase\n").unwrap();
    env.run(&[
        "key",
        "add",
        "--repo",
        r,
        "--new-password-file",
        second.to_str().unwrap(),
    ])
    .expect(0);
    (env, repo, config)
}

/// Every object under `dir` of a local repository, recursively.
fn objects(repo: &Path, dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn check_reads_and_names_damaged_drill_reports_journal_copies_ledger_records_and_keys() {
    let (env, repo, config) = school_with_records();
    let r = repo.to_str().unwrap();
    env.run(&["check", "--repo", r]).expect(0);
    let mut damaged = Vec::new();
    for dir in ["drills", "journal", "ledger", "keys"] {
        let all = objects(&repo, dir);
        assert!(!all.is_empty(), "the repository has {dir}/");
        // The newest key is the second passphrase's; the first still opens the repository.
        let victim = if dir == "keys" {
            let mut k = all.clone();
            k.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
            k.last().unwrap().clone()
        } else {
            all[0].clone()
        };
        flip_byte(&victim, 30);
        damaged.push(
            victim
                .strip_prefix(&repo)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    let check = env.run(&["check", "--repo", r]).expect(4);
    for key in &damaged {
        assert!(
            check.stdout.contains(key.as_str()),
            "check names {key}:\n{}",
            check.stdout
        );
    }
    let j = env.run(&["check", "--repo", r, "--json"]).expect(4);
    let report: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"key-unreadable"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "record-unreadable").count(),
        3,
        "{kinds:?}"
    );
    // coverage and journal verify call damage damage.
    let coverage = env.run(&["coverage", "--repo", r]).expect(4);
    assert!(
        coverage.stderr.contains(&damaged[2]) && coverage.stderr.contains("DAMAGE"),
        "{}",
        coverage.stderr
    );
    let verify = Run::of(
        env.vouch()
            .env("VOUCH_CONFIG", &config)
            .args(["journal", "verify"])
            .output()
            .unwrap(),
    );
    assert!(
        verify.stdout.contains(&format!("DAMAGED: {}", damaged[1]))
            && verify.stdout.contains("the journal does NOT verify")
            && !verify.stdout.contains("not yet"),
        "{}",
        verify.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// 7. A damaged stale lock blocked every command.

#[test]
fn an_unreadable_lock_is_stale_once_old_and_until_then_names_vouch_unlock() {
    let s = Shelf::new();
    let lock = s.repo.join("locks").join(hex64(1));
    write(&lock, b"not a lock at all");
    // Fresh: it might be anyone's; it blocks, and says how to remove it.
    let blocked = s.run(&["backup", s.share.to_str().unwrap()]).expect(11);
    assert!(
        blocked.stderr.contains("unreadable lock file") && blocked.stderr.contains("vouch unlock"),
        "{}",
        blocked.stderr
    );
    // Older than the stale age: it protects nothing.
    age(&lock, "1 hour ago");
    s.run(&["backup", s.share.to_str().unwrap()]).expect(0);
    s.run(&["check"]).expect(0);
    let unlock = s.run(&["unlock"]).expect(0);
    assert!(
        unlock.stdout.contains("removed 1 lock(s)"),
        "{}",
        unlock.stdout
    );
    assert!(!lock.exists());
}

fn hex64(seed: u64) -> String {
    noise(32, seed).iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// 8. A read-only repository could not be restored from.

/// A read-only bind mount of a directory, as a write-protected disk is; unmounted on drop.
struct ReadOnlyMount {
    at: PathBuf,
}

impl ReadOnlyMount {
    fn new(of: &Path, at: &Path) -> ReadOnlyMount {
        std::fs::create_dir_all(at).unwrap();
        let mount = |args: &[&str]| {
            let ok = Command::new("mount").args(args).status().unwrap();
            assert!(ok.success(), "mount {args:?} (the tests run as root)");
        };
        mount(&["--bind", of.to_str().unwrap(), at.to_str().unwrap()]);
        mount(&["-o", "remount,bind,ro", at.to_str().unwrap()]);
        ReadOnlyMount {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

#[test]
fn a_read_only_repository_is_restored_from_and_checked_without_a_lock_and_says_so() {
    let s = Shelf::new();
    let ro = ReadOnlyMount::new(&s.repo, &s.env.path("write-protected"));
    let r = ro.at.to_str().unwrap();
    let target = s.env.path("restored");
    let restore = s
        .env
        .run(&[
            "restore",
            "--repo",
            r,
            "latest",
            "--target",
            target.to_str().unwrap(),
        ])
        .expect(0);
    assert!(
        restore
            .stderr
            .contains("refuses writes, so it is read without a lock"),
        "{}",
        restore.stderr
    );
    assert_same_tree(&s.share, &target);
    let check = s.env.run(&["check", "--read-data", "--repo", r]).expect(0);
    assert!(
        check.stderr.contains("read without a lock")
            && check
                .stderr
                .contains("not recorded in the verification ledger"),
        "{}",
        check.stderr
    );
    // --no-lock by choice, on a writable repository: no lock file is written.
    let chosen = s.run(&["check", "--no-lock"]).expect(0);
    assert!(chosen.stderr.contains("--no-lock"), "{}", chosen.stderr);
    // A backup still needs the repository to take writes, and says so.
    let backup = s
        .env
        .run(&["backup", "--repo", r, s.share.to_str().unwrap()])
        .expect(1);
    assert!(backup.stderr.contains("refused"), "{}", backup.stderr);
}

#[test]
fn read_only_credentials_on_s3_are_read_without_a_lock() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = crate::support::S3Repo::new("read-only-creds", "nas1", false);
    repo.run(&["init"]).expect(0);
    let share = repo.env.path("share");
    write(&share.join("a.txt"), &text(40_000, 9));
    repo.run(&["backup", share.to_str().unwrap()]).expect(0);
    let (store, fault) = with_faults(repo.store());
    fault.inject(Fault::ReadOnly);
    let r = Arc::new(
        rt.block_on(Repository::open(store, &Secret::new(PASSWORD)))
            .unwrap(),
    );
    let report = rt
        .block_on(vouch::check(
            r,
            &vouch::CheckOptions {
                read_data: vouch::ReadData::All,
                seed: None,
                threads: None,
            },
        ))
        .unwrap();
    assert!(!report.is_damaged());
    assert!(
        report.notes.iter().any(|n| n.contains("refuses writes")),
        "{:?}",
        report.notes
    );
}

// ---------------------------------------------------------------------------------------------
// 9. A mistyped or unmounted repository path was created.

#[test]
fn a_missing_repository_directory_is_named_and_not_created() {
    let env = Env::new();
    let missing = env.path("volumeUSB1/usbshare/vouch");
    let out = env
        .run(&["snapshots", "--repo", missing.to_str().unwrap()])
        .expect(10);
    assert!(
        out.stderr.contains("there is no vouch repository at")
            && out.stderr.contains("is the disk or share mounted?"),
        "{}",
        out.stderr
    );
    assert!(!env.path("volumeUSB1").exists(), "nothing was created");
}

/// A folder under /mnt, as a NAS's mount point for a USB disk; removed on drop.
struct MountPoint(PathBuf);

impl Drop for MountPoint {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn init_refuses_to_fill_an_unmounted_disks_mount_point_unless_told() {
    let env = Env::new();
    // A mistyped path, or a disk whose whole path is missing: only the last folder is made.
    let deep = env.path("volumeUSB1/usbshare/vouch");
    let refused = env
        .run(&["init", "--repo", deep.to_str().unwrap()])
        .expect(1);
    assert!(
        refused.stderr.contains("does not exist either")
            && refused.stderr.contains("--create-parents"),
        "{}",
        refused.stderr
    );
    assert!(!env.path("volumeUSB1").exists(), "nothing was created");
    // An empty mount point whose disk is not mounted: a bare folder on the system disk.
    let mount_point = MountPoint(PathBuf::from(format!(
        "/mnt/vouch-it-usb-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&mount_point.0).unwrap();
    let repo = mount_point.0.join("vouch");
    let refused = env
        .run(&["init", "--repo", repo.to_str().unwrap()])
        .expect(1);
    assert!(
        refused.stderr.contains("what a mount point looks like")
            && refused.stderr.contains("--create-parents"),
        "{}",
        refused.stderr
    );
    assert!(!repo.exists());
    // With the disk mounted (an empty filesystem of its own), init goes ahead.
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&mount_point.0)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs (the tests run as root)");
    env.run(&["init", "--repo", repo.to_str().unwrap()])
        .expect(0);
    // Told, it makes the folders.
    env.run(&["init", "--repo", deep.to_str().unwrap(), "--create-parents"])
        .expect(0);
    assert_eq!(
        std::fs::metadata(&deep).unwrap().mode() & 0o777,
        0o700,
        "the repository's folder is the owner's only"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. A closed stdout made a successful backup exit 101.

#[test]
fn a_closed_standard_output_does_not_turn_a_good_backup_into_a_crash() {
    let s = Shelf::new();
    write(&s.share.join("Staff/more.docx"), &noise(100_000, 5));
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = s
        .env
        .vouch()
        .args(["backup", "--repo", s.r(), s.share.to_str().unwrap()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let snaps = s
        .env
        .vouch()
        .args(["snapshots", "--repo", s.r()])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(snaps.status.code(), Some(0));
    // Output that cannot be written for another reason (a full disk) is not a success.
    let full = Run::of(
        s.env
            .vouch()
            .args(["snapshots", "--json", "--repo", s.r()])
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(
        full.stderr.contains("the output could not be written"),
        "{}",
        full.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Smaller ones.

#[test]
fn partial_uploads_left_by_a_killed_write_are_reported_and_removed_once_old() {
    let s = Shelf::new();
    // What the local store leaves when killed between its write and its rename.
    let pack = &packs(&s.repo)[0];
    let partial = PathBuf::from(format!("{}#3", pack.display()));
    std::fs::copy(pack, &partial).unwrap();
    // While young it may be a running backup's write in progress: left alone.
    let young = s.run(&["check"]).expect(0);
    assert!(
        !young.stdout.contains("unfinished write"),
        "{}",
        young.stdout
    );
    let kept = json(&s.run(&["prune", "--json"]).expect(0));
    assert_eq!(kept["partial_files_removed"], 0, "{kept:#}");
    assert!(partial.exists());
    // The age is the storage's judgement, by the storage's clock: a store whose clock reads
    // two hours on sees the same fresh file as old.
    let margin = jiff::SignedDuration::from_hours(1);
    let store =
        vouch::Store::open(&vouch::RepoUrl::Local(s.repo.clone()), &Default::default()).unwrap();
    assert!(store.partial_uploads(margin).unwrap().is_empty());
    let later = vouch::ManualClock::new(
        vouch::Clock::now(&vouch::SystemClock) + jiff::SignedDuration::from_hours(2),
    );
    let store = store.with_clock(std::sync::Arc::new(later));
    assert_eq!(
        store.partial_uploads(margin).unwrap(),
        std::slice::from_ref(&partial)
    );
    age(&partial, "2 hours ago");
    let check = s.run(&["check"]).expect(0);
    assert!(
        check.stdout.contains(partial.to_str().unwrap())
            && check.stdout.contains("unfinished write"),
        "{}",
        check.stdout
    );
    let prune = json(&s.run(&["prune", "--json"]).expect(0));
    assert_eq!(prune["partial_files_removed"], 1, "{prune:#}");
    assert!(!partial.exists());
}

#[test]
fn a_folder_whose_name_is_not_utf8_can_be_restored_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let s = Shelf::new();
    let odd = std::ffi::OsStr::from_bytes(b"Cl\xe9ment's work");
    write(
        &s.share.join("Pupils").join(odd).join("story.txt"),
        b"once upon a time",
    );
    s.run(&["backup", s.share.to_str().unwrap()]).expect(0);
    let target = s.env.path("restored");
    let mut include = s.share.join("Pupils").join(odd).into_os_string();
    include.push("");
    let out = s
        .env
        .vouch()
        .args(["restore", "--repo", s.r(), "latest", "--target"])
        .arg(&target)
        .arg("--include")
        .arg(&include)
        .output()
        .unwrap();
    Run::of(out).expect(0);
    let restored = inside(&target, &s.share)
        .join("Pupils")
        .join(odd)
        .join("story.txt");
    assert_eq!(std::fs::read(restored).unwrap(), b"once upon a time");
    assert!(!inside(&target, &s.share).join("Staff").exists());
}

#[test]
fn keys_the_journal_and_emails_are_readable_by_their_owner_only() {
    let (env, repo, _) = school_with_records();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&repo), 0o700, "{}", repo.display());
    for k in objects(&repo, "keys") {
        assert_eq!(mode(&k), 0o600, "{}", k.display());
    }
    assert_eq!(mode(&env.path("state")), 0o700);
    assert_eq!(mode(&env.path("state/journal.sqlite")), 0o600);
    // The monthly drill passed, so no mail yet: a failing run makes one.
    let config = env.path("etc/vouch.toml");
    std::fs::rename(env.path("share"), env.path("away")).unwrap();
    Run::of(
        env.vouch()
            .env("VOUCH_CONFIG", &config)
            .args(["run", "staff"])
            .output()
            .unwrap(),
    )
    .expect(1);
    let mail = crate::support::files_in(&env.path("state/mail"));
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mode(&env.path("state/mail")), 0o700);
    assert_eq!(mode(&mail[0]), 0o600);
}

#[test]
fn a_full_restore_target_is_not_called_damage() {
    let s = Shelf::new();
    write(&s.share.join("big.iso"), &noise(3 << 20, 6));
    s.run(&["backup", s.share.to_str().unwrap()]).expect(0);
    let target = s.env.path("tiny");
    std::fs::create_dir_all(&target).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs (the tests run as root)");
    let out = s.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let _ = Command::new("umount").arg(&target).status();
    let out = out.expect(3);
    assert!(
        out.stderr.contains("could not be written into the target")
            && out.stderr.contains("No space left on device")
            && out.stderr.contains("nothing stored is damaged"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("check --read-data"), "{}", out.stderr);
}

#[test]
fn a_plan_naming_a_schedule_whose_file_is_broken_says_so() {
    let (env, _, config) = school_with_records();
    std::fs::write(
        env.path("etc/schedules/staff.toml"),
        "repository = \"offsite\"\npaths = [\"/srv/staff\"]\ncron = \"0 1 * *\"\nrpo = \"26h\"\n",
    )
    .unwrap();
    let out = Run::of(
        env.vouch()
            .env("VOUCH_CONFIG", &config)
            .args(["config", "check"])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(
        out.stdout
            .contains("could not be read because of the mistakes reported for")
            && !out.stdout.contains("there are none"),
        "{}",
        out.stdout
    );
}
