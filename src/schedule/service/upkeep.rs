//! The service's upkeep of a repository: the ransomware check after each backup, the
//! schedule's retention, the scheduled prune, and a person's acknowledgement of an alert.

use super::{BackupDetails, ForgetDetails, RansomwareFlag, RefusedSnapshot};
use super::{JobOutcome, Service, ServiceError};
use crate::backup::changes::ChangeStats;
use crate::config::Schedule;
use crate::journal::{Details, Outcome, Record, RowId, RunKind, RunRecord, Trigger};
use crate::notify::Monitor;
use crate::repo::ids::SnapshotId;

/// How many earlier good backups make a schedule's "normal".
const HISTORY: usize = 10;

/// A backup that looks like ransomware: why, in words for the email and the journal.
#[derive(Clone, Debug, PartialEq)]
pub struct Suspicion {
    pub title: String,
    pub detail: String,
}

fn pct(x: f64) -> String {
    if x >= 10.0 || x == 0.0 {
        format!("{x:.0}%")
    } else {
        format!("{x:.1}%")
    }
}

/// Judge a backup's changes against the schedule's recent backups. It is suspicious when many
/// files (at least 10, and 10% of the share) turned into encrypted-looking content and that is
/// at least five times the recent normal; when a ransom note appeared beside encrypted-looking
/// files; or when at least half of a share of 100 files or more changed or vanished at once,
/// ten times the recent normal.
pub fn judge(job: &str, c: &ChangeStats, history: &[ChangeStats]) -> Option<Suspicion> {
    let normal_enc = history
        .iter()
        .map(ChangeStats::encrypted_percent)
        .fold(0.0, f64::max);
    let normal_changed = history
        .iter()
        .map(ChangeStats::changed_percent)
        .fold(0.0, f64::max);
    let enc = c.encrypted_percent();
    let changed = c.changed_percent();
    let normal = |n: f64| {
        if history.is_empty() {
            "there is no history yet to compare with".to_string()
        } else if n < 1.0 {
            "normal is under 1%".to_string()
        } else {
            format!("normal is under {}", pct(n.ceil()))
        }
    };
    let examples = if c.examples.is_empty() {
        String::new()
    } else {
        format!(" For example: {}.", c.examples.join(", "))
    };
    let notes = if c.ransom_notes.is_empty() {
        String::new()
    } else {
        format!(
            " New files named like ransom notes: {}.",
            c.ransom_notes.join(", ")
        )
    };
    let encrypted = c.files_encrypted_looking >= 10 && enc >= 10.0 && enc >= 5.0 * normal_enc;
    let noted = !c.ransom_notes.is_empty() && c.files_encrypted_looking > 0;
    if encrypted || noted {
        return Some(Suspicion {
            title: format!("possible ransomware in backup {job}"),
            detail: format!(
                "possible ransomware: {} of files rewritten with encrypted-looking content ({} of {}), {}.{examples}{notes}",
                pct(enc),
                c.files_encrypted_looking,
                c.files_before,
                normal(normal_enc)
            ),
        });
    }
    if c.files_before >= 100 && changed >= 50.0 && changed >= 10.0 * normal_changed {
        return Some(Suspicion {
            title: format!("unusual change in backup {job}"),
            detail: format!(
                "possible ransomware or a mass deletion: {} of files changed or removed at once ({} changed, {} removed, of {}), {}.{examples}",
                pct(changed),
                c.files_changed,
                c.files_removed,
                c.files_before,
                normal(normal_changed)
            ),
        });
    }
    None
}

/// What to do next, in the alert.
fn advice(job: &str, seq_hint: &str, snapshot: &str) -> String {
    format!(
        "\n\nLook at the share now: if files were encrypted, disconnect the NAS from the network and restore from a snapshot taken before this one (`vouch snapshots`). \
         Snapshot {snapshot} is held out of retention, and retention for {job} is paused, so the earlier snapshots stay. \
         If the change was expected, acknowledge it: vouch acknowledge {seq_hint} --note \"what it was\""
    )
}

impl Service {
    /// The change statistics of this schedule's recent good backups, newest last.
    fn change_history(&self, job: &str) -> Result<Vec<ChangeStats>, ServiceError> {
        let runs = self.with_journal(|j| j.runs())?;
        let mut out: Vec<ChangeStats> = runs
            .iter()
            .filter(|(_, r)| r.kind == RunKind::Backup && r.job == job && r.outcome.is_good())
            .filter_map(|(_, r)| r.details_as::<BackupDetails>())
            .filter(|d| d.ransomware.is_none())
            .filter_map(|d| d.summary?.changes)
            .collect();
        let skip = out.len().saturating_sub(HISTORY);
        out.drain(..skip);
        Ok(out)
    }

    /// After a good backup: judge its changes; if suspicious, hold its snapshot and put the
    /// suspicion in the run's details (the monitor opens the incident when it is journalled).
    pub(super) async fn check_for_ransomware(
        &self,
        s: &Schedule,
        snapshot: SnapshotId,
        changes: &ChangeStats,
        record: &mut RunRecord,
    ) -> Result<(), ServiceError> {
        let history = self.change_history(&s.name)?;
        let Some(suspicion) = judge(&s.name, changes, &history) else {
            return Ok(());
        };
        let held = match self.repository(&s.repository).await {
            Ok(repo) => crate::retention::hold(&repo, snapshot, &suspicion.detail)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut detail = suspicion.detail.clone();
        if let Err(e) = held {
            detail.push_str(&format!(
                "\n\nThe hold on snapshot {} could not be written ({e}); retention for {} is paused all the same.",
                snapshot.short(),
                s.name
            ));
        }
        record
            .summary
            .push_str(&format!("; {}", suspicion.title.to_uppercase()));
        let mut details = record.details_as::<BackupDetails>().unwrap_or_default();
        details.ransomware = Some(RansomwareFlag {
            title: suspicion.title,
            detail,
            snapshot,
        });
        record.details = Details::of(&details);
        Ok(())
    }

    /// The incident for a suspicious backup, once it is journalled as run `seq`.
    pub(super) fn open_ransomware_incident(
        &self,
        monitor: &Monitor,
        seq: RowId,
        record: &RunRecord,
    ) -> Result<(), ServiceError> {
        let Some(r) = record
            .details_as::<BackupDetails>()
            .and_then(|d| d.ransomware)
        else {
            return Ok(());
        };
        let snapshot = r.snapshot.to_hex();
        let detail = format!(
            "{}{}",
            r.detail,
            advice(
                &record.job,
                &seq.to_string(),
                &snapshot[..snapshot.len().min(8)]
            )
        );
        monitor.open(
            &crate::notify::incident::IncidentKind::Ransomware.key(&record.job),
            crate::notify::incident::IncidentKind::Ransomware,
            &record.job,
            &r.title,
            &detail,
            Some(seq),
            self.clock.now(),
        )?;
        Ok(())
    }

    /// Whether a possible-ransomware alert on this schedule awaits acknowledgement.
    fn ransomware_open(&self, job: &str) -> Result<bool, ServiceError> {
        let open = self.with_journal(|j| {
            Monitor::new(j.connection(), &self.config).and_then(|m| m.incidents(false))
        })?;
        Ok(open
            .iter()
            .any(|i| i.key == crate::notify::incident::IncidentKind::Ransomware.key(job)))
    }

    /// The schedule's retention, after a good backup; journalled as a `forget` run.
    pub(super) async fn apply_retention(
        &self,
        s: &Schedule,
        trigger: Trigger,
        operator: &str,
    ) -> Result<Option<JobOutcome>, ServiceError> {
        if s.keep.is_empty() {
            return Ok(None);
        }
        let started = self.clock.now();
        let job = s.name.clone();
        let record = |outcome, summary: String, error: Option<String>, details| RunRecord {
            error,
            details,
            ..self.record(
                RunKind::Forget,
                &job,
                trigger,
                operator,
                &s.repository,
                started,
                outcome,
                summary,
            )
        };
        if self.ransomware_open(&s.name)? {
            let r = record(
                Outcome::Success,
                format!(
                    "retention for {} paused: a possible-ransomware alert awaits acknowledgement (`vouch acknowledge RUN`)",
                    s.name
                ),
                None,
                Details::none(),
            );
            return Ok(Some(self.finish(r).await?));
        }
        let result = match self.repository(&s.repository).await {
            Err(e) => Err(e.to_string()),
            Ok(repo) => crate::retention::forget(
                &repo,
                &crate::retention::ForgetOptions {
                    policy: s.keep.clone(),
                    schedule: Some(s.name.clone()),
                    ..Default::default()
                },
                &self.config.time_zone,
            )
            .await
            .map_err(|e| e.to_string()),
        };
        let r = match result {
            Ok(report) => {
                let total: usize = report.groups.iter().map(|g| g.decisions.len()).sum();
                let kept: usize = report.groups.iter().map(|g| g.kept()).sum();
                let mut summary = format!(
                    "{}: kept {kept} of {total} snapshot(s), removed {}",
                    s.name,
                    report.removed.len()
                );
                if !report.refused.is_empty() {
                    summary.push_str(&format!(
                        "; {} the storage would not delete yet (Object Lock)",
                        report.refused.len()
                    ));
                }
                record(
                    Outcome::Success,
                    summary,
                    None,
                    Details::of(&ForgetDetails {
                        removed: report.removed.iter().map(|i| i.to_hex()).collect(),
                        refused: report
                            .refused
                            .iter()
                            .map(|(i, why)| RefusedSnapshot {
                                snapshot: i.to_hex(),
                                why: why.to_string(),
                            })
                            .collect(),
                    }),
                )
            }
            Err(e) => record(
                Outcome::Failed,
                format!("retention for {} failed", s.name),
                Some(e),
                Details::none(),
            ),
        };
        Ok(Some(self.finish(r).await?))
    }

    /// `prune:<repository>`: prune on the repository's own schedule; journalled as `prune`.
    pub async fn run_prune(
        &self,
        repository: &str,
        trigger: Trigger,
        operator: &str,
    ) -> Result<JobOutcome, ServiceError> {
        let _guard = self.exclusive(repository).await?;
        let started = self.clock.now();
        let job = format!("prune:{repository}");
        let result = match self.repository(repository).await {
            Err(e) => Err(e.to_string()),
            Ok(repo) => crate::prune::prune(repo, &Default::default())
                .await
                .map_err(|e| e.to_string()),
        };
        let (outcome, summary, error, details) = match result {
            Ok(r) => {
                let mut summary = format!(
                    "freed {} ({} pack(s) removed, {} repacked); {} in storage",
                    crate::units::size(r.bytes_freed.saturating_sub(r.bytes_written)),
                    r.packs_removed,
                    r.packs_repacked,
                    crate::units::size(r.bytes_after)
                );
                if !r.refused.is_empty() {
                    summary.push_str(&format!(
                        "; {} object(s) the storage would not delete yet, for a later prune",
                        r.refused.len()
                    ));
                }
                if r.retention_extended > 0 {
                    summary.push_str(&format!(
                        "; Object Lock retention extended on {} object(s)",
                        r.retention_extended
                    ));
                }
                (Outcome::Success, summary, None, Details::of(&r))
            }
            Err(e) => (
                Outcome::Failed,
                format!("prune of {repository} failed"),
                Some(e),
                Details::none(),
            ),
        };
        let record = RunRecord {
            error,
            details,
            ..self.record(
                RunKind::Prune,
                &job,
                trigger,
                operator,
                repository,
                started,
                outcome,
                summary,
            )
        };
        self.finish(record).await
    }

    /// A person says a possible-ransomware alert was expected (or dealt with): the note goes
    /// on the run, the snapshot's hold is released, retention resumes, and the incident is
    /// resolved (one email says so).
    pub async fn acknowledge(
        &self,
        run: RowId,
        note: &str,
        operator: &str,
    ) -> Result<String, ServiceError> {
        let entry = self.with_journal(|j| j.entry(run))?;
        let Record::Run(r) = &entry.record else {
            return Err(ServiceError::NoJob(format!(
                "row {run} is a note, not a run"
            )));
        };
        let Some(flag) = r.details_as::<BackupDetails>().and_then(|d| d.ransomware) else {
            return Err(ServiceError::NoJob(format!(
                "run #{run} ({} {}) raised no ransomware alert; `vouch status` lists open incidents",
                r.kind, r.job
            )));
        };
        let repo = self.repository(&r.repository).await?;
        let released = crate::retention::release(&repo, flag.snapshot, operator).await?;
        self.annotate(run, &format!("acknowledged: {note}"), operator)
            .await?;
        let how = format!("acknowledged by {operator}: {note}");
        self.with_journal(|j| {
            Monitor::new(j.connection(), &self.config)?.resolve(
                &crate::notify::incident::IncidentKind::Ransomware.key(&r.job),
                &how,
                self.clock.now(),
            )
        })?;
        self.housekeeping().await?;
        Ok(format!(
            "run #{run} ({}) acknowledged; {released} hold(s) released and retention for {} resumes",
            r.job, r.job
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(before: u64, changed: u64, removed: u64, enc: u64) -> ChangeStats {
        ChangeStats {
            files_before: before,
            files_changed: changed,
            files_removed: removed,
            files_encrypted_looking: enc,
            ..Default::default()
        }
    }

    #[test]
    fn an_encrypted_night_is_suspicious_and_ordinary_days_are_not() {
        let normal: Vec<ChangeStats> = (0..10).map(|i| day(1000, 40 + i, 5, i % 3)).collect();
        assert_eq!(judge("staff", &day(1000, 50, 10, 2), &normal), None);
        let s = judge("staff", &day(1000, 380, 0, 380), &normal).unwrap();
        assert_eq!(s.title, "possible ransomware in backup staff");
        assert!(
            s.detail.starts_with(
                "possible ransomware: 38% of files rewritten with encrypted-looking content (380 of 1000), normal is under 1%"
            ),
            "{}",
            s.detail
        );
        // A busy week at the start of term is not an alert; half the share gone at once is.
        assert_eq!(judge("staff", &day(1000, 200, 30, 0), &normal), None);
        let s = judge("staff", &day(1000, 100, 600, 0), &normal).unwrap();
        assert!(
            s.detail.contains("70% of files changed or removed"),
            "{}",
            s.detail
        );
        // A ransom note beside even a few encrypted files is enough.
        let mut c = day(1000, 3, 0, 3);
        c.ransom_notes = vec!["/volume1/staff/HOW_TO_DECRYPT.txt".into()];
        assert!(judge("staff", &c, &normal).is_some());
        // A share that always churns encrypted files (a VeraCrypt container folder) is normal.
        let noisy: Vec<ChangeStats> = (0..10).map(|_| day(1000, 300, 0, 300)).collect();
        assert_eq!(judge("staff", &day(1000, 320, 0, 320), &noisy), None);
    }
}
