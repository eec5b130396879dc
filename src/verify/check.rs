//! `vouch check`: every snapshot's trees and blobs resolvable through the index, the index
//! consistent with the packs in storage, and with `--read-data` every selected pack re-read and
//! verified at levels 1 (the pack's blake3 is its name) and 2 (every blob authenticates and its
//! keyed hash is its id). Damage is named by object and traced to the snapshots and files it
//! affects.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::repo::format::pack::read_header;
use crate::repo::format::snapshot::Snapshot;
use crate::repo::format::tree::{Node, NodeKind};
use crate::repo::ids::{BlobId, PackId, SnapshotId, object_name};
use crate::repo::index::MasterIndex;
use crate::repo::packer::pack_key;
use crate::repo::{BlobDecoder, BlobError, RepoError, Repository, TreeLoader};

use super::finding::{Affected, Finding, FindingKind, Object, Severity};
use super::ledger::{self, Ledger, LedgerRecord};

/// How much stored data to re-read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// This percentage of packs, chosen at random with a recorded seed.
    Subset(f64),
}

#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub read_data: ReadData,
    /// Seed for the subset; random when unset.
    pub seed: Option<u64>,
    pub threads: Option<usize>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub repository: String,
    pub snapshots: usize,
    pub trees: usize,
    pub files: u64,
    pub packs: usize,
    pub blobs: usize,
    pub read_data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset_seed: Option<u64>,
    pub packs_read: usize,
    pub bytes_read: u64,
    pub blobs_verified: u64,
    /// Hash levels verified for the data read (1: storage, 2: blob).
    pub levels: Vec<u8>,
    pub findings: Vec<Finding>,
    pub duration_ms: u64,
    /// How the check ran, for the person to know (read without a lock, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl CheckReport {
    pub fn is_damaged(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Damage)
    }
}

const AFFECTED_SHOWN: usize = 100;

fn finding(kind: FindingKind, object: impl Into<Object>, message: impl Into<String>) -> Finding {
    Finding::new(kind, object, message)
}

pub async fn check(repo: Arc<Repository>, opts: &CheckOptions) -> Result<CheckReport, RepoError> {
    let (lock, note) = repo.lock_for_reading("check").await?;
    let result = check_locked(&repo, opts).await;
    lock.release().await?;
    let mut report = result?;
    report.notes.extend(note);
    Ok(report)
}

async fn check_locked(
    repo: &Arc<Repository>,
    opts: &CheckOptions,
) -> Result<CheckReport, RepoError> {
    let started = Instant::now();
    let mut report = CheckReport {
        repository: repo.url().to_string(),
        ..Default::default()
    };
    let mut findings = Vec::new();

    // Packs in storage against packs in the index.
    let stored: HashMap<String, u64> = repo.store().list("data/").await?.into_iter().collect();
    let (index, bad_indexes) = repo.load_index().await?;
    for (key, err) in bad_indexes {
        findings.push(finding(
            FindingKind::IndexUnreadable,
            key,
            format!("index file unreadable: {err}; the blobs it listed are reported below"),
        ));
    }
    let index = Arc::new(index);
    let mut indexed_keys = HashSet::new();
    let mut missing_packs = HashSet::new();
    for (pos, pack) in index.packs().iter().enumerate() {
        let key = pack_key(&pack.id);
        match stored.get(&key) {
            None => {
                missing_packs.insert(pos as u32);
                findings.push(with_blobs(
                    finding(
                        FindingKind::PackMissing,
                        pack.id,
                        "pack is missing from storage",
                    ),
                    index
                        .blobs_of_pack(pos as u32)
                        .into_iter()
                        .map(|(id, _)| id)
                        .collect(),
                ));
            }
            Some(&size) if size != pack.size => findings.push(with_blobs(
                finding(
                    FindingKind::PackSize,
                    pack.id,
                    format!("pack is {size} bytes, the index says {}", pack.size),
                ),
                index
                    .blobs_of_pack(pos as u32)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect(),
            )),
            Some(_) => {}
        }
        indexed_keys.insert(key);
    }
    let mut unindexed: Vec<&String> = stored
        .keys()
        .filter(|k| !indexed_keys.contains(*k))
        .collect();
    unindexed.sort();
    for key in unindexed {
        findings.push(finding(
                        FindingKind::PackUnindexed,
            key.clone(),
            "pack is not listed in any index: left by an interrupted backup, or its index was lost (`vouch repair index` lists it again)",
        ));
    }
    report.packs = index.packs().len();
    report.blobs = index.blob_count();

    // Re-read packs: started now, so that over S3 the reads fill the link while the trees
    // below are walked.
    let selected: Vec<u32> = match opts.read_data {
        ReadData::None => Vec::new(),
        ReadData::All => (0..index.packs().len() as u32)
            .filter(|p| !missing_packs.contains(p))
            .collect(),
        ReadData::Subset(pct) => {
            let seed = opts
                .seed
                .unwrap_or_else(|| u64::from_le_bytes(crate::repo::crypto::random_array()));
            report.subset_seed = Some(seed);
            let (ledger, _) = Ledger::load(repo).await?;
            subset(&index, &ledger, pct, seed, &missing_packs)
        }
    };
    report.read_data = match opts.read_data {
        ReadData::None => "none".into(),
        ReadData::All => "all".into(),
        ReadData::Subset(p) => format!("subset {p}%"),
    };
    // A check that ends early (an unreadable snapshot list, say) stops its readers.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_readers = crate::sys::StopOnDrop(stop.clone());
    let reading = (opts.read_data != ReadData::None).then(|| {
        report.levels = vec![1, 2];
        let threads = opts.threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            if repo.store().is_local() {
                cores
            } else {
                // Packs are read whole: each reader holds one.
                crate::repo::remote_readers(repo.config(), repo.config().largest_pack(), 8)
            }
        });
        tokio::spawn(read_packs(
            repo.clone(),
            index.clone(),
            selected,
            threads,
            stop.clone(),
        ))
    });
    // Snapshots and their trees.
    let (snapshots, bad_snapshots) = repo.snapshots().await?;
    for (key, err) in bad_snapshots {
        findings.push(finding(
            FindingKind::SnapshotUnreadable,
            key,
            format!("snapshot unreadable: {err}"),
        ));
    }
    report.snapshots = snapshots.len();
    findings.extend(check_records(repo).await?);
    let trees = TreeLoader::new(repo.clone(), index.clone());
    let structure = walk_structure(&trees, &snapshots).await;
    report.trees = structure.trees;
    report.files = structure.files;
    findings.extend(structure.findings);

    if let Some(reading) = reading {
        let read = reading.await.expect("check readers");
        report.packs_read = read.packs;
        report.bytes_read = read.bytes;
        report.blobs_verified = read.blobs;
        findings.extend(read.findings);
        if !read.clean.is_empty() {
            let record = LedgerRecord {
                version: crate::repo::format::FORMAT_VERSION,
                time: repo.clock().now(),
                source: "check".into(),
                run: format!("check --read-data ({})", report.read_data),
                host: crate::sys::hostname(),
                packs: read.clean,
                snapshot: None,
                files: String::new(),
            };
            match ledger::record(repo, &record).await {
                Ok(()) => {}
                Err(RepoError::Storage(e)) if e.is_read_only() => report.notes.push(format!(
                    "what was verified is not recorded in the verification ledger: the repository refuses writes ({e})"
                )),
                Err(e) => return Err(e),
            }
        }
    }

    // Name the files each damage affects.
    let damaged_blobs: HashSet<BlobId> = findings
        .iter()
        .flat_map(|f| f.blobs.iter().copied())
        .collect();
    if !damaged_blobs.is_empty() {
        let affected = affected_files(&trees, &snapshots, &damaged_blobs).await;
        for f in &mut findings {
            let mut all: Vec<Affected> = f
                .blobs
                .iter()
                .filter_map(|b| affected.get(b))
                .flatten()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            f.affected_total = all.len();
            all.truncate(AFFECTED_SHOWN);
            f.affected = all;
        }
    }
    // By severity, then by the object as it is named.
    findings.sort_by_cached_key(|f| (f.severity, f.object.to_string()));
    report.findings = findings;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Every stored object besides packs, index files and snapshots: key files, locks, drill
/// reports, the verification ledger, holds and the journal's copy. Each must match its name
/// and open; one that does not is named. A record of evidence lost is damage; a lock or a
/// partial upload is something to tidy.
async fn check_records(repo: &Repository) -> Result<Vec<Finding>, RepoError> {
    use crate::repo::crypto::Kind;
    use futures::StreamExt;
    let mut out = Vec::new();
    let (_, bad_keys) = repo.list_keys().await?;
    for (key, why) in bad_keys {
        out.push(finding(
                        FindingKind::KeyUnreadable,
            key,
            format!(
                "key file cannot be read ({why}): its passphrase no longer opens the repository; the others still do. Remove it with `vouch key remove`, and `vouch key add` a new one if that passphrase is still needed"
            ),
        ));
    }
    let what = |dir: &str| match dir {
        "drills/" => "drill report",
        "ledger/" => "verification ledger record",
        "holds/" => "hold",
        "locks/" => "lock file",
        "checkpoints/" => "checkpoint of an unfinished backup",
        _ => "journal copy",
    };
    for dir in [
        "locks/",
        "checkpoints/",
        "drills/",
        "ledger/",
        "holds/",
        "journal/",
    ] {
        let listed = repo.store().list(dir).await?;
        // Each object with, when it cannot be read, why (the finding's text).
        let results: Vec<(String, Option<String>)> = futures::stream::iter(listed)
            .map(|(key, _)| async move {
                let bytes = match repo.store().get(&key).await {
                    Ok(b) => b,
                    // Removed since the listing (a lock released, say).
                    Err(e) if e.is_not_found() => return Ok((key, None)),
                    // Not damage: the storage could not be read, and check cannot go on.
                    Err(e) => return Err(e),
                };
                let r = match dir {
                    "locks/" => repo
                        .decode::<crate::repo::format::lock::LockFile>(Kind::Lock, &key, &bytes)
                        .err()
                        .map(|e| e.to_string()),
                    "drills/" => repo
                        .decode::<super::drill::DrillReport>(Kind::DrillReport, &key, &bytes)
                        .err()
                        .map(|e| e.to_string()),
                    "ledger/" => repo
                        .decode::<LedgerRecord>(Kind::Ledger, &key, &bytes)
                        .err()
                        .map(|e| e.to_string()),
                    "checkpoints/" => repo
                        .decode::<crate::repo::format::checkpoint::Checkpoint>(
                            Kind::Checkpoint,
                            &key,
                            &bytes,
                        )
                        .err()
                        .map(|e| e.to_string()),
                    "holds/" => repo
                        .decode::<serde_json::Value>(Kind::Hold, &key, &bytes)
                        .err()
                        .map(|e| e.to_string()),
                    _ => crate::journal::decode_mirror(repo, &key, &bytes)
                        .err()
                        .map(|e| e.to_string()),
                };
                Ok((key, r))
            })
            .buffer_unordered(16)
            .collect::<Vec<Result<_, crate::storage::StorageError>>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        for (key, r) in results {
            let Some(why) = r else { continue };
            let (kind, advice) = if dir == "locks/" {
                (
                    FindingKind::LockUnreadable,
                    "; it blocks other jobs until it is 30 minutes old, and protects nothing: `vouch unlock` removes it",
                )
            } else if dir == "checkpoints/" {
                (
                    FindingKind::RecordUnreadable,
                    "; prune stops until it is gone: complete the unfinished backup, or remove it from the storage",
                )
            } else {
                (
                    FindingKind::RecordUnreadable,
                    "; the evidence it held is lost from the repository",
                )
            };
            out.push(finding(
                kind,
                key,
                format!("{} cannot be read: {why}{advice}", what(dir)),
            ));
        }
    }
    // An hour old, as prune judges them: younger ones may be a backup's writes in progress.
    for path in repo
        .store()
        .partial_uploads(crate::repo::UNFINISHED_MARGIN)?
    {
        out.push(finding(
                        FindingKind::PartialUpload,
            path.display().to_string(),
            "an unfinished write left by a process that was stopped; nothing uses it, and `vouch prune` removes it",
        ));
    }
    Ok(out)
}

fn with_blobs(mut f: Finding, blobs: Vec<BlobId>) -> Finding {
    f.blobs = blobs;
    f
}

/// `pct` percent of the packs (at least one): those verified longest ago (or never) first,
/// ties broken by a seeded shuffle, so that successive subsets cover everything.
fn subset(
    index: &MasterIndex,
    ledger: &Ledger,
    pct: f64,
    seed: u64,
    skip: &HashSet<u32>,
) -> Vec<u32> {
    let mut candidates: Vec<(Option<jiff::Timestamp>, u64, u32)> = (0..index.packs().len() as u32)
        .filter(|p| !skip.contains(p))
        .map(|p| {
            let id = index.pack(p).id;
            (
                ledger.pack_verified(&id),
                seeded_rank(seed, id.as_bytes()),
                p,
            )
        })
        .collect();
    candidates.sort();
    let n = ((candidates.len() as f64) * pct / 100.0).ceil() as usize;
    let n = n.clamp(usize::from(!candidates.is_empty()), candidates.len());
    candidates.into_iter().take(n).map(|(_, _, p)| p).collect()
}

/// A position in a seeded shuffle: the same seed gives the same order.
pub(crate) fn seeded_rank(seed: u64, item: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(item);
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

struct Structure {
    trees: usize,
    files: u64,
    findings: Vec<Finding>,
}

/// What a walk over a snapshot's trees meets.
enum Visit<'a> {
    /// A directory's tree, before it is read.
    Tree { path: &'a str, id: BlobId },
    /// A directory whose tree could not be read.
    Unreadable {
        path: &'a str,
        id: BlobId,
        error: BlobError,
    },
    /// A file or symlink, with its full path.
    Leaf { path: &'a str, node: &'a Node },
}

/// Walk the trees under `root` depth first; with `seen`, trees visited before are skipped.
async fn visit(
    trees: &TreeLoader,
    root: BlobId,
    mut seen: Option<&mut HashSet<BlobId>>,
    mut on: impl FnMut(Visit),
) {
    let mut stack = vec![(root, String::new())];
    while let Some((id, path)) = stack.pop() {
        if let Some(seen) = seen.as_deref_mut() {
            if !seen.insert(id) {
                continue;
            }
        }
        on(Visit::Tree { path: &path, id });
        let tree = match trees.load(&id).await {
            Ok(t) => t,
            Err(error) => {
                on(Visit::Unreadable {
                    path: &path,
                    id,
                    error,
                });
                continue;
            }
        };
        for node in &tree.nodes {
            let child = format!("{path}/{}", node.name_lossy());
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => stack.push((sub, child)),
                (NodeKind::Dir, None) => {}
                _ => on(Visit::Leaf { path: &child, node }),
            }
        }
    }
}

fn affecting(mut f: Finding, snapshot: &SnapshotId, path: String) -> Finding {
    f.affected.push(Affected {
        snapshot: snapshot.short(),
        path,
    });
    f.affected_total = 1;
    f
}

/// Walk every tree once; report trees that cannot be read, blobs missing from the index and
/// files whose blobs do not add up to their size.
async fn walk_structure(trees: &TreeLoader, snapshots: &[(SnapshotId, Snapshot)]) -> Structure {
    let index = trees.index();
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut out = Structure {
        trees: 0,
        files: 0,
        findings: Vec::new(),
    };
    let mut missing: BTreeSet<BlobId> = BTreeSet::new();
    for (sid, snap) in snapshots {
        visit(trees, snap.tree, Some(&mut seen), |v| match v {
            Visit::Tree { .. } => out.trees += 1,
            Visit::Unreadable { path, id, error } => {
                let (object, why) = match &error {
                    BlobError::NotIndexed(_) => (
                        Object::from("index/"),
                        format!("its tree blob {} is in no index", id.short()),
                    ),
                    other => (
                        other
                            .pack()
                            .map_or(Object::Stored(String::new()), Object::Pack),
                        other.to_string(),
                    ),
                };
                let message = format!(
                    "directory {} of snapshot {} unreadable: {why}",
                    display(path),
                    sid.short()
                );
                let f = finding(FindingKind::TreeUnreadable, object, message);
                out.findings.push(affecting(f, sid, display(path)));
            }
            Visit::Leaf { path, node } if node.kind == NodeKind::File => {
                out.files += 1;
                let mut sum = 0u64;
                let mut complete = true;
                for id in &node.content {
                    match index.get(id) {
                        Some(l) => sum += l.raw_length as u64,
                        None => {
                            complete = false;
                            missing.insert(*id);
                        }
                    }
                }
                if complete && sum != node.size {
                    let message = format!(
                        "{path}: its blobs hold {sum} bytes, the file had {}",
                        node.size
                    );
                    let f = finding(FindingKind::FileSize, format!("snapshots/{sid}"), message);
                    out.findings.push(affecting(f, sid, path.to_string()));
                }
            }
            Visit::Leaf { .. } => {}
        })
        .await;
    }
    if !missing.is_empty() {
        out.findings.push(with_blobs(
            finding(
                                FindingKind::BlobMissing,
                "index/",
                format!(
                    "{} blob(s) that snapshots need are in no index (a lost index file: `vouch repair index` rebuilds it from the packs; or packs deleted by hand)",
                    missing.len()
                ),
            ),
            missing.into_iter().collect(),
        ));
    }
    out
}

fn display(path: &str) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        path.to_string()
    }
}

/// For each damaged blob, the files (snapshot, path) that contain it.
async fn affected_files(
    trees: &TreeLoader,
    snapshots: &[(SnapshotId, Snapshot)],
    damaged: &HashSet<BlobId>,
) -> HashMap<BlobId, Vec<Affected>> {
    let mut out: HashMap<BlobId, Vec<Affected>> = HashMap::new();
    for (sid, snap) in snapshots {
        let mut affect = |blob: BlobId, path: &str| {
            out.entry(blob).or_default().push(Affected {
                snapshot: sid.short(),
                path: display(path),
            })
        };
        visit(trees, snap.tree, None, |v| match v {
            Visit::Tree { path, id } if damaged.contains(&id) => affect(id, path),
            Visit::Leaf { path, node } => {
                for id in node.content.iter().filter(|id| damaged.contains(id)) {
                    affect(*id, path);
                }
            }
            _ => {}
        })
        .await;
    }
    out
}

struct ReadOutcome {
    packs: usize,
    bytes: u64,
    blobs: u64,
    findings: Vec<Finding>,
    /// Packs that passed levels 1 and 2 in full.
    clean: Vec<PackId>,
}

async fn read_packs(
    repo: Arc<Repository>,
    index: Arc<MasterIndex>,
    selected: Vec<u32>,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> ReadOutcome {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let next = AtomicUsize::new(0);
        let bytes = AtomicU64::new(0);
        let blobs = AtomicU64::new(0);
        let findings = Mutex::new(Vec::new());
        let by_pack = index.blobs_by_pack();
        let clean = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| {
                    let largest = repo.config().chunker.max_size as usize;
                    let mut decoder = BlobDecoder::with_capacity(largest);
                    let mut buf = Vec::with_capacity(repo.config().pack_size as usize + largest);
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&pos) = selected.get(i) else { break };
                        let pack = index.pack(pos).id;
                        let expected = &by_pack[pos as usize];
                        let (n, verified, found) =
                            verify_pack(&repo, &handle, pack, expected, &mut decoder, &mut buf);
                        bytes.fetch_add(n, Ordering::Relaxed);
                        blobs.fetch_add(verified, Ordering::Relaxed);
                        if found.is_empty() {
                            clean.lock().expect("clean").push(pack);
                        }
                        findings.lock().expect("findings").extend(found);
                    }
                });
            }
        });
        ReadOutcome {
            packs: selected.len(),
            bytes: bytes.into_inner(),
            blobs: blobs.into_inner(),
            findings: findings.into_inner().expect("findings"),
            clean: clean.into_inner().expect("clean"),
        }
    })
    .await
    .expect("check threads")
}

/// Read one pack and verify levels 1 and 2; returns bytes read, blobs verified, findings.
fn verify_pack(
    repo: &Repository,
    handle: &tokio::runtime::Handle,
    pack: PackId,
    expected: &[(BlobId, crate::repo::index::BlobLocation)],
    decoder: &mut BlobDecoder,
    buf: &mut Vec<u8>,
) -> (u64, u64, Vec<Finding>) {
    let key = pack_key(&pack);
    let all_blobs = || expected.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    let bytes = match repo.store().read_into(handle, &key, None, buf) {
        Ok(()) => &buf[..],
        Err(e) => {
            let kind = if e.is_not_found() {
                FindingKind::PackMissing
            } else {
                FindingKind::PackHeader
            };
            return (
                0,
                0,
                vec![with_blobs(
                    finding(kind, pack, format!("pack could not be read: {e}")),
                    all_blobs(),
                )],
            );
        }
    };
    let mut findings = Vec::new();
    if object_name(bytes) != *pack.as_bytes() {
        findings.push(finding(
            FindingKind::PackHash,
            pack,
            format!(
                "pack bytes hash to {}, not to its name: the stored file was altered",
                hex::encode(object_name(bytes))
            ),
        ));
    }
    match read_header(repo.keys(), bytes) {
        Ok(header) => {
            let by_id: HashMap<BlobId, u32> =
                header.iter().map(|b| (b.entry.id, b.offset)).collect();
            let stray: Vec<BlobId> = expected
                .iter()
                .filter(|(id, l)| by_id.get(id) != Some(&l.offset))
                .map(|(id, _)| *id)
                .collect();
            if !stray.is_empty() {
                findings.push(with_blobs(
                    finding(
                        FindingKind::PackIndexMismatch,
                        pack,
                        format!("{} blob(s) are not where the index says", stray.len()),
                    ),
                    stray,
                ));
            }
        }
        Err(e) => findings.push(finding(
            FindingKind::PackHeader,
            pack,
            format!("pack header unreadable: {e}"),
        )),
    }
    let mut verified = 0;
    let mut bad = Vec::new();
    let mut first_error = None;
    for (id, loc) in expected {
        let range = loc.offset as usize..loc.offset as usize + loc.length as usize;
        let result = match bytes.get(range) {
            Some(sealed) => decoder
                .decode(repo.keys(), id, loc, pack, sealed, true)
                .map(|_| ()),
            None => Err(crate::repo::BlobError::Damaged {
                pack,
                blob: *id,
                detail: "pack is shorter than the index says".into(),
            }),
        };
        match result {
            Ok(()) => verified += 1,
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
                bad.push(*id);
            }
        }
    }
    if !bad.is_empty() {
        let msg = format!(
            "{} of {} blob(s) fail verification (first: {})",
            bad.len(),
            expected.len(),
            first_error.unwrap_or_default()
        );
        findings.push(with_blobs(
            finding(FindingKind::BlobDamaged, pack, msg),
            bad,
        ));
    }
    (bytes.len() as u64, verified, findings)
}
