//! The signed evidence pack: a simulated school year on a manual clock, the report it yields,
//! `evidence verify` against every kind of change, `minisign -V`, the repository's records
//! catching a re-signed pack that leaves out a failed drill, headless Chromium printing the
//! report, the email through a real SMTP server, and the proof of one test restore.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use vouch::records::{Outcome, Record, Trigger};
use vouch::service::Service;
use vouch::{Clock, ManualClock};

use crate::support::{Env, Run, Smtp, noise, text, write};

const SCHOOL: &str = "Preston Primary Academy";
const ACTION: &str = "SIMS exports moved to the admin share in January; plan corrected";
const KEY_PASSPHRASE: &str = "governors only";

/// A school's year, 1 September 2025 to 31 August 2026, run once for all the tests here.
struct Year {
    env: Env,
    dir: PathBuf,
    /// The repository's URL (a bucket on the S3 server).
    repo: String,
    /// The pack the daemon's evidence job built and emailed on 1 September 2026.
    pack: PathBuf,
    /// The journal row of the failed test restore.
    failed_drill: vouch::records::RowId,
}

impl Year {
    fn config(&self) -> PathBuf {
        self.dir.join("vouch.toml")
    }

    fn vouch(&self, args: &[&str]) -> Run {
        Run::of(
            with_s3(&mut self.env.vouch())
                .env("VOUCH_CONFIG", self.config())
                .args(args)
                .output()
                .unwrap(),
        )
    }

    fn pubkey(&self) -> PathBuf {
        self.dir.join("keys/evidence.pub")
    }

    /// A copy of the pack for one test to change.
    fn copy_pack(&self, to: &Path) -> PathBuf {
        std::fs::create_dir_all(to).unwrap();
        for f in crate::support::files_in(&self.pack) {
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
        to.to_path_buf()
    }

    fn verify(&self, pack: &Path, extra: &[&str]) -> Run {
        let pubkey = self.pubkey();
        let mut args = vec![
            "evidence",
            "verify",
            pack.to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Run::of(with_s3(&mut self.env.vouch()).args(&args).output().unwrap())
    }
}

/// vouch.toml, a weekly schedule with an RPO of eight days, a monthly test restore of the whole
/// share, one plan that fails (it must include a folder the share does not have), and an
/// evidence key protected by a passphrase. The repository is a bucket on the S3 server when
/// `bucket` is given (off site), else a local folder (which the report does not count as off
/// site).
fn school(env: &Env, smtp: Option<u16>, bucket: Option<&str>) -> PathBuf {
    let dir = env.path("etc");
    std::fs::create_dir_all(dir.join("schedules")).unwrap();
    std::fs::create_dir_all(dir.join("restore-tests")).unwrap();
    std::fs::copy(&env.pass_file, dir.join("offsite.pass")).unwrap();
    std::fs::write(dir.join("evidence-key.pass"), format!("{KEY_PASSPHRASE}\n")).unwrap();
    env.run(&[
        "keygen",
        "--out",
        dir.join("keys").to_str().unwrap(),
        "--key-password-file",
        dir.join("evidence-key.pass").to_str().unwrap(),
    ])
    .expect(0);
    let repository = match bucket {
        Some(b) => {
            let s3 = crate::support::s3();
            s3.create_bucket(b);
            std::fs::write(dir.join("s3.secret"), "testing\n").unwrap();
            format!(
                "url = \"s3://{b}/school\"\ns3_endpoint = \"{}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"s3.secret\"\n",
                s3.endpoint
            )
        }
        None => format!("url = \"{}\"\n", env.path("repo").display()),
    };
    let mail = match smtp {
        Some(port) => format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"vouch <vouch@school.example>\"\n"
        ),
        None => String::new(),
    };
    std::fs::write(
        dir.join("vouch.toml"),
        format!(
            "school = \"{SCHOOL}\"\nstate_dir = \"{}\"\nscratch_dir = \"{}\"\n\
             [repositories.offsite]\n{repository}password_file = \"offsite.pass\"\n{mail}\
             [alerts]\nto = [\"network.manager@school.example\"]\n\
             [evidence]\nto = [\"clerk.to.governors@school.example\", \"auditor@audit.example\"]\n\
             signing_key = \"keys/evidence.key\"\nsigning_key_password_file = \"evidence-key.pass\"\n",
            env.path("state").display(),
            env.path("scratch").display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("schedules/staff-weekly.toml"),
        format!(
            "repository = \"offsite\"\nlabel = \"Staff share\"\npaths = [\"{}\"]\ncron = \"0 1 * * 1\"\nrpo = \"8d\"\n",
            env.path("share").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("restore-tests/monthly.toml"),
        "repository = \"offsite\"\nschedule = \"staff-weekly\"\n[select]\nall = true\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("restore-tests/sims-check.toml"),
        "repository = \"offsite\"\nschedule = \"staff-weekly\"\n[select]\nmust_include = [\"SIMS/\"]\n",
    )
    .unwrap();
    write(&env.path("share/report.docx"), &noise(150_000, 1));
    write(&env.path("share/minutes/autumn.txt"), &text(40_000, 2));
    let url = match bucket {
        Some(b) => format!("s3://{b}/school"),
        None => env.path("repo").display().to_string(),
    };
    let mut init = env.vouch();
    if bucket.is_some() {
        with_s3(&mut init);
    }
    Run::of(init.args(["init", "--repo", &url]).output().unwrap()).expect(0);
    dir
}

/// The binary with the S3 server's address and credentials in its environment.
fn with_s3(cmd: &mut Command) -> &mut Command {
    crate::support::s3().apply(cmd);
    cmd
}

/// The year: a backup every Monday except for three weeks in November (the NAS was off), a
/// passing test restore every four weeks, and one failing test restore in January that the
/// network manager annotated. On 1 September 2026 the daemon's evidence job runs.
fn year() -> &'static Year {
    static YEAR: OnceLock<Year> = OnceLock::new();
    YEAR.get_or_init(|| {
        vouch::service::set_worker_program(env!("CARGO_BIN_EXE_vouch").into());
        let env = Env::new();
        let bucket = crate::support::bucket_name("evidence_year");
        let dir = school(&env, None, Some(&bucket));
        let clock = ManualClock::new("2025-09-01T01:00:00Z".parse::<jiff::Timestamp>().unwrap());
        let config = vouch::service::Config::load(&dir.join("vouch.toml")).unwrap();
        let service = Service::new(config, Arc::new(clock.clone())).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let failed_drill = rt.block_on(async {
            let mut failed_drill = None;
            for week in 0u64..52 {
                if !(10..13).contains(&week) {
                    write(
                        &env.path(&format!("share/week-{week:02}.txt")),
                        &text(8_000, week),
                    );
                    let o = service
                        .run_job("staff-weekly", Trigger::Schedule, "vouch daemon")
                        .await
                        .unwrap();
                    assert_eq!(o.record.outcome, Outcome::Success, "{:?}", o.record.error);
                }
                if week % 4 == 1 {
                    let o = service
                        .run_job("monthly", Trigger::Schedule, "vouch daemon")
                        .await
                        .unwrap();
                    assert_eq!(o.record.outcome, Outcome::Success, "{:?}", o.record.error);
                }
                if week == 20 {
                    let o = service
                        .run_job("sims-check", Trigger::Manual, "j.patel")
                        .await
                        .unwrap();
                    assert!(!o.record.outcome.is_good(), "{:?}", o.record);
                    clock.advance(jiff::SignedDuration::from_hours(24 * 2));
                    service.annotate(o.seq, ACTION, "j.patel").await.unwrap();
                    failed_drill = Some(o.seq);
                    clock.advance(jiff::SignedDuration::from_hours(24 * -2));
                }
                clock.advance(jiff::SignedDuration::from_hours(168));
            }
            // The daemon's own reckoning: on 1 September at 08:00 (school time) the evidence
            // job, and only it, comes due.
            use vouch::service::{due, jobs};
            let all = jobs(&service.config);
            let tz = service.config.time_zone.clone();
            let considered =
                |_: &str| Some("2026-08-31T12:00:00Z".parse::<jiff::Timestamp>().unwrap());
            let before = due(
                &all,
                considered,
                &tz,
                "2026-09-01T06:59:00Z".parse::<jiff::Timestamp>().unwrap(),
            );
            assert!(
                before.is_empty(),
                "{:?}",
                before.iter().map(|j| &j.name).collect::<Vec<_>>()
            );
            clock.set("2026-09-01T08:00:00Z".parse::<jiff::Timestamp>().unwrap());
            let fired = due(&all, considered, &tz, clock.now());
            assert_eq!(
                fired.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
                ["evidence"]
            );
            let o = service
                .run_job(&fired[0].name, Trigger::Schedule, "vouch daemon")
                .await
                .unwrap();
            assert_eq!(o.record.kind, vouch::records::RunKind::Evidence);
            assert_eq!(o.record.outcome, Outcome::Success, "{:?}", o.record.error);
            // The daemon delivers what the jobs queued, apart from them.
            service.flush_outbox().await.unwrap();
            failed_drill.unwrap()
        });
        drop(service);
        Year {
            pack: env.path("state/evidence/2025-09-01_2026-08-31"),
            repo: format!("s3://{bucket}/school"),
            env,
            dir,
            failed_drill,
        }
    })
}

fn json(pack: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(pack.join("evidence.json")).unwrap()).unwrap()
}

/// Without whitespace, to find a sentence however the text was wrapped and broken.
fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

#[test]
fn a_year_with_a_failed_drill_and_a_stale_period_is_reported_and_verifies() {
    let y = year();
    let e = json(&y.pack);
    let d = &e["derived"];
    let incidents = d["incidents"].as_array().unwrap();

    let stale: Vec<&Value> = incidents.iter().filter(|i| i["kind"] == "stale").collect();
    assert_eq!(stale.len(), 1, "the three missed weeks: {incidents:#?}");
    let detail = stale[0]["detail"].as_str().unwrap();
    assert!(detail.contains("against an RPO of 192 hours"), "{detail}");
    let schedule = &d["schedules"][0];
    assert_eq!(schedule["name"], "staff-weekly");
    assert_eq!(schedule["within_rpo"], false);
    assert!(
        schedule["longest_gap_hours"].as_f64().unwrap() >= 4.0 * 7.0 * 24.0,
        "{schedule}"
    );
    assert_eq!(schedule["runs"], 49);
    assert_eq!(schedule["good"], 49);

    let failed: Vec<&Value> = incidents
        .iter()
        .filter(|i| i["kind"] == "drill-failed")
        .collect();
    assert_eq!(failed.len(), 1, "{incidents:#?}");
    assert_eq!(failed[0]["job"], "sims-check");
    assert_eq!(failed[0]["run"], y.failed_drill.0);
    let actions = failed[0]["actions"].to_string();
    assert!(
        actions.contains(ACTION) && actions.contains("j.patel"),
        "{actions}"
    );
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("SIMS/ matched nothing"),
        "{}",
        failed[0]
    );
    assert_eq!(d["drills_passed"], 13);
    assert_eq!(d["drills"].as_array().unwrap().len(), 14);
    assert_eq!(d["met"], true, "{}", d["verdict"]);

    let html = std::fs::read_to_string(y.pack.join("evidence.html")).unwrap();
    let verdict = d["verdict"].as_str().unwrap();
    assert!(verdict.starts_with(SCHOOL), "{verdict}");
    assert!(
        verdict.contains("1 failed, each with its recorded action"),
        "{verdict}"
    );
    assert!(
        verdict.contains("older than their RPO 1 time(s)"),
        "{verdict}"
    );
    for shown in [
        SCHOOL,
        "the school year 2025–26",
        ACTION,
        "sims-check",
        "against an RPO of 192 hours",
        e["signing_key_id"].as_str().unwrap(),
    ] {
        assert!(html.contains(shown), "the report shows {shown:?}");
    }

    let ok = y.verify(&y.pack, &[]).expect(0);
    assert!(ok.stdout.contains("VERIFIED"), "{}", ok.stdout);
    assert!(ok.stdout.contains(verdict), "{}", ok.stdout);
    let ok = y.verify(&y.pack, &["--repo", &y.repo]).expect(0);
    assert!(
        ok.stdout
            .contains("ok   nothing left out of the repository's records"),
        "{}",
        ok.stdout
    );

    // The daemon's job sent it and journalled it.
    let mail: Vec<String> = crate::support::files_in(&y.env.path("state/mail"))
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .filter(|m| m.contains("backup and restore evidence"))
        .collect();
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].contains("filename=\"evidence.json\""),
        "{}",
        mail[0]
    );
    let list = y.vouch(&["journal", "list"]).expect(0);
    assert!(
        list.stdout.contains("evidence") && list.stdout.contains("requirements met"),
        "{}",
        list.stdout
    );
}

#[test]
fn the_standard_minisign_tool_accepts_the_signatures() {
    let y = year();
    for file in ["evidence.html", "evidence.json"] {
        let out = Command::new("minisign")
            .arg("-Vm")
            .arg(y.pack.join(file))
            .arg("-p")
            .arg(y.pubkey())
            .output()
            .expect("minisign must be installed (scripts/test installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("Signature and comment signature verified"),
            "{stdout}"
        );
        assert!(
            stdout.contains(SCHOOL),
            "the trusted comment names the school: {stdout}"
        );
    }
}

#[test]
fn changing_the_pack_fails_verification_and_says_which_part() {
    let y = year();
    let env = Env::new();

    // One byte of the report.
    let pack = y.copy_pack(&env.path("html"));
    let mut html = std::fs::read(pack.join("evidence.html")).unwrap();
    let at = html.len() / 2;
    html[at] ^= 0x20;
    std::fs::write(pack.join("evidence.html"), html).unwrap();
    let run = y.verify(&pack, &[]).expect(4);
    assert!(
        run.stdout.contains(
            "FAIL signature of evidence.html: evidence.html: the signature does not match the file: it was changed after it was signed"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("ok   signature of evidence.json"));
    assert!(run.stdout.contains("NOT VERIFIED"));

    // One byte of the document.
    let pack = y.copy_pack(&env.path("json"));
    let mut bytes = std::fs::read(pack.join("evidence.json")).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let at = text.rfind("\"drills_passed\": 13").unwrap() + "\"drills_passed\": 1".len();
    bytes[at] = b'4';
    std::fs::write(pack.join("evidence.json"), bytes).unwrap();
    let run = y.verify(&pack, &[]).expect(4);
    assert!(
        run.stdout.contains(
            "FAIL signature of evidence.json: evidence.json: the signature does not match the file: it was changed after it was signed"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("ok   signature of evidence.html"));

    // The failed test restore taken out of the document.
    let pack = y.copy_pack(&env.path("drill"));
    let mut e = json(&pack);
    let drills = e["derived"]["drills"].as_array_mut().unwrap();
    let before = drills.len();
    drills.retain(|d| d["plan"] != "sims-check");
    assert_eq!(drills.len(), before - 1);
    std::fs::write(
        pack.join("evidence.json"),
        serde_json::to_vec_pretty(&e).unwrap(),
    )
    .unwrap();
    let run = y.verify(&pack, &[]).expect(4);
    for says in [
        "FAIL signature of evidence.json",
        "FAIL evidence.html and evidence.json agree",
        "FAIL figures follow from the journal rows: the test restores in evidence.json do not follow from the journal rows it carries",
    ] {
        assert!(run.stdout.contains(says), "{says}\n{}", run.stdout);
    }

    // A pack signed with a key the auditor was not given.
    let other = env.path("other-key");
    env.run(&["keygen", "--out", other.to_str().unwrap(), "--unencrypted"])
        .expect(0);
    let run = env
        .run(&[
            "evidence",
            "verify",
            y.pack.to_str().unwrap(),
            "--pubkey",
            other.join("evidence.pub").to_str().unwrap(),
        ])
        .expect(4);
    assert!(
        run.stdout.contains(
            "FAIL signature of evidence.html: evidence.html: signed with another key (key id"
        ),
        "{}",
        run.stdout
    );
}

/// What a school with its own signing key could do to hide a failed test restore: take out
/// the drill, its journal row and the note on it, and sign again.
#[test]
fn a_re_signed_pack_that_leaves_out_the_failed_drill_is_caught_by_the_repository() {
    let y = year();
    let env = Env::new();
    let secret = vouch::audit::load_secret_key(
        &y.dir.join("keys/evidence.key"),
        Some(KEY_PASSPHRASE.into()),
    )
    .unwrap();
    let public = vouch::audit::public_of(&secret).unwrap();
    let original: vouch::audit::Evidence =
        serde_json::from_slice(&std::fs::read(y.pack.join("evidence.json")).unwrap()).unwrap();
    let without = |rechain: bool| {
        let mut inputs = original.inputs.clone();
        let failed = y.failed_drill;
        inputs.journal.rows.retain(|r| match &r.record {
            Record::Annotation(a) => a.run != failed,
            Record::Run(_) => r.seq != failed,
        });
        inputs.drills.retain(|d| d.plan != "sims-check");
        if rechain {
            let mut prev = inputs.journal.rows[0].prev_hash.clone();
            let first = inputs.journal.rows[0].seq;
            for (i, row) in inputs.journal.rows.iter_mut().enumerate() {
                row.seq = vouch::records::RowId(first.0 + i as i64);
                row.prev_hash = prev;
                row.hash = vouch::records::store_chain_hash(
                    &row.prev_hash,
                    &serde_json::to_string(&row.record).unwrap(),
                );
                prev = row.hash.clone();
            }
        }
        vouch::audit::Evidence::new(inputs, original.generated, original.signing_key_id.clone())
    };

    // Rows simply taken out leave a gap in the chain.
    let gap = env.path("gap");
    vouch::audit::write_pack(&gap, &without(false), &secret, &public).unwrap();
    let run = y.verify(&gap, &[]).expect(4);
    assert!(
        run.stdout.contains("FAIL journal chain in the pack")
            && run.stdout.contains("missing from the pack"),
        "{}",
        run.stdout
    );

    // Re-chained, the pack is consistent in itself; only the repository's records show the
    // omission.
    let forged = env.path("forged");
    let e = without(true);
    assert!(e.derived.incidents.iter().all(|i| i.kind != "drill-failed"));
    vouch::audit::write_pack(&forged, &e, &secret, &public).unwrap();
    y.verify(&forged, &[]).expect(0);
    let run = y.verify(&forged, &["--repo", &y.repo]).expect(4);
    assert!(
        run.stdout.contains(
            "FAIL nothing left out of the repository's records: the repository holds a test restore the pack leaves out: sims-check on"
        ) && run.stdout.contains("(FAILED)"),
        "{}",
        run.stdout
    );
    // A script reading --json gets what broke the check and the objects it names.
    let run = y.verify(&forged, &["--repo", &y.repo, "--json"]).expect(4);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    let failed: Vec<&Value> = out["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{}", run.stdout);
    let broken = &failed[0]["broken"];
    assert_eq!(broken["kind"], "drill-left-out", "{}", run.stdout);
    assert_eq!(broken["plan"], "sims-check");
    assert_eq!(broken["passed"], false);
    let gap_run = y.verify(&gap, &["--json"]).expect(4);
    let out: Value = serde_json::from_str(&gap_run.stdout).unwrap();
    let chain = out["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "journal chain in the pack")
        .unwrap();
    assert_eq!(
        chain["broken"]["kind"], "rows-missing",
        "{}",
        gap_run.stdout
    );
    assert_eq!(
        chain["broken"]["after"].as_i64().unwrap() + 1,
        y.failed_drill.0
    );
}

#[test]
fn the_report_prints_to_pdf_in_headless_chromium_with_the_school_and_the_verdict() {
    let y = year();
    let env = Env::new();
    let pdf = env.path("evidence.pdf");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-pdf-header-footer",
        ])
        .arg(format!(
            "--user-data-dir={}",
            env.path("chromium").display()
        ))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", y.pack.join("evidence.html").display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium must be installed (scripts/test installs it from Debian)");
    assert!(
        out.status.success() && pdf.exists(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("pdftotext")
        .arg(&pdf)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) must be installed");
    assert!(text.status.success());
    let text = squash(&String::from_utf8_lossy(&text.stdout));
    let verdict = json(&y.pack)["derived"]["verdict"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains(&squash(SCHOOL)), "{text}");
    assert!(text.contains(&squash(&verdict)), "{verdict}\n---\n{text}");
}

#[test]
fn a_proof_of_one_test_restore_verifies_and_names_it() {
    let y = year();
    let env = Env::new();
    let proof = env.path("proof");
    let run = y
        .vouch(&[
            "evidence",
            "proof",
            &y.failed_drill.to_string(),
            "--out",
            proof.to_str().unwrap(),
        ])
        .expect(0);
    assert!(
        run.stdout.contains("test restore sims-check") && run.stdout.contains("FAILED"),
        "{}",
        run.stdout
    );
    let html = std::fs::read_to_string(proof.join("proof.html")).unwrap();
    assert!(html.contains(SCHOOL) && html.contains(ACTION), "{html}");
    let ok = y.verify(&proof, &["--repo", &y.repo]).expect(0);
    assert!(ok.stdout.contains("VERIFIED"), "{}", ok.stdout);

    let mut bytes = std::fs::read(proof.join("proof.json")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(proof.join("proof.json"), bytes).unwrap();
    let bad = y.verify(&proof, &[]).expect(4);
    assert!(
        bad.stdout.contains("FAIL signature of proof.json"),
        "{}",
        bad.stdout
    );
}

#[test]
fn evidence_send_emails_the_pack_and_the_attachments_verify() {
    let env = Env::new();
    let smtp = Smtp::start(env.dir.path());
    let dir = school(&env, Some(smtp.port), None);
    let vouch = |args: &[&str]| {
        Run::of(
            env.vouch()
                .env("VOUCH_CONFIG", dir.join("vouch.toml"))
                .args(args)
                .output()
                .unwrap(),
        )
    };
    vouch(&["run", "staff-weekly"]).expect(0);
    vouch(&["run", "monthly"]).expect(0);
    // A period around today, so that a run just before midnight still falls in it.
    let today = vouch::SystemClock
        .now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let (from, to) = (
        today.yesterday().unwrap().to_string(),
        today.tomorrow().unwrap().to_string(),
    );
    let sent = vouch(&["evidence", "send", "--from", &from, "--to", &to]).expect(0);
    assert!(sent.stdout.contains("1 sent"), "{}", sent.stdout);

    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    let headers = mail.replace("\r\n", "\n").replace("\n ", " ");
    assert!(
        headers.contains(&format!(
            "Subject: [vouch] {SCHOOL}: backup and restore evidence for {from} to {to}"
        )),
        "{mail}"
    );
    for to in ["clerk.to.governors@school.example", "auditor@audit.example"] {
        assert!(mail.contains(to), "{to}: {mail}");
    }

    // The auditor saves the attachments and checks them.
    let saved = env.path("saved");
    let mbox_file = env.path("message.eml");
    std::fs::write(&mbox_file, mail).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import email, sys, pathlib\n\
             m = email.message_from_bytes(open(sys.argv[1], 'rb').read())\n\
             out = pathlib.Path(sys.argv[2]); out.mkdir()\n\
             for part in m.walk():\n\
             \x20   name = part.get_filename()\n\
             \x20   if name:\n\
             \x20       (out / name).write_bytes(part.get_payload(decode=True))\n\
             \x20       print(name)\n",
        )
        .arg(&mbox_file)
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&out.stdout);
    for name in [
        "evidence.html",
        "evidence.json",
        "evidence.html.minisig",
        "evidence.json.minisig",
    ] {
        assert!(names.lines().any(|l| l == name), "{name} attached: {names}");
    }
    let ok = env
        .run(&[
            "evidence",
            "verify",
            saved.to_str().unwrap(),
            "--pubkey",
            dir.join("keys/evidence.pub").to_str().unwrap(),
            "--repo",
            env.path("repo").to_str().unwrap(),
        ])
        .expect(0);
    assert!(ok.stdout.contains("VERIFIED"), "{}", ok.stdout);

    let list = vouch(&["journal", "list"]).expect(0);
    assert!(
        list.stdout.contains("evidence pack for") && list.stdout.contains("sent to 2"),
        "{}",
        list.stdout
    );
}

/// A pack made when schema vouch-evidence/1 was first released (by `vouch demo`), kept in the
/// repository: every later build must still verify it, so a change to the document, the
/// derivation or the report's HTML cannot quietly strand the packs auditors already hold.
#[test]
fn a_pack_from_the_first_release_of_the_schema_still_verifies() {
    let env = Env::new();
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/evidence-v1");
    let run = env
        .run(&[
            "evidence",
            "verify",
            pack.to_str().unwrap(),
            "--pubkey",
            pack.join("evidence.pub").to_str().unwrap(),
        ])
        .expect(0);
    assert!(
        run.stdout.contains("Demo Primary School") && run.stdout.contains("VERIFIED"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_signing_key_is_private_is_never_overwritten_and_a_wrong_passphrase_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let dir = school(&env, None, None);
    let key = dir.join("keys/evidence.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the secret key is readable by its owner only");
    let before = std::fs::read(&key).unwrap();
    let again = env
        .run(&[
            "keygen",
            "--out",
            dir.join("keys").to_str().unwrap(),
            "--unencrypted",
        ])
        .expect(1);
    assert!(
        again.stderr.contains("evidence.key: already exists"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read(&key).unwrap(), before, "the old key is kept");

    std::fs::write(dir.join("wrong.pass"), "not the passphrase\n").unwrap();
    let run = Run::of(
        env.vouch()
            .env("VOUCH_CONFIG", dir.join("vouch.toml"))
            .args(["evidence", "build", "--out"])
            .arg(env.path("pack"))
            .arg("--signing-key-password-file")
            .arg(dir.join("wrong.pass"))
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(
        run.stderr.contains(key.to_str().unwrap())
            && run.stderr.contains("cannot open the signing key"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("not the passphrase") && !run.stdout.contains("not the passphrase")
    );
    assert!(
        !env.path("pack/evidence.json.minisig").exists(),
        "nothing signed"
    );
}
