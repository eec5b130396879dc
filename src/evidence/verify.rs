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
    /// What broke the check, for a script: its kind and the objects it names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<Broken>,
}

/// What an auditor's check of a signed document found wrong: each case names the file, row,
/// run or report concerned, and says in words what it means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Broken {
    #[error("{file}: its signature {file}.minisig is missing or unreadable: {why}")]
    SignatureMissing { file: String, why: String },
    #[error(
        "{file}: signed with another key (key id {signed_by}), not the one given (key id {given})"
    )]
    OtherKey {
        file: String,
        signed_by: String,
        given: String,
    },
    #[error("{file}: the signature does not match the file: it was changed after it was signed")]
    SignatureMismatch { file: String },
    #[error("{file}: {why}")]
    Unreadable { file: String, why: String },
    #[error("{file} is not {what}: {why}")]
    NotADocument {
        file: String,
        what: &'static str,
        why: String,
    },
    #[error(
        "{file} is {found:?}; this vouch reads {reads}: verify it with the vouch that wrote it, or a later one"
    )]
    Schema {
        file: String,
        found: String,
        reads: &'static str,
    },
    #[error("{file} names key id {named} but the key given is {given}")]
    KeyNamed {
        file: String,
        named: String,
        given: String,
    },
    #[error("{page} does not match {document}: one of them was changed")]
    PageDiffers {
        page: &'static str,
        document: &'static str,
    },
    #[error("journal row {seq} does not match its hash: it was changed")]
    RowChanged { seq: i64 },
    #[error(
        "journal rows {} to {} are missing from the pack: it skips from row {after} to row {next}",
        after + 1,
        next - 1
    )]
    RowsMissing { after: i64, next: i64 },
    #[error("journal row {seq} does not follow row {prev}")]
    RowUnlinked { seq: i64, prev: i64 },
    #[error("{which} in evidence.json do not follow from the journal rows it carries")]
    FiguresDiffer { which: &'static str },
    #[error("run #{run} (test restore {plan}) names report {report} that the pack does not carry")]
    ReportMissing {
        run: i64,
        plan: String,
        report: String,
    },
    #[error("run #{run} and its report disagree on whether test restore {plan} passed")]
    ReportDisagrees { run: i64, plan: String },
    #[error("the journal row does not match its hash, or does not name this report and outcome")]
    ProofRowDisagrees,
    #[error("the repository cannot be read: {why}")]
    RepositoryUnreadable { why: String },
    #[error("the repository's drill report {key} cannot be read")]
    RepositoryReportUnreadable { key: String },
    #[error(
        "the repository holds a test restore the pack leaves out: {plan} on {when} ({}), report {report}",
        if *.passed { "passed" } else { "FAILED" }
    )]
    DrillLeftOut {
        plan: String,
        when: String,
        passed: bool,
        report: String,
    },
    #[error(
        "the repository's journal has row {seq} from {host} ({what}) that the pack does not carry as recorded"
    )]
    RowLeftOut {
        seq: i64,
        host: String,
        what: String,
    },
    #[error("the repository's journal does not have run #{run} as the proof shows it")]
    RunNotInRepository { run: i64 },
    #[error("the repository does not hold report {report}: {why}")]
    ReportNotInRepository { report: String, why: String },
    #[error("the report differs from the repository's copy")]
    ReportDiffers,
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

    /// One check: what it passed with, or what broke it.
    pub(crate) fn push(&mut self, what: &str, result: Result<String, Broken>) {
        let (ok, detail, broken) = match result {
            Ok(d) => (true, d, None),
            Err(b) => (false, b.to_string(), Some(b)),
        };
        self.checks.push(Check {
            what: what.to_string(),
            ok,
            detail,
            broken,
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
                Err(Broken::Unreadable {
                    file: json_path.display().to_string(),
                    why: e.to_string(),
                }),
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
            Err(Broken::Schema {
                file: "evidence.json".into(),
                found: schema,
                reads: SCHEMA,
            }),
        );
        return out;
    }
    let evidence: Evidence = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => {
            out.push(
                "evidence.json readable",
                Err(Broken::NotADocument {
                    file: json_path.display().to_string(),
                    what: "an evidence document",
                    why: e.to_string(),
                }),
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
            Err(Broken::KeyNamed {
                file: "evidence.json".into(),
                named: evidence.signing_key_id.clone(),
                given: verifying_key,
            }),
        );
    }
    out.push(
        "evidence.html and evidence.json agree",
        match std::fs::read_to_string(&html_path) {
            Err(e) => Err(Broken::Unreadable {
                file: html_path.display().to_string(),
                why: e.to_string(),
            }),
            Ok(html) if render_html(&evidence) == html => {
                Ok("the report is exactly what the document says".into())
            }
            Ok(_) => Err(Broken::PageDiffers {
                page: "evidence.html",
                document: "evidence.json",
            }),
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

fn check_chain(e: &Evidence) -> Result<String, Broken> {
    let rows = &e.inputs.journal.rows;
    for (i, row) in rows.iter().enumerate() {
        let changed = serde_json::to_string(&row.record).map_or(true, |json| {
            store_chain_hash(&row.prev_hash, &json) != row.hash
        });
        if changed {
            return Err(Broken::RowChanged { seq: row.seq.0 });
        }
        if let Some(prev) = i.checked_sub(1).map(|j| &rows[j]) {
            if e.inputs.journal.contiguous && row.seq != prev.seq.next() {
                return Err(Broken::RowsMissing {
                    after: prev.seq.0,
                    next: row.seq.0,
                });
            }
            // Rows from the repository's mirrors may come from several hosts, each with its
            // own numbering: links are checked where the pack is one journal's run of rows.
            if e.inputs.journal.contiguous && prev.hash != row.prev_hash {
                return Err(Broken::RowUnlinked {
                    seq: row.seq.0,
                    prev: prev.seq.0,
                });
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

fn check_derived(e: &Evidence) -> Result<String, Broken> {
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
    Err(Broken::FiguresDiffer { which })
}

fn check_drills(e: &Evidence) -> Result<String, Broken> {
    for row in &e.derived.drills {
        let Some(id) = &row.report_id else { continue };
        let Some(report) = e.inputs.drills.iter().find(|d| &d.report_id == id) else {
            return Err(Broken::ReportMissing {
                run: row.run.0,
                plan: row.plan.clone(),
                report: short_id(id),
            });
        };
        if report.passed != row.outcome.is_good() {
            return Err(Broken::ReportDisagrees {
                run: row.run.0,
                plan: row.plan.clone(),
            });
        }
    }
    Ok(format!(
        "{} test restore(s) with their reports",
        e.derived.drills.len()
    ))
}

async fn check_against_repo(e: &Evidence, repo: &Repository) -> Result<String, Broken> {
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
        .map_err(|e| Broken::RepositoryUnreadable { why: e.to_string() })?
    {
        let id = key.rsplit('/').next().unwrap_or_default().to_string();
        let Ok(report) = repo
            .load_document::<DrillReport>(Kind::DrillReport, &key)
            .await
        else {
            return Err(Broken::RepositoryReportUnreadable { key });
        };
        if !period.contains(report.started) || !hosts.contains(&report.host) {
            continue;
        }
        reports += 1;
        if !e.inputs.drills.iter().any(|d| d.report_id == id) {
            return Err(Broken::DrillLeftOut {
                plan: report.plan,
                when: crate::clock::human(report.started),
                passed: report.passed,
                report: short_id(&id),
            });
        }
    }
    let mut compared = 0;
    for host in &hosts {
        let (mirror, _) = crate::journal::load_mirror(repo, host)
            .await
            .map_err(|e| Broken::RepositoryUnreadable { why: e.to_string() })?;
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
                return Err(Broken::RowLeftOut {
                    seq: seq.0,
                    host: host.clone(),
                    what: describe(&row.record),
                });
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
