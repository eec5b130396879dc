//! Prune: remove the data no snapshot needs. Under an exclusive lock it works out which blobs
//! the snapshots use, then, in an order that leaves a sound repository wherever it stops:
//!
//! 1. copies the blobs still used out of packs that are mostly unused into new packs (the old
//!    packs still hold them, so nothing is lost if it stops here; the new packs are simply
//!    unindexed, and the next prune removes them);
//! 2. writes new index files for every pack that stays, the last of them superseding every
//!    index file there was (until it exists the old index files are in force; once it exists
//!    they are ignored);
//! 3. deletes the old index files;
//! 4. deletes the packs nothing needs any more.
//!
//! Storage may refuse a delete (S3 Object Lock: the object's retention has not expired). That
//! is reported and prune carries on; a later prune removes the object once it may.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::repo::crypto::Kind;
use crate::repo::format::BlobKind;
use crate::repo::format::index::{IndexFile, IndexPack};
use crate::repo::format::snapshot::Snapshot;
use crate::repo::format::tree::NodeKind;
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId, object_name};
use crate::repo::index::MasterIndex;
use crate::repo::packer::{PackWriter, pack_key};
use crate::repo::{BlobDecoder, LockGuard, LockMode, RepoError, Repository, TreeLoader};
use crate::storage::StorageError;

/// Index files are written with at most this many packs each.
const PACKS_PER_INDEX: usize = 5_000;

pub use crate::repo::UNFINISHED_MARGIN as UNINDEXED_MARGIN;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused bytes that may stay in kept packs, as a percentage of the used bytes.
    pub max_unused_percent: f64,
    /// Work out what would happen, change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused_percent: 5.0,
            dry_run: false,
        }
    }
}

/// What prune found and did; journalled as a prune run's details (figures a journal row from an
/// earlier vouch lacks read as zero).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs_before: usize,
    pub bytes_before: u64,
    pub used_blobs: usize,
    pub used_bytes: u64,
    /// Packs no blob of any snapshot is in.
    pub packs_unused: usize,
    /// Packs in storage that no index lists (left by an interrupted backup or prune).
    pub packs_unindexed: usize,
    /// Of those, packs younger than the margin, left for a backup that may still need them.
    pub packs_recent: usize,
    /// Packs kept for an unfinished backup that may resume (named by its checkpoints), and
    /// checkpoints removed because they are too old to resume from.
    #[serde(default)]
    pub packs_resumable: usize,
    #[serde(default)]
    pub checkpoints_removed: usize,
    /// Partial uploads left on a local disk by a process that was killed mid-write.
    pub partial_files_removed: usize,
    /// Partly used packs whose used blobs were copied into new packs.
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub bytes_written: u64,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    pub packs_removed: usize,
    /// Bytes of the packs removed.
    pub bytes_freed: u64,
    /// Unused bytes left in kept packs (under the threshold).
    pub bytes_unused_kept: u64,
    /// Objects the storage refused to delete, with its reason (Object Lock retention).
    pub refused: Vec<(String, String)>,
    /// Objects still needed whose Object Lock retention was extended.
    pub retention_extended: usize,
    pub packs_after: usize,
    pub bytes_after: u64,
}

/// The blobs the snapshots use, every tree read: a tree that cannot be read, or a blob that no
/// index lists, stops prune before it changes anything.
async fn used_blobs(
    repo: &Arc<Repository>,
    snapshots: &[(SnapshotId, Snapshot)],
    index: &Arc<MasterIndex>,
) -> Result<HashSet<BlobId>, RepoError> {
    let trees = TreeLoader::new(repo.clone(), index.clone());
    let mut used: HashSet<BlobId> = HashSet::new();
    let mut stack: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    while let Some(id) = stack.pop() {
        if !used.insert(id) {
            continue;
        }
        let tree = trees.load(&id).await.map_err(|e| {
            RepoError::Invalid(format!(
                "tree {} cannot be read ({e}); prune stops without changing anything: run `vouch check`",
                id.short()
            ))
        })?;
        for node in &tree.nodes {
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => stack.push(sub),
                (NodeKind::File, _) => used.extend(node.content.iter().copied()),
                _ => {}
            }
        }
    }
    if let Some(missing) = used.iter().find(|b| !index.contains(b)) {
        return Err(RepoError::Invalid(format!(
            "blob {} that a snapshot needs is in no index; run `vouch check` (and `vouch repair index`) before pruning",
            missing.short()
        )));
    }
    Ok(used)
}

/// Every pack the live index files list, once, with the blobs of it that snapshots use; each
/// used blob counted in one pack only (the one the master index reads it from). Also the
/// index files that others supersede.
fn pack_use(
    files: &[(IndexId, IndexFile)],
    index: &MasterIndex,
    used: &HashSet<BlobId>,
) -> (Vec<PackUse>, HashSet<IndexId>) {
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut packs: Vec<PackUse> = Vec::new();
    let mut seen: HashSet<PackId> = HashSet::new();
    for (id, file) in files {
        if superseded.contains(id) {
            continue;
        }
        for p in &file.packs {
            if seen.insert(p.id) {
                packs.push(PackUse {
                    index: p.clone(),
                    used: Vec::new(),
                    used_bytes: 0,
                });
            }
        }
    }
    for p in &mut packs {
        for (i, b) in p.index.blobs.iter().enumerate() {
            let home = index
                .get(&b.id)
                .map(|l| index.pack(l.pack).id == p.index.id && l.offset == b.offset);
            if used.contains(&b.id) && home == Some(true) {
                p.used.push(i);
                p.used_bytes += b.length as u64;
            }
        }
    }
    (packs, superseded)
}

/// Copy the used blobs of the packs at `repack` into new packs, each blob checked (its seal
/// and its id) on the way; returns the new packs, stored.
async fn repack_packs(
    repo: &Repository,
    packs: &[PackUse],
    repack: &[usize],
    report: &mut PruneReport,
) -> Result<Vec<IndexPack>, RepoError> {
    let mut new_packs: Vec<IndexPack> = Vec::new();
    let pack_size = repo.config().pack_size as usize;
    let mut writers = [PackWriter::new(pack_size), PackWriter::new(pack_size)];
    let mut decoder = BlobDecoder::new();
    let mut carried: HashSet<BlobId> = HashSet::new();
    // One buffer for the packs read and one for a blob's payload, reused throughout: with
    // glibc, freed multi-megabyte buffers stay in the heap and peak memory grows otherwise.
    let mut bytes: Vec<u8> = Vec::new();
    let mut payload: Vec<u8> = Vec::new();
    for &i in repack {
        let p = &packs[i];
        bytes = read_pack(repo, pack_key(&p.index.id), bytes).await?;
        if object_name(&bytes) != *p.index.id.as_bytes() {
            return Err(RepoError::Invalid(format!(
                "pack {} does not match its name (damaged in storage); prune stopped before changing anything it needs: run `vouch check --read-data`",
                p.index.id.short()
            )));
        }
        for &b in &p.used {
            let blob = p.index.blobs[b];
            if !carried.insert(blob.id) {
                continue;
            }
            let sealed = bytes
                .get(blob.offset as usize..blob.offset as usize + blob.length as usize)
                .ok_or_else(|| {
                    RepoError::Invalid(format!("pack {} is truncated", p.index.id.short()))
                })?;
            let loc = crate::repo::index::BlobLocation {
                pack: 0,
                kind: blob.kind,
                offset: blob.offset,
                length: blob.length,
                raw_length: blob.raw_length,
            };
            // Check the blob (its seal and its id) before carrying it over.
            decoder
                .decode(repo.keys(), &blob.id, &loc, p.index.id, sealed, true)
                .map_err(|e| {
                    RepoError::Invalid(format!("{e}; prune stopped: run `vouch check --read-data`"))
                })?;
            repo.keys()
                .open_into(blob.kind.seal_kind(), sealed, &mut payload)
                .map_err(|e| RepoError::Invalid(e.to_string()))?;
            let w = &mut writers[usize::from(blob.kind == BlobKind::Tree)];
            if !w.fits(payload.len()) {
                let done = w.finish(repo.keys());
                let buf = store_pack(repo, &done.id, done.bytes, report).await?;
                new_packs.push(done.index);
                if let Some(buf) = buf {
                    w.use_buffer(buf);
                }
                checkpoint("repack-more");
            }
            let w = &mut writers[usize::from(blob.kind == BlobKind::Tree)];
            w.add_with(
                repo.keys(),
                blob.kind,
                blob.id,
                blob.raw_length as usize,
                |buf| buf.extend_from_slice(&payload),
            );
        }
    }
    for w in &mut writers {
        if !w.is_empty() {
            let done = w.finish(repo.keys());
            store_pack(repo, &done.id, done.bytes, report).await?;
            new_packs.push(done.index);
        }
    }
    Ok(new_packs)
}

/// New index files listing `staying`, the last superseding every index file in `old_files`
/// (until it exists the old ones are in force).
async fn write_index(
    repo: &Repository,
    staying: &[IndexPack],
    old_files: &BTreeSet<IndexId>,
    report: &mut PruneReport,
) -> Result<(), RepoError> {
    // Unused blobs of kept packs stay listed: the pack holds them, and a later prune may
    // repack it.
    let chunks: Vec<&[IndexPack]> = if staying.is_empty() {
        vec![&[]]
    } else {
        staying.chunks(PACKS_PER_INDEX).collect()
    };
    let last = chunks.len() - 1;
    for (n, chunk) in chunks.into_iter().enumerate() {
        let file = IndexFile {
            version: 1,
            supersedes: if n == last {
                old_files.iter().copied().collect()
            } else {
                Vec::new()
            },
            packs: chunk.to_vec(),
        };
        repo.save_index(&file).await?;
        report.index_files_written += 1;
    }
    Ok(())
}

/// Where a test may stop a prune to kill it: prune prints `prune: paused before PHASE` to
/// standard error and waits when `VOUCH_TEST_PRUNE_PAUSE` names the phase.
fn checkpoint(phase: &str) {
    crate::sys::test_pause("VOUCH_TEST_PRUNE_PAUSE", phase);
}

/// One pack as the index files list it, with how much of it the snapshots use.
struct PackUse {
    index: IndexPack,
    used: Vec<usize>,
    used_bytes: u64,
}

impl PackUse {
    fn kind(&self) -> BlobKind {
        if self.index.blobs.iter().all(|b| b.kind == BlobKind::Tree) && !self.index.blobs.is_empty()
        {
            BlobKind::Tree
        } else {
            BlobKind::Data
        }
    }
}

/// What prune does with each pack (indices into the packs), decided from their use alone.
#[derive(Debug, Default, PartialEq)]
struct Decision {
    remove: Vec<usize>,
    keep: Vec<usize>,
    repack: Vec<usize>,
    /// Unused bytes left in kept packs.
    unused_left: u64,
}

/// Remove the unused, keep the fully used, repack the most wasteful of the rest until what
/// stays unused is at most `max_unused_percent` of the used bytes. Tree packs are small and
/// read on every restore, so any waste in them is repacked.
fn decide(packs: &[PackUse], used_bytes: u64, max_unused_percent: f64) -> Decision {
    let mut d = Decision::default();
    let mut partial: Vec<usize> = Vec::new();
    for (i, p) in packs.iter().enumerate() {
        if p.used.is_empty() {
            d.remove.push(i);
        } else if p.used.len() == p.index.blobs.len() {
            d.keep.push(i);
        } else {
            partial.push(i);
        }
    }
    let unused_of = |p: &PackUse| p.index.size.saturating_sub(p.used_bytes);
    partial.sort_by(|a, b| {
        let ratio = |p: &PackUse| unused_of(p) as f64 / p.index.size.max(1) as f64;
        let (pa, pb) = (&packs[*a], &packs[*b]);
        (pb.kind() == BlobKind::Tree)
            .cmp(&(pa.kind() == BlobKind::Tree))
            .then(ratio(pb).total_cmp(&ratio(pa)))
    });
    let allowed = (used_bytes as f64 * max_unused_percent / 100.0) as u64;
    d.unused_left = partial.iter().map(|i| unused_of(&packs[*i])).sum();
    for i in partial {
        let p = &packs[i];
        // Under Object Lock the old copy stays until its retention ends (it is no longer
        // extended once no index lists it): the space comes back then.
        if p.kind() == BlobKind::Tree || d.unused_left > allowed {
            d.unused_left -= unused_of(p);
            d.repack.push(i);
        } else {
            d.keep.push(i);
        }
    }
    d
}

pub async fn prune(repo: Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport, RepoError> {
    let lock = repo.lock(LockMode::Exclusive, "prune").await?;
    let mut result = prune_locked(repo.clone(), opts, &lock).await;
    if !opts.dry_run {
        // Extension runs even when prune could not: an unreadable object planted in the
        // repository must not be able to stop retention and let everything expire.
        let mut extended = 0;
        let ext = extend_retention(&repo, &mut extended).await;
        match (&mut result, ext) {
            (Ok(report), Ok(())) => report.retention_extended = extended,
            (Ok(_), Err(e)) => result = Err(e),
            (Err(_), Ok(())) => {}
            (Err(prune_error), Err(e)) => {
                *prune_error = RepoError::Invalid(format!(
                    "{prune_error}; and Object Lock retention could not be extended: {e}"
                ));
            }
        }
    }
    // The lock goes whatever happened; a prune that stopped half-way left a sound repository.
    let released = lock.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn prune_locked(
    repo: Arc<Repository>,
    opts: &PruneOptions,
    lock: &LockGuard,
) -> Result<PruneReport, RepoError> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    // Everything that is read must be readable: prune will not guess what a lost file held.
    let (files, bad) = repo
        .load_all::<IndexFile, IndexId>(Kind::Index, "index/")
        .await?;
    if let Some((key, e)) = bad.into_iter().next() {
        return Err(RepoError::Invalid(format!(
            "index file {key} cannot be read ({e}); run `vouch repair index` first, then prune"
        )));
    }
    let (snapshots, bad) = repo.snapshots().await?;
    if let Some((key, e)) = bad.into_iter().next() {
        return Err(RepoError::Invalid(format!(
            "snapshot {key} cannot be read ({e}); prune will not remove data it might need"
        )));
    }
    report.snapshots = snapshots.len();
    let (resumable, expired) = unfinished_backups(&repo).await?;
    let (index, _) = repo.load_index().await?;
    let index = Arc::new(index);

    // The blobs the snapshots use, and those of the packs an unfinished backup has stored
    // (its checkpoints name them): that backup reuses them when it resumes.
    let mut used = used_blobs(&repo, &snapshots, &index).await?;
    report.used_blobs = used.len();
    for (_, file) in &files {
        for p in file.packs.iter().filter(|p| resumable.contains(&p.id)) {
            used.extend(p.blobs.iter().map(|b| b.id));
        }
    }

    // Every pack the live index files list, once, with the used blobs it is home to.
    let (packs, superseded) = pack_use(&files, &index, &used);
    report.used_bytes = packs.iter().map(|p| p.used_bytes).sum();

    // What storage holds.
    let listed = repo.store().list_modified("data/").await?;
    let stored: HashMap<String, u64> = listed.iter().map(|(k, n, _)| (k.clone(), *n)).collect();
    report.packs_before = stored.len();
    report.bytes_before = stored.values().sum();
    let indexed: HashSet<String> = packs.iter().map(|p| pack_key(&p.index.id)).collect();
    let recent_after = repo.store().clock().now() - UNINDEXED_MARGIN;
    let mut unindexed: Vec<String> = Vec::new();
    let resumable_keys: HashSet<String> = resumable.iter().map(pack_key).collect();
    report.packs_resumable = listed
        .iter()
        .filter(|(k, _, _)| resumable_keys.contains(k))
        .count();
    for (key, _, modified) in &listed {
        if indexed.contains(key) || resumable_keys.contains(key) {
            continue;
        }
        report.packs_unindexed += 1;
        if *modified > recent_after {
            report.packs_recent += 1;
        } else {
            unindexed.push(key.clone());
        }
    }
    let partial_files = repo.store().partial_uploads(UNINDEXED_MARGIN)?;
    if let Some(p) = packs
        .iter()
        .find(|p| p.used_bytes > 0 && !stored.contains_key(&pack_key(&p.index.id)))
    {
        return Err(RepoError::Invalid(format!(
            "pack {} holds blobs that snapshots need but is not in storage; run `vouch check`",
            p.index.id.short()
        )));
    }

    let Decision {
        remove,
        keep,
        repack,
        unused_left,
    } = decide(&packs, report.used_bytes, opts.max_unused_percent);
    report.packs_unused = remove.len();
    report.packs_repacked = repack.len();
    report.bytes_unused_kept = unused_left;
    let stored_size = |p: &PackUse| {
        stored
            .get(&pack_key(&p.index.id))
            .copied()
            .unwrap_or(p.index.size)
    };
    let repack_bytes: u64 = repack.iter().map(|i| packs[*i].used_bytes).sum();
    let gone: u64 = remove
        .iter()
        .chain(&repack)
        .map(|i| stored_size(&packs[*i]))
        .sum::<u64>()
        + unindexed.iter().map(|k| stored[k]).sum::<u64>();
    let rewrite_index = !remove.is_empty() || !repack.is_empty();
    let stale_index: Vec<IndexId> = files
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| superseded.contains(id))
        .collect();
    if !rewrite_index
        && unindexed.is_empty()
        && stale_index.is_empty()
        && partial_files.is_empty()
        && expired.is_empty()
    {
        // Nothing to free: leave the index files as they are.
        report.packs_after = report.packs_before;
        report.bytes_after = report.bytes_before;
        return Ok(report);
    }
    if opts.dry_run {
        report.packs_removed = remove.len() + repack.len() + unindexed.len();
        report.bytes_freed = gone.saturating_sub(repack_bytes);
        report.packs_after = report.packs_before - report.packs_removed;
        report.bytes_after = report.bytes_before - report.bytes_freed;
        return Ok(report);
    }
    if !rewrite_index {
        // Only leftovers to clear (packs no index lists, index files already superseded,
        // typically kept by Object Lock the last time): the index stays as it is.
        checkpoint("delete-index");
        lock.check()?;
        for id in &stale_index {
            let key = format!("index/{}", id.to_hex());
            match repo.store().delete(&key).await {
                Ok(()) => report.index_files_removed += 1,
                Err(e) => refused(&mut report, key, e)?,
            }
        }
        checkpoint("delete-packs");
        let doomed: Vec<(String, u64)> = unindexed.iter().map(|k| (k.clone(), stored[k])).collect();
        delete_packs(&repo, &doomed, &mut report).await?;
        remove_checkpoints(&repo, &expired, &mut report).await?;
        report.partial_files_removed = repo.store().remove_partial(&partial_files)?;
        return finish(&repo, report).await;
    }

    // 1. Copy the used blobs of the packs to repack into new packs.
    checkpoint("repack");
    let new_packs = repack_packs(&repo, &packs, &repack, &mut report).await?;

    // 2. New index files for every pack that stays; the last supersedes every index file
    // listed now (those already superseded too, so that they stay so once deleted files are
    // gone).
    checkpoint("index");
    lock.check()?;
    let mut staying: Vec<IndexPack> = keep.iter().map(|i| packs[*i].index.clone()).collect();
    staying.extend(new_packs);
    let old_files: BTreeSet<IndexId> = files.iter().map(|(id, _)| *id).collect();
    write_index(&repo, &staying, &old_files, &mut report).await?;

    // 3. The old index files.
    checkpoint("delete-index");
    lock.check()?;
    for id in &old_files {
        match repo.store().delete(&format!("index/{}", id.to_hex())).await {
            Ok(()) => report.index_files_removed += 1,
            Err(e) => refused(&mut report, format!("index/{}", id.to_hex()), e)?,
        }
    }

    // 4. The packs nothing needs.
    checkpoint("delete-packs");
    lock.check()?;
    let mut doomed: Vec<(String, u64)> = remove
        .iter()
        .chain(&repack)
        .map(|i| {
            let p = &packs[*i];
            (pack_key(&p.index.id), stored_size(p))
        })
        .filter(|(k, _)| stored.contains_key(k))
        .collect();
    doomed.extend(unindexed.iter().map(|k| (k.clone(), stored[k])));
    delete_packs(&repo, &doomed, &mut report).await?;
    remove_checkpoints(&repo, &expired, &mut report).await?;
    report.partial_files_removed = repo.store().remove_partial(&partial_files)?;
    finish(&repo, report).await
}

/// The packs that unfinished backups have stored and may still reuse (named by checkpoints
/// written less than `RESUMABLE_FOR` ago), and the checkpoints too old to resume from. A
/// checkpoint that cannot be read stops prune: what it protects is unknown.
async fn unfinished_backups(
    repo: &Repository,
) -> Result<(HashSet<PackId>, Vec<String>), RepoError> {
    let (all, bad) = crate::backup::checkpoints(repo).await?;
    if let Some((key, e)) = bad.into_iter().next() {
        return Err(RepoError::Invalid(format!(
            "checkpoint {key} cannot be read ({e}); it may name packs that an unfinished backup will reuse, so prune stops: complete that backup (its snapshot removes its checkpoints), or remove {key} from the storage if no backup is unfinished"
        )));
    }
    let now = repo.clock().now();
    let mut resumable = HashSet::new();
    let mut expired = Vec::new();
    for (key, c) in all {
        if c.is_resumable(now) {
            resumable.extend(c.packs);
        } else {
            expired.push(key);
        }
    }
    Ok((resumable, expired))
}

async fn remove_checkpoints(
    repo: &Repository,
    keys: &[String],
    report: &mut PruneReport,
) -> Result<(), RepoError> {
    for key in keys {
        match repo.store().delete(key).await {
            Ok(()) => report.checkpoints_removed += 1,
            Err(e) => refused(report, key.clone(), e)?,
        }
    }
    Ok(())
}

async fn delete_packs(
    repo: &Repository,
    doomed: &[(String, u64)],
    report: &mut PruneReport,
) -> Result<(), RepoError> {
    for (n, (key, size)) in doomed.iter().enumerate() {
        if n == 1 {
            checkpoint("delete-more-packs");
        }
        match repo.store().delete(key).await {
            Ok(()) => {
                report.packs_removed += 1;
                report.bytes_freed += size;
            }
            Err(e) => refused(report, key.clone(), e)?,
        }
    }
    Ok(())
}

async fn finish(repo: &Repository, mut report: PruneReport) -> Result<PruneReport, RepoError> {
    let after: Vec<(String, u64)> = repo.store().list("data/").await?;
    report.packs_after = after.len();
    report.bytes_after = after.iter().map(|(_, s)| s).sum();
    Ok(report)
}

/// Object Lock: every object still needed whose retention ends within half the period is
/// retained for the whole period again (as kopia does), so that nothing a kept snapshot needs
/// can expire. The retention is read from the storage itself, never from a record of ours.
/// Snapshots keep the retention they were written with (each is protected for the period
/// after it was taken, and forget can remove it after that), except those under a hold.
async fn extend_retention(repo: &Repository, extended: &mut usize) -> Result<(), RepoError> {
    let Some(retention) = repo.store().retention() else {
        return Ok(());
    };
    // The live index files and the packs they list. One that cannot be read is extended as
    // it is (it may be live) and then reported: its packs could not be.
    let (files, bad) = repo
        .load_all::<IndexFile, IndexId>(Kind::Index, "index/")
        .await?;
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut live: BTreeSet<String> = BTreeSet::new();
    for (id, file) in &files {
        if !superseded.contains(id) {
            live.insert(format!("index/{}", id.to_hex()));
            live.extend(file.packs.iter().map(|p| pack_key(&p.id)));
        }
    }
    let stored: HashSet<String> = repo
        .store()
        .list("data/")
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    live.retain(|k| !k.starts_with("data/") || stored.contains(k));
    live.extend(bad.iter().map(|(key, _)| key.clone()));
    // The repository's identity, keys and records, and the snapshots under a hold (a
    // snapshot kept because of a ransomware alert stays protected until acknowledged).
    live.insert("config".into());
    for dir in ["keys/", "holds/", "ledger/", "drills/", "journal/"] {
        live.extend(repo.store().list(dir).await?.into_iter().map(|(k, _)| k));
    }
    if let Ok(holds) = crate::retention::holds(repo).await {
        live.extend(holds.keys().map(|id| format!("snapshots/{}", id.to_hex())));
    }
    let stored_snapshots: HashSet<String> = repo
        .store()
        .list("snapshots/")
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    live.retain(|k| !k.starts_with("snapshots/") || stored_snapshots.contains(k));
    let now = repo.store().clock().now();
    let horizon = now + retention.period() / 2;
    let until = now + retention.period();
    let results: Vec<Result<bool, RepoError>> = futures::stream::iter(live)
        .map(|key| async move {
            let current = repo.store().object_retention(&key).await?;
            if current.until.is_some_and(|u| u >= horizon) {
                return Ok(false);
            }
            repo.store().extend_retention(&key, until).await?;
            Ok(true)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        if r? {
            *extended += 1;
        }
    }
    if let Some((key, e)) = bad.into_iter().next() {
        return Err(RepoError::Invalid(format!(
            "index file {key} cannot be read ({e}), so the retention of the packs it lists could not be extended; run `vouch repair index`, then prune"
        )));
    }
    Ok(())
}

/// Read a whole pack into `buf` (reused), off the runtime's threads.
async fn read_pack(repo: &Repository, key: String, mut buf: Vec<u8>) -> Result<Vec<u8>, RepoError> {
    let store = repo.store().clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        store.read_into(&handle, &key, None, &mut buf)?;
        Ok(buf)
    })
    .await
    .expect("pack reader")
}

/// Store a new pack; its buffer comes back for the next one when nothing else holds it.
async fn store_pack(
    repo: &Repository,
    id: &PackId,
    bytes: Bytes,
    report: &mut PruneReport,
) -> Result<Option<Vec<u8>>, RepoError> {
    report.packs_written += 1;
    report.bytes_written += bytes.len() as u64;
    repo.store().put(&pack_key(id), bytes.clone()).await?;
    Ok(bytes.try_into_mut().ok().map(Into::into))
}

/// A delete the storage refused (Object Lock retention, or credentials without delete) is
/// reported and prune carries on; any other failure stops it.
fn refused(report: &mut PruneReport, key: String, e: StorageError) -> Result<(), RepoError> {
    match e {
        StorageError::Retained { until, .. } => {
            let why = format!(
                "Object Lock retains it until {}",
                crate::clock::human(until)
            );
            report.refused.push((key, why));
            Ok(())
        }
        e if e.is_refused_delete() => {
            report.refused.push((key, e.to_string()));
            Ok(())
        }
        // Already gone (another prune got there first): nothing to free.
        e if e.is_not_found() => Ok(()),
        e => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::format::index::IndexBlob;

    /// A pack of `blobs` blobs of 1000 bytes, of which those in `used` are used.
    fn pack(n: u8, kind: BlobKind, blobs: usize, used: &[usize]) -> PackUse {
        let index = IndexPack {
            id: PackId::from_bytes([n; 32]),
            size: blobs as u64 * 1000,
            blobs: (0..blobs)
                .map(|i| IndexBlob {
                    id: BlobId::from_bytes([n.wrapping_add(i as u8); 32]),
                    kind,
                    offset: i as u32 * 1000,
                    length: 1000,
                    raw_length: 1000,
                })
                .collect(),
        };
        PackUse {
            index,
            used: used.to_vec(),
            used_bytes: used.len() as u64 * 1000,
        }
    }

    #[test]
    fn unused_packs_go_used_ones_stay_and_the_most_wasteful_are_repacked_to_the_threshold() {
        let packs = vec![
            pack(1, BlobKind::Data, 10, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), // all used
            pack(2, BlobKind::Data, 10, &[]),                             // none used
            pack(3, BlobKind::Data, 10, &[0]),                            // 90% waste
            pack(4, BlobKind::Data, 10, &[0, 1, 2, 3, 4, 5, 6, 7, 8]),    // 10% waste
            pack(5, BlobKind::Data, 10, &[0, 1, 2, 3, 4]),                // 50% waste
        ];
        let used: u64 = packs.iter().map(|p| p.used_bytes).sum(); // 25 000
        // 5% of 25 000 = 1 250 may stay unused: repack the 90% and the 50% pack, keep the
        // 10% one (1 000 unused).
        let d = decide(&packs, used, 5.0);
        assert_eq!(d.remove, [1]);
        assert_eq!(d.repack, [2, 4]);
        assert_eq!(d.keep, [0, 3]);
        assert_eq!(d.unused_left, 1000);
        // With 100% allowed nothing partly used is repacked.
        let lax = decide(&packs, used, 100.0);
        assert!(lax.repack.is_empty(), "{lax:?}");
        assert_eq!(lax.unused_left, 9000 + 1000 + 5000);
        // With 0% everything partly used is.
        assert_eq!(decide(&packs, used, 0.0).repack, [2, 4, 3]);
    }

    #[test]
    fn any_waste_in_a_tree_pack_is_repacked() {
        let packs = vec![
            pack(1, BlobKind::Tree, 10, &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
            pack(2, BlobKind::Data, 10, &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
        ];
        let d = decide(&packs, 18_000, 100.0);
        assert_eq!(d.repack, [0], "the tree pack, whatever the threshold");
        assert_eq!(d.keep, [1]);
    }
}
