//! `vouch evidence verify`: the signatures, the agreement of the report with the document,
//! the journal chain the document carries, the report's figures recomputed from it, and, with
//! the repository, that the pack leaves out nothing the off-site records hold.

use std::collections::BTreeSet;
use std::path::Path;

use minisign::PublicKey;
use serde::Serialize;

use crate::journal::{Record, store_chain_hash};
use crate::repo::Repository;
use crate::repo::crypto::Kind;
use crate::verify::drill::DrillReport;

use super::{Evidence, SCHEMA, derive, render_html, sign};

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyOutcome {
    pub checks: Vec<Check>,
    pub school: Option<String>,
    pub period: Option<String>,
    pub verdict: Option<String>,
}

impl VerifyOutcome {
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    pub(crate) fn push(&mut self, what: &str, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check {
            what: what.to_string(),
            ok,
            detail,
        });
    }
}

/// Check the pack in `dir` with the school's public key, and against `repo` when given.
pub async fn verify_pack(dir: &Path, pk: &PublicKey, repo: Option<&Repository>) -> VerifyOutcome {
    let mut out = VerifyOutcome::default();
    let json_path = dir.join("evidence.json");
    let html_path = dir.join("evidence.html");
    out.push(
        "signature of evidence.json",
        sign::verify_file(pk, &json_path),
    );
    out.push(
        "signature of evidence.html",
        sign::verify_file(pk, &html_path),
    );

    let bytes = match std::fs::read(&json_path) {
        Ok(b) => b,
        Err(e) => {
            out.push(
                "evidence.json readable",
                Err(format!("{}: {e}", json_path.display())),
            );
            return out;
        }
    };
    // The schema first, so that a pack from a later vouch says so rather than failing to parse.
    let schema = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("schema").and_then(|s| s.as_str().map(str::to_string)));
    if let Some(schema) = schema.filter(|s| s != SCHEMA) {
        out.push(
            "schema",
            Err(format!(
                "evidence.json is {schema:?}; this vouch reads {SCHEMA}: verify it with the vouch that wrote it, or a later one"
            )),
        );
        return out;
    }
    let evidence: Evidence = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => {
            out.push(
                "evidence.json readable",
                Err(format!(
                    "{} is not an evidence document: {e}",
                    json_path.display()
                )),
            );
            return out;
        }
    };
    out.school = Some(evidence.inputs.school.clone());
    out.period = Some(evidence.inputs.period.name());
    out.verdict = Some(evidence.derived.verdict.clone());
    let verifying_key = sign::key_id(pk.keynum());
    if evidence.signing_key_id != verifying_key {
        out.push(
            "key named in the pack",
            Err(format!(
                "evidence.json names key id {} but the key given is {verifying_key}",
                evidence.signing_key_id
            )),
        );
    }
    out.push(
        "evidence.html and evidence.json agree",
        match std::fs::read_to_string(&html_path) {
            Err(e) => Err(format!("{}: {e}", html_path.display())),
            Ok(html) if render_html(&evidence) == html => {
                Ok("the report is exactly what the document says".into())
            }
            Ok(_) => {
                Err("evidence.html does not match evidence.json: one of them was changed".into())
            }
        },
    );
    out.push("journal chain in the pack", check_chain(&evidence));
    out.push(
        "figures follow from the journal rows",
        check_derived(&evidence),
    );
    out.push("every test restore has its report", check_drills(&evidence));
    if let Some(repo) = repo {
        out.push(
            "nothing left out of the repository's records",
            check_against_repo(&evidence, repo).await,
        );
    }
    out
}

fn check_chain(e: &Evidence) -> Result<String, String> {
    let rows = &e.inputs.journal.rows;
    for (i, row) in rows.iter().enumerate() {
        let json = serde_json::to_string(&row.record).map_err(|e| e.to_string())?;
        if store_chain_hash(&row.prev_hash, &json) != row.hash {
            return Err(format!(
                "journal row {} does not match its hash: it was changed",
                row.seq
            ));
        }
        if let Some(prev) = i.checked_sub(1).map(|j| &rows[j]) {
            if e.inputs.journal.contiguous && row.seq != prev.seq + 1 {
                return Err(format!(
                    "journal rows {} to {} are missing from the pack: it skips from row {} to row {}",
                    prev.seq + 1,
                    row.seq - 1,
                    prev.seq,
                    row.seq
                ));
            }
            // Rows from the repository's mirrors may come from several hosts, each with its
            // own numbering: links are checked where the pack is one journal's run of rows.
            if e.inputs.journal.contiguous && prev.hash != row.prev_hash {
                return Err(format!(
                    "journal row {} does not follow row {}",
                    row.seq, prev.seq
                ));
            }
        }
    }
    Ok(format!(
        "{} row(s), each hashed with the one before{}",
        rows.len(),
        if e.inputs.journal.contiguous {
            ", none missing"
        } else {
            " (from the repository's records)"
        }
    ))
}

fn check_derived(e: &Evidence) -> Result<String, String> {
    let again = derive(&e.inputs, e.generated);
    if again == e.derived {
        return Ok("the summary, schedules, test restores and incidents recompute exactly".into());
    }
    let d = &e.derived;
    let which = if again.drills != d.drills || again.drills_passed != d.drills_passed {
        "the test restores"
    } else if again.schedules != d.schedules {
        "the schedules' figures"
    } else if again.incidents != d.incidents {
        "the incidents"
    } else if again.clauses != d.clauses || again.verdict != d.verdict || again.met != d.met {
        "the verdict"
    } else if again.actions != d.actions {
        "the recorded actions"
    } else {
        "the count of journal rows"
    };
    Err(format!(
        "{which} in evidence.json do not follow from the journal rows it carries"
    ))
}

fn check_drills(e: &Evidence) -> Result<String, String> {
    for row in &e.derived.drills {
        let Some(id) = &row.report_id else { continue };
        let Some(report) = e.inputs.drills.iter().find(|d| &d.report_id == id) else {
            return Err(format!(
                "run #{} (test restore {}) names report {} that the pack does not carry",
                row.run,
                row.plan,
                short_id(id)
            ));
        };
        if report.passed != row.outcome.is_good() {
            return Err(format!(
                "run #{} and its report disagree on whether test restore {} passed",
                row.run, row.plan
            ));
        }
    }
    Ok(format!(
        "{} test restore(s) with their reports",
        e.derived.drills.len()
    ))
}

async fn check_against_repo(e: &Evidence, repo: &Repository) -> Result<String, String> {
    let period = &e.inputs.period;
    let hosts: BTreeSet<String> = e
        .inputs
        .journal
        .rows
        .iter()
        .filter_map(|r| match &r.record {
            Record::Run(run) => Some(run.host.clone()),
            Record::Annotation(_) => None,
        })
        .chain([e.host.clone()])
        .collect();
    // Drill reports first: a left-out test restore is the omission that matters most.
    let mut reports = 0;
    for (key, _) in repo
        .store()
        .list("drills/")
        .await
        .map_err(|e| e.to_string())?
    {
        let id = key.rsplit('/').next().unwrap_or_default().to_string();
        let Ok(report) = repo
            .load_document::<DrillReport>(Kind::DrillReport, &key)
            .await
        else {
            return Err(format!(
                "the repository's drill report {key} cannot be read"
            ));
        };
        if !period.contains(report.started) || !hosts.contains(&report.host) {
            continue;
        }
        reports += 1;
        if !e.inputs.drills.iter().any(|d| d.report_id == id) {
            return Err(format!(
                "the repository holds a test restore the pack leaves out: {} on {} ({}), report {}",
                report.plan,
                crate::clock::human(report.started),
                if report.passed { "passed" } else { "FAILED" },
                short_id(&id)
            ));
        }
    }
    let mut compared = 0;
    for host in &hosts {
        let (mirror, _) = crate::journal::load_mirror(repo, host)
            .await
            .map_err(|e| e.to_string())?;
        for (seq, row) in &mirror {
            let when = match &row.record {
                // A pack cannot carry the record of its own sending, and records of packs
                // say nothing about backups or restores.
                Record::Run(r) if r.kind == crate::journal::RunKind::Evidence => continue,
                Record::Run(r) => r.started,
                Record::Annotation(a) => a.time,
            };
            if !period.contains(when) {
                continue;
            }
            compared += 1;
            // By hash: a pack whose rows were renumbered and re-chained still misses the row.
            if !e.inputs.journal.rows.iter().any(|r| r.hash == row.hash) {
                return Err(format!(
                    "the repository's journal has row {seq} from {host} ({}) that the pack does not carry as recorded",
                    describe(&row.record)
                ));
            }
        }
    }
    Ok(format!(
        "{compared} journal row(s) and {reports} test-restore report(s) in the repository, all in the pack"
    ))
}

/// The first 16 characters of an id, however short or strange the pack makes it.
pub(crate) fn short_id(id: &str) -> String {
    id.chars().take(16).collect()
}

fn describe(r: &Record) -> String {
    match r {
        Record::Run(run) => format!(
            "{} {} on {}, {}",
            run.kind,
            run.job,
            crate::clock::human(run.started),
            run.outcome
        ),
        Record::Annotation(a) => format!("a note on run #{}", a.run),
    }
}
