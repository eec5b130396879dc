//! The service: configuration, `vouch run`, the journal and its mirror, incidents and email
//! through a real SMTP server on loopback, staleness, overlap, the daemon and SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vouch::service::Service;
use vouch::{Clock, ManualClock};

use crate::support::{Env, Run, Smtp, noise, packs, write};

struct Site {
    env: Env,
    dir: PathBuf,
    share: PathBuf,
    repo: PathBuf,
}

impl Site {
    /// Wait until `child`'s backup has stored a pack (it must not exit first), then SIGTERM it.
    fn sigterm_once_packs_are_stored(&self, child: &mut std::process::Child) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while packs(&self.repo).is_empty() {
            assert!(Instant::now() < deadline, "the backup did not start");
            assert!(child.try_wait().unwrap().is_none(), "vouch exited early");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// `check --read-data` finds no damage.
    fn assert_repository_clean(&self) {
        let check = self
            .env
            .run(&[
                "check",
                "--repo",
                self.repo.to_str().unwrap(),
                "--read-data",
            ])
            .expect(0);
        assert!(check.stdout.contains("no damage found"), "{}", check.stdout);
    }

    /// `journal list --json`.
    fn journal_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.vouch(&["journal", "list", "--json"]).expect(0).stdout).unwrap()
    }

    /// A school: vouch.toml, one repository, a share, a nightly schedule and a plan. With
    /// `smtp`, mail goes to that port; without, to the mail folder.
    fn new(smtp: Option<u16>) -> Site {
        let env = Env::new();
        let dir = env.path("etc");
        let share = env.path("share");
        let repo = env.path("repo");
        std::fs::create_dir_all(dir.join("schedules")).unwrap();
        std::fs::create_dir_all(dir.join("restore-tests")).unwrap();
        std::fs::copy(&env.pass_file, dir.join("offsite.pass")).unwrap();
        let mail = match smtp {
            Some(port) => format!(
                "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"vouch <vouch@school.example>\"\n"
            ),
            None => String::new(),
        };
        std::fs::write(
            dir.join("vouch.toml"),
            format!(
                "school = \"Preston Primary Academy\"\nstate_dir = \"{}\"\nscratch_dir = \"{}\"\n[repositories.offsite]\nurl = \"{}\"\npassword_file = \"offsite.pass\"\n{mail}[alerts]\nto = [\"network.manager@school.example\"]\n",
                env.path("state").display(),
                env.path("scratch").display(),
                repo.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("schedules/staff-nightly.toml"),
            format!("repository = \"offsite\"\nlabel = \"Staff share\"\npaths = [\"{}\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\n", share.display()),
        )
        .unwrap();
        std::fs::write(
            dir.join("restore-tests/monthly.toml"),
            "repository = \"offsite\"\nschedule = \"staff-nightly\"\ncron = \"0 3 1 * *\"\n[select]\nall = true\n",
        )
        .unwrap();
        write(&share.join("report.docx"), &noise(200_000, 1));
        env.run(&["init", "--repo", repo.to_str().unwrap()])
            .expect(0);
        Site {
            env,
            dir,
            share,
            repo,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("vouch.toml")
    }

    fn vouch(&self, args: &[&str]) -> Run {
        Run::of(
            self.env
                .vouch()
                .env("VOUCH_CONFIG", self.config())
                .args(args)
                .output()
                .unwrap(),
        )
    }

    fn mail_folder(&self) -> Vec<String> {
        crate::support::files_in(&self.env.path("state/mail"))
            .into_iter()
            .map(|p| unfold(&std::fs::read_to_string(p).unwrap()))
            .collect()
    }

    /// Break the share (as if it were unmounted), and mend it.
    fn unmount(&self) {
        std::fs::rename(&self.share, self.env.path("share-away")).unwrap();
    }
    fn remount(&self) {
        std::fs::rename(self.env.path("share-away"), &self.share).unwrap();
    }
}

/// Undo quoted-printable soft breaks and folded header lines, to search the text.
fn unfold(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace("=\n", "")
        .replace("\n ", " ")
}

#[test]
fn a_failed_backup_sends_one_alert_and_the_next_good_one_sends_one_resolved_email() {
    let env = Env::new();
    let smtp = Smtp::start(env.dir.path());
    let site = Site::new(Some(smtp.port));
    site.vouch(&["run", "staff-nightly"]).expect(0);
    assert!(smtp.messages().is_empty(), "a quiet inbox when all is well");

    site.unmount();
    let failed = site.vouch(&["run", "staff-nightly"]).expect(1);
    assert!(failed.stdout.contains("failed"), "{}", failed.stdout);
    site.vouch(&["run", "staff-nightly"]).expect(1);
    let mails = smtp.messages();
    assert_eq!(
        mails.len(),
        1,
        "one alert for one problem, not one per failed run: {mails:#?}"
    );
    let alert = unfold(&mails[0]);
    assert!(
        alert.contains("Subject: [vouch] Preston Primary Academy: backup staff-nightly failed"),
        "{alert}"
    );
    assert!(
        alert.contains("does not exist"),
        "the error is in the email: {alert}"
    );
    assert!(
        alert.contains("vouch run staff-nightly"),
        "what to do next: {alert}"
    );

    site.remount();
    site.vouch(&["run", "staff-nightly"]).expect(0);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(
        unfold(&mails[1]).contains("resolved: backup staff-nightly failed"),
        "{}",
        mails[1]
    );
    let status = site.vouch(&["status"]).expect(0);
    assert!(
        status.stdout.contains("no open incidents"),
        "{}",
        status.stdout
    );
}

#[test]
fn an_smtp_outage_delays_the_alert_and_nothing_is_lost_across_a_restart() {
    let env = Env::new();
    let mut smtp = Smtp::start(env.dir.path());
    let site = Site::new(Some(smtp.port));
    smtp.stop();
    site.unmount();
    site.vouch(&["run", "staff-nightly"]).expect(1);
    let waiting = site.vouch(&["outbox"]).expect(0);
    assert!(
        waiting.stdout.contains("waiting (1 tries"),
        "{}",
        waiting.stdout
    );
    assert!(
        waiting.stdout.contains("backup staff-nightly failed"),
        "{}",
        waiting.stdout
    );
    assert!(waiting.stdout.contains("last error"), "{}", waiting.stdout);
    // A new process (as after a restart) delivers it once the server is back.
    smtp.restart();
    let flushed = site.vouch(&["outbox", "--flush"]).expect(0);
    assert!(flushed.stdout.contains("1 sent"), "{}", flushed.stdout);
    assert_eq!(smtp.messages().len(), 1);
    assert!(
        site.vouch(&["outbox"])
            .expect(0)
            .stdout
            .contains("nothing waiting")
    );
}

#[test]
fn staleness_follows_the_rpo_on_a_manual_clock() {
    let site = Site::new(None);
    let clock = ManualClock::new("2026-05-11T00:30:00Z".parse::<jiff::Timestamp>().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = vouch::service::Config::load(&site.config()).unwrap();
    let service = Service::new(config, Arc::new(clock.clone())).unwrap();
    rt.block_on(async {
        let s = service.config.schedule("staff-nightly").unwrap().clone();
        let o = service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        assert_eq!(o.record.outcome, vouch::records::Outcome::Success);
        clock.advance(jiff::SignedDuration::from_hours(25));
        service.housekeeping().await.unwrap();
        service.flush_outbox().await.unwrap();
        assert!(
            site.mail_folder().is_empty(),
            "no alert before the RPO passes"
        );
        clock.advance(jiff::SignedDuration::from_hours(2));
        service.housekeeping().await.unwrap();
        service.housekeeping().await.unwrap();
        service.flush_outbox().await.unwrap();
        let mail = site.mail_folder();
        assert_eq!(mail.len(), 1, "one alert once it passes: {mail:#?}");
        assert!(
            mail[0].contains("backups of staff-nightly are out of date"),
            "{}",
            mail[0]
        );
        assert!(
            mail[0].contains("the schedule allows 1day 2h"),
            "{}",
            mail[0]
        );
        // A day later, still stale: one reminder.
        clock.advance(jiff::SignedDuration::from_hours(24));
        service.housekeeping().await.unwrap();
        service.flush_outbox().await.unwrap();
        assert_eq!(site.mail_folder().len(), 2);
        // The next good backup resolves it.
        service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        service.flush_outbox().await.unwrap();
        let mail = site.mail_folder();
        assert_eq!(mail.len(), 3, "{mail:#?}");
        assert!(
            mail.iter()
                .any(|m| m.contains("resolved: backups of staff-nightly are out of date"))
        );
    });
    let _ = clock.now();
}

#[test]
fn two_jobs_on_one_repository_never_overlap() {
    let site = Site::new(None);
    for i in 0..6 {
        write(
            &site.share.join(format!("photos/{i}.jpg")),
            &noise(12 << 20, i + 10),
        );
    }
    std::fs::write(
        site.dir.join("schedules/photos.toml"),
        format!(
            "repository = \"offsite\"\npaths = [\"{}\"]\ncron = \"0 2 * * *\"\nrpo = \"26h\"\n",
            site.share.join("photos").display()
        ),
    )
    .unwrap();
    let spawn = |job: &str| {
        site.env
            .vouch()
            .env("VOUCH_CONFIG", site.config())
            .args(["run", job])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("staff-nightly"), spawn("photos"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let list = site.journal_json();
    let times: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["record"]["started"].as_str().unwrap().to_string(),
                e["record"]["ended"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(times.len(), 2);
    let parse = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    let (first, second) = if parse(&times[0].0) <= parse(&times[1].0) {
        (&times[0], &times[1])
    } else {
        (&times[1], &times[0])
    };
    assert!(
        parse(&first.1) <= parse(&second.0),
        "the runs overlapped: {times:?}"
    );
}

#[test]
fn journal_verify_names_a_hand_edited_row_and_the_mirror_matches() {
    let site = Site::new(None);
    site.vouch(&["run", "staff-nightly"]).expect(0);
    site.vouch(&["run", "monthly"]).expect(0);
    site.vouch(&[
        "journal",
        "annotate",
        "1",
        "checked the report by hand",
        "--operator",
        "J. Smith",
    ])
    .expect(0);
    let ok = site.vouch(&["journal", "verify"]).expect(0);
    assert!(ok.stdout.contains("3 row(s)"), "{}", ok.stdout);
    assert!(
        ok.stdout
            .contains("copy in repository offsite: 3 of 3 row(s) mirrored"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("the journal verifies"), "{}", ok.stdout);
    assert_eq!(
        crate::support::files_in(&site.repo.join("journal")).len(),
        1,
        "one host folder"
    );
    // Someone edits run 2 in the SQLite file: a drill made to look like another.
    let db = site.env.path("state/journal.sqlite");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg("UPDATE journal SET record = replace(record, '\"monthly\"', '\"weekly\"') WHERE seq = 2")
        .status()
        .unwrap();
    assert!(status.success());
    let bad = site.vouch(&["journal", "verify"]).expect(4);
    assert!(
        bad.stdout
            .contains("BROKEN: row 2: its contents were changed"),
        "{}",
        bad.stdout
    );
    assert!(bad.stdout.contains("does NOT verify"), "{}", bad.stdout);
}

/// `vouch run --json`: the run's number and its journal record, as a timer's wrapper script
/// would read them; `journal show --json` gives the same row with its notes; `run
/// check-freshness --json` lists what is stale.
#[test]
fn run_json_gives_the_journalled_run() {
    let site = Site::new(None);
    let out = site.vouch(&["run", "staff-nightly", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let record = &v["record"];
    assert_eq!(record["kind"], "backup", "{v:#}");
    assert_eq!(record["job"], "staff-nightly");
    assert_eq!(record["outcome"], "success");
    assert_eq!(record["trigger"], "manual");
    assert_eq!(record["snapshot"].as_str().unwrap().len(), 64, "{v:#}");
    let run = v["run"].as_i64().unwrap();
    let list = site.journal_json();
    let journalled = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["seq"] == run)
        .unwrap_or_else(|| panic!("run {run} in {list:#}"));
    assert_eq!(
        &journalled["record"], record,
        "the journal holds what was printed"
    );
    site.vouch(&[
        "journal",
        "annotate",
        &run.to_string(),
        "checked by J. Smith",
    ])
    .expect(0);
    let shown: serde_json::Value = serde_json::from_str(
        &site
            .vouch(&["journal", "show", &format!("#{run}"), "--json"])
            .expect(0)
            .stdout,
    )
    .unwrap();
    assert_eq!(shown["entry"]["seq"], run, "{shown:#}");
    assert_eq!(&shown["entry"]["record"], record);
    assert_eq!(
        shown["notes"][0]["text"], "checked by J. Smith",
        "{shown:#}"
    );
    assert!(
        v["mail"]["sent"].is_u64() && v["mail"]["waiting"].is_u64(),
        "{v:#}"
    );
    let fresh = site.vouch(&["run", "check-freshness", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&fresh.stdout).unwrap();
    assert_eq!(v["stale"].as_array().unwrap().len(), 0, "{v:#}");
}

/// `config check --json`: a script (a deployment check, a monitoring probe) gets every mistake
/// located, or what the configuration holds, without parsing the words.
#[test]
fn config_check_json_lists_mistakes_located_or_the_jobs_with_their_next_run() {
    let site = Site::new(None);
    let good = site.vouch(&["config", "check", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&good.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["mistakes"].as_array().unwrap().len(), 0);
    assert_eq!(v["school"], "Preston Primary Academy");
    let nightly = v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "staff-nightly")
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(nightly["repository"], "offsite");
    let next: jiff::Timestamp = nightly["next_run"].as_str().unwrap().parse().unwrap();
    assert!(next > vouch::Clock::now(&vouch::SystemClock), "{nightly}");
    assert_eq!(v["mail"]["to"][0], "network.manager@school.example");

    let broken = site.dir.join("schedules/broken.toml");
    std::fs::write(
        &broken,
        "repository = \"offsite\"\npaths = [\"/volume1/staff\"]\ncron = \"0 25 * * *\"\nrpo = \"26h\"\n",
    )
    .unwrap();
    let bad = site.vouch(&["config", "check", "--json"]).expect(1);
    let v: serde_json::Value = serde_json::from_str(&bad.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let mistakes = v["mistakes"].as_array().unwrap();
    assert_eq!(mistakes.len(), 1, "{v:#}");
    assert_eq!(mistakes[0]["file"], broken.display().to_string());
    assert_eq!(mistakes[0]["line"], 3);
    assert!(
        mistakes[0]["message"]
            .as_str()
            .unwrap()
            .contains("hour 25 is out of range 0-23"),
        "{v:#}"
    );
    assert!(!mistakes[0]["fix"].as_str().unwrap().is_empty());
    assert!(
        v.get("schedules").is_none(),
        "nothing is reported as loaded: {v:#}"
    );
}

/// A mistyped address is named when vouch.toml is read, with its line, not found out when the
/// first alert is due and never leaves.
#[test]
fn a_mistyped_alert_address_is_named_with_its_line() {
    let site = Site::new(None);
    let config = site.dir.join("vouch.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "to = [\"network.manager@school.example\"]",
        "to = [\n  \"network.manager@school.example\",\n  \"bursar.school.example\",\n]",
    );
    std::fs::write(&config, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("bursar.school.example"))
        .unwrap()
        + 1;
    let out = site.vouch(&["config", "check"]).expect(1);
    assert!(
        out.stdout.contains(&format!(
            "{}:{line}: [alerts] to: \"bursar.school.example\" is not an email address",
            config.display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("network.manager@school.example\" or"),
        "the fix shows how one is written: {}",
        out.stdout
    );
    assert!(out.stdout.contains("1 mistake(s)"), "{}", out.stdout);
}

#[test]
fn config_check_names_every_mistake_with_file_and_line() {
    let site = Site::new(None);
    std::fs::write(
        site.dir.join("schedules/broken.toml"),
        "repository = \"usb-disk\"\npaths = [\"/volume1/staff\"]\ncron = \"0 25 * * *\"\nrpo = \"26h\"\n",
    )
    .unwrap();
    let out = site.vouch(&["config", "check"]).expect(1);
    let broken = site.dir.join("schedules/broken.toml");
    assert!(
        out.stdout.contains(&format!(
            "{}:1: repository = \"usb-disk\" is not in vouch.toml's [repositories]",
            broken.display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "{}:3: cron \"0 25 * * *\" is not a cron expression: hour 25 is out of range 0-23",
            broken.display()
        )),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("2 mistake(s)"), "{}", out.stdout);
    std::fs::remove_file(&broken).unwrap();
    let good = site.vouch(&["config", "check"]).expect(0);
    assert!(
        good.stdout.contains("ok — Preston Primary Academy"),
        "{}",
        good.stdout
    );
}

/// A timer's unit stopped mid-backup (systemd sends SIGTERM): `vouch run` stops at a
/// consistent point as the daemon does, journals the run as started by a schedule, and leaves
/// no lock behind.
#[test]
fn sigterm_during_a_scheduled_vouch_run_stops_it_consistently_and_journals_it() {
    let site = Site::new(None);
    for i in 0..30 {
        write(
            &site.share.join(format!("photos/{i}.jpg")),
            &noise(8 << 20, i + 300),
        );
    }
    let mut run = site
        .env
        .vouch()
        .env("VOUCH_CONFIG", site.config())
        .env("VOUCH_SHUTDOWN_DEADLINE_MS", "50")
        .args(["run", "staff-nightly", "--scheduled"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    site.sigterm_once_packs_are_stored(&mut run);
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopping: the job gets 50ms to finish"),
        "it says what it does with the signal: {stderr}"
    );
    let list = site.journal_json();
    let record = &list[0]["record"];
    assert_eq!(record["trigger"], "schedule", "{record}");
    let outcome = record["outcome"].as_str().unwrap();
    // Stopped at its consistent point (exit 1), or done before the deadline passed (exit 0).
    match outcome {
        "interrupted" => assert_eq!(out.status.code(), Some(1), "{stderr}"),
        "success" => assert_eq!(out.status.code(), Some(0), "{stderr}"),
        other => panic!("the run is journalled as {other}: {record}"),
    }
    assert!(
        crate::support::files_in(&site.repo.join("locks")).is_empty(),
        "no lock is left behind"
    );
    site.assert_repository_clean();
    // A run by hand is a person's.
    site.vouch(&["run", "staff-nightly"]).expect(0);
    let list = site.journal_json();
    let last = list.as_array().unwrap().last().unwrap();
    assert_eq!(last["record"]["trigger"], "manual", "{last}");
}

#[test]
fn sigterm_during_a_daemon_backup_leaves_a_repository_that_passes_check() {
    let site = Site::new(None);
    for i in 0..30 {
        write(
            &site.share.join(format!("photos/{i}.jpg")),
            &noise(8 << 20, i + 100),
        );
    }
    // The nightly backup was last considered days ago: the daemon catches it up at once.
    {
        let config = vouch::service::Config::load(&site.config()).unwrap();
        let j = vouch::records::Journal::open(&config.state_dir).unwrap();
        j.set_considered(
            "staff-nightly",
            "2026-01-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap(),
        )
        .unwrap();
    }
    let mut daemon = site
        .env
        .vouch()
        .env("VOUCH_CONFIG", site.config())
        .env("VOUCH_DAEMON_TICK_MS", "100")
        .env("VOUCH_SHUTDOWN_DEADLINE_MS", "50")
        .arg("daemon")
        .spawn()
        .unwrap();
    site.sigterm_once_packs_are_stored(&mut daemon);
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "the daemon stops cleanly on SIGTERM: {status}"
    );
    site.assert_repository_clean();
    let list = site.journal_json();
    let run = &list[0]["record"];
    assert_eq!(run["trigger"], "catch-up");
    assert!(
        ["interrupted", "success"].contains(&run["outcome"].as_str().unwrap()),
        "{run}"
    );
    assert!(
        site.mail_folder().is_empty(),
        "a shutdown is not an alert: {:#?}",
        site.mail_folder()
    );
    // The next run completes the backup.
    site.vouch(&["run", "staff-nightly"]).expect(0);
    let _ = Path::new("/");
}

#[test]
fn heartbeat_urls_are_pinged_on_start_and_success() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            record.lock().unwrap().push(
                line.split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string(),
            );
            let mut s = stream;
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        }
    });
    let site = Site::new(None);
    let schedule = site.dir.join("schedules/staff-nightly.toml");
    let mut text = std::fs::read_to_string(&schedule).unwrap();
    text.push_str(&format!(
        "heartbeat_url = \"http://127.0.0.1:{port}/ping/abc123\"\n"
    ));
    std::fs::write(&schedule, text).unwrap();
    site.vouch(&["run", "staff-nightly"]).expect(0);
    site.unmount();
    site.vouch(&["run", "staff-nightly"]).expect(1);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "/ping/abc123/start",
            "/ping/abc123",
            "/ping/abc123/start",
            "/ping/abc123/fail"
        ]
    );
}

#[test]
fn a_year_without_a_passed_test_restore_warns_then_alerts_and_a_drill_resolves_it() {
    vouch::service::set_worker_program(env!("CARGO_BIN_EXE_vouch").into());
    let site = Site::new(None);
    let clock = ManualClock::new("2026-09-01T09:00:00Z".parse::<jiff::Timestamp>().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = vouch::service::Config::load(&site.config()).unwrap();
    let service = Service::new(config, Arc::new(clock.clone())).unwrap();
    rt.block_on(async {
        let plan = service.config.plan("monthly").unwrap().clone();
        let s = service.config.schedule("staff-nightly").unwrap().clone();
        service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        let o = service
            .run_drill(&plan, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        assert_eq!(
            o.record.outcome,
            vouch::records::Outcome::Success,
            "{:?}",
            o.record.error
        );
        let drills_only = |m: &Vec<String>| m.iter().filter(|x| x.contains("test restore")).count();
        // Keep the backups fresh so that only the drill clock speaks.
        clock.advance(jiff::SignedDuration::from_hours(24 * 330));
        service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        service.flush_outbox().await.unwrap();
        assert_eq!(
            drills_only(&site.mail_folder()),
            0,
            "nothing before the last 30 days"
        );
        clock.advance(jiff::SignedDuration::from_hours(24 * 6));
        service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        service.flush_outbox().await.unwrap();
        let mail = site.mail_folder();
        assert_eq!(drills_only(&mail), 1, "{mail:#?}");
        assert!(
            mail.iter()
                .any(|m| m.contains("a test restore is due within 30 days"))
        );
        clock.advance(jiff::SignedDuration::from_hours(24 * 30));
        service
            .run_backup(&s, vouch::records::Trigger::Schedule, "test")
            .await
            .unwrap();
        service.flush_outbox().await.unwrap();
        let mail = site.mail_folder();
        assert!(
            mail.iter()
                .any(|m| m.contains("no test restore has passed within a year")),
            "{mail:#?}"
        );
        service
            .run_drill(&plan, vouch::records::Trigger::Manual, "test")
            .await
            .unwrap();
        service.flush_outbox().await.unwrap();
        let mail = site.mail_folder();
        assert!(
            mail.iter()
                .any(|m| m.contains("resolved: no test restore has passed within a year")),
            "{mail:#?}"
        );
    });
}

#[test]
fn the_daemon_reloads_its_configuration_on_sighup() {
    let site = Site::new(None);
    let log = site.env.path("daemon.log");
    let mut daemon = site
        .env
        .vouch()
        .env("VOUCH_CONFIG", site.config())
        .env("VOUCH_DAEMON_TICK_MS", "100")
        .env("VOUCH_LOG", "info")
        .env("NO_COLOR", "1")
        .arg("daemon")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(needle)
        {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the daemon's log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("vouch daemon started");
    std::fs::write(
        site.dir.join("schedules/photos.toml"),
        format!(
            "repository = \"offsite\"\npaths = [\"{}\"]\ncron = \"0 2 * * *\"\nrpo = \"26h\"\n",
            site.share.display()
        ),
    )
    .unwrap();
    let pid = rustix::process::Pid::from_raw(daemon.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_for("configuration reloaded");
    // A broken configuration is refused and the old one kept.
    std::fs::write(site.dir.join("schedules/broken.toml"), "cron = \"never\"\n").unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_for("configuration reload failed; keeping the old one");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(daemon.wait().unwrap().success());
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |args: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=vouch-test-ca -keyout ca.key -out ca.pem",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr",
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem",
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

fn start_tls_server(dir: &Path, implicit: bool) -> (u16, PathBuf, std::process::Child, PathBuf) {
    let (ca, cert, key) = make_certificates(dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = dir.join("maildir");
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/smtp_tls.py"))
        .args(["--port", &port.to_string()])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--maildir")
        .arg(&maildir);
    if implicit {
        cmd.arg("--implicit");
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the TLS SMTP server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (port, ca, child, maildir)
}

fn maildir_count(maildir: &Path) -> usize {
    crate::support::files_in(&maildir.join("new")).len()
}

#[test]
fn alerts_go_through_starttls_with_authentication_and_through_implicit_tls() {
    for implicit in [false, true] {
        let env = Env::new();
        let (port, ca, mut server, maildir) = start_tls_server(env.dir.path(), implicit);
        let site = Site::new(None);
        std::fs::write(site.dir.join("smtp.pass"), "smtp-secret\n").unwrap();
        let mut toml = std::fs::read_to_string(site.config()).unwrap();
        let security = if implicit { "tls" } else { "starttls" };
        toml = toml.replace(
            "[alerts]",
            &format!(
                "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"{security}\"\nusername = \"backups@school.example\"\npassword_file = \"smtp.pass\"\nca_file = \"{}\"\nfrom = \"vouch <backups@school.example>\"\n\n[alerts]",
                ca.display()
            ),
        );
        std::fs::write(site.config(), toml).unwrap();
        site.unmount();
        let out = site.vouch(&["run", "staff-nightly"]).expect(1);
        let outbox = site.vouch(&["outbox", "--all"]);
        let _ = server.kill();
        let _ = server.wait();
        assert!(
            out.stdout.contains("1 sent"),
            "{security}: {}{}\noutbox: {}{}",
            out.stdout,
            out.stderr,
            outbox.stdout,
            outbox.stderr
        );
        assert_eq!(maildir_count(&maildir), 1, "{security}");
        assert!(
            !out.stderr.contains("smtp-secret"),
            "the SMTP password was printed"
        );
    }
}
