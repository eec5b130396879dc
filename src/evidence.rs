//! The evidence pack: for a period (a school year by default), what was backed up and when, how
//! often it failed and for how long backups were older than their RPO, every test restore and
//! what it proved, the resulting actions people recorded, and the journal rows all of that is
//! derived from — as a report a governor can read (`evidence.html`) and a document a program can
//! check (`evidence.json`), each signed in minisign's format. Everything in the report follows
//! from the journal rows and drill reports inside the pack, so `evidence verify` recomputes it;
//! with `--repo` it also holds the pack against the records in the repository, so that a failed
//! drill cannot be left out.

pub mod build;
mod derive;
pub mod proof;
mod render;
pub mod send;
pub mod sign;
mod verify;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::journal::Entry;
use crate::verify::drill::{DrillFailure, DrillReport};

pub use derive::{Derived, derive};
pub use render::render_html;
pub use verify::{VerifyOutcome, verify_pack};

/// The schema written by this build; `evidence verify` refuses others.
pub const SCHEMA: &str = "vouch-evidence/1";

/// The policy clauses the report answers, word for word.
pub const CLAUSES: [(&str, &str); 6] = [
    (
        "scheduled",
        "Backup software must be scheduled to run routinely ... to capture all data as required",
    ),
    (
        "monitored",
        "Backups should be monitored to make sure they are successful",
    ),
    (
        "test-restore",
        "A test restoration process will be run regularly and at least annually",
    ),
    (
        "off-site",
        "Backup media stored off-site must be transported and stored securely",
    ),
    (
        "marked",
        "Backups containing data that must be protected, should be clearly marked stating what they are and when they were taken and should be stored securely offsite",
    ),
    ("annual-check", "annual back-up and restore check of data"),
];

/// The days a pack covers, both included; in the JSON as `"2025-09-01"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    #[serde(with = "crate::repo::format::iso_date")]
    pub from: Date,
    #[serde(with = "crate::repo::format::iso_date")]
    pub to: Date,
}

impl Period {
    /// The school year (1 September to 31 August) that ended most recently on or before `today`.
    pub fn school_year_before(today: Date) -> Period {
        let this_year = jiff::civil::date(today.year(), 8, 31);
        let end = if today >= this_year {
            this_year
        } else {
            jiff::civil::date(today.year() - 1, 8, 31)
        };
        Period {
            from: jiff::civil::date(end.year() - 1, 9, 1),
            to: end,
        }
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        let d = crate::clock::utc_date(t);
        d >= self.from && d <= self.to
    }

    /// "2025–26" for a school year, else the two dates.
    pub fn name(&self) -> String {
        if self.from.month() == 9
            && self.from.day() == 1
            && self.to.month() == 8
            && self.to.day() == 31
            && self.to.year() == self.from.year() + 1
        {
            format!(
                "the school year {}–{:02}",
                self.from.year(),
                self.to.year() % 100
            )
        } else {
            format!("{} to {}", self.from, self.to)
        }
    }
}

/// A repository as the report describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryInfo {
    pub name: String,
    pub url: String,
    pub off_site: bool,
    pub encryption: String,
    pub immutability: String,
}

/// A schedule as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub name: String,
    pub label: Option<String>,
    pub paths: Vec<String>,
    pub cron: Option<String>,
    pub rpo_hours: Option<f64>,
}

/// What the report needs of a drill report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillSummary {
    pub report_id: String,
    pub plan: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub started: Timestamp,
    pub host: String,
    pub snapshot_id: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub snapshot_time: Timestamp,
    pub snapshot_label: Option<String>,
    pub selection: String,
    pub files_restored: u64,
    pub bytes_restored: u64,
    pub packs_verified: u64,
    pub files_verified: u64,
    pub source_compared: Option<u64>,
    /// Which metadata level 3 read back and compared ("permissions, owners, ACLs and
    /// extended attributes of 120 files and folders"); absent for drills before it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_verified: Option<String>,
    pub failures: Vec<DrillFailure>,
    pub checks: Vec<CheckSummary>,
    pub duration_ms: u64,
    pub full_restore_estimate_s: Option<f64>,
    pub objective_s: Option<f64>,
    pub objective_met: Option<bool>,
    pub confinement: String,
    pub passed: bool,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub command: String,
    pub file: String,
    pub passed: bool,
}

impl DrillSummary {
    pub fn of(report_id: &str, r: &DrillReport) -> DrillSummary {
        DrillSummary {
            report_id: report_id.to_string(),
            plan: r.plan.clone(),
            started: r.started,
            host: r.host.clone(),
            snapshot_id: r.snapshot.id.to_hex(),
            snapshot_time: r.snapshot.time,
            snapshot_label: r.snapshot.label.clone(),
            selection: format!("{} (seed {})", r.selection.method, r.selection.seed),
            files_restored: r.restore.files,
            bytes_restored: r.restore.bytes,
            packs_verified: r.levels.packs_verified,
            files_verified: r.levels.files_verified,
            source_compared: r.levels.source.as_ref().map(|s| s.compared),
            metadata_verified: r.levels.metadata.as_ref().map(|m| m.describe()),
            failures: r.failures.clone(),
            checks: r
                .checks
                .iter()
                .map(|c| CheckSummary {
                    command: c.command.join(" "),
                    file: c.file.clone(),
                    passed: c.passed,
                })
                .collect(),
            duration_ms: r.duration_ms,
            full_restore_estimate_s: r.full_restore_estimate_s,
            objective_s: r.objective_s,
            objective_met: r.objective_met,
            confinement: r.sandbox.confinement.to_string(),
            passed: r.passed,
            reasons: r.reasons.clone(),
        }
    }
}

/// Coverage of stored data by verification, at the time the pack was built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoverageInfo {
    pub repository: String,
    pub window_days: f64,
    pub percent: f64,
    pub bytes: u64,
    pub bytes_verified: u64,
    pub packs_never_verified: usize,
}

/// The journal rows the pack carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalSection {
    /// The hash of the newest row in the journal when the pack was built.
    pub head: String,
    /// True when `rows` is every row of one journal from the first in the period to the last
    /// (a pack built from the local journal), so that a missing row is a gap `evidence verify`
    /// reports. False for a pack built from the repository's mirrors, which hold only the rows
    /// of runs in that repository.
    #[serde(default)]
    pub contiguous: bool,
    pub rows: Vec<Entry>,
}

/// The inputs: what the pack was built from. Everything in `derived` follows from these.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inputs {
    pub school: String,
    pub period: Period,
    /// Set when the pack was built from vouch.toml; `None` for a pack from the repository's
    /// records alone.
    pub alert_recipients: Option<usize>,
    pub repositories: Vec<RepositoryInfo>,
    pub schedules: Vec<ScheduleInfo>,
    pub journal: JournalSection,
    pub drills: Vec<DrillSummary>,
    pub coverage: Vec<CoverageInfo>,
}

/// The whole evidence document, as `evidence.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evidence {
    pub schema: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub generated: Timestamp,
    pub generated_by: String,
    pub host: String,
    pub signing_key_id: String,
    pub inputs: Inputs,
    pub derived: Derived,
}

impl Evidence {
    pub fn new(inputs: Inputs, generated: Timestamp, signing_key_id: String) -> Evidence {
        let derived = derive(&inputs, generated);
        Evidence {
            schema: SCHEMA.to_string(),
            generated,
            generated_by: format!("vouch {}", env!("CARGO_PKG_VERSION")),
            host: crate::sys::hostname(),
            signing_key_id,
            inputs,
            derived,
        }
    }
}

/// Write `evidence.json` and `evidence.html` into `dir` and sign both.
/// Why a pack (or a proof) could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The signing key, or a file of the pack.
    #[error(transparent)]
    Sign(#[from] sign::SignError),
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// What was asked for is not something a pack or proof can be made of (a note instead of
    /// a drill, no recipients).
    #[error("{0}")]
    NotApplicable(String),
}

pub fn write_pack(
    dir: &std::path::Path,
    evidence: &Evidence,
    sk: &minisign::SecretKey,
    pk: &minisign::PublicKey,
) -> Result<Vec<std::path::PathBuf>, sign::SignError> {
    let trusted = |f: &str| {
        format!(
            "vouch evidence {f} for {} ({}), generated {}",
            evidence.inputs.school,
            evidence.inputs.period.name(),
            crate::clock::human(evidence.generated)
        )
    };
    sign::write_signed(
        dir,
        &[
            (
                "evidence.json",
                serde_json::to_vec_pretty(evidence).expect("evidence serializes"),
                trusted("evidence.json"),
            ),
            (
                "evidence.html",
                render_html(evidence).into_bytes(),
                trusted("evidence.html"),
            ),
        ],
        sk,
        pk,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_period_is_the_last_school_year_ended() {
        let p = Period::school_year_before(jiff::civil::date(2026, 9, 1));
        assert_eq!(
            (p.from, p.to),
            (
                jiff::civil::date(2025, 9, 1),
                jiff::civil::date(2026, 8, 31)
            )
        );
        let p = Period::school_year_before(jiff::civil::date(2026, 8, 30));
        assert_eq!(
            (p.from, p.to),
            (
                jiff::civil::date(2024, 9, 1),
                jiff::civil::date(2025, 8, 31)
            )
        );
        let p = Period::school_year_before(jiff::civil::date(2026, 8, 31));
        assert_eq!(
            (p.from, p.to),
            (
                jiff::civil::date(2025, 9, 1),
                jiff::civil::date(2026, 8, 31)
            )
        );
        assert_eq!(p.name(), "the school year 2025–26");
    }
}
