//! `vouch evidence proof RUN`: a small signed pack for one test restore, for an auditor's
//! "show me the restore you did on 3 March": the journal row, its notes, and the full drill
//! report, each checkable against the repository's copies.

use std::fmt::Write;
use std::path::Path;

use jiff::Timestamp;
use minisign::PublicKey;
use serde::{Deserialize, Serialize};

use crate::clock::human;
use crate::journal::{Entry, Record, store_chain_hash};
use crate::repo::Repository;
use crate::repo::crypto::Kind;
use crate::verify::drill::DrillReport;

use super::sign;
use super::verify::{Broken, VerifyOutcome};

pub const PROOF_SCHEMA: &str = "vouch-drill-proof/1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proof {
    pub schema: String,
    pub school: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub generated: Timestamp,
    pub generated_by: String,
    pub signing_key_id: String,
    pub run: Entry,
    pub notes: Vec<Entry>,
    pub report_id: String,
    pub report: DrillReport,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn render(p: &Proof) -> String {
    let r = &p.report;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Test restore {} on {}</title></head><body style=\"font-family:Georgia,serif;max-width:50em;margin:2em auto\">\n",
        esc(&r.plan),
        human(r.started)
    );
    let _ = write!(
        h,
        "<h1>Test restore: {}</h1>\n<p><b>{}</b>, journal run #{} ({} by {}), {}.</p>\n<p><b>{}</b></p>\n",
        esc(&r.plan),
        esc(&p.school),
        p.run.seq,
        esc(&r.trigger),
        esc(&r.operator),
        human(r.started),
        if r.passed { "PASSED" } else { "FAILED" }
    );
    let _ = write!(
        h,
        "<ul><li>snapshot {} taken {}{}</li><li>selection: {} (seed {}), {} files, {}</li>\
         <li>restored {} files in {:.1} s into a sandbox ({})</li>\
         <li>level 1: {} packs; level 2: every blob; level 3: {} files verified{}{}</li>",
        r.snapshot.id.short(),
        human(r.snapshot.time),
        r.snapshot
            .label
            .as_ref()
            .map(|l| format!(" ({})", esc(l)))
            .unwrap_or_default(),
        esc(&r.selection.method),
        r.selection.seed,
        r.selection.files,
        crate::units::size(r.selection.bytes),
        r.restore.files,
        r.restore.duration_ms as f64 / 1000.0,
        esc(&r.sandbox.confinement.to_string()),
        r.levels.packs_verified,
        r.levels.files_verified,
        r.levels
            .metadata
            .as_ref()
            .map(|m| format!("; metadata: {}", esc(&m.describe())))
            .unwrap_or_default(),
        r.levels
            .source
            .as_ref()
            .map(|s| format!("; level 4: {} identical to the live share", s.identical))
            .unwrap_or_default()
    );
    for c in &r.checks {
        let _ = write!(
            h,
            "<li>check {} on {}: {}</li>",
            esc(&c.command.join(" ")),
            esc(&c.file),
            if c.passed { "passed" } else { "FAILED" }
        );
    }
    for f in &r.failures {
        let _ = write!(
            h,
            "<li>problem at level {}: {} {}</li>",
            f.level,
            esc(f.path.as_deref().unwrap_or("")),
            esc(&f.detail)
        );
    }
    h.push_str("</ul>\n");
    for n in &p.notes {
        if let Record::Annotation(a) = &n.record {
            let _ = writeln!(
                h,
                "<p>Note, {} by {}: {}</p>",
                human(a.time),
                esc(&a.operator),
                esc(&a.text)
            );
        }
    }
    let _ = write!(
        h,
        "<p style=\"font-size:.8em\">Report {} in the repository; journal row hash {}. Signed with key id {}. Generated {} by {}.</p>\n</body></html>\n",
        &p.report_id,
        &p.run.hash,
        esc(&p.signing_key_id),
        human(p.generated),
        esc(&p.generated_by)
    );
    h
}

/// Write and sign `proof.json` and `proof.html` in `dir`.
pub fn write(
    dir: &Path,
    p: &Proof,
    sk: &minisign::SecretKey,
    pk: &PublicKey,
) -> Result<(), sign::SignError> {
    let trusted = format!(
        "vouch test-restore proof for {}: run #{} {}",
        p.school, p.run.seq, p.report.plan
    );
    sign::write_signed(
        dir,
        &[
            (
                "proof.json",
                serde_json::to_vec_pretty(p).expect("proof serializes"),
                trusted.clone(),
            ),
            ("proof.html", render(p).into_bytes(), trusted),
        ],
        sk,
        pk,
    )?;
    Ok(())
}

pub async fn verify(dir: &Path, pk: &PublicKey, repo: Option<&Repository>) -> VerifyOutcome {
    let mut out = VerifyOutcome::default();
    let json = dir.join("proof.json");
    let html = dir.join("proof.html");
    out.push("signature of proof.json", sign::verify_file(pk, &json));
    out.push("signature of proof.html", sign::verify_file(pk, &html));
    let p: Proof = match std::fs::read(&json)
        .map_err(|e| Broken::Unreadable {
            file: json.display().to_string(),
            why: e.to_string(),
        })
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| Broken::NotADocument {
                file: json.display().to_string(),
                what: "a restore proof",
                why: e.to_string(),
            })
        }) {
        Ok(p) => p,
        Err(e) => {
            out.push("proof.json readable", Err(e));
            return out;
        }
    };
    if p.schema != PROOF_SCHEMA {
        out.push(
            "schema",
            Err(Broken::Schema {
                file: "proof.json".into(),
                found: p.schema.clone(),
                reads: PROOF_SCHEMA,
            }),
        );
        return out;
    }
    out.school = Some(p.school.clone());
    out.verdict = Some(format!(
        "test restore {} on {}: {}",
        p.report.plan,
        human(p.report.started),
        if p.report.passed { "passed" } else { "FAILED" }
    ));
    out.push(
        "proof.html and proof.json agree",
        if render(&p) == std::fs::read_to_string(&html).unwrap_or_default() {
            Ok("the page is exactly what the document says".into())
        } else {
            Err(Broken::PageDiffers {
                page: "proof.html",
                document: "proof.json",
            })
        },
    );
    let row_ok = serde_json::to_string(&p.run.record)
        .map(|t| store_chain_hash(&p.run.prev_hash, &t) == p.run.hash)
        .unwrap_or(false);
    let consistent = matches!(&p.run.record, Record::Run(r) if r.report.as_deref() == Some(p.report_id.as_str()) && r.outcome.is_good() == p.report.passed);
    out.push(
        "the journal row and the report",
        if row_ok && consistent {
            Ok(format!(
                "run #{} matches its hash and names this report",
                p.run.seq
            ))
        } else {
            Err(Broken::ProofRowDisagrees)
        },
    );
    if let Some(repo) = repo {
        let host = match &p.run.record {
            Record::Run(r) => r.host.clone(),
            Record::Annotation(_) => String::new(),
        };
        let result = async {
            let (mirror, _) = crate::journal::load_mirror(repo, &host)
                .await
                .map_err(|e| Broken::RepositoryUnreadable { why: e.to_string() })?;
            if mirror.get(&p.run.seq).map(|m| &m.hash) != Some(&p.run.hash) {
                return Err(Broken::RunNotInRepository { run: p.run.seq.0 });
            }
            let stored: DrillReport = repo
                .load_document(Kind::DrillReport, &format!("drills/{}", p.report_id))
                .await
                .map_err(|e| Broken::ReportNotInRepository {
                    report: super::verify::short_id(&p.report_id),
                    why: e.to_string(),
                })?;
            if serde_json::to_value(&stored).ok() != serde_json::to_value(&p.report).ok() {
                return Err(Broken::ReportDiffers);
            }
            Ok("the run and its report are in the repository, unchanged".to_string())
        }
        .await;
        out.push("against the repository", result);
    }
    out
}
