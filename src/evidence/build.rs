//! Gathering what a pack is built from: the school's configuration, its journal and the
//! repositories it names (handed in by the service), or a repository's own records when the
//! NAS (and its journal) is gone.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::journal::{Entry, Record};
use crate::repo::Repository;
use crate::repo::crypto::Kind;
use crate::storage::RepoUrl;
use crate::verify::drill::DrillReport;
use crate::verify::ledger::{Ledger, coverage};

use super::{
    CoverageInfo, DrillSummary, Inputs, JournalSection, Period, RepositoryInfo, ScheduleInfo,
};

const ENCRYPTION: &str = "AES-256-GCM, a key per object; keys wrapped with argon2id; object names are blake3 of their bytes";
const IMMUTABILITY: &str = "not configured (S3 Object Lock is not in use)";

/// What protects the repository's objects from deletion, read from its config and checked
/// against what the storage reports for the config object itself.
async fn immutability_of(repo: Option<&Repository>) -> String {
    let Some(repo) = repo else {
        return "unknown (the repository could not be opened)".into();
    };
    let Some(r) = repo.config().object_lock else {
        return IMMUTABILITY.into();
    };
    let configured = format!(
        "S3 Object Lock, {} mode: every object retained for {} days from when it is written, and extended by prune while a snapshot needs it",
        r.mode, r.days
    );
    match repo.store().object_retention("config").await {
        Ok(o) => match o.until {
            Some(until) => format!(
                "{configured}; the storage reports the repository's config object retained until {}",
                crate::clock::human(until)
            ),
            None => format!(
                "{configured}; but the storage reports no retention on the repository's config object"
            ),
        },
        Err(e) => format!("{configured}; the retention could not be read back ({e})"),
    }
}

fn entry_time(e: &Entry) -> jiff::Timestamp {
    match &e.record {
        Record::Run(r) => r.started,
        Record::Annotation(a) => a.time,
    }
}

fn in_period(rows: Vec<Entry>, period: &Period) -> Vec<Entry> {
    rows.into_iter()
        .filter(|e| period.contains(entry_time(e)))
        .collect()
}

/// Every row from the first in the period to the last, so the chain has no gaps (a run that
/// ended after a later one started is journalled after it, so times are not quite in order).
fn span_of_period(rows: Vec<Entry>, period: &Period) -> Vec<Entry> {
    let inside = |e: &Entry| period.contains(entry_time(e));
    let (Some(first), Some(last)) = (rows.iter().position(inside), rows.iter().rposition(inside))
    else {
        return Vec::new();
    };
    rows.into_iter()
        .skip(first)
        .take(last + 1 - first)
        .collect()
}

async fn coverage_of(name: &str, repo: &Repository) -> Option<CoverageInfo> {
    let (index, _) = repo.load_index().await.ok()?;
    let (ledger, _) = Ledger::load(repo).await.ok()?;
    let c = coverage(
        &index,
        &ledger,
        repo.clock().now(),
        jiff::SignedDuration::from_hours(168 * 13),
    );
    Some(CoverageInfo {
        repository: name.to_string(),
        window_days: c.window_days,
        percent: (c.percent * 10.0).round() / 10.0,
        bytes: c.bytes,
        bytes_verified: c.bytes_verified,
        packs_never_verified: c.never_verified.len(),
    })
}

/// The reports of the drills in `rows`, from the repositories in `repos` (by the name the
/// journal records).
async fn drill_summaries(
    rows: &[Entry],
    repos: &BTreeMap<String, std::sync::Arc<Repository>>,
) -> Vec<DrillSummary> {
    let mut out = Vec::new();
    for e in rows {
        let Record::Run(r) = &e.record else { continue };
        let (Some(id), crate::journal::RunKind::Drill) = (&r.report, r.kind) else {
            continue;
        };
        let Some(repo) = repos.get(&r.repository) else {
            continue;
        };
        if let Ok(report) = repo
            .load_document::<DrillReport>(Kind::DrillReport, &format!("drills/{id}"))
            .await
        {
            out.push(DrillSummary::of(id, &report));
        }
    }
    out
}

/// What the school's records are: its configuration, every journal row, and the
/// repositories that could be opened (by name).
pub struct Records<'a> {
    pub config: &'a Config,
    pub journal: Vec<Entry>,
    pub repositories: BTreeMap<String, std::sync::Arc<Repository>>,
}

/// From vouch.toml, the local journal and the repositories.
pub async fn from_records(
    records: Records<'_>,
    period: Period,
) -> Result<Inputs, super::EvidenceError> {
    let c = records.config;
    let all = records.journal;
    let repos = records.repositories;
    let head = all
        .last()
        .map_or(crate::journal::store_genesis(), |e| e.hash.clone());
    let rows = span_of_period(all, &period);
    let drills = drill_summaries(&in_period(rows.clone(), &period), &repos).await;
    let mut repositories = Vec::new();
    let mut cover = Vec::new();
    for (name, rc) in &c.repositories {
        let off_site = !matches!(RepoUrl::parse(&rc.url), Ok(RepoUrl::Local(_)));
        repositories.push(RepositoryInfo {
            name: name.clone(),
            url: RepoUrl::parse(&rc.url)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| rc.url.clone()),
            off_site,
            encryption: ENCRYPTION.into(),
            immutability: immutability_of(repos.get(name).map(|r| &**r)).await,
        });
        if let Some(repo) = repos.get(name) {
            if let Some(cv) = coverage_of(name, repo).await {
                cover.push(cv);
            }
        }
    }
    Ok(Inputs {
        school: c.school.clone(),
        period,
        alert_recipients: Some(c.alerts_to.len()),
        repositories,
        schedules: c
            .schedules
            .iter()
            .map(|s| ScheduleInfo {
                name: s.name.clone(),
                label: s.label.clone(),
                paths: s.paths.iter().map(|p| p.display().to_string()).collect(),
                cron: Some(s.cron.text().to_string()),
                rpo_hours: Some(s.rpo.as_secs_f64() / 3600.0),
            })
            .collect(),
        journal: JournalSection {
            head,
            contiguous: true,
            rows,
        },
        drills,
        coverage: cover,
    })
}

/// From a repository's own records: its journal mirror (every host), drill reports, and the
/// labels in its snapshots. Schedules' RPOs are not in the repository, so staleness is not
/// judged.
pub async fn from_repository(
    repo: std::sync::Arc<Repository>,
    school: &str,
    period: Period,
) -> Result<Inputs, super::EvidenceError> {
    let hosts: BTreeSet<String> = repo
        .store()
        .list("journal/")
        .await
        .map_err(crate::repo::RepoError::from)?
        .into_iter()
        .filter_map(|(k, _)| k.split('/').nth(1).map(str::to_string))
        .collect();
    let mut all: BTreeMap<(String, crate::journal::RowId), Entry> = BTreeMap::new();
    for host in &hosts {
        let (rows, _) = crate::journal::load_mirror(&repo, host).await?;
        for (seq, e) in rows {
            all.insert((host.clone(), seq), e);
        }
    }
    let head = all
        .values()
        .last()
        .map_or(crate::journal::store_genesis(), |e| e.hash.clone());
    let rows = in_period(all.into_values().collect(), &period);
    // Every drill mirrored here ran against this repository, whatever its host called it.
    let repos = rows
        .iter()
        .filter_map(|e| match &e.record {
            Record::Run(r) => Some((r.repository.clone(), repo.clone())),
            Record::Annotation(_) => None,
        })
        .collect();
    let drills = drill_summaries(&rows, &repos).await;
    let (snapshots, _) = repo.snapshots().await?;
    let mut schedules: BTreeMap<String, ScheduleInfo> = BTreeMap::new();
    for e in &rows {
        if let Record::Run(r) = &e.record {
            if r.kind == crate::journal::RunKind::Backup {
                let snap = snapshots
                    .iter()
                    .rev()
                    .find(|(_, s)| s.schedule.as_deref() == Some(&r.job));
                schedules
                    .entry(r.job.clone())
                    .or_insert_with(|| ScheduleInfo {
                        name: r.job.clone(),
                        label: snap.and_then(|(_, s)| s.label.clone()),
                        paths: snap.map(|(_, s)| s.paths.clone()).unwrap_or_default(),
                        cron: None,
                        rpo_hours: None,
                    });
            }
        }
    }
    let url = repo.url().to_string();
    let off_site = !matches!(RepoUrl::parse(&url), Ok(RepoUrl::Local(_)));
    Ok(Inputs {
        school: school.to_string(),
        period,
        alert_recipients: None,
        repositories: vec![RepositoryInfo {
            name: url.clone(),
            url: url.clone(),
            off_site,
            encryption: ENCRYPTION.into(),
            immutability: immutability_of(Some(&repo)).await,
        }],
        schedules: schedules.into_values().collect(),
        journal: JournalSection {
            head,
            contiguous: false,
            rows,
        },
        drills,
        coverage: coverage_of(&url, &repo).await.into_iter().collect(),
    })
}
