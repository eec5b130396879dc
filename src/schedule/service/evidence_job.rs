//! The service's evidence work: gather the school's records for `evidence`, journal the
//! sending of a pack as an `evidence` run, and prove one drill. What a pack says is
//! `evidence`'s; who asked, where it went and the journal are the service's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::evidence::send::SigningKey;
use crate::evidence::{Evidence, Period};
use crate::journal::{Details, Outcome, RunRecord, Trigger};

use super::{EvidenceDetails, JobOutcome, Service, ServiceError};

impl Service {
    /// Everything a pack is built from: the configuration, the journal, and each repository
    /// that can be opened now.
    pub async fn evidence_records(
        &self,
    ) -> Result<crate::evidence::build::Records<'_>, ServiceError> {
        let journal = self.with_journal(|j| j.entries())?;
        let mut repositories = BTreeMap::new();
        for name in self.config.repositories.keys() {
            if let Ok(repo) = self.repository(name).await {
                repositories.insert(name.clone(), repo);
            }
        }
        Ok(crate::evidence::build::Records {
            config: &self.config,
            journal,
            repositories,
        })
    }

    /// Build and sign the pack for `period` into `dir`.
    pub async fn build_evidence(
        &self,
        period: Period,
        dir: &Path,
        key: &SigningKey,
    ) -> Result<Evidence, ServiceError> {
        let records = self.evidence_records().await?;
        Ok(crate::evidence::send::build_pack(records, period, self.clock.now(), dir, key).await?)
    }

    /// Build the last school year's pack (or `period`'s) into the state directory and email
    /// it (through the outbox) to the evidence recipients; journalled as an `evidence` run,
    /// whose outcome says whether it worked. Errs only when the journal cannot be written.
    pub async fn send_evidence(
        &self,
        period: Option<Period>,
        dir: Option<PathBuf>,
        trigger: Trigger,
        operator: &str,
    ) -> Result<(JobOutcome, PathBuf), ServiceError> {
        let started = self.clock.now();
        let period =
            period.unwrap_or_else(|| Period::school_year_before(crate::clock::utc_date(started)));
        let dir = dir.unwrap_or_else(|| {
            self.state_dir()
                .join("evidence")
                .join(format!("{}_{}", period.from, period.to))
        });
        let to = self.config.evidence_to.clone();
        let result = async {
            if to.is_empty() {
                return Err("no recipients: add them to [evidence] to in vouch.toml".to_string());
            }
            let key = SigningKey::of_config(&self.config);
            let evidence = self
                .build_evidence(period.clone(), &dir, &key)
                .await
                .map_err(|e| e.to_string())?;
            let message =
                crate::evidence::send::message(&evidence, &dir, &to).map_err(|e| e.to_string())?;
            self.with_journal(|j| {
                crate::notify::Outbox::new(j.connection())?.enqueue(&message, self.clock.now())
            })
            .map_err(|e| e.to_string())?;
            Ok(evidence)
        }
        .await;
        let (outcome, summary, error) = match &result {
            Ok(e) => (
                Outcome::Success,
                format!(
                    "evidence pack for {} sent to {} recipient(s): {}",
                    period.name(),
                    to.len(),
                    if e.derived.met {
                        "requirements met"
                    } else {
                        "requirements NOT met"
                    }
                ),
                None,
            ),
            Err(e) => (
                Outcome::Failed,
                format!("evidence pack for {} not sent", period.name()),
                Some(e.clone()),
            ),
        };
        let repository = self
            .config
            .repositories
            .keys()
            .next()
            .cloned()
            .unwrap_or_default();
        let record = RunRecord {
            error,
            details: Details::of(&EvidenceDetails {
                dir: dir.display().to_string(),
                period,
            }),
            ..self.record(
                crate::journal::RunKind::Evidence,
                "evidence",
                trigger,
                operator,
                &repository,
                started,
                outcome,
                summary,
            )
        };
        let outcome = self.record_run(record).await?;
        Ok((outcome, dir))
    }

    /// A signed proof of the drill journalled as `run`.
    pub async fn evidence_proof(
        &self,
        run: crate::journal::RowId,
        dir: &Path,
        key: &SigningKey,
    ) -> Result<crate::evidence::proof::Proof, ServiceError> {
        let (entry, all) = self.with_journal(|j| {
            Ok::<_, crate::journal::JournalError>((j.entry(run)?, j.entries()?))
        })?;
        let repository = match &entry.record {
            crate::journal::Record::Run(r) => r.repository.clone(),
            crate::journal::Record::Annotation(_) => {
                return Err(crate::evidence::EvidenceError::NotApplicable(format!(
                    "row {run} is a note, not a run"
                ))
                .into());
            }
        };
        let repo = self.repository(&repository).await?;
        Ok(crate::evidence::send::proof(
            entry,
            all,
            &repo,
            &self.config.school,
            self.clock.now(),
            dir,
            key,
        )
        .await?)
    }
}
