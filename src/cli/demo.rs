//! `vouch demo`: the main job on embedded defaults. It makes a small school-like file share,
//! a local repository and a passphrase in one folder, backs up, changes a few files, backs up
//! again, restores into a fresh folder, compares every restored byte with the source, and
//! re-reads the whole repository — printing what it did at each step.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::units::size;
use crate::{
    BackupOptions, CheckOptions, InitOptions, ReadData, RepoUrl, Repository, RestoreOptions,
    S3Options, Secret, Store,
};

const MARKER: &str = ".vouch-demo";

/// A small deterministic generator (xorshift), so that every demo makes the same share.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PUPILS: &[&str] = &[
    "Amelia Hughes",
    "Oliver Patel",
    "Zoë Brennan",
    "Siobhán Kelly",
    "Mohammed Khan",
    "Isla Roberts",
    "Noah Williams",
    "Chloé Martin",
    "Jack Evans",
    "Aisha Begum",
    "Harry Thompson",
    "Maja Nowak",
];
const WORDS: &[&str] = &[
    "phonics",
    "fractions",
    "assessment",
    "attendance",
    "safeguarding",
    "reading",
    "curriculum",
    "homework",
    "science",
    "history",
    "geography",
    "maths",
    "writing",
    "progress",
    "target",
    "intervention",
    "SEN",
    "parents",
    "evening",
    "trip",
    "assembly",
    "governors",
    "budget",
];

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut s: Vec<&str> = (0..words).map(|_| rng.pick(WORDS)).collect();
    s[0] = "The";
    format!("{}.\n", s.join(" "))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// About 25 MB of staff documents, an MIS database export, pupils' work and photos.
fn make_share(root: &Path) -> Result<usize> {
    let mut rng = Rng(0x5eed_2026);
    let mut files = 0;
    for teacher in ["Mrs Ahmed", "Mr Clarke", "Ms O'Neill"] {
        for week in 1..=12 {
            let text: String = (0..40).map(|_| sentence(&mut rng, 12)).collect();
            write(
                &root.join(format!("Staff/{teacher}/Lesson plans/Week {week:02}.txt")),
                text.as_bytes(),
            )?;
            files += 1;
        }
        let mut csv = String::from("pupil,reading,writing,maths\n");
        for p in PUPILS {
            csv += &format!(
                "{p},{},{},{}\n",
                rng.below(40) + 60,
                rng.below(40) + 60,
                rng.below(40) + 60
            );
        }
        write(
            &root.join(format!("Staff/{teacher}/Reports/Autumn assessment.csv")),
            csv.as_bytes(),
        )?;
        files += 1;
    }
    let mut sql = String::from(
        "-- MIS export\nCREATE TABLE pupils (id INT, name TEXT, year INT, attendance REAL);\n",
    );
    for i in 0..120_000 {
        sql += &format!(
            "INSERT INTO pupils VALUES ({i},'{}',{},{}.{});\n",
            rng.pick(PUPILS),
            rng.below(7) + 1,
            rng.below(10) + 90,
            rng.below(10)
        );
    }
    write(
        &root.join("Admin/MIS-Export/mis-nightly.sql"),
        sql.as_bytes(),
    )?;
    write(
        &root.join("Admin/Finance/budget 2026-27.csv"),
        b"line,amount\nstaffing,812000\nresources,41000\n",
    )?;
    files += 2;
    for (year, pupil) in PUPILS.iter().enumerate() {
        let text: String = (0..20).map(|_| sentence(&mut rng, 10)).collect();
        write(
            &root.join(format!("Pupils/Year {}/{pupil}/My story.txt", year % 6 + 1)),
            text.as_bytes(),
        )?;
        files += 1;
    }
    for i in 1..=12 {
        let n = 400_000 + rng.below(800_000) as usize;
        let mut jpg = vec![0xff, 0xd8, 0xff, 0xe1];
        jpg.extend(rng.bytes(n));
        write(
            &root.join(format!("Shared/Photos/Sports Day 2026/IMG_{i:04}.jpg")),
            &jpg,
        )?;
        files += 1;
    }
    write(&root.join("Shared/Curriculum/empty folder/.keep"), b"")?;
    std::os::unix::fs::symlink("../Staff", root.join("Shared/Staff shortcut"))?;
    files += 1;
    Ok(files)
}

/// A school day: a report edited, the MIS export rewritten, a photo added, a file deleted.
fn change_share(root: &Path) -> Result<()> {
    let mut rng = Rng(0xd4_7e);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("Staff/Mr Clarke/Reports/Autumn assessment.csv"))?;
    writeln!(f, "New Pupil,71,68,80")?;
    let sql_path = root.join("Admin/MIS-Export/mis-nightly.sql");
    let mut sql = std::fs::read_to_string(&sql_path)?;
    sql = sql.replacen(
        "INSERT INTO pupils VALUES (17,",
        "INSERT INTO pupils VALUES (17017,",
        1,
    );
    sql += "INSERT INTO pupils VALUES (120000,'New Pupil',3,100.0);\n";
    std::fs::write(&sql_path, sql)?;
    let mut jpg = vec![0xff, 0xd8, 0xff, 0xe1];
    jpg.extend(rng.bytes(600_000));
    write(
        &root.join("Shared/Photos/Sports Day 2026/IMG_0013.jpg"),
        &jpg,
    )?;
    std::fs::remove_file(root.join("Staff/Ms O'Neill/Lesson plans/Week 12.txt"))?;
    Ok(())
}

/// Compare two trees file by file (bytes, symlink targets, directories); returns files compared.
fn compare_trees(a: &Path, b: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(a)? {
        let entry = entry?;
        let (pa, pb) = (entry.path(), b.join(entry.file_name()));
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            if std::fs::read_link(&pa)? != std::fs::read_link(&pb)? {
                bail!("symlink {} differs", pb.display());
            }
        } else if ft.is_dir() {
            n += compare_trees(&pa, &pb)?;
        } else {
            if std::fs::read(&pa)?
                != std::fs::read(&pb).with_context(|| format!("{} is missing", pb.display()))?
            {
                bail!("{} differs from the source", pb.display());
            }
            n += 1;
        }
    }
    Ok(n)
}

fn prepare(dir: &Path) -> Result<PathBuf> {
    if dir.exists() && !dir.join(MARKER).exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not a vouch demo folder; choose another with --dir",
            dir.display()
        );
    }
    for sub in [
        "data",
        "repository",
        "restore",
        "etc",
        "state",
        "scratch",
        "mail",
        "evidence",
    ] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), b"made by `vouch demo`\n")?;
    Ok(std::path::absolute(dir)?)
}

pub async fn run(dir: &Path) -> Result<i32> {
    let dir = prepare(dir)?;
    let data = dir.join("data");
    let repo_dir = dir.join("repository");
    outln!("vouch demo in {}\n", dir.display());

    let files = make_share(&data)?;
    outln!(
        "1. made a sample school share: {} ({files} files: lesson plans, an MIS export, pupils' work, photos)",
        data.display()
    );

    let pass_file = dir.join("passphrase");
    let pass = hex::encode(crate::repo::crypto::random_array::<16>());
    std::fs::write(&pass_file, format!("{pass}\n"))?;
    std::fs::set_permissions(&pass_file, std::fs::Permissions::from_mode(0o600))?;
    let password = Secret::new(pass);
    let store = Store::create(
        &RepoUrl::Local(repo_dir.clone()),
        &S3Options::default(),
        true,
    )?;
    let repo = Arc::new(Repository::init(store, &password, &InitOptions::default()).await?);
    outln!(
        "2. created an encrypted repository: {} (passphrase in {})",
        repo_dir.display(),
        pass_file.display()
    );

    let opts = BackupOptions {
        paths: vec![data.clone()],
        label: Some("Demo school share".into()),
        tags: vec!["demo".into()],
        excludes: vec!["Thumbs.db".into(), "~$*".into()],
        ..Default::default()
    };
    let first = crate::backup(repo.clone(), opts.clone(), Default::default()).await?;
    let s = &first.snapshot.summary;
    outln!(
        "3. first backup: snapshot {}: {} files, {} read, {} stored after dedup, compression and encryption",
        first.snapshot_id.short(),
        s.total_files,
        size(s.bytes_read),
        size(s.bytes_added_stored)
    );

    change_share(&data)?;
    let second = crate::backup(repo.clone(), opts, Default::default()).await?;
    let s = &second.snapshot.summary;
    outln!(
        "4. a school day later (a report edited, the MIS export rewritten, a photo added, a plan deleted):\n   snapshot {}: {} new, {} changed, {} unchanged (not re-read); {} read, {} added",
        second.snapshot_id.short(),
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        size(s.bytes_read),
        size(s.bytes_added_stored)
    );

    let target = dir.join("restore");
    let report = crate::restore(
        repo.clone(),
        &second.snapshot,
        &RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    if !report.is_clean() {
        bail!(
            "the restore found damage: {:?} {:?}",
            report.mismatches,
            report.damaged
        );
    }
    outln!(
        "5. restored snapshot {} into {}: {} files, each checked against its blake3 hash from backup time",
        second.snapshot_id.short(),
        target.display(),
        report.files
    );
    let restored_root = target.join(data.strip_prefix("/").unwrap_or(&data));
    let compared = compare_trees(&data, &restored_root)?;
    outln!("6. compared the restore with the live share byte by byte: {compared} files identical");

    let check = crate::check(
        repo.clone(),
        &CheckOptions {
            read_data: ReadData::All,
            seed: None,
            threads: None,
        },
    )
    .await?;
    if check.is_damaged() {
        bail!("the check found damage: {:?}", check.findings);
    }
    outln!(
        "7. re-read the whole repository: {} packs ({}), {} blobs verified, no damage",
        check.packs_read,
        size(check.bytes_read),
        check.blobs_verified
    );
    drop(repo);
    let config_file = service_steps(&dir, &data, &repo_dir, &pass_file).await?;

    let url = repo_dir.display();
    outln!("\nTry it yourself:");
    outln!(
        "  export VOUCH_PASSWORD_FILE={} VOUCH_CONFIG={}",
        pass_file.display(),
        config_file.display()
    );
    outln!("  vouch status");
    outln!("  vouch journal list && vouch journal verify");
    outln!("  vouch snapshots --repo {url}");
    outln!("  vouch ls --repo {url} latest {}/Admin", data.display());
    outln!("  vouch drill monthly-sample");
    Ok(super::EXIT_OK)
}

/// The service part: a vouch.toml with a nightly schedule and a monthly test restore, run on a
/// clock that the demo moves through two nights, with the share unmounted on the second.
async fn service_steps(
    dir: &Path,
    data: &Path,
    repo_dir: &Path,
    pass_file: &Path,
) -> Result<PathBuf> {
    use crate::journal::Trigger;
    use crate::schedule::daemon::{due, jobs};
    let etc = dir.join("etc");
    std::fs::create_dir_all(etc.join("schedules"))?;
    std::fs::create_dir_all(etc.join("restore-tests"))?;
    let config_file = etc.join("vouch.toml");
    std::fs::write(
        &config_file,
        format!(
            "school = \"Demo Primary School\"\nstate_dir = \"{state}\"\nscratch_dir = \"{scratch}\"\ntime_zone = \"Europe/London\"\n\n\
             [repositories.demo]\nurl = \"{repo}\"\npassword_file = \"{pass}\"\n\n\
             [mail]\nfolder = \"{mail}\"\n\n[alerts]\nto = [\"network.manager@demo-school.example\"]\n",
            state = dir.join("state").display(),
            scratch = dir.join("scratch").display(),
            repo = repo_dir.display(),
            pass = pass_file.display(),
            mail = dir.join("mail").display(),
        ),
    )?;
    std::fs::write(
        etc.join("schedules/staff-nightly.toml"),
        format!(
            "repository = \"demo\"\nlabel = \"Demo school share\"\npaths = [\"{}\"]\nexclude = [\"Thumbs.db\", \"~$*\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\n",
            data.display()
        ),
    )?;
    std::fs::write(
        etc.join("restore-tests/monthly-sample.toml"),
        "repository = \"demo\"\nschedule = \"staff-nightly\"\ncron = \"0 3 1 * *\"\n\n[select]\npercent = 20\nmust_include = [\"Admin/MIS-Export/\"]\n\n[verify]\ncompare_with_source = true\nrestore_time_objective = \"8h\"\n",
    )?;
    let config = crate::config::Config::load(&config_file)?;
    outln!(
        "\n8. wrote a service configuration: {} (a nightly schedule and a monthly test restore; mail to {})",
        config_file.display(),
        dir.join("mail").display()
    );

    // Yesterday evening, then through the night, a minute at a time as the daemon would.
    let tz = config.time_zone.clone();
    // Two nights that have passed: the journal's times stay in the past.
    let now_local = crate::clock::Clock::now(&crate::clock::SystemClock).to_zoned(tz.clone());
    let today = if now_local.hour() < 3 {
        now_local.date().yesterday()?
    } else {
        now_local.date()
    };
    let yesterday = today.yesterday()?;
    let evening = yesterday
        .yesterday()?
        .at(22, 0, 0, 0)
        .to_zoned(tz.clone())?
        .timestamp();
    let clock = crate::clock::ManualClock::new(evening);
    let service = crate::schedule::service::Service::new(config, Arc::new(clock.clone()))?;
    let all = jobs(&service.config);
    // Move the clock a minute at a time until something is due (or `until`), and stop there.
    let fire = |until: jiff::Timestamp| -> Vec<String> {
        let mut fired = Vec::new();
        while fired.is_empty() && crate::clock::Clock::now(&clock) < until {
            clock.advance(jiff::SignedDuration::from_mins(1));
            let now = crate::clock::Clock::now(&clock);
            for j in due(
                &all,
                |n| service.with_journal(|jr| jr.considered(n).ok().flatten()),
                &tz,
                now,
            ) {
                service
                    .with_journal(|jr| jr.set_considered(&j.name, now))
                    .ok();
                fired.push(j.name);
            }
        }
        fired
    };
    let night1 = yesterday.at(2, 0, 0, 0).to_zoned(tz.clone())?.timestamp();
    for job in fire(night1) {
        let o = service
            .run_job(&job, Trigger::Schedule, "vouch daemon (demo)")
            .await?;
        let at = o.record.started.to_zoned(tz.clone()).strftime("%H:%M %Z");
        outln!(
            "9. at {at} the schedule {job} fired: run #{} {}: {}",
            o.seq,
            o.record.outcome,
            o.record.summary
        );
    }

    // The next night the share is not mounted.
    let away = dir.join("data-unmounted");
    std::fs::rename(data, &away)?;
    let night2 = today.at(2, 0, 0, 0).to_zoned(tz.clone())?.timestamp();
    for job in fire(night2) {
        let o = service
            .run_job(&job, Trigger::Schedule, "vouch daemon (demo)")
            .await?;
        outln!(
            "10. the next night, with the share unmounted: run #{} {}: {}",
            o.seq,
            o.record.outcome,
            o.record.error.unwrap_or_default()
        );
    }
    // As the daemon does, from a task of its own: mail never holds up a job.
    service.flush_outbox().await?;
    let mail_dir = dir.join("mail");
    let subject = |path: &Path| -> String {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .replace("\r\n ", " ")
            .replace("\n ", " ")
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            .unwrap_or_default()
    };
    let newest = || {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&mail_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v.pop()
    };
    if let Some(alert) = newest() {
        outln!(
            "    an alert email landed in the mail folder: {}\n      Subject: {}",
            alert.display(),
            subject(&alert)
        );
    }

    // The network manager remounts the share and runs the job by hand.
    std::fs::rename(&away, data)?;
    let o = service
        .run_job("staff-nightly", Trigger::Manual, "network manager (demo)")
        .await?;
    service.flush_outbox().await?;
    outln!(
        "11. share remounted, `vouch run staff-nightly`: run #{} {}",
        o.seq,
        o.record.outcome
    );
    if let Some(resolved) = newest() {
        outln!("    and one more email: {}", subject(&resolved));
    }
    let o = service
        .run_job("monthly-sample", Trigger::Manual, "network manager (demo)")
        .await?;
    outln!(
        "12. `vouch run monthly-sample`, the monthly test restore: run #{} {}: {}",
        o.seq,
        o.record.outcome,
        o.record.summary
    );

    // What `vouch status` and the journal show.
    let runs = service.with_journal(|j| j.runs())?;
    let verify = service.with_journal(|j| j.verify())?;
    let open = service.with_journal(|j| {
        crate::notify::Monitor::new(j.connection(), &service.config)
            .and_then(|m| m.incidents(false))
    })?;
    outln!(
        "13. the journal: {} runs, chain {} ({} rows, head {}), mirrored into the repository; open incidents: {}",
        runs.len(),
        if verify.broken.is_empty() {
            "intact"
        } else {
            "BROKEN"
        },
        verify.rows,
        &verify.head[..16],
        open.len()
    );
    drop(service);
    outln!("14. `vouch status`:");
    super::service::status(Some(&config_file), false).await?;
    evidence_step(dir, &config_file, yesterday.yesterday()?, today).await?;
    Ok(config_file)
}

/// The auditor's end of it: a signing key, the signed evidence pack for the demo's two nights,
/// and the pack checked as an auditor would.
async fn evidence_step(
    dir: &Path,
    config_file: &Path,
    from: jiff::civil::Date,
    to: jiff::civil::Date,
) -> Result<()> {
    use crate::evidence::{Period, send::SigningKey, sign};
    let keys = dir.join("etc/keys");
    let (secret, public, key_id) = sign::keygen(&keys, None, "vouch demo evidence key")?;
    let period = Period { from, to };
    let config = crate::config::Config::load(config_file)?;
    let service =
        crate::schedule::service::Service::new(config, Arc::new(crate::clock::SystemClock))?;
    let pack = dir.join("evidence");
    let key = SigningKey {
        path: Some(secret.clone()),
        password_file: None,
    };
    let e = service.build_evidence(period, &pack, &key).await?;
    drop(service);
    outln!(
        "15. made an evidence signing key (key id {key_id}; {} stays on the NAS, {} goes to the auditor)\n    and the signed evidence pack for {}: {}",
        secret.display(),
        public.display(),
        e.inputs.period.name(),
        pack.display()
    );
    outln!("    the pack says: {}", e.derived.verdict);
    if e.derived
        .clauses
        .iter()
        .any(|c| c.id == "off-site" && !c.met)
    {
        outln!(
            "    (the demo's repository is a local folder, so the pack does not claim an off-site copy; with s3:// it would)"
        );
    }
    let pk = sign::load_public_key(&public)?;
    let outcome = crate::evidence::verify_pack(&pack, &pk, None).await;
    if !outcome.ok() {
        bail!(
            "the demo's own evidence pack did not verify: {:?}",
            outcome.checks
        );
    }
    outln!(
        "16. verified it as an auditor would: {} checks passed (signatures, report against data, journal chain, figures recomputed)",
        outcome.checks.len()
    );
    outln!(
        "    vouch evidence verify {} --pubkey {}",
        pack.display(),
        public.display()
    );
    outln!(
        "    minisign -Vm {}/evidence.html -p {}",
        pack.display(),
        public.display()
    );
    Ok(())
}
