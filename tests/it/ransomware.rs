//! Change-rate alerts: normal days on a generated school share raise nothing; a
//! simulated ransomware night (files rewritten with random bytes under a new extension, a
//! ransom note) raises one alert, holds the snapshot and pauses retention until a person
//! acknowledges it.

use std::path::{Path, PathBuf};

use crate::support::{Env, Run, noise};

struct School {
    env: Env,
    dir: PathBuf,
    share: PathBuf,
}

impl School {
    fn new() -> School {
        let env = Env::new();
        let dir = env.path("etc");
        let share = env.path("share");
        std::fs::create_dir_all(dir.join("schedules")).unwrap();
        std::fs::copy(&env.pass_file, dir.join("offsite.pass")).unwrap();
        std::fs::write(
            dir.join("vouch.toml"),
            format!(
                "school = \"Preston Primary Academy\"\nstate_dir = \"{}\"\nscratch_dir = \"{}\"\n\
                 [repositories.offsite]\nurl = \"{}\"\npassword_file = \"offsite.pass\"\n\
                 [alerts]\nto = [\"network.manager@school.example\"]\n",
                env.path("state").display(),
                env.path("scratch").display(),
                env.path("repo").display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("schedules/staff.toml"),
            format!(
                "repository = \"offsite\"\nlabel = \"Staff share\"\npaths = [\"{}\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\n[keep]\nlast = 3\n",
                share.display()
            ),
        )
        .unwrap();
        crate::corpus::school_share(&share, 1500, 3);
        env.run(&["init", "--repo", env.path("repo").to_str().unwrap()])
            .expect(0);
        School { env, dir, share }
    }

    fn vouch(&self, args: &[&str]) -> Run {
        Run::of(
            self.env
                .vouch()
                .env("VOUCH_CONFIG", self.dir.join("vouch.toml"))
                .args(args)
                .output()
                .unwrap(),
        )
    }

    /// `vouch run staff`, returning the journal run number of the backup.
    fn night(&self) -> i64 {
        let out = self.vouch(&["run", "staff"]).expect(0);
        let line = out.stdout.lines().next().unwrap_or_default();
        assert!(line.contains("backup staff success"), "{}", out.stdout);
        line.trim_start_matches("run #")
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn mail(&self) -> Vec<String> {
        crate::support::files_in(&self.env.path("state/mail"))
            .into_iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .replace("=\r\n", "")
                    .replace("\r\n", "\n")
                    .replace("\n ", " ")
            })
            .collect()
    }

    fn journal(&self) -> String {
        self.vouch(&["journal", "list"]).expect(0).stdout
    }
}

/// What ransomware does to a share: two files in five rewritten with random bytes under a new
/// extension, the originals gone, and a note in the top folder.
fn encrypt(share: &Path) -> usize {
    let mut n = 0;
    for (i, f) in crate::corpus::files(share).into_iter().enumerate() {
        if i % 5 < 2 {
            let len = std::fs::metadata(&f).unwrap().len() as usize;
            let mut locked = f.clone().into_os_string();
            locked.push(".akira");
            std::fs::write(&locked, noise(len, i as u64)).unwrap();
            std::fs::remove_file(&f).unwrap();
            n += 1;
        }
    }
    std::fs::write(
        share.join("HOW_TO_DECRYPT.txt"),
        "Your files are encrypted. Write to us to get them back.",
    )
    .unwrap();
    n
}

#[test]
fn a_ransomware_night_raises_one_alert_holds_the_snapshot_and_pauses_retention() {
    let s = School::new();
    s.night();
    for day in 0..3 {
        crate::corpus::day_of_changes(&s.share, 5, day);
        s.night();
    }
    assert!(
        s.mail().is_empty(),
        "ordinary 5% days raise nothing: {:#?}",
        s.mail()
    );
    assert!(
        s.journal()
            .contains("staff: kept 3 of 4 snapshot(s), removed 1"),
        "{}",
        s.journal()
    );

    let encrypted = encrypt(&s.share);
    assert!(encrypted > 500);
    let run = s.night();
    let mail = s.mail();
    assert_eq!(mail.len(), 1, "one alert: {mail:#?}");
    let alert = &mail[0];
    assert!(
        alert.contains(
            "Subject: [vouch] Preston Primary Academy: possible ransomware in backup staff"
        ),
        "{alert}"
    );
    let share_pct: f64 = alert
        .split("possible ransomware: ")
        .nth(1)
        .and_then(|t| t.split('%').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{alert}"));
    assert!(share_pct >= 10.0, "{alert}");
    assert!(
        alert.contains("of files rewritten with encrypted-looking content"),
        "{alert}"
    );
    assert!(alert.contains("normal is under"), "{alert}");
    assert!(alert.contains("HOW_TO_DECRYPT.txt"), "{alert}");
    assert!(
        alert.contains(&format!("vouch acknowledge {run}")),
        "{alert}"
    );

    // The next nights back up the encrypted share, but retention waits for a person.
    s.night();
    s.night();
    assert!(
        s.journal().contains("retention for staff paused"),
        "{}",
        s.journal()
    );
    let repo = s.env.path("repo");
    let snapshots = s
        .env
        .run(&["snapshots", "--repo", repo.to_str().unwrap(), "--json"])
        .expect(0);
    let n = serde_json::from_str::<serde_json::Value>(&snapshots.stdout).unwrap();
    assert_eq!(
        n.as_array().unwrap().len(),
        6,
        "nothing was forgotten meanwhile"
    );
    let dry = s
        .env
        .run(&[
            "forget",
            "--repo",
            repo.to_str().unwrap(),
            "--keep-last",
            "1",
            "--dry-run",
        ])
        .expect(0);
    assert!(
        dry.stdout.contains("held: possible ransomware"),
        "{}",
        dry.stdout
    );
    assert_eq!(s.mail().len(), 1, "no second alert for the same night");

    // Acknowledged: the hold goes, the alert is resolved, retention resumes.
    let ack = s
        .vouch(&[
            "acknowledge",
            &run.to_string(),
            "--note",
            "restored from the snapshot before; NAS rebuilt",
        ])
        .expect(0);
    assert!(ack.stdout.contains("1 hold(s) released"), "{}", ack.stdout);
    let mail = s.mail();
    assert_eq!(mail.len(), 2, "{mail:#?}");
    assert!(
        mail.iter()
            .any(|m| m.contains("resolved: possible ransomware in backup staff")),
        "{mail:#?}"
    );
    s.night();
    assert!(
        s.journal()
            .contains("staff: kept 3 of 7 snapshot(s), removed 4"),
        "{}",
        s.journal()
    );
    assert!(
        s.journal()
            .contains("acknowledged: restored from the snapshot before"),
        "{}",
        s.journal()
    );
}
