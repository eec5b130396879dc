//! The drill's restore runs in a child process (`vouch __drill-worker`) that confines its own
//! writes to the sandbox before it starts a thread: Landlock binds the calling thread and its
//! future children, so only a fresh process can be confined whole. The job arrives as JSON
//! on stdin (the passphrase with it, never on the command line), the result leaves as JSON on
//! stdout.

use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::repo::Repository;
use crate::repo::format::tree::Node;
use crate::repo::ids::{PackId, SnapshotId};
use crate::restore::{
    PackVerifier, Plan, PlannedFile, RestoreProgress, RestoreReport, Verification, write_plan,
};
use crate::storage::{RepoUrl, S3Options, Store};

use super::sandbox::{Confinement, confine_writes};

/// A path (hex of its bytes) and its node.
pub(super) type WireEntry = (String, Node);

#[derive(Serialize, Deserialize)]
pub(super) struct Job {
    pub url: String,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_path_style: Option<bool>,
    /// S3 credentials from vouch.toml, when it gives them (else the AWS environment).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// The repository's master secret, hex: the parent has opened it already.
    pub master: String,
    pub key_id: crate::repo::ids::KeyId,
    pub snapshot: SnapshotId,
    /// What to restore: directories and files, paths as hex of their bytes (names need not
    /// be UTF-8).
    pub dirs: Vec<WireEntry>,
    pub files: Vec<WireEntry>,
    pub sandbox: PathBuf,
    pub target: PathBuf,
    pub threads: Option<usize>,
    /// The oldest tree revision of the snapshot: from 2 on, extended attributes and ACLs
    /// were recorded and are verified.
    #[serde(default = "first_revision")]
    pub format: u32,
}

fn first_revision() -> u32 {
    1
}

#[derive(Serialize, Deserialize)]
pub(super) struct Outcome {
    pub report: RestoreReport,
    pub packs_ok: Vec<PackId>,
    pub packs_failed: Vec<(PackId, String)>,
    pub confinement: Confinement,
    pub restore_ms: u64,
}

fn to_hex(p: &Path) -> String {
    hex::encode(p.as_os_str().as_bytes())
}

/// Why the worker could not do its job (it says so on standard error, and the parent
/// reports it as a drill that could not run).
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("the job is malformed: {0}")]
    BadJob(String),
    #[error(transparent)]
    Url(#[from] crate::storage::UrlError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    #[error(transparent)]
    Restore(#[from] crate::restore::RestoreError),
}

fn from_hex(h: &str) -> Result<PathBuf, JobError> {
    hex::decode(h)
        .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
        .map_err(|e| JobError::BadJob(format!("a path is not hex: {e}")))
}

/// The job's description of what to restore.
pub(super) fn to_wire(plan: &Plan) -> (Vec<WireEntry>, Vec<WireEntry>) {
    let dirs = plan
        .dirs
        .iter()
        .map(|(p, n)| (to_hex(p), n.clone()))
        .collect();
    let files = plan
        .files
        .iter()
        .map(|f| (to_hex(&f.rel), (*f.node).clone()))
        .collect();
    (dirs, files)
}

fn from_wire(job: &Job) -> Result<Plan, JobError> {
    Ok(Plan {
        dirs: job
            .dirs
            .iter()
            .map(|(p, n)| Ok((from_hex(p)?, n.clone())))
            .collect::<Result<_, JobError>>()?,
        files: job
            .files
            .iter()
            .map(|(p, n)| {
                Ok(PlannedFile {
                    rel: from_hex(p)?.into_boxed_path(),
                    node: Box::new(n.clone()),
                })
            })
            .collect::<Result<_, JobError>>()?,
        symlinks: Vec::new(),
        special: Vec::new(),
        links: Vec::new(),
        format: job.format,
        damaged: Vec::new(),
        through: Default::default(),
    })
}

/// Why the confined worker gave no result.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The plan's `max_duration` passed and the worker was stopped: a finding about the
    /// restore (it is too slow), not a failure to run.
    #[error("the restore did not finish within the plan's max_duration ({})", humantime::format_duration(*.0))]
    TooSlow(Duration),
    #[error("{0}")]
    Failed(String),
}

/// Run the job in a child process; kill it after `limit`.
pub(super) fn run(job: &Job, limit: Option<Duration>) -> Result<Outcome, WorkerError> {
    run_child(job, limit).map_err(|e| match e {
        Stopped::After(l) => WorkerError::TooSlow(l),
        Stopped::Because(why) => WorkerError::Failed(why),
    })
}

enum Stopped {
    After(Duration),
    Because(String),
}

impl From<String> for Stopped {
    fn from(why: String) -> Stopped {
        Stopped::Because(why)
    }
}

fn run_child(job: &Job, limit: Option<Duration>) -> Result<Outcome, Stopped> {
    let exe = super::worker_program().map_err(|e| format!("cannot find the vouch binary: {e}"))?;
    let mut child = Command::new(exe)
        .arg("__drill-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the drill worker: {e}"))?;
    let input = serde_json::to_vec(job).expect("job serializes");
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(&input)
        .map_err(|e| format!("cannot hand the job to the drill worker: {e}"))?;
    drop(stdin);
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if let Some(l) = limit.filter(|l| started.elapsed() > *l) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Stopped::After(l));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("the drill worker failed ({status}): {}", err.trim()).into());
    }
    serde_json::from_slice(&out)
        .map_err(|e| format!("the drill worker's result is unreadable: {e}").into())
}

/// `vouch __drill-worker`: read a job on stdin, confine, restore, verify, answer on stdout.
pub fn main() -> i32 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        errln!("vouch: drill worker: cannot read the job: {e}");
        return 1;
    }
    let job: Job = match serde_json::from_slice(&input) {
        Ok(j) => j,
        Err(e) => {
            errln!("vouch: drill worker: bad job: {e}");
            return 1;
        }
    };
    // Before any thread exists.
    let confinement = confine_writes(&[&job.sandbox]);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("vouch: drill worker: {e}");
            return 1;
        }
    };
    match runtime.block_on(restore(&job, confinement)) {
        Ok(outcome) => {
            outln!(
                "{}",
                serde_json::to_string(&outcome).expect("outcome serializes")
            );
            0
        }
        Err(e) => {
            errln!("{e}");
            1
        }
    }
}

async fn restore(job: &Job, confinement: Confinement) -> Result<Outcome, JobError> {
    let url = RepoUrl::parse(&job.url)?;
    let s3 = S3Options {
        endpoint: job.s3_endpoint.clone(),
        region: job.s3_region.clone(),
        path_style: job.s3_path_style,
        access_key_id: job.access_key_id.clone(),
        secret_access_key: job.secret_access_key.clone(),
    };
    let store = Store::open(&url, &s3)?;
    let mut master = [0u8; 32];
    hex::decode_to_slice(&job.master, &mut master)
        .map_err(|e| JobError::BadJob(format!("the key is not hex: {e}")))?;
    let repo = Arc::new(Repository::open_with_master(store, master, job.key_id).await?);
    let (index, _) = repo.load_index().await?;
    let index = Arc::new(index);
    let verifier = Arc::new(PackVerifier::default());
    let plan = from_wire(job)?;
    let started = Instant::now();
    let verify = Verification {
        packs: Some(verifier.clone()),
        blob_ids: true,
        keep_damaged: true,
        // The sandbox gets the recorded metadata and it is read back: a drill attests the
        // permissions and ACLs as well as the bytes.
        skip_metadata: false,
        numeric_ids: false,
        check_metadata: true,
    };
    let threads = job
        .threads
        .unwrap_or_else(|| crate::restore::default_threads(&repo, true));
    let handle = tokio::runtime::Handle::current();
    let target = job.target.clone();
    let (repo2, index2) = (repo.clone(), index.clone());
    let report = tokio::task::spawn_blocking(move || {
        write_plan(
            &repo2,
            &index2,
            &plan,
            &target,
            false,
            threads,
            &verify,
            &RestoreProgress::default(),
            handle,
        )
    })
    .await
    .expect("the restore thread")?;
    let (packs_ok, packs_failed) = verifier.results();
    Ok(Outcome {
        report,
        packs_ok,
        packs_failed,
        confinement,
        restore_ms: started.elapsed().as_millis() as u64,
    })
}
