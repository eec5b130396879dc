//! The stages after the walk: file readers (read → chunk → hash → dedup), sealers
//! (compress → encrypt → pack) and the uploader, joined by bounded queues so that memory stays
//! flat whatever the size of the source.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::Semaphore;

use crate::repo::RepoError;
use crate::repo::chunker::Chunker;
use crate::repo::crypto::{CODEC_RAW, CODEC_ZSTD, Keys};
use crate::repo::format::BlobKind;
use crate::repo::format::tree::Hole;
use crate::repo::ids::{BlobId, FileHash};
use crate::repo::packer::{FinishedPack, PackWriter, pack_key};
use crate::storage::Store;

use super::checkpoint::Checkpointer;

/// Counters the command line reads to draw its progress bar.
#[derive(Debug, Default)]
pub struct BackupProgress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_stored: AtomicU64,
}

/// A file to read, with what the walk saw of it.
pub(super) struct FileJob {
    pub path: PathBuf,
    pub size: u64,
    pub result: Sender<Result<FileOutcome, ReadError>>,
}

/// Why a file could not be read into the backup: it is then named as a problem and kept from
/// the parent snapshot, or the backup stops (cancelled).
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("{0}")]
    Open(std::io::Error),
    #[error("read failed after {read} bytes: {source}")]
    Read { read: u64, source: std::io::Error },
    #[error("backup cancelled")]
    Cancelled,
}

/// What reading a file produced.
pub(super) struct FileOutcome {
    pub content: Vec<BlobId>,
    pub hash: FileHash,
    pub size: u64,
    /// Size or times changed while the file was read.
    pub changed: bool,
    /// Metadata as of the start of the read (recorded in the node, so that a change made
    /// while the file was read is seen by the next backup).
    pub meta: Option<std::fs::Metadata>,
    /// Extended attributes, read from the open file after that metadata.
    pub xattrs: std::io::Result<Vec<crate::repo::format::tree::Xattr>>,
    /// The holes that were not read.
    pub holes: Vec<Hole>,
}

/// A new blob on its way into a pack.
pub(super) struct SealJob {
    pub kind: BlobKind,
    pub id: BlobId,
    pub data: Vec<u8>,
}

/// State shared by every stage.
pub(super) struct Shared {
    pub keys: Arc<Keys>,
    pub chunker: Chunker,
    pub level: i32,
    pub pack_size: usize,
    pub store: Store,
    pub handle: tokio::runtime::Handle,
    /// Every blob id in the repository or already on its way in.
    pub known: Mutex<HashSet<BlobId>>,
    pub uploads: Arc<Semaphore>,
    pub upload_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Indexes the stored packs every few packs or minutes.
    pub checkpoints: Arc<Checkpointer>,
    pub failure: Arc<Mutex<Option<RepoError>>>,
    pub cancelled: Arc<AtomicBool>,
    pub progress: Arc<BackupProgress>,
    pub stats: Stats,
    /// Set from outside to stop the backup: the service shutting down (`abort`), or the
    /// schedule's window closing (`pause`).
    pub abort: Option<Arc<AtomicBool>>,
    pub pause: Option<Arc<AtomicBool>>,
    /// Recycled chunk buffers (reader → sealer) and pack buffers (sealer → upload).
    pub chunk_buffers: Arc<BufferPool>,
    pub pack_buffers: Arc<BufferPool>,
    /// Owner and group names, looked up once each.
    pub names: crate::meta::NameCache,
}

/// Buffers handed back after use, so that the pipeline allocates its large buffers once and
/// the heap does not fragment (glibc keeps freed megabyte blocks in per-thread arenas).
#[derive(Debug)]
pub(super) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    largest_kept: usize,
}

impl BufferPool {
    pub fn new(keep: usize, largest_kept: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
            largest_kept,
        }
    }

    /// An empty buffer with at least `capacity` bytes reserved.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut v = self.free.lock().expect("pool").pop().unwrap_or_default();
        v.clear();
        v.reserve_exact(capacity);
        v
    }

    /// Return a buffer; one much larger than usual (a rare maximum-size chunk) is freed
    /// rather than kept, so that the pool does not grow to the worst case.
    pub fn give(&self, v: Vec<u8>) {
        if v.capacity() > self.largest_kept {
            return;
        }
        let mut free = self.free.lock().expect("pool");
        if free.len() < self.keep {
            free.push(v);
        }
    }
}

#[derive(Default)]
pub(super) struct Stats {
    pub data_blobs: AtomicU64,
    pub tree_blobs: AtomicU64,
    pub raw_added: AtomicU64,
    pub stored_added: AtomicU64,
    pub packs: AtomicU64,
}

impl Shared {
    /// Claim a blob id: true when this caller must store it.
    pub fn claim(&self, id: BlobId) -> bool {
        self.known.lock().expect("known blobs").insert(id)
    }

    pub fn is_cancelled(&self) -> bool {
        if self.aborted() || self.paused() {
            self.cancelled.store(true, Ordering::Relaxed);
        }
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn aborted(&self) -> bool {
        self.abort
            .as_ref()
            .is_some_and(|a| a.load(Ordering::Relaxed))
    }

    pub fn paused(&self) -> bool {
        self.pause
            .as_ref()
            .is_some_and(|a| a.load(Ordering::Relaxed))
    }

    /// Store a finished pack in the background; at most `uploads` packs are in flight.
    pub fn upload(&self, pack: FinishedPack) {
        let permit = match self.handle.block_on(self.uploads.clone().acquire_owned()) {
            Ok(p) => p,
            Err(_) => return,
        };
        self.stats.packs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .stored_added
            .fetch_add(pack.bytes.len() as u64, Ordering::Relaxed);
        self.progress
            .bytes_stored
            .fetch_add(pack.bytes.len() as u64, Ordering::Relaxed);
        let store = self.store.clone();
        let checkpoints = self.checkpoints.clone();
        let failure = self.failure.clone();
        let cancelled = self.cancelled.clone();
        let pool = self.pack_buffers.clone();
        let task = self.handle.spawn(async move {
            let _permit = permit;
            let key = pack_key(&pack.id);
            let put = if pack.index.kind() == BlobKind::Tree {
                store.put_cached(&key, pack.bytes.clone()).await
            } else {
                store.put(&key, pack.bytes.clone()).await
            };
            let stored = match put {
                Ok(()) => checkpoints.stored(pack.index).await,
                Err(e) => Err(e.into()),
            };
            match stored {
                Ok(()) => {}
                Err(e) => {
                    cancelled.store(true, Ordering::SeqCst);
                    failure.lock().expect("failure").get_or_insert(e);
                }
            }
            if let Ok(buf) = pack.bytes.try_into_mut() {
                pool.give(buf.into());
            }
        });
        self.upload_tasks.lock().expect("tasks").push(task);
    }

    /// Wait for every upload started so far.
    pub fn wait_uploads(&self) {
        let tasks = std::mem::take(&mut *self.upload_tasks.lock().expect("tasks"));
        self.handle.block_on(async {
            for t in tasks {
                let _ = t.await;
            }
        });
    }
}

/// How a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    Raw,
    Fast,
    Configured,
}

/// Compresses with a reused zstd context and seals into a pack; one per sealer thread.
pub(super) struct Sealer {
    compressor: zstd::bulk::Compressor<'static>,
    /// zstd level 1, for data that it compresses as well as the configured level does.
    fast: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
    pack: PackWriter,
    kind: BlobKind,
}

impl Sealer {
    pub fn new(shared: &Shared, kind: BlobKind) -> Self {
        Self {
            compressor: zstd::bulk::Compressor::new(shared.level).expect("zstd context"),
            fast: zstd::bulk::Compressor::new(1).expect("zstd context"),
            scratch: Vec::new(),
            pack: PackWriter::new(shared.pack_size),
            kind,
        }
    }

    pub fn add(&mut self, shared: &Shared, id: BlobId, data: &[u8]) {
        // Room for the worst case, the blob stored raw; close the pack first otherwise.
        if !self.pack.fits(data.len()) {
            shared.upload(self.pack.finish(&shared.keys));
        }
        if !self.pack.has_buffer() {
            // Packs are closed before they would outgrow this, so the buffer never grows.
            let largest = shared.pack_size.max(shared.chunker.max_size() + 4096);
            self.pack.use_buffer(shared.pack_buffers.take(largest));
        }
        // A tree can be larger than a chunk; zstd needs room for its worst case.
        self.pack
            .reserve(zstd::zstd_safe::compress_bound(data.len()) + 64);
        let choice = if data.len() >= 64 {
            self.choose(data)
        } else {
            Choice::Raw
        };
        let compressor = match choice {
            Choice::Fast => Some(&mut self.fast),
            Choice::Configured => Some(&mut self.compressor),
            Choice::Raw => None,
        };
        self.pack
            .add_with(&shared.keys, self.kind, id, data.len(), |buf| {
                let codec_at = buf.len();
                buf.push(CODEC_ZSTD);
                if let Some(compressor) = compressor {
                    // zstd writes straight into the pack buffer, after the codec byte.
                    let mut cursor = std::io::Cursor::new(std::mem::take(buf));
                    cursor.set_position(codec_at as u64 + 1);
                    let written = compressor.compress_to_buffer(data, &mut cursor);
                    *buf = cursor.into_inner();
                    // zstd when it saves at least 1/32, raw otherwise.
                    if matches!(written, Ok(n) if n + data.len() / 32 < data.len()) {
                        return;
                    }
                }
                buf.truncate(codec_at);
                buf.push(CODEC_RAW);
                buf.extend_from_slice(data);
            });
        let counter = match self.kind {
            BlobKind::Data => &shared.stats.data_blobs,
            BlobKind::Tree => &shared.stats.tree_blobs,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .raw_added
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if self.pack.is_full() {
            shared.upload(self.pack.finish(&shared.keys));
        }
    }

    /// How to store a chunk, decided on a 64 KiB sample from its middle. Photos, zip files
    /// and media are already compressed: when zstd cannot shrink the sample by 1/32 the
    /// chunk is stored raw without compressing it all (zstd on incompressible data still costs
    /// ~0.6 ms per megabyte). Highly redundant data (database dumps, CSV exports, logs)
    /// compresses as well at level 1 as at level 3, at twice the speed (a mysqldump in 1 MiB
    /// chunks: ×4.55 at 420 MB/s against ×4.49 at 200 MB/s), while prose loses 10% at level 1
    /// for little speed. A sample that shrinks four times or more marks the first kind.
    fn choose(&mut self, data: &[u8]) -> Choice {
        const SAMPLE: usize = 64 << 10;
        if data.len() <= 2 * SAMPLE {
            return Choice::Configured;
        }
        let mid = data.len() / 2;
        let sample = &data[mid - SAMPLE / 2..mid + SAMPLE / 2];
        self.scratch.clear();
        self.scratch
            .reserve_exact(zstd::zstd_safe::compress_bound(SAMPLE));
        let Ok(configured) = self
            .compressor
            .compress_to_buffer(sample, &mut self.scratch)
        else {
            return Choice::Configured;
        };
        if configured + SAMPLE / 32 >= SAMPLE {
            Choice::Raw
        } else if configured * 4 <= SAMPLE {
            Choice::Fast
        } else {
            Choice::Configured
        }
    }

    pub fn flush(&mut self, shared: &Shared) {
        if !self.pack.is_empty() {
            shared.upload(self.pack.finish(&shared.keys));
        }
    }
}

/// A sealer thread: takes new data blobs until the queue closes.
pub(super) fn seal_loop(shared: &Shared, jobs: Receiver<SealJob>) {
    let mut sealer = Sealer::new(shared, BlobKind::Data);
    for job in jobs {
        if shared.is_cancelled() {
            continue;
        }
        debug_assert_eq!(job.kind, BlobKind::Data);
        sealer.add(shared, job.id, &job.data);
        shared.chunk_buffers.give(job.data);
    }
    if !shared.is_cancelled() {
        sealer.flush(shared);
    }
}

/// A reader thread: takes files until the queue closes.
pub(super) fn read_loop(shared: &Shared, jobs: Receiver<FileJob>, seal: Sender<SealJob>) {
    let mut buf = Vec::new();
    for job in jobs {
        let outcome = if shared.is_cancelled() {
            Err(ReadError::Cancelled)
        } else {
            read_file(shared, &job, &seal, &mut buf)
        };
        shared.progress.files_done.fetch_add(1, Ordering::Relaxed);
        shared
            .progress
            .bytes_done
            .fetch_add(job.size, Ordering::Relaxed);
        let _ = job.result.send(outcome);
    }
}

const READ_SIZE: usize = 256 << 10;

/// Where a file's bytes are read from: the whole file, or for a sparse one the stretches
/// between its holes, which are never read.
struct Stretches {
    /// (start, end) of each stretch with data; the last of a dense file is open-ended.
    data: Vec<(u64, u64)>,
    next: usize,
    pos: u64,
    /// The file ended before its last stretch did (it shrank while read).
    short: bool,
}

impl Stretches {
    fn new(holes: &[Hole], size: u64) -> Self {
        if holes.is_empty() {
            return Stretches {
                data: vec![(0, u64::MAX)],
                next: 0,
                pos: 0,
                short: false,
            };
        }
        let mut data = Vec::new();
        let mut at = 0;
        for h in holes {
            if h.offset() > at {
                data.push((at, h.offset()));
            }
            at = h.end();
        }
        if at < size {
            data.push((at, size));
        }
        let pos = data.first().map_or(size, |d| d.0);
        Stretches {
            data,
            next: 0,
            pos,
            short: false,
        }
    }

    /// Read into `buf` from where the last read ended; 0 at the end of the last stretch, or
    /// where the file ends early (it shrank while read).
    fn read(&mut self, file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        while let Some(&(_, end)) = self.data.get(self.next) {
            if self.pos >= end {
                self.next += 1;
                if let Some(d) = self.data.get(self.next) {
                    self.pos = d.0;
                }
                continue;
            }
            let want = buf
                .len()
                .min((end - self.pos).min(usize::MAX as u64) as usize);
            let n = file.read_at(&mut buf[..want], self.pos)?;
            if n == 0 {
                // Ended before the stretch did: nothing after this is read.
                self.short = end != u64::MAX;
                self.data.truncate(self.next);
                return Ok(0);
            }
            self.pos += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

fn read_file(
    shared: &Shared,
    job: &FileJob,
    seal: &Sender<SealJob>,
    buf: &mut Vec<u8>,
) -> Result<FileOutcome, ReadError> {
    use std::os::fd::AsFd;
    let file = File::open(&job.path).map_err(ReadError::Open)?;
    let before = file.metadata().map_err(ReadError::Open)?;
    // Fewer blocks than bytes: holes, or compression; SEEK_HOLE tells them apart.
    let mut holes = if before.blocks() * 512 < before.size() {
        crate::meta::holes(&file, before.size())
    } else {
        Vec::new()
    };
    let xattrs = crate::meta::fd_xattrs(file.as_fd());
    let mut stretches = Stretches::new(&holes, before.size());
    let max = shared.chunker.max_size();
    if buf.len() < max + READ_SIZE {
        buf.resize(max + READ_SIZE, 0);
    }
    let mut hasher = blake3::Hasher::new();
    let mut content = Vec::new();
    let (mut start, mut end) = (0usize, 0usize);
    let mut eof = false;
    let mut total = 0u64;
    // Where in the file the next chunk's bytes start, and the first hole not yet hashed.
    let (mut at, mut next_hole) = (0u64, 0usize);
    loop {
        // Refill until a full chunk can be decided or the file ends.
        while !eof && end - start < max {
            if start > 0 && buf.len() - end < READ_SIZE {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            let n = match stretches.read(&file, &mut buf[end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ReadError::Read {
                        read: total,
                        source,
                    });
                }
            };
            if n == 0 {
                eof = true;
                // A file that shrank keeps only the holes before where its bytes ended.
                if stretches.short {
                    holes.retain(|h| h.end() <= stretches.pos.max(at));
                }
            }
            end += n;
            total += n as u64;
            shared
                .progress
                .bytes_read
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        let Some(len) = shared.chunker.next_cut(&buf[start..end], eof) else {
            break;
        };
        let chunk = &buf[start..start + len];
        if holes.is_empty() {
            hasher.update(chunk);
        } else {
            at = hash_around_holes(&mut hasher, at, chunk, &holes, &mut next_hole);
        }
        let id = shared.keys.blob_id(chunk);
        content.push(id);
        if shared.claim(id) {
            // Full-size buffers, allocated once: large allocations are mapped pages, and only
            // the pages a chunk touches count, while a freed block would stay in the heap.
            let mut data = shared.chunk_buffers.take(shared.chunker.max_size());
            data.extend_from_slice(chunk);
            let job = SealJob {
                kind: BlobKind::Data,
                id,
                data,
            };
            if seal.send(job).is_err() {
                return Err(ReadError::Cancelled);
            }
        }
        start += len;
        if shared.is_cancelled() {
            return Err(ReadError::Cancelled);
        }
    }
    // Holes after the last byte of data (or a file that is one hole).
    let size = if holes.is_empty() {
        total
    } else {
        hash_around_holes(&mut hasher, at, &[], &holes, &mut next_hole)
    };
    let after = file.metadata().ok();
    let changed = match &after {
        Some(a) => {
            a.size() != before.size()
                || a.mtime() != before.mtime()
                || a.mtime_nsec() != before.mtime_nsec()
                || a.ctime() != before.ctime()
                || a.ctime_nsec() != before.ctime_nsec()
                || size != a.size()
        }
        None => true,
    };
    Ok(FileOutcome {
        content,
        hash: FileHash::from_bytes(*hasher.finalize().as_bytes()),
        size,
        changed,
        meta: Some(before),
        xattrs,
        holes,
    })
}

/// Hash a chunk of a sparse file's data with the zeros of the holes around it; returns where
/// in the file the next byte of data is.
fn hash_around_holes(
    hasher: &mut blake3::Hasher,
    at: u64,
    chunk: &[u8],
    holes: &[Hole],
    next: &mut usize,
) -> u64 {
    let hashed = crate::meta::pieces(at, chunk, holes, next, |p| {
        match p {
            crate::meta::Piece::Data(_, d) => {
                hasher.update(d);
            }
            crate::meta::Piece::Hole(h) => crate::meta::hash_zeros(hasher, h.length()),
        }
        Ok(())
    });
    hashed.expect("hashing does not fail")
}
