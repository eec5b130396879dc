//! The service's jobs: a backup of a schedule, a drill of a plan, each journalled, mirrored
//! into its repository, watched by the monitor, with heartbeats and email. `vouch run` calls
//! one; the daemon calls them on their cron expressions.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::{Config, Plan, RepositoryConfig, Schedule};
use crate::journal::{
    Details, Journal, Outcome, Record, RowId, RunDetails, RunKind, RunRecord, Trigger,
};
use crate::notify::heartbeat::{Beat, ping};
use crate::notify::{Mailer, Monitor, mailer_for};
use crate::repo::ids::SnapshotId;
use crate::storage::{RepoUrl, S3Options, Store};
use crate::{BackupOptions, Repository, Secret};

mod evidence_job;
mod upkeep;

/// What a backup run records: how long it waited for its repository, what the backup did (when
/// it finished), and a possible-ransomware flag.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupDetails {
    pub waited_for_repository_s: u64,
    pub waited_past_next_slot: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<crate::repo::format::snapshot::BackupSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ransomware: Option<RansomwareFlag>,
    /// A backup that stopped before its snapshot (paused at the end of its window, or
    /// interrupted): how far this source's unfinished backup has got, checkpointed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfinished: Option<crate::backup::SeedProgress>,
}

/// A backup whose changes looked like ransomware: what the alert says, and the snapshot held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RansomwareFlag {
    pub title: String,
    pub detail: String,
    /// The held snapshot.
    pub snapshot: SnapshotId,
}

impl RunDetails for BackupDetails {
    const KIND: RunKind = RunKind::Backup;
}

/// What a retention run removed, and what the storage would not delete yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetDetails {
    /// Hex ids of the snapshots removed.
    pub removed: Vec<String>,
    pub refused: Vec<RefusedSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedSnapshot {
    pub snapshot: String,
    pub why: String,
}

impl RunDetails for ForgetDetails {
    const KIND: RunKind = RunKind::Forget;
}

/// Where an evidence run wrote its pack, and for which period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceDetails {
    pub dir: String,
    pub period: crate::evidence::Period,
}

impl RunDetails for EvidenceDetails {
    const KIND: RunKind = RunKind::Evidence;
}

/// A drill records its whole report.
impl RunDetails for crate::verify::drill::DrillReport {
    const KIND: RunKind = RunKind::Drill;
}

/// A prune records its report.
impl RunDetails for crate::prune::PruneReport {
    const KIND: RunKind = RunKind::Prune;
}

/// What the service runs. Its `key` names it in the journal's job state and for `vouch run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// A schedule's backup.
    Backup(String),
    /// A restore-test plan's drill.
    Drill(String),
    /// A repository's prune, on its own cron.
    Prune(String),
    /// The annual evidence pack.
    Evidence,
}

impl JobKind {
    pub fn key(&self) -> String {
        match self {
            JobKind::Backup(n) | JobKind::Drill(n) => n.clone(),
            JobKind::Prune(r) => format!("prune:{r}"),
            JobKind::Evidence => "evidence".into(),
        }
    }
}

/// A finished job: its journal row and what was recorded (`cli` turns the outcome into the
/// exit code `vouch run` ends with).
#[derive(Debug)]
pub struct JobOutcome {
    pub seq: RowId,
    pub record: RunRecord,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("mail cannot be set up: {0}")]
    Mail(#[from] crate::notify::mailer::MailError),
    #[error("no schedule or restore-test plan is called {0:?}; `vouch status` lists them")]
    NoJob(String),
    #[error(
        "cannot take the local lock for repository {repository} in the state directory: {source} (no job runs unguarded: check that the state directory is writable)"
    )]
    LocalLock {
        repository: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::EvidenceError),
}

/// Why a repository named in vouch.toml could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("there is no repository {0:?} in vouch.toml")]
    Unknown(String),
    #[error(transparent)]
    Url(#[from] crate::storage::UrlError),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::EvidenceError),
}

pub struct Service {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    journal: Mutex<Journal>,
    mailer: Box<dyn Mailer>,
    host: String,
    repos: tokio::sync::Mutex<HashMap<String, Arc<Repository>>>,
    /// Set when the shutdown deadline passes: a running backup stops at a consistent point.
    pub abort: Arc<std::sync::atomic::AtomicBool>,
    /// Emails delivered by this service so far.
    pub mail_sent: std::sync::atomic::AtomicUsize,
}

/// The S3 settings of a repository in vouch.toml, with its secret key read from its file.
pub fn s3_options(rc: &RepositoryConfig) -> Result<S3Options, OpenError> {
    let secret = match &rc.secret_access_key_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|source| OpenError::File {
                    path: f.display().to_string(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        None => None,
    };
    Ok(S3Options {
        endpoint: rc.s3_endpoint.clone(),
        region: rc.s3_region.clone(),
        path_style: rc.s3_path_style,
        access_key_id: rc.access_key_id.clone(),
        secret_access_key: secret,
    })
}

/// Open a repository as vouch.toml describes it.
/// Open a configured repository; with `cache`, its metadata is read through the cache there.
pub async fn open_repository(
    rc: &RepositoryConfig,
    cache: Option<PathBuf>,
) -> Result<Repository, OpenError> {
    let url = RepoUrl::parse(&rc.url)?;
    let s3 = s3_options(rc)?;
    let store = Store::open(&url, &s3)?;
    let store = match cache {
        Some(root) => store.with_cache_root(root),
        None => store,
    };
    let pass = std::fs::read_to_string(&rc.password_file).map_err(|source| OpenError::File {
        path: format!("the password file {}", rc.password_file.display()),
        source,
    })?;
    let pass = pass.lines().next().unwrap_or_default().to_string();
    Ok(Repository::open(store, &Secret::new(pass)).await?)
}

/// Why a scheduled backup did not produce a snapshot.
#[derive(Debug, thiserror::Error)]
enum BackupFailure {
    #[error("repository {0} cannot be opened: {1}")]
    Open(String, OpenError),
    #[error(transparent)]
    Backup(crate::BackupError),
    #[error(
        "not started: it is outside the schedule's window ({0}); its next run in the window backs up"
    )]
    OutsideWindow(String),
}

/// A schedule's bandwidth limits, kept up to date with the time of day while its backup runs;
/// the process's own limits (the command line's) come back when it stops.
struct Shaping {
    task: Option<tokio::task::JoinHandle<()>>,
    base: (Option<crate::storage::Rate>, Option<crate::storage::Rate>),
}

impl Shaping {
    fn start(s: &Schedule, clock: &Arc<dyn Clock>, tz: &jiff::tz::TimeZone) -> Shaping {
        use crate::storage::{download_limit, upload_limit};
        let base = (upload_limit().rate(), download_limit().rate());
        let shaped = s.limit_upload.is_some() || s.limit_download.is_some() || !s.limits.is_empty();
        let task = shaped.then(|| {
            let (s, clock, tz) = (s.clone(), clock.clone(), tz.clone());
            tokio::spawn(async move {
                loop {
                    let (up, down) = s.limits_at(&clock.now().to_zoned(tz.clone()));
                    upload_limit().set(up.or(base.0));
                    download_limit().set(down.or(base.1));
                    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
                }
            })
        });
        Shaping { task, base }
    }

    fn stop(self) {
        if let Some(task) = self.task {
            task.abort();
            crate::storage::upload_limit().set(self.base.0);
            crate::storage::download_limit().set(self.base.1);
        }
    }
}

/// Held while a job uses a repository; a second job on the same repository waits for it, in
/// this process or another (`vouch run` from cron beside the daemon).
struct RepoGuard {
    _file: File,
}

fn lock_repository(state_dir: &std::path::Path, name: &str) -> std::io::Result<RepoGuard> {
    let dir = state_dir.join("locks");
    std::fs::create_dir_all(&dir)?;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let file = File::create(dir.join(format!("{safe}.lock")))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(std::io::Error::from)?;
    Ok(RepoGuard { _file: file })
}

impl Service {
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> Result<Service, ServiceError> {
        let journal = Journal::open(&config.state_dir)?;
        let mailer = mailer_for(&config)?;
        let service = Service {
            config,
            clock,
            journal: Mutex::new(journal),
            mailer,
            host: crate::sys::hostname(),
            repos: tokio::sync::Mutex::new(HashMap::new()),
            abort: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            mail_sent: std::sync::atomic::AtomicUsize::new(0),
        };
        // Note when each job was first seen, so that staleness counts from then.
        let now = service.clock.now();
        {
            let j = service.journal.lock().expect("journal");
            for s in &service.config.schedules {
                if j.considered(&s.name)?.is_none() {
                    j.set_considered(&s.name, now)?;
                }
            }
        }
        Ok(service)
    }

    pub fn with_journal<T>(&self, f: impl FnOnce(&Journal) -> T) -> T {
        f(&self.journal.lock().expect("journal"))
    }

    pub fn mailer(&self) -> &dyn Mailer {
        self.mailer.as_ref()
    }

    /// The repository called `name` in vouch.toml, opened once.
    pub async fn repository(&self, name: &str) -> Result<Arc<Repository>, OpenError> {
        let mut repos = self.repos.lock().await;
        if let Some(r) = repos.get(name) {
            return Ok(r.clone());
        }
        let rc = self
            .config
            .repositories
            .get(name)
            .ok_or_else(|| OpenError::Unknown(name.to_string()))?;
        let cache = self.config.state_dir.join("cache");
        let repo = Arc::new(
            open_repository(rc, Some(cache))
                .await?
                .with_clock(self.clock.clone()),
        );
        repos.insert(name.to_string(), repo.clone());
        Ok(repo)
    }

    /// The job a name stands for: a schedule, a plan, `prune:REPOSITORY` or `evidence`.
    pub fn job(&self, name: &str) -> Option<JobKind> {
        if self.config.schedule(name).is_some() {
            return Some(JobKind::Backup(name.to_string()));
        }
        if self.config.plan(name).is_some() {
            return Some(JobKind::Drill(name.to_string()));
        }
        if let Some(repository) = name.strip_prefix("prune:") {
            if self.config.repositories.contains_key(repository) {
                return Some(JobKind::Prune(repository.to_string()));
            }
        }
        (name == "evidence").then_some(JobKind::Evidence)
    }

    /// Run a job by name (`vouch run NAME`).
    pub async fn run_job(
        &self,
        name: &str,
        trigger: Trigger,
        operator: &str,
    ) -> Result<JobOutcome, ServiceError> {
        match self.job(name) {
            Some(kind) => self.run(&kind, trigger, operator).await,
            None => Err(ServiceError::NoJob(name.to_string())),
        }
    }

    /// Run a job.
    pub async fn run(
        &self,
        job: &JobKind,
        trigger: Trigger,
        operator: &str,
    ) -> Result<JobOutcome, ServiceError> {
        let missing = || ServiceError::NoJob(job.key());
        match job {
            JobKind::Backup(name) => {
                let s = self.config.schedule(name).cloned().ok_or_else(missing)?;
                self.run_backup(&s, trigger, operator).await
            }
            JobKind::Drill(name) => {
                let p = self.config.plan(name).cloned().ok_or_else(missing)?;
                self.run_drill(&p, trigger, operator).await
            }
            JobKind::Prune(repository) => self.run_prune(repository, trigger, operator).await,
            JobKind::Evidence => self
                .send_evidence(None, None, trigger, operator)
                .await
                .map(|(outcome, _)| outcome),
        }
    }

    async fn exclusive(&self, repository: &str) -> Result<RepoGuard, ServiceError> {
        let dir = self.config.state_dir.clone();
        let name = repository.to_string();
        tokio::task::spawn_blocking(move || lock_repository(&dir, &name))
            .await
            .expect("lock task")
            .map_err(|source| ServiceError::LocalLock {
                repository: repository.to_string(),
                source,
            })
    }

    pub async fn run_backup(
        &self,
        s: &Schedule,
        trigger: Trigger,
        operator: &str,
    ) -> Result<JobOutcome, ServiceError> {
        if let Some(url) = &s.heartbeat_url {
            ping(url, Beat::Start).await;
        }
        let timer = Instant::now();
        let asked = self.clock.now();
        let _guard = self.exclusive(&s.repository).await?;
        let waited = timer.elapsed();
        let started = self.clock.now();
        // Waiting for another job on the same repository past this job's next slot is worth
        // saying: the schedule is too tight for the repository.
        let next_slot = s.cron.next_after(asked, &self.config.time_zone);
        let late = next_slot.is_some_and(|n| started > n);
        if late {
            tracing::warn!(job = %s.name, waited_s = waited.as_secs(), "waited for the repository past this job's next slot");
        }
        // A scheduled backup keeps to its window; one asked for by hand runs when asked.
        let window = s.window.as_ref().filter(|_| trigger != Trigger::Manual);
        let window_end = window.map(|w| {
            w.end_after(&started.to_zoned(self.config.time_zone.clone()))
                .map(|end| end.timestamp())
        });
        let opened = match window_end {
            Some(None) => Err(BackupFailure::OutsideWindow(
                window.map(|w| w.as_str().to_string()).unwrap_or_default(),
            )),
            _ => self
                .repository(&s.repository)
                .await
                .map_err(|e| BackupFailure::Open(s.repository.clone(), e)),
        };
        let result = match opened {
            Err(e) => Err(e),
            Ok(repo) => {
                let pause = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let shaping = Shaping::start(s, &self.clock, &self.config.time_zone);
                let closing = window_end.flatten().map(|end| {
                    let (pause, clock) = (pause.clone(), self.clock.clone());
                    tokio::spawn(async move {
                        while clock.now() < end {
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                        tracing::info!(
                            "the backup window has closed: the backup stops at a checkpoint"
                        );
                        pause.store(true, std::sync::atomic::Ordering::Relaxed);
                    })
                });
                let opts = BackupOptions {
                    paths: s.paths.clone(),
                    label: s.label.clone(),
                    tags: s.tags.clone(),
                    excludes: s.exclude.clone(),
                    schedule: Some(s.name.clone()),
                    abort: Some(self.abort.clone()),
                    pause: Some(pause),
                    ..Default::default()
                };
                let result = crate::backup(repo, opts, Default::default())
                    .await
                    .map_err(BackupFailure::Backup);
                if let Some(task) = closing {
                    task.abort();
                }
                shaping.stop();
                result
            }
        };
        let mut details = BackupDetails {
            waited_for_repository_s: waited.as_secs(),
            waited_past_next_slot: late,
            ..Default::default()
        };
        let record = match result {
            Ok(report) => {
                let sum = &report.snapshot.summary;
                details.summary = Some(sum.clone());
                let outcome = if report.is_partial() {
                    Outcome::Partial
                } else {
                    Outcome::Success
                };
                let mut summary = format!(
                    "snapshot {}: {} files, {} new, {} changed; {} added",
                    report.snapshot_id.short(),
                    sum.total_files,
                    sum.files_new,
                    sum.files_changed,
                    crate::units::size(sum.bytes_added_stored)
                );
                if !sum.unreadable.is_empty() {
                    summary.push_str(&format!("; {} path(s) unreadable", sum.unreadable.len()));
                }
                if late {
                    summary.push_str(&format!(
                        "; started late, after waiting {} for another job on {}",
                        humantime::format_duration(std::time::Duration::from_secs(
                            waited.as_secs()
                        )),
                        s.repository
                    ));
                }
                let error = (!sum.unreadable.is_empty()).then(|| {
                    let list: Vec<String> = sum
                        .unreadable
                        .iter()
                        .take(20)
                        .map(|p| format!("{}: {}", p.path, p.error))
                        .collect();
                    format!(
                        "{} path(s) could not be read:\n{}",
                        sum.unreadable.len(),
                        list.join("\n")
                    )
                });
                RunRecord {
                    snapshot: Some(report.snapshot_id),
                    error,
                    details: Details::of(&details),
                    ..self.record(
                        RunKind::Backup,
                        &s.name,
                        trigger,
                        operator,
                        &s.repository,
                        started,
                        outcome,
                        summary,
                    )
                }
            }
            Err(e) => {
                let (outcome, summary) = match &e {
                    BackupFailure::Backup(crate::BackupError::Paused(p)) => {
                        (Outcome::Paused, format!("backup paused: {}", p.describe()))
                    }
                    BackupFailure::OutsideWindow(w) => (
                        Outcome::Paused,
                        format!("backup not started: outside its window ({w})"),
                    ),
                    BackupFailure::Backup(crate::BackupError::Interrupted(p)) => (
                        Outcome::Interrupted,
                        format!("backup interrupted: {}", p.describe()),
                    ),
                    _ => (Outcome::Failed, "backup failed".into()),
                };
                if let BackupFailure::Backup(b) = &e {
                    details.unfinished = b.progress();
                }
                RunRecord {
                    error: Some(e.to_string()),
                    details: Details::of(&details),
                    ..self.record(
                        RunKind::Backup,
                        &s.name,
                        trigger,
                        operator,
                        &s.repository,
                        started,
                        outcome,
                        summary,
                    )
                }
            }
        };
        let mut record = record;
        let changes = record
            .details_as::<BackupDetails>()
            .and_then(|d| d.summary?.changes);
        let snapshot = record.snapshot;
        if let (Some(changes), Some(id), true) = (changes, snapshot, record.outcome.is_good()) {
            self.check_for_ransomware(s, id, &changes, &mut record)
                .await?;
        }
        if let Some(url) = &s.heartbeat_url {
            // Mail stuck for hours fails the heartbeat too: alerts are not reaching anyone.
            let stuck = self.outbox_stuck().ok().flatten();
            if let Some(st) = &stuck {
                tracing::error!(waiting = st.waiting, error = %st.last_error, "mail has not gone out for hours; the heartbeat reports a failure");
            }
            ping(
                url,
                if record.outcome == Outcome::Failed || stuck.is_some() {
                    Beat::Failure
                } else {
                    Beat::Success
                },
            )
            .await;
        }
        let outcome = self.finish(record).await?;
        if outcome.record.outcome == Outcome::Success {
            self.apply_retention(s, trigger, operator).await?;
        }
        Ok(outcome)
    }

    pub async fn run_drill(
        &self,
        plan: &Plan,
        trigger: Trigger,
        operator: &str,
    ) -> Result<JobOutcome, ServiceError> {
        let repository = plan.repository.clone().unwrap_or_default();
        let _guard = self.exclusive(&repository).await?;
        let started = self.clock.now();
        let opened = if self.config.repositories.contains_key(&repository) {
            self.repository(&repository)
                .await
                .map_err(|e| e.to_string())
        } else {
            Err(format!(
                "the plan's repository {repository:?} is not in vouch.toml"
            ))
        };
        let result = match opened {
            Err(e) => Err(e),
            Ok(repo) => {
                let rc = &self.config.repositories[&repository];
                match s3_options(rc) {
                    Err(e) => Err(e.to_string()),
                    Ok(s3) => {
                        let opts = crate::verify::drill::DrillOptions {
                            plan: plan.clone(),
                            scratch: plan
                                .scratch_dir
                                .clone()
                                .unwrap_or_else(|| self.config.scratch_dir.clone()),
                            seed: None,
                            operator: operator.to_string(),
                            trigger: trigger.to_string(),
                            url: rc.url.clone(),
                            s3,
                            threads: None,
                        };
                        crate::verify::drill::drill(repo, &opts)
                            .await
                            .map_err(|e| e.to_string())
                    }
                }
            }
        };
        let record = match result {
            Ok(o) => {
                let r = &o.report;
                let outcome = if r.passed {
                    Outcome::Success
                } else {
                    Outcome::Damage
                };
                let summary = format!(
                    "snapshot {}: {} files ({}) restored and verified{}",
                    r.snapshot.id.short(),
                    r.restore.files,
                    crate::units::size(r.restore.bytes),
                    if r.passed {
                        String::new()
                    } else {
                        format!("; FAILED: {}", r.reasons.join("; "))
                    }
                );
                let error = (!r.passed).then(|| r.reasons.join("\n"));
                RunRecord {
                    snapshot: Some(r.snapshot.id),
                    report: Some(o.report_id.clone()),
                    error,
                    details: Details::of(r),
                    ..self.record(
                        RunKind::Drill,
                        &plan.name,
                        trigger,
                        operator,
                        &repository,
                        started,
                        outcome,
                        summary,
                    )
                }
            }
            Err(e) => RunRecord {
                error: Some(e),
                ..self.record(
                    RunKind::Drill,
                    &plan.name,
                    trigger,
                    operator,
                    &repository,
                    started,
                    Outcome::Failed,
                    "the drill could not run".into(),
                )
            },
        };
        self.finish(record).await
    }

    /// A run record with the fields every job fills the same way; the caller sets the rest.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        kind: RunKind,
        job: &str,
        trigger: Trigger,
        operator: &str,
        repository: &str,
        started: Timestamp,
        outcome: Outcome,
        summary: String,
    ) -> RunRecord {
        RunRecord {
            kind,
            job: job.into(),
            trigger,
            operator: operator.into(),
            host: self.host.clone(),
            repository: repository.into(),
            started,
            ended: self.clock.now(),
            outcome,
            summary,
            snapshot: None,
            report: None,
            error: None,
            details: Details::none(),
        }
    }

    /// Journal a run that happened elsewhere (the evidence job), with the same follow-up.
    pub async fn record_run(&self, record: RunRecord) -> Result<JobOutcome, ServiceError> {
        self.finish(record).await
    }

    /// Journal the run, mirror it, update incidents, and send what is due.
    async fn finish(&self, record: RunRecord) -> Result<JobOutcome, ServiceError> {
        let now = self.clock.now();
        let entry = {
            let mut j = self.journal.lock().expect("journal");
            let entry = j.append(Record::Run(record.clone()))?;
            j.queue_mirror(entry.seq, &record.repository)?;
            let monitor = Monitor::new(j.connection(), &self.config)?;
            monitor.after_run(entry.seq, &record, now)?;
            self.open_ransomware_incident(&monitor, entry.seq, &record)?;
            entry
        };
        self.housekeeping().await?;
        Ok(JobOutcome {
            seq: entry.seq,
            record,
        })
    }

    /// When each schedule last had a good backup (or was first seen, if never).
    pub fn last_good(&self) -> Result<Vec<(String, Timestamp, bool)>, ServiceError> {
        let j = self.journal.lock().expect("journal");
        let runs = j.runs()?;
        let mut out = Vec::new();
        for s in &self.config.schedules {
            let good = runs
                .iter()
                .filter(|(_, r)| {
                    r.kind == RunKind::Backup
                        && r.job == s.name
                        && matches!(r.outcome, Outcome::Success | Outcome::Partial)
                })
                .map(|(_, r)| r.ended)
                .max();
            let since = match good {
                Some(t) => (t, true),
                None => (j.considered(&s.name)?.unwrap_or(self.clock.now()), false),
            };
            out.push((s.name.clone(), since.0, since.1));
        }
        Ok(out)
    }

    /// Staleness, drills due, reminders and journal mirroring. Mail is delivered apart
    /// (`flush_outbox`): a mail server that does not answer must never hold up a job.
    pub async fn housekeeping(&self) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let last_good = self.last_good()?;
        {
            let j = self.journal.lock().expect("journal");
            let runs = j.runs()?;
            let last_drill = runs
                .iter()
                .filter(|(_, r)| r.kind == RunKind::Drill && r.outcome == Outcome::Success)
                .map(|(_, r)| r.ended)
                .max();
            let first_seen = self
                .config
                .schedules
                .iter()
                .filter_map(|s| j.considered(&s.name).ok().flatten())
                .min()
                .unwrap_or(now);
            let monitor = Monitor::new(j.connection(), &self.config)?;
            monitor.check_freshness(&last_good, now)?;
            monitor.check_drills(last_drill, first_seen, now)?;
            monitor.remind(now)?;
        }
        self.mirror().await?;
        Ok(())
    }

    /// Mirror journal rows that have not reached their repository yet.
    pub async fn mirror(&self) -> Result<usize, ServiceError> {
        // The journal's connection is not shared across awaits: collect, mirror, then mark.
        let (pending, entries) = {
            let j = self.journal.lock().expect("journal");
            (j.pending_mirrors()?, j.entries()?)
        };
        let mut done = 0;
        for (seq, name) in pending {
            let Some(entry) = entries.iter().find(|e| e.seq == seq) else {
                continue;
            };
            let Ok(repo) = self.repository(&name).await else {
                continue;
            };
            match crate::journal::mirror_entry(&repo, &self.host, entry).await {
                Ok(()) => {
                    self.journal.lock().expect("journal").mirrored(seq, &name)?;
                    done += 1;
                }
                Err(e) => {
                    tracing::warn!(seq = %seq, repository = %name, error = %e, "journal row not mirrored yet")
                }
            }
        }
        Ok(done)
    }

    /// Try to deliver queued mail; what fails stays queued with backoff. Returns (sent,
    /// still pending).
    pub async fn flush_outbox(&self) -> Result<(usize, usize), ServiceError> {
        self.deliver(false).await
    }

    /// Deliver queued mail; with `now_all`, also what is waiting out a backoff (a person
    /// asked for it).
    pub async fn deliver(&self, now_all: bool) -> Result<(usize, usize), ServiceError> {
        let now = self.clock.now();
        let horizon = if now_all {
            now + jiff::SignedDuration::from_hours(24 * 3650)
        } else {
            now
        };
        let due =
            self.with_journal(|j| crate::notify::Outbox::new(j.connection())?.due(horizon))?;
        let mut sent = 0;
        for (id, message, attempts) in due {
            // Deliver without holding the journal: SMTP can take a while (at most
            // `SEND_DEADLINE` per message).
            let result = self.mailer.send(&message).await;
            self.with_journal(|j| {
                let outbox = crate::notify::Outbox::new(j.connection())?;
                match &result {
                    Ok(()) => outbox.sent(id, now),
                    Err(e) => {
                        tracing::warn!(id, error = %e, "email not delivered yet; it stays in the outbox");
                        outbox.failed(id, attempts, &e.to_string(), now)
                    }
                }
            })?;
            sent += usize::from(result.is_ok());
            // A server that cannot be reached now will not take the next message either:
            // the rest wait for the next round rather than each wait out the deadline.
            if matches!(
                result,
                Err(crate::notify::mailer::MailError::Unreachable(_))
            ) {
                break;
            }
        }
        self.mail_sent
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        let pending =
            self.with_journal(|j| crate::notify::Outbox::new(j.connection())?.pending())?;
        Ok((sent, pending))
    }

    /// Mail that has not gone out for `OUTBOX_ALARM`: (messages waiting, oldest queued, last
    /// error). The one channel that would tell someone is the one that is down, so the
    /// heartbeat and `vouch status` say it instead.
    pub fn outbox_stuck(&self) -> Result<Option<crate::notify::Stuck>, ServiceError> {
        let now = self.clock.now();
        Ok(self.with_journal(|j| {
            crate::notify::Outbox::new(j.connection())?.stuck(now, crate::notify::OUTBOX_ALARM)
        })?)
    }

    /// Annotate a run with what was done about it.
    pub async fn annotate(
        &self,
        run: RowId,
        text: &str,
        operator: &str,
    ) -> Result<RowId, ServiceError> {
        let entry = {
            let mut j = self.journal.lock().expect("journal");
            let target = j.entry(run)?;
            let repository = match &target.record {
                Record::Run(r) => r.repository.clone(),
                Record::Annotation(_) => {
                    return Err(ServiceError::NoJob(format!(
                        "row {run} is an annotation, not a run"
                    )));
                }
            };
            let entry = j.append(Record::Annotation(crate::journal::Annotation {
                run,
                time: self.clock.now(),
                operator: operator.to_string(),
                text: text.to_string(),
            }))?;
            j.queue_mirror(entry.seq, &repository)?;
            entry
        };
        self.mirror().await?;
        Ok(entry.seq)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.config.state_dir.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every run of the first release's journal reads back as its kind's details, and the
    /// typed details write exactly the JSON the row holds: the hashes that chain the journal
    /// do not move.
    #[test]
    fn typed_details_read_the_first_releases_rows_and_write_them_byte_for_byte() {
        let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/journal-v0/journal.sqlite");
        let db = rusqlite::Connection::open_with_flags(
            &sample,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut stmt = db
            .prepare("SELECT record FROM journal ORDER BY seq")
            .unwrap();
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut typed = 0;
        for text in &rows {
            let Record::Run(mut run) = serde_json::from_str::<Record>(text).unwrap() else {
                continue;
            };
            let again = match run.kind {
                RunKind::Backup => Details::of(&run.details_as::<BackupDetails>().unwrap()),
                RunKind::Drill => Details::of(
                    &run.details_as::<crate::verify::drill::DrillReport>()
                        .unwrap(),
                ),
                other => panic!("the sample has no {other} runs: extend the test"),
            };
            run.details = again;
            assert_eq!(&serde_json::to_string(&Record::Run(run)).unwrap(), text);
            typed += 1;
        }
        assert_eq!(typed, 5, "the sample's five runs");
        // Another kind's details are not read as a backup's.
        let Record::Run(mut run) = serde_json::from_str::<Record>(&rows[0]).unwrap() else {
            panic!("the sample starts with a backup");
        };
        assert!(run.details_as::<BackupDetails>().is_some());
        run.kind = RunKind::Prune;
        assert!(run.details_as::<BackupDetails>().is_none());
    }

    #[test]
    fn a_ransomware_flag_is_written_with_its_members_in_sorted_order() {
        let d = BackupDetails {
            waited_for_repository_s: 3,
            waited_past_next_slot: true,
            summary: None,
            ransomware: Some(RansomwareFlag {
                title: "Possible ransomware".into(),
                detail: "40% of files changed".into(),
                snapshot: SnapshotId::from_bytes([0xab; 32]),
            }),
            unfinished: None,
        };
        assert_eq!(
            serde_json::to_string(&Details::of(&d)).unwrap(),
            format!(
                r#"{{"ransomware":{{"detail":"40% of files changed","snapshot":"{}","title":"Possible ransomware"}},"waited_for_repository_s":3,"waited_past_next_slot":true}}"#,
                "ab".repeat(32)
            )
        );
    }
}
