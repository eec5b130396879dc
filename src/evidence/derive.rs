//! What the report says, computed from the pack's inputs alone, so that a verifier can
//! compute it again and compare.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::journal::{Annotation, Outcome, Record, RowId, RunKind, RunRecord};

use super::{CLAUSES, Inputs};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    pub id: String,
    pub text: String,
    pub met: bool,
    /// What in the pack shows it.
    pub evidence: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleStats {
    pub name: String,
    pub label: Option<String>,
    pub runs: usize,
    pub good: usize,
    pub partial: usize,
    pub failed: usize,
    /// Stopped at a safe point by a shutdown; neither good nor failed, and left out of the
    /// success rate.
    pub interrupted: usize,
    /// Stopped at a checkpoint by the end of the schedule's backup window (or not started
    /// outside it): like interrupted runs, left out of the success rate.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paused: usize,
    /// When the last run paused or was interrupted: how far that unfinished backup has got
    /// (a first upload done over several nights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfinished: Option<crate::backup::SeedProgress>,
    /// Good runs as a percentage of runs that finished (one decimal).
    pub success_rate: f64,
    pub longest_gap_hours: Option<f64>,
    #[serde(with = "crate::repo::format::rfc3339::option")]
    pub longest_gap_from: Option<Timestamp>,
    #[serde(with = "crate::repo::format::rfc3339::option")]
    pub longest_gap_to: Option<Timestamp>,
    pub rpo_hours: Option<f64>,
    pub within_rpo: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillRow {
    pub run: RowId,
    pub plan: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub started: Timestamp,
    pub outcome: Outcome,
    pub summary: String,
    pub report_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentRow {
    /// backup-failed, backup-partial, stale, drill-failed, job-failed (another job, such as
    /// sending the evidence), no-drill.
    pub kind: String,
    pub job: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub from: Timestamp,
    #[serde(with = "crate::repo::format::rfc3339::option")]
    pub to: Option<Timestamp>,
    pub detail: String,
    /// The journal row it comes from, when there is one.
    pub run: Option<RowId>,
    /// What people recorded doing about it.
    pub actions: Vec<String>,
}

/// The report, as computed from the inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    pub met: bool,
    pub verdict: String,
    pub clauses: Vec<Clause>,
    pub schedules: Vec<ScheduleStats>,
    pub drills: Vec<DrillRow>,
    pub drills_passed: usize,
    pub incidents: Vec<IncidentRow>,
    /// The notes people wrote on runs in the period (`vouch journal annotate`).
    pub actions: Vec<Annotation>,
    pub journal_rows_in_period: usize,
}

fn hours(d: jiff::SignedDuration) -> f64 {
    (d.as_secs_f64() / 3600.0 * 10.0).round() / 10.0
}

fn runs_in_period(inputs: &Inputs) -> Vec<(RowId, &RunRecord)> {
    inputs
        .journal
        .rows
        .iter()
        .filter_map(|e| match &e.record {
            Record::Run(r) if inputs.period.contains(r.started) => Some((e.seq, r)),
            _ => None,
        })
        .collect()
}

pub fn derive(inputs: &Inputs, generated: Timestamp) -> Derived {
    let runs = runs_in_period(inputs);
    let mut actions_by_run: BTreeMap<RowId, Vec<String>> = BTreeMap::new();
    let mut actions = Vec::new();
    for e in &inputs.journal.rows {
        if let Record::Annotation(a) = &e.record {
            if inputs.period.contains(a.time) {
                actions_by_run.entry(a.run).or_default().push(format!(
                    "{} ({}, {})",
                    a.text,
                    a.operator,
                    crate::clock::human(a.time)
                ));
                actions.push(Annotation {
                    run: a.run,
                    time: a.time,
                    operator: a.operator.clone(),
                    text: a.text.clone(),
                });
            }
        }
    }
    let actions_for = |run: RowId| actions_by_run.get(&run).cloned().unwrap_or_default();
    let mut incidents = Vec::new();

    // Schedules: runs, success, and the longest gap between good backups against the RPO.
    let end_of_view = generated.min(
        inputs
            .period
            .to
            .tomorrow()
            .map_or(generated, crate::clock::start_of),
    );
    let mut schedules = Vec::new();
    for s in &inputs.schedules {
        let mine: Vec<&(RowId, &RunRecord)> = runs
            .iter()
            .filter(|(_, r)| r.kind == RunKind::Backup && r.job == s.name)
            .collect();
        let good: Vec<Timestamp> = mine
            .iter()
            .filter(|(_, r)| matches!(r.outcome, Outcome::Success | Outcome::Partial))
            .map(|(_, r)| r.ended)
            .collect();
        let partial = mine
            .iter()
            .filter(|(_, r)| r.outcome == Outcome::Partial)
            .count();
        let failed = mine
            .iter()
            .filter(|(_, r)| matches!(r.outcome, Outcome::Failed | Outcome::Damage))
            .count();
        let interrupted = mine
            .iter()
            .filter(|(_, r)| r.outcome == Outcome::Interrupted)
            .count();
        let paused = mine
            .iter()
            .filter(|(_, r)| r.outcome == Outcome::Paused)
            .count();
        let stopped = interrupted + paused;
        let unfinished = mine
            .last()
            .filter(|(_, r)| matches!(r.outcome, Outcome::Paused | Outcome::Interrupted))
            .and_then(|(_, r)| r.details_as::<UnfinishedBackup>()?.unfinished);
        let mut longest: Option<(Timestamp, Timestamp)> = None;
        let mut edges = good.clone();
        edges.sort();
        if let Some(last) = edges.last().copied() {
            edges.push(end_of_view.max(last));
        }
        let rpo = s
            .rpo_hours
            .map(|h| jiff::SignedDuration::from_secs_f64(h * 3600.0));
        for w in edges.windows(2) {
            let gap = w[1].duration_since(w[0]);
            if longest.is_none_or(|(a, b)| gap > b.duration_since(a)) {
                longest = Some((w[0], w[1]));
            }
            if let Some(rpo) = rpo {
                if gap > rpo {
                    incidents.push(IncidentRow {
                        kind: "stale".into(),
                        job: s.name.clone(),
                        from: w[0] + rpo,
                        to: Some(w[1]),
                        detail: format!(
                            "no good backup of {} for {} hours (from {} to {}), against an RPO of {} hours",
                            s.name,
                            hours(gap),
                            crate::clock::human(w[0]),
                            crate::clock::human(w[1]),
                            hours(rpo)
                        ),
                        run: None,
                        actions: Vec::new(),
                    });
                }
            }
        }
        let gap_hours = longest.map(|(a, b)| hours(b.duration_since(a)));
        schedules.push(ScheduleStats {
            name: s.name.clone(),
            label: s.label.clone(),
            runs: mine.len(),
            good: good.len(),
            partial,
            failed,
            interrupted,
            paused,
            unfinished,
            success_rate: if mine.len() == stopped {
                0.0
            } else {
                (good.len() as f64 * 1000.0 / (mine.len() - stopped) as f64).round() / 10.0
            },
            longest_gap_hours: gap_hours,
            longest_gap_from: longest.map(|(a, _)| a),
            longest_gap_to: longest.map(|(_, b)| b),
            rpo_hours: s.rpo_hours,
            // The exact gap, as the stale incidents use, not the rounded figure shown.
            within_rpo: match (longest, rpo) {
                (Some((a, b)), Some(rpo)) => Some(b.duration_since(a) <= rpo),
                _ => None,
            },
        });
    }
    for (seq, r) in &runs {
        let kind = match (r.kind.as_str(), r.outcome) {
            ("backup", Outcome::Failed | Outcome::Damage) => "backup-failed",
            ("backup", Outcome::Partial) => "backup-partial",
            ("drill", Outcome::Failed | Outcome::Damage) => "drill-failed",
            (_, Outcome::Failed | Outcome::Damage) => "job-failed",
            _ => continue,
        };
        incidents.push(IncidentRow {
            kind: kind.into(),
            job: r.job.clone(),
            from: r.started,
            to: None,
            detail: match &r.error {
                Some(e) if !r.summary.contains(e.as_str()) => format!("{}: {e}", r.summary),
                _ => r.summary.clone(),
            },
            run: Some(*seq),
            actions: actions_for(*seq),
        });
    }

    // Drills.
    let drills: Vec<DrillRow> = runs
        .iter()
        .filter(|(_, r)| r.kind == RunKind::Drill)
        .map(|(seq, r)| DrillRow {
            run: *seq,
            plan: r.job.clone(),
            started: r.started,
            outcome: r.outcome,
            summary: r.summary.clone(),
            report_id: r.report.clone(),
        })
        .collect();
    let passed: Vec<&DrillRow> = drills
        .iter()
        .filter(|d| d.outcome == Outcome::Success)
        .collect();
    if passed.is_empty() {
        incidents.push(IncidentRow {
            kind: "no-drill".into(),
            job: "all".into(),
            from: crate::clock::start_of(inputs.period.from),
            to: None,
            detail: "no test restore passed during the period".into(),
            run: None,
            actions: Vec::new(),
        });
    }
    incidents.sort_by(|a, b| a.from.cmp(&b.from).then(a.kind.cmp(&b.kind)));

    // The policy's clauses.
    let backups_ran = !inputs.schedules.is_empty() && schedules.iter().all(|s| s.good > 0);
    let rates: Vec<String> = schedules
        .iter()
        .map(|s| {
            format!(
                "{}: {} of {} runs good ({}%)",
                s.name,
                s.good,
                s.runs - s.interrupted - s.paused,
                s.success_rate
            )
        })
        .collect();
    let off_site: Vec<&super::RepositoryInfo> =
        inputs.repositories.iter().filter(|r| r.off_site).collect();
    let labelled =
        !inputs.schedules.is_empty() && inputs.schedules.iter().all(|s| s.label.is_some());
    let last_pass = passed.iter().map(|d| d.started).max();
    let clause = |id: &str, met: bool, evidence: String| Clause {
        id: id.to_string(),
        text: CLAUSES
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, t)| t.to_string())
            .unwrap_or_default(),
        met,
        evidence,
    };
    let clauses = vec![
        clause(
            "scheduled",
            backups_ran,
            if rates.is_empty() { "no schedules".into() } else { format!("scheduled backups ran through the period ({})", rates.join("; ")) },
        ),
        clause(
            "monitored",
            !runs.is_empty() && inputs.alert_recipients.is_none_or(|n| n > 0),
            format!(
                "every run is in the hash-chained journal ({} rows in the period); failures and backups older than their RPO raise alerts{}",
                runs.len(),
                match inputs.alert_recipients {
                    Some(n) => format!(" to {n} recipient(s)"),
                    None => String::new(),
                }
            ),
        ),
        clause(
            "test-restore",
            !passed.is_empty(),
            match last_pass {
                Some(t) => format!("{} test restore(s) passed, the last on {}", passed.len(), crate::clock::human(t)),
                None => "no test restore passed in the period".into(),
            },
        ),
        clause(
            "off-site",
            !off_site.is_empty(),
            if off_site.is_empty() {
                "no repository is off site".into()
            } else {
                format!(
                    "copies are kept off site in {}, encrypted before they leave the school",
                    off_site.iter().map(|r| r.url.as_str()).collect::<Vec<_>>().join(", ")
                )
            },
        ),
        clause(
            "marked",
            labelled,
            "every snapshot records what it is (its schedule's label), when it was taken, and from which paths".into(),
        ),
        clause(
            "annual-check",
            !passed.is_empty() && backups_ran,
            "backups are checked by each run's verification and by test restores that verify every restored byte against hashes recorded at backup time".into(),
        ),
    ];
    let met = clauses.iter().all(|c| c.met);
    let stale = incidents.iter().filter(|i| i.kind == "stale").count();
    let failed: Vec<&DrillRow> = drills
        .iter()
        .filter(|d| matches!(d.outcome, Outcome::Failed | Outcome::Damage))
        .collect();
    let followed_up = failed
        .iter()
        .filter(|d| actions_by_run.contains_key(&d.run))
        .count();
    let verdict = if met {
        format!(
            "{} met the backup and restore requirements for {}: backups ran on schedule and were monitored, {} test restore(s) passed{}, and every off-site copy was encrypted{}.",
            inputs.school,
            inputs.period.name(),
            passed.len(),
            match (failed.len(), followed_up) {
                (0, _) => String::new(),
                (n, f) if f == n => format!(" ({n} failed, each with its recorded action)"),
                (n, 0) => format!(" ({n} failed, with no action recorded)"),
                (n, f) => format!(" ({n} failed, {f} with a recorded action)"),
            },
            if stale > 0 {
                format!("; backups were older than their RPO {stale} time(s), listed below")
            } else {
                String::new()
            }
        )
    } else {
        let missing: Vec<&str> = clauses
            .iter()
            .filter(|c| !c.met)
            .map(|c| c.id.as_str())
            .collect();
        format!(
            "{} did not meet the backup and restore requirements for {}: {} not shown.",
            inputs.school,
            inputs.period.name(),
            missing.join(", ")
        )
    };
    Derived {
        met,
        verdict,
        clauses,
        schedules,
        drills_passed: passed.len(),
        drills,
        incidents,
        actions,
        journal_rows_in_period: runs.len(),
    }
}

/// The one member of a backup row's details that the evidence reads.
#[derive(Serialize, Deserialize)]
struct UnfinishedBackup {
    unfinished: Option<crate::backup::SeedProgress>,
}

impl crate::journal::RunDetails for UnfinishedBackup {
    const KIND: crate::journal::RunKind = crate::journal::RunKind::Backup;
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
