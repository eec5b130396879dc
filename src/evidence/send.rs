//! Building and signing the pack from the school's records, the email that carries it, and
//! the proof of one drill. The service journals and sends them (`schedule::service`).

use std::path::{Path, PathBuf};

use crate::journal::Record;
use crate::notify::Message;

use super::proof::{PROOF_SCHEMA, Proof};
use super::sign::{self, SignError};
use super::{Evidence, Period, build, write_pack};

/// Where the signing key is and how to open it.
#[derive(Clone, Debug, Default)]
pub struct SigningKey {
    pub path: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
}

impl SigningKey {
    pub fn load(&self) -> Result<(minisign::SecretKey, minisign::PublicKey), SignError> {
        let path = self.path.as_ref().ok_or_else(|| {
            SignError::Key("no signing key: give --signing-key, or set [evidence] signing_key in vouch.toml (`vouch keygen` makes one)".into())
        })?;
        let password = match &self.password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| SignError::File {
                        path: f.display().to_string(),
                        detail: e.to_string(),
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => None,
        };
        let sk = sign::load_secret_key(path, password)?;
        let pk = sign::public_of(&sk)?;
        Ok((sk, pk))
    }
}

impl SigningKey {
    /// The key vouch.toml's [evidence] names.
    pub fn of_config(config: &crate::config::Config) -> SigningKey {
        SigningKey {
            path: config.evidence_signing_key.clone(),
            password_file: config.evidence_signing_key_password_file.clone(),
        }
    }
}

/// Build and sign the pack for `period` into `dir`, from the school's records.
pub async fn build_pack(
    records: build::Records<'_>,
    period: Period,
    now: jiff::Timestamp,
    dir: &Path,
    key: &SigningKey,
) -> Result<Evidence, super::EvidenceError> {
    let (sk, pk) = key.load()?;
    let inputs = build::from_records(records, period).await?;
    let evidence = Evidence::new(inputs, now, sign::key_id(pk.keynum()));
    write_pack(dir, &evidence, &sk, &pk)?;
    Ok(evidence)
}

/// The email that carries a pack.
pub fn message(
    evidence: &Evidence,
    dir: &Path,
    to: &[String],
) -> Result<Message, super::EvidenceError> {
    let i = &evidence.inputs;
    let d = &evidence.derived;
    let subject = format!(
        "[vouch] {}: backup and restore evidence for {}",
        i.school,
        i.period.name()
    );
    let mut text = format!("{}\n\n", d.verdict);
    for c in &d.clauses {
        text.push_str(&format!(
            "{} “{}”: {}\n",
            if c.met { "MET" } else { "NOT MET" },
            c.text,
            c.evidence
        ));
    }
    text.push_str(&format!(
        "\nThe full report is attached (evidence.html, for people; evidence.json, for programs), each with a minisign signature (key id {}).\n\
         An auditor checks it with the school's public key: vouch evidence verify DIR --pubkey evidence.pub, or minisign -Vm evidence.html -p evidence.pub\n",
        evidence.signing_key_id
    ));
    let mut html = format!(
        "<html><body style=\"font-family:Georgia,serif\"><p><b>{}</b></p><ul>",
        escape(&d.verdict)
    );
    for c in &d.clauses {
        html.push_str(&format!(
            "<li>{} — “{}”: {}</li>",
            if c.met { "met" } else { "<b>NOT MET</b>" },
            escape(&c.text),
            escape(&c.evidence)
        ));
    }
    html.push_str(&format!(
        "</ul><p>The full report is attached, signed with the school's evidence key (key id {}). Auditors: <code>vouch evidence verify DIR --pubkey evidence.pub</code>.</p></body></html>",
        escape(&evidence.signing_key_id)
    ));
    let mut attachments = Vec::new();
    for (name, ct) in [
        ("evidence.html", "text/html; charset=utf-8"),
        ("evidence.json", "application/json"),
        ("evidence.html.minisig", "text/plain; charset=utf-8"),
        ("evidence.json.minisig", "text/plain; charset=utf-8"),
    ] {
        let bytes = std::fs::read(dir.join(name)).map_err(|e| SignError::File {
            path: dir.join(name).display().to_string(),
            detail: e.to_string(),
        })?;
        attachments.push((name.to_string(), ct.to_string(), bytes));
    }
    Ok(Message {
        to: to.to_vec(),
        subject,
        text,
        html,
        attachments,
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A signed proof of the drill journalled as `entry` (with the notes made on it), its
/// report read from `repo`.
#[allow(clippy::too_many_arguments)]
pub async fn proof(
    entry: crate::journal::Entry,
    notes: Vec<crate::journal::Entry>,
    repo: &crate::repo::Repository,
    school: &str,
    now: jiff::Timestamp,
    dir: &Path,
    key: &SigningKey,
) -> Result<Proof, super::EvidenceError> {
    let (sk, pk) = key.load()?;
    let run = entry.seq;
    let Record::Run(r) = &entry.record else {
        return Err(super::EvidenceError::NotApplicable(format!(
            "row {run} is a note, not a run"
        )));
    };
    let (Some(report_id), crate::journal::RunKind::Drill) = (r.report.clone(), r.kind) else {
        return Err(super::EvidenceError::NotApplicable(format!(
            "run #{run} is a {} of {}, not a test restore with a report",
            r.kind, r.job
        )));
    };
    let report = repo
        .load_document(
            crate::repo::crypto::Kind::DrillReport,
            &format!("drills/{report_id}"),
        )
        .await?;
    let notes = notes
        .into_iter()
        .filter(|e| matches!(&e.record, Record::Annotation(a) if a.run == run))
        .collect();
    let p = Proof {
        schema: PROOF_SCHEMA.into(),
        school: school.to_string(),
        generated: now,
        generated_by: format!("vouch {}", env!("CARGO_PKG_VERSION")),
        signing_key_id: sign::key_id(pk.keynum()),
        run: entry,
        notes,
        report_id,
        report,
    };
    super::proof::write(dir, &p, &sk, &pk)?;
    Ok(p)
}
