//! Drills: test restores that prove a backup can be restored. A drill picks a snapshot and
//! files by its plan, restores them into a fresh sandbox on the scratch volume from a confined
//! child process, verifies every restored byte at levels 1 to 3 (and 4 against the live
//! source, if asked), runs the plan's application checks on the restored files, measures the
//! restore rate against the plan's restore-time objective, and records the report and the
//! verified packs and files in the repository.

mod sandbox;
mod select;
mod source;
pub(crate) mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{Plan, Selection};
use crate::repo::crypto::Kind;
use crate::repo::ids::{FileHash, SnapshotId};
use crate::repo::{LockMode, RepoError, Repository, TreeLoader};
use crate::storage::S3Options;

use super::finding::{Finding, FindingKind};
use super::ledger::{self, Ledger, LedgerRecord};

pub use sandbox::{CommandOutcome, Confinement, sandbox_exec};
pub use source::SourceComparison;

static WORKER_PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The program that drills run as their confined worker and check launcher: the vouch binary
/// itself, unless a program embedding the library (a test) names it here first.
pub fn set_worker_program(path: PathBuf) {
    let _ = WORKER_PROGRAM.set(path);
}

pub(crate) fn worker_program() -> std::io::Result<PathBuf> {
    match WORKER_PROGRAM.get() {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe(),
    }
}

/// Room kept free on the scratch volume beyond the selection itself.
const SCRATCH_MARGIN: u64 = 64 << 20;

/// How to run a drill; the repository settings are passed on to the confined worker.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    pub plan: Plan,
    pub scratch: PathBuf,
    /// Overrides the plan's seed.
    pub seed: Option<u64>,
    pub operator: String,
    /// What started it: "manual", "schedule", "catch-up".
    pub trigger: String,
    pub url: String,
    pub s3: S3Options,
    pub threads: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("{0}")]
    Repo(#[from] RepoError),
    #[error("drill {plan}: {why}")]
    CannotRun { plan: String, why: String },
    #[error(
        "drill {plan}: the scratch volume {scratch} has {free} free but the selection needs {need}; nothing was restored (free space there, or set scratch_dir to a larger volume)"
    )]
    NoRoom {
        plan: String,
        scratch: String,
        free: String,
        need: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillSnapshot {
    pub id: SnapshotId,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub time: Timestamp,
    pub label: Option<String>,
    pub paths: Vec<String>,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillSelection {
    /// "all", "5% of bytes", "500 files", "2.0 GiB".
    pub method: String,
    pub seed: u64,
    pub files: u64,
    pub bytes: u64,
    pub must_include: Vec<String>,
    pub must_include_files: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillRestore {
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub duration_ms: u64,
    pub bytes_per_second: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillLevels {
    /// Level 1: packs read whole whose blake3 matched their name.
    pub packs_verified: u64,
    pub packs_failed: u64,
    /// Level 2: every blob read was authenticated and its keyed hash checked.
    pub blobs_checked: bool,
    /// Level 3: files whose blake3 matched the snapshot.
    pub files_verified: u64,
    /// Level 4, when the plan asks for it.
    pub source: Option<SourceComparison>,
    /// Level 3 for metadata: what of the restored files' and folders' metadata was read back
    /// and compared with the snapshot (absent in reports of drills before it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataVerified>,
}

/// Which metadata a drill verified, and on how many files and folders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataVerified {
    pub entries: u64,
    pub permissions: bool,
    /// Owners and groups: only a drill run as root can set them.
    pub owners: bool,
    /// Extended attributes and ACLs (POSIX, and Windows ACLs as Samba keeps them): only
    /// snapshots that recorded them (tree revision 2 on).
    pub acls_and_xattrs: bool,
    pub mismatches: u64,
}

impl MetadataVerified {
    /// "permissions, owners, ACLs and extended attributes of 120 files and folders".
    pub fn describe(&self) -> String {
        let mut what = vec!["permissions"];
        if self.owners {
            what.push("owners");
        }
        if self.acls_and_xattrs {
            what.extend(["ACLs", "extended attributes"]);
        }
        let last = what.pop().unwrap_or_default();
        let list = if what.is_empty() {
            last.to_string()
        } else {
            format!("{} and {last}", what.join(", "))
        };
        format!("{list} of {} files and folders", self.entries)
    }
}

/// One thing that failed verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillFailure {
    pub level: u8,
    pub path: Option<String>,
    pub pack: Option<String>,
    pub expected: Option<FileHash>,
    pub actual: Option<FileHash>,
    pub detail: String,
}

/// A drill report records each finding by its level, the file and pack it names, and the
/// hashes (the shape docs/EVIDENCE.md gives `failures`).
impl From<&Finding> for DrillFailure {
    fn from(f: &Finding) -> DrillFailure {
        DrillFailure {
            level: f.level(),
            path: f.file_path().map(str::to_string),
            pack: f.object.pack().map(|p| p.to_hex()),
            expected: f.expected,
            actual: f.actual,
            detail: f.message.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppCheckResult {
    pub glob: String,
    pub command: Vec<String>,
    pub file: String,
    pub passed: bool,
    #[serde(flatten)]
    pub outcome: CommandOutcome,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillSandbox {
    pub scratch: String,
    pub confinement: Confinement,
    pub removed: bool,
    /// Sandboxes of earlier drills that were killed, removed before this one started.
    pub stale_removed: usize,
}

/// What a drill did and found: data, stored in the repository under `drills/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillReport {
    pub version: u32,
    pub plan: String,
    pub plan_file: String,
    pub repository: String,
    pub host: String,
    pub operator: String,
    pub trigger: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub started: Timestamp,
    pub duration_ms: u64,
    pub snapshot: DrillSnapshot,
    pub selection: DrillSelection,
    pub restore: DrillRestore,
    pub levels: DrillLevels,
    pub failures: Vec<DrillFailure>,
    pub checks: Vec<AppCheckResult>,
    pub sandbox: DrillSandbox,
    /// Seconds a full restore of the snapshot would take at this drill's rate.
    pub full_restore_estimate_s: Option<f64>,
    pub objective_s: Option<f64>,
    pub objective_met: Option<bool>,
    pub passed: bool,
    /// Why it did not pass.
    pub reasons: Vec<String>,
}

/// A finished drill, and where its report is stored.
#[derive(Debug)]
pub struct DrillOutcome {
    pub report: DrillReport,
    pub report_id: String,
}

fn describe(selection: &Selection) -> String {
    match selection {
        Selection::All => "all".into(),
        Selection::Percent(p) => format!("{p}% of bytes"),
        Selection::Files(n) => format!("{n} files"),
        Selection::Bytes(b) => format!("{} bytes", b),
    }
}

fn size(n: u64) -> String {
    crate::units::size(n)
}

/// Run one drill.
pub async fn drill(repo: Arc<Repository>, opts: &DrillOptions) -> Result<DrillOutcome, DrillError> {
    let lock = repo.lock(LockMode::Shared, "drill").await?;
    let result = drill_locked(&repo, opts).await;
    lock.release().await?;
    result
}

async fn drill_locked(
    repo: &Arc<Repository>,
    opts: &DrillOptions,
) -> Result<DrillOutcome, DrillError> {
    let plan = &opts.plan;
    let started_at = repo.clock().now();
    let started = Instant::now();
    let seed = opts
        .seed
        .or(plan.seed)
        .unwrap_or_else(|| u64::from_le_bytes(crate::repo::crypto::random_array()) >> 11);
    let choice = choose(repo, opts, seed).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        files = choice.chosen.files.len(),
        "drill: selection made"
    );
    let (sandbox, stale_removed) = sandbox::Sandbox::create(&opts.scratch).map_err(|e| {
        cannot(
            plan,
            format!("cannot create a sandbox in {}: {e}", opts.scratch.display()),
        )
    })?;
    let mut restored = restore_and_verify(repo, opts, &choice, &sandbox).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "drill: restore and levels 1-3 done"
    );
    // Level 4.
    if plan.compare_with_source && !restored.ok_files.is_empty() {
        let refs: Vec<&crate::restore::PlannedFile> = restored.ok_files.iter().collect();
        let recorded = restored
            .levels
            .metadata
            .as_ref()
            .is_some_and(|m| m.acls_and_xattrs);
        let (comparison, mismatches) = source::compare(&refs, recorded);
        restored.found.extend(mismatches.into_iter().map(|m| {
            let detail = match &m.detail {
                None => "the live file has the size and modification time recorded in the snapshot but different bytes: the backup read it wrongly".to_string(),
                Some(d) => format!("the live file has the change time recorded in the snapshot but other metadata ({d}): the backup recorded it wrongly"),
            };
            Finding::file(
                FindingKind::SourceDiffers,
                &m.path,
                m.expected,
                m.actual,
                detail,
            )
        }));
        restored.levels.source = Some(comparison);
    }
    let checks = application_checks(plan, &sandbox, &restored.ok_files)?;
    let failures: Vec<DrillFailure> = restored.found.iter().map(DrillFailure::from).collect();
    let Verdict {
        reasons,
        full_restore_estimate_s,
        objective_s,
        objective_met,
    } = judge(
        restored.reasons,
        &choice.chosen.missing_must_include,
        &failures,
        &checks,
        restored.restore.bytes_per_second,
        choice.snapshot.summary.total_bytes,
        plan.restore_time_objective,
    );
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "drill: checks done"
    );
    let removed = sandbox.remove().is_ok();
    let Choice {
        seed,
        snapshot_id,
        snapshot,
        chosen,
        ..
    } = choice;
    let report = DrillReport {
        version: crate::repo::format::FORMAT_VERSION,
        plan: plan.name.clone(),
        plan_file: plan.file.display().to_string(),
        repository: repo.url().to_string(),
        host: crate::sys::hostname(),
        operator: opts.operator.clone(),
        trigger: opts.trigger.clone(),
        started: started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        snapshot: DrillSnapshot {
            id: snapshot_id,
            time: snapshot.time,
            label: snapshot.label.clone(),
            paths: snapshot.paths.clone(),
            files: snapshot.summary.total_files,
            bytes: snapshot.summary.total_bytes,
        },
        selection: DrillSelection {
            method: describe(&plan.selection),
            seed,
            files: chosen.files.len() as u64,
            bytes: chosen.bytes,
            must_include: plan.must_include.clone(),
            must_include_files: chosen.must_include_files as u64,
        },
        restore: restored.restore,
        levels: restored.levels,
        failures,
        checks,
        sandbox: DrillSandbox {
            scratch: opts.scratch.display().to_string(),
            confinement: restored.confinement,
            removed,
            stale_removed,
        },
        full_restore_estimate_s,
        objective_s,
        objective_met,
        passed: reasons.is_empty(),
        reasons,
    };
    let report_id = record(repo, &report, restored.packs_ok, &restored.ok_files).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "drill: recorded"
    );
    Ok(DrillOutcome { report, report_id })
}

fn cannot(plan: &Plan, why: String) -> DrillError {
    DrillError::CannotRun {
        plan: plan.name.clone(),
        why,
    }
}

/// What a drill restores: the snapshot, everything in it, the files chosen from it, and the
/// tree packs read (verified at level 1 as they are read) while listing it.
struct Choice {
    seed: u64,
    snapshot_id: SnapshotId,
    snapshot: crate::repo::format::snapshot::Snapshot,
    full: crate::restore::Plan,
    chosen: select::Chosen,
    tree_packs: Arc<crate::repo::PackVerifier>,
}

/// Choose the snapshot and its files, and refuse a selection over the plan's `max_bytes` or
/// one the scratch volume has no room for, before anything is restored.
async fn choose(
    repo: &Arc<Repository>,
    opts: &DrillOptions,
    seed: u64,
) -> Result<Choice, DrillError> {
    let plan = &opts.plan;
    let (all, _) = repo.snapshots().await?;
    let mut wanted_paths = plan.paths.clone();
    wanted_paths.sort();
    let candidates: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| {
            plan.schedule
                .as_ref()
                .is_none_or(|name| s.schedule.as_ref() == Some(name))
        })
        .filter(|(_, s)| {
            let mut p = s.paths.clone();
            p.sort();
            wanted_paths.is_empty() || p == wanted_paths
        })
        .collect();
    if candidates.is_empty() {
        return Err(cannot(
            plan,
            match (&plan.schedule, plan.paths.is_empty()) {
                (Some(s), _) => format!("the repository has no snapshot of schedule {s:?}"),
                (None, false) => format!(
                    "the repository has no snapshot of {}",
                    plan.paths.join(", ")
                ),
                _ => "the repository has no snapshots".into(),
            },
        ));
    }
    let (snapshot_id, snapshot) =
        select::snapshot(&candidates, &plan.snapshot, seed, repo.clock().now())
            .map_err(|e| cannot(plan, e.to_string()))?;
    let (index, _) = repo.load_index().await?;
    let index = Arc::new(index);
    let tree_packs = Arc::new(crate::repo::PackVerifier::default());
    let trees = TreeLoader::new(repo.clone(), index.clone()).with_verifier(tree_packs.clone());
    let full = crate::restore::plan(&trees, &snapshot.tree, &[])
        .await
        .map_err(|e| cannot(plan, format!("the snapshot cannot be listed: {e}")))?;
    let (ledger, _) = Ledger::load(repo).await?;
    let chosen = select::files(&full, &plan.selection, &plan.must_include, &ledger, seed);
    if let Some(max) = plan.max_bytes {
        if chosen.bytes > max {
            return Err(cannot(
                plan,
                format!(
                    "the selection is {} but the plan's max_bytes is {} (raise max_bytes, or sample less)",
                    size(chosen.bytes),
                    size(max)
                ),
            ));
        }
    }
    std::fs::create_dir_all(&opts.scratch).map_err(|e| {
        cannot(
            plan,
            format!(
                "cannot use the scratch directory {}: {e}",
                opts.scratch.display()
            ),
        )
    })?;
    let free = sandbox::free_space(&opts.scratch).map_err(|e| {
        cannot(
            plan,
            format!(
                "cannot read the free space of {}: {e}",
                opts.scratch.display()
            ),
        )
    })?;
    // What the files take on disk: a sparse file's holes take nothing.
    let stored: u64 = chosen
        .files
        .iter()
        .map(|&i| {
            let n = &full.files[i as usize].node;
            n.size - n.holes().iter().map(|h| h.length()).sum::<u64>()
        })
        .sum();
    let need = stored + stored / 100 + SCRATCH_MARGIN;
    if free < need {
        return Err(DrillError::NoRoom {
            plan: plan.name.clone(),
            scratch: opts.scratch.display().to_string(),
            free: size(free),
            need: size(need),
        });
    }
    Ok(Choice {
        seed,
        snapshot_id,
        snapshot,
        full,
        chosen,
        tree_packs,
    })
}

/// What the confined restore found: its figures, the findings at levels 1–3, the files that
/// restored and verified (for level 4 and the application checks), the packs verified.
struct Restored {
    restore: DrillRestore,
    levels: DrillLevels,
    confinement: Confinement,
    found: Vec<Finding>,
    /// A restore stopped at the plan's `max_duration`.
    reasons: Vec<String>,
    ok_files: Vec<crate::restore::PlannedFile>,
    packs_ok: Vec<crate::repo::ids::PackId>,
}

/// Restore the chosen files into the sandbox and verify levels 1–3, in the confined worker.
async fn restore_and_verify(
    repo: &Arc<Repository>,
    opts: &DrillOptions,
    choice: &Choice,
    sandbox: &sandbox::Sandbox,
) -> Result<Restored, DrillError> {
    let plan = &opts.plan;
    let Choice { full, chosen, .. } = choice;
    let selected = select::restrict(
        full.clone(),
        (plan.selection != Selection::All).then_some(&chosen.files[..]),
    );
    let (dirs, files) = worker::to_wire(&selected);
    let selected_format = selected.format;
    let job = worker::Job {
        url: opts.url.clone(),
        s3_endpoint: opts.s3.endpoint.clone(),
        s3_region: opts.s3.region.clone(),
        s3_path_style: opts.s3.path_style,
        access_key_id: opts.s3.access_key_id.clone(),
        secret_access_key: opts.s3.secret_access_key.clone(),
        master: hex::encode(repo.master_bytes()),
        key_id: repo.key_id(),
        snapshot: choice.snapshot_id,
        dirs,
        files,
        sandbox: sandbox.path().to_path_buf(),
        target: sandbox.restore_dir(),
        threads: opts.threads,
        format: selected.format,
    };
    let limit = plan.max_duration;
    let outcome = tokio::task::spawn_blocking(move || worker::run(&job, limit))
        .await
        .expect("drill worker thread");
    let mut out = match outcome {
        Err(why @ worker::WorkerError::TooSlow(_)) => {
            return Ok(Restored {
                restore: empty_restore(),
                levels: empty_levels(),
                confinement: Confinement::Unavailable("the restore was stopped".into()),
                found: Vec::new(),
                reasons: vec![why.to_string()],
                ok_files: Vec::new(),
                packs_ok: Vec::new(),
            });
        }
        Err(why) => return Err(cannot(plan, why.to_string())),
        Ok(out) => out,
    };
    let (tree_ok, tree_failed) = choice.tree_packs.results();
    out.packs_ok.extend(tree_ok);
    out.packs_failed.extend(tree_failed);
    let mut found: Vec<Finding> = out
        .packs_failed
        .iter()
        .map(|(pack, detail)| Finding::new(FindingKind::PackHash, *pack, detail.clone()))
        .collect();
    // A file the sandbox would not take was not verified: the drill cannot vouch for it.
    found.extend(super::finding::of_restore(&out.report));
    let bad: std::collections::HashSet<&str> =
        found.iter().filter_map(Finding::file_path).collect();
    let restored: Vec<&crate::restore::PlannedFile> = match plan.selection {
        Selection::All => full.files.iter().collect(),
        _ => chosen
            .files
            .iter()
            .map(|&i| &full.files[i as usize])
            .collect(),
    };
    let ok_files: Vec<crate::restore::PlannedFile> = restored
        .into_iter()
        .filter(|f| !bad.contains(format!("/{}", f.rel.display()).as_str()))
        .cloned()
        .collect();
    let rate = if out.restore_ms > 0 {
        out.report.bytes as f64 * 1000.0 / out.restore_ms as f64
    } else {
        0.0
    };
    Ok(Restored {
        restore: DrillRestore {
            files: out.report.files,
            bytes: out.report.bytes,
            dirs: out.report.dirs,
            duration_ms: out.restore_ms,
            bytes_per_second: rate,
        },
        levels: DrillLevels {
            packs_verified: out.packs_ok.len() as u64,
            packs_failed: out.packs_failed.len() as u64,
            blobs_checked: true,
            files_verified: out.report.files_verified,
            source: None,
            metadata: Some(MetadataVerified {
                entries: out.report.metadata_checked,
                permissions: true,
                owners: crate::sys::euid() == 0,
                acls_and_xattrs: selected_format >= 2,
                mismatches: out.report.metadata_mismatches.len() as u64,
            }),
        },
        confinement: out.confinement,
        found,
        reasons: Vec::new(),
        ok_files,
        packs_ok: out.packs_ok,
    })
}

/// The plan's application checks on the restored files they match, confined to the sandbox.
fn application_checks(
    plan: &Plan,
    sandbox: &sandbox::Sandbox,
    ok_files: &[crate::restore::PlannedFile],
) -> Result<Vec<AppCheckResult>, DrillError> {
    let mut checks = Vec::new();
    for check in &plan.commands {
        for f in ok_files.iter().filter(|f| check.matcher.is_match(&f.rel)) {
            let restored = sandbox.restore_dir().join(&f.rel);
            let argv: Vec<String> = check
                .run
                .iter()
                .map(|a| a.replace("{file}", &restored.to_string_lossy()))
                .collect();
            let outcome =
                sandbox::run_confined(sandbox.path(), &argv, check.timeout).map_err(|e| {
                    cannot(
                        plan,
                        format!("cannot run the check {:?}: {e}", check.run.join(" ")),
                    )
                })?;
            let passed = outcome.exit_code == Some(0) && !outcome.timed_out;
            checks.push(AppCheckResult {
                glob: check.glob.clone(),
                command: check.run.clone(),
                file: format!("/{}", f.rel.display()),
                passed,
                outcome,
            });
        }
    }
    Ok(checks)
}

/// Store the report in the repository and, for what verified, a verification-ledger record
/// (so the next samples choose what was verified longest ago). Returns the report's id.
async fn record(
    repo: &Repository,
    report: &DrillReport,
    packs_ok: Vec<crate::repo::ids::PackId>,
    ok_files: &[crate::restore::PlannedFile],
) -> Result<String, RepoError> {
    let report_id = hex::encode(
        repo.save_document(Kind::DrillReport, "drills", report)
            .await?,
    );
    if !packs_ok.is_empty() || !ok_files.is_empty() {
        let paths: Vec<String> = ok_files
            .iter()
            .map(|f| format!("/{}", f.rel.display()))
            .collect();
        let record = LedgerRecord {
            version: crate::repo::format::FORMAT_VERSION,
            time: report.started,
            source: "drill".into(),
            run: format!("drills/{report_id}"),
            host: crate::sys::hostname(),
            packs: packs_ok,
            snapshot: Some(report.snapshot.id),
            files: ledger::encode_paths(paths.iter().map(String::as_str)),
        };
        ledger::record(repo, &record).await?;
    }
    Ok(report_id)
}

/// What a drill concluded.
#[derive(Debug, PartialEq)]
struct Verdict {
    /// Why it failed; empty when it passed.
    reasons: Vec<String>,
    full_restore_estimate_s: Option<f64>,
    objective_s: Option<f64>,
    objective_met: Option<bool>,
}

/// The verdict, from what the drill found: `reasons` so far (a restore stopped at the plan's
/// `max_duration`), must-include paths that matched nothing, verification failures at any
/// level, application checks, and the restore rate against the plan's full-restore objective
/// (the whole snapshot at the rate measured).
fn judge(
    mut reasons: Vec<String>,
    missing_must_include: &[String],
    failures: &[DrillFailure],
    checks: &[AppCheckResult],
    bytes_per_second: f64,
    snapshot_bytes: u64,
    objective: Option<Duration>,
) -> Verdict {
    let full_restore_estimate_s =
        (bytes_per_second > 0.0).then(|| snapshot_bytes as f64 / bytes_per_second);
    let objective_s = objective.map(|d| d.as_secs_f64());
    let objective_met = match (full_restore_estimate_s, objective_s) {
        (Some(e), Some(o)) => Some(e <= o),
        _ => None,
    };
    if !missing_must_include.is_empty() {
        reasons.push(format!(
            "must_include {} matched nothing in the snapshot",
            missing_must_include.join(", ")
        ));
    }
    if !failures.is_empty() {
        let files = failures.iter().filter(|f| f.path.is_some()).count();
        reasons.push(format!(
            "verification failed: {} problem(s), {files} file(s)",
            failures.len()
        ));
    }
    let failed_checks = checks.iter().filter(|c| !c.passed).count();
    if failed_checks > 0 {
        reasons.push(format!("{failed_checks} application check(s) failed"));
    }
    if objective_met == Some(false) {
        reasons.push(format!(
            "a full restore would take {}, over the objective of {}",
            humantime::format_duration(Duration::from_secs(
                full_restore_estimate_s.unwrap_or_default() as u64
            )),
            humantime::format_duration(Duration::from_secs(objective_s.unwrap_or_default() as u64))
        ));
    }
    Verdict {
        reasons,
        full_restore_estimate_s,
        objective_s,
        objective_met,
    }
}

fn empty_restore() -> DrillRestore {
    DrillRestore {
        files: 0,
        bytes: 0,
        dirs: 0,
        duration_ms: 0,
        bytes_per_second: 0.0,
    }
}

fn empty_levels() -> DrillLevels {
    DrillLevels {
        packs_verified: 0,
        packs_failed: 0,
        blobs_checked: false,
        files_verified: 0,
        source: None,
        metadata: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(level: u8, path: Option<&str>) -> DrillFailure {
        DrillFailure {
            level,
            path: path.map(str::to_string),
            pack: None,
            expected: None,
            actual: None,
            detail: "damaged".into(),
        }
    }

    #[test]
    fn a_drill_passes_only_when_nothing_failed_and_the_objective_holds() {
        let hour = Duration::from_secs(3600);
        // 1 GB at 1 MB/s: 1000 s, inside an hour.
        let ok = judge(vec![], &[], &[], &[], 1e6, 1_000_000_000, Some(hour));
        assert!(ok.reasons.is_empty(), "{ok:?}");
        assert_eq!(ok.objective_met, Some(true));
        assert_eq!(ok.full_restore_estimate_s, Some(1000.0));
        // No objective: nothing to meet.
        let none = judge(vec![], &[], &[], &[], 1e6, 1_000_000_000, None);
        assert_eq!(none.objective_met, None);
        assert!(none.reasons.is_empty());
        // 10 GB at 1 MB/s: over the hour.
        let slow = judge(vec![], &[], &[], &[], 1e6, 10_000_000_000, Some(hour));
        assert_eq!(slow.objective_met, Some(false));
        assert_eq!(slow.reasons.len(), 1);
        assert!(
            slow.reasons[0].contains("over the objective of 1h"),
            "{slow:?}"
        );
    }

    #[test]
    fn each_kind_of_problem_is_a_reason_of_its_own() {
        let failures = [failure(1, None), failure(3, Some("/srv/a.docx"))];
        let v = judge(
            vec!["the restore did not finish within the plan's max_duration (1h)".into()],
            &["Admin/SIMS/".into()],
            &failures,
            &[],
            0.0,
            1,
            None,
        );
        assert_eq!(v.reasons.len(), 3, "{v:?}");
        assert!(v.reasons[0].contains("max_duration"));
        assert!(v.reasons[1].contains("must_include Admin/SIMS/ matched nothing"));
        assert!(v.reasons[2].contains("2 problem(s), 1 file(s)"));
        assert_eq!(v.full_restore_estimate_s, None, "no rate, no estimate");
    }
}
