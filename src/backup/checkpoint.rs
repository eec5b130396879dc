//! Checkpoints: while a backup runs, the packs it has stored are indexed every few packs or
//! minutes, so that a backup stopped by a reboot, an outage, SIGKILL or the end of its window
//! loses at most one interval. Each checkpoint (`checkpoints/<id>`, docs/FORMAT.md §7.9) names
//! the packs of its interval before the index file that lists them is written: prune keeps
//! them while the backup may resume, and a pack is never indexed without its checkpoint.
//! Once the snapshot is stored, the source's checkpoints are removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::Mutex;

use crate::repo::crypto::Kind;
use crate::repo::format::FORMAT_VERSION;
use crate::repo::format::checkpoint::Checkpoint;
use crate::repo::format::index::{IndexFile, IndexPack};
use crate::repo::ids::IndexId;
use crate::repo::{RepoError, Repository};

use super::pipeline::BackupProgress;

/// A checkpoint after this many packs (8 MiB each by default: 512 MiB, a few minutes of a
/// school's uplink), or `EVERY`, whichever comes first. `VOUCH_CHECKPOINT_PACKS` and
/// `VOUCH_CHECKPOINT_SECS` change them.
const EVERY_PACKS: usize = 64;
const EVERY: Duration = Duration::from_secs(5 * 60);

/// How far unfinished runs of this source had got, read from the checkpoints they left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Checkpoints found, and the packs they name.
    pub checkpoints: usize,
    pub packs: usize,
    pub stored_bytes: u64,
    pub source_bytes_done: u64,
    pub source_bytes_total: Option<u64>,
}

/// How far an unfinished backup has got: what the journal records of a paused or stopped run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeedProgress {
    /// Bytes stored in the repository by this source's unfinished runs, checkpointed.
    pub stored_bytes: u64,
    /// Bytes of the source's files read so far (the furthest any run has got).
    pub source_bytes_done: u64,
    /// The size of the source's files, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes_total: Option<u64>,
}

impl SeedProgress {
    /// "1.2 GiB of 3.4 GiB read (35%), 1.1 GiB stored", for the journal and status.
    pub fn describe(&self) -> String {
        let size = crate::units::size;
        match self.source_bytes_total {
            Some(total) if total > 0 => format!(
                "{} of {} read ({}%), {} stored",
                size(self.source_bytes_done.min(total)),
                size(total),
                self.source_bytes_done.min(total) * 100 / total,
                size(self.stored_bytes)
            ),
            _ => format!(
                "{} read, {} stored",
                size(self.source_bytes_done),
                size(self.stored_bytes)
            ),
        }
    }
}

pub(super) struct Checkpointer {
    repo: Arc<Repository>,
    backup: String,
    host: String,
    paths: Vec<String>,
    started: Timestamp,
    every_packs: usize,
    every: Duration,
    resumed: Resumed,
    progress: Arc<BackupProgress>,
    /// The size of the sources, once the measuring walk has finished (0 until then).
    pub source_total: Arc<AtomicU64>,
    state: Mutex<State>,
}

struct State {
    seq: u32,
    pending: Vec<IndexPack>,
    since: Instant,
    /// Bytes of this run's checkpointed packs.
    stored: u64,
    last: Option<SeedProgress>,
}

impl Checkpointer {
    pub fn new(
        repo: Arc<Repository>,
        host: &str,
        paths: &[String],
        started: Timestamp,
        resumed: Resumed,
        progress: Arc<BackupProgress>,
    ) -> Self {
        let env = |name: &str| {
            std::env::var(name)
                .ok()?
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
        };
        Self {
            repo,
            backup: hex::encode(crate::repo::crypto::random_array::<8>()),
            host: host.to_string(),
            paths: paths.to_vec(),
            started,
            every_packs: env("VOUCH_CHECKPOINT_PACKS").map_or(EVERY_PACKS, |n| n as usize),
            every: env("VOUCH_CHECKPOINT_SECS").map_or(EVERY, Duration::from_secs),
            resumed,
            progress,
            source_total: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(State {
                seq: 0,
                pending: Vec::new(),
                since: Instant::now(),
                stored: 0,
                last: None,
            }),
        }
    }

    /// A pack is stored: checkpoint when the interval is up.
    pub async fn stored(&self, pack: IndexPack) -> Result<(), RepoError> {
        let mut state = self.state.lock().await;
        state.pending.push(pack);
        if state.pending.len() >= self.every_packs || state.since.elapsed() >= self.every {
            self.write(&mut state).await?;
        }
        Ok(())
    }

    /// The backup stops before its snapshot: checkpoint what is stored, so that the next run
    /// reuses it. Returns how far the source has got.
    pub async fn stop(&self) -> Result<SeedProgress, RepoError> {
        let mut state = self.state.lock().await;
        self.write(&mut state).await?;
        Ok(state.last.unwrap_or_else(|| self.progress_now(0)))
    }

    /// Whether this source has checkpoints to remove once its snapshot is stored: ones this
    /// run wrote or found. Without any, the backup skips listing them again.
    pub async fn any(&self) -> bool {
        self.resumed.checkpoints > 0 || self.state.lock().await.seq > 0
    }

    /// The packs stored since the last checkpoint, for the backup's final index file.
    pub async fn take_pending(&self) -> Vec<IndexPack> {
        std::mem::take(&mut self.state.lock().await.pending)
    }

    fn progress_now(&self, stored: u64) -> SeedProgress {
        let total = self.source_total.load(Ordering::Relaxed);
        SeedProgress {
            stored_bytes: self.resumed.stored_bytes + stored,
            source_bytes_done: self
                .resumed
                .source_bytes_done
                .max(self.progress.bytes_done.load(Ordering::Relaxed)),
            source_bytes_total: (total > 0)
                .then_some(total)
                .or(self.resumed.source_bytes_total),
        }
    }

    async fn write(&self, state: &mut State) -> Result<(), RepoError> {
        state.since = Instant::now();
        if state.pending.is_empty() {
            return Ok(());
        }
        let packs = std::mem::take(&mut state.pending);
        let file = IndexFile {
            version: FORMAT_VERSION,
            supersedes: Vec::new(),
            packs,
        };
        let (index_name, index_bytes) = self.repo.seal(Kind::Index, &file);
        let stored = state.stored + file.packs.iter().map(|p| p.size).sum::<u64>();
        let progress = self.progress_now(stored);
        let checkpoint = Checkpoint {
            version: FORMAT_VERSION,
            backup: self.backup.clone(),
            seq: state.seq + 1,
            host: self.host.clone(),
            paths: self.paths.clone(),
            started: self.started,
            time: self.repo.clock().now(),
            packs: file.packs.iter().map(|p| p.id).collect(),
            index: Some(IndexId::from_bytes(index_name)),
            stored_bytes: progress.stored_bytes,
            source_bytes_done: progress.source_bytes_done,
            source_bytes_total: progress.source_bytes_total,
        };
        let written = async {
            self.repo
                .save_document(Kind::Checkpoint, "checkpoints", &checkpoint)
                .await?;
            crate::sys::test_pause("VOUCH_TEST_BACKUP_PAUSE", "checkpoint-index");
            self.repo
                .store()
                .put(&format!("index/{}", hex::encode(index_name)), index_bytes)
                .await?;
            Ok::<_, RepoError>(())
        }
        .await;
        if let Err(e) = written {
            // Put back, so that the final index still lists them if the backup goes on.
            state.pending = file.packs;
            return Err(e);
        }
        state.seq += 1;
        state.stored = stored;
        state.last = Some(progress);
        tracing::debug!(
            seq = state.seq,
            packs = checkpoint.packs.len(),
            "checkpoint written"
        );
        Ok(())
    }
}

/// The checkpoints in the repository, and the keys of those that cannot be read.
pub async fn checkpoints(
    repo: &Repository,
) -> Result<(Vec<(String, Checkpoint)>, Vec<(String, RepoError)>), RepoError> {
    let listed = repo.store().list("checkpoints/").await?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (key, _) in listed {
        match repo
            .load_document::<Checkpoint>(Kind::Checkpoint, &key)
            .await
        {
            Ok(c) => good.push((key, c)),
            // Removed since the listing: a backup finished.
            Err(e) if e.is_storage_not_found() => {}
            Err(e) => bad.push((key, e)),
        }
    }
    Ok((good, bad))
}

/// What the unfinished runs of a source have stored, from their checkpoints.
pub(super) fn resumed(all: &[(String, Checkpoint)], host: &str, paths: &[String]) -> Resumed {
    let mut r = Resumed::default();
    for (_, c) in all.iter().filter(|(_, c)| c.same_source(host, paths)) {
        r.checkpoints += 1;
        r.packs += c.packs.len();
        r.stored_bytes = r.stored_bytes.max(c.stored_bytes);
        r.source_bytes_done = r.source_bytes_done.max(c.source_bytes_done);
        r.source_bytes_total = c.source_bytes_total.or(r.source_bytes_total);
    }
    r
}

/// The snapshot of a source is stored: its checkpoints protect nothing more. A checkpoint that
/// cannot be removed is left for prune, which removes it once it is no longer resumable.
pub(super) async fn remove_for_source(repo: &Repository, host: &str, paths: &[String]) {
    let all = match checkpoints(repo).await {
        Ok((all, _)) => all,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the checkpoints this backup makes unnecessary; prune removes them later");
            return;
        }
    };
    for (key, _) in all.iter().filter(|(_, c)| c.same_source(host, paths)) {
        if let Err(e) = repo.store().delete(key).await {
            tracing::warn!(checkpoint = key, error = %e, "could not remove a checkpoint; prune removes it later");
        }
    }
}
