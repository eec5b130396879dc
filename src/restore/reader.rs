//! Reading blobs for a run of files in storage order, coalescing neighbouring blobs of one
//! pack into one ranged read (one request for a pack's worth of small files on S3). For a
//! drill it reads packs whole instead, and checks each pack's blake3 against its name.
//!
//! While the blobs of one read are decoded and written out, the next read of the run is
//! already under way on the runtime's blocking pool: a restore's writes do not wait on its
//! reads (on a cold disk or a link with 20–50 ms round trips, either alone leaves the other
//! idle), and each reader keeps two reads' worth of bytes at most.

use crate::repo::ids::BlobId;
use crate::repo::index::{BlobLocation, MasterIndex};
use crate::repo::packer::pack_key;
use crate::repo::{BlobDecoder, BlobError, PackVerifier, Repository};
use crate::storage::StorageError;

/// Largest single read.
pub(super) const MAX_READ: u64 = 4 << 20;
/// Largest gap between two wanted blobs that is read through rather than skipped.
const MAX_GAP: u64 = 256 << 10;

/// One read: a pack's position in the index and the byte range (`None`: all of it).
#[derive(Clone, PartialEq, Eq)]
struct Span {
    pack: u32,
    range: Option<std::ops::Range<u64>>,
}

type Fetched = (Vec<u8>, Result<(), StorageError>);

pub struct BlobReader<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    handle: tokio::runtime::Handle,
    /// The last range read: pack position and first byte; its bytes are in `buf`.
    current: Option<(u32, u64)>,
    buf: Vec<u8>,
    /// The read expected next, under way, and the buffer it fills.
    ahead: Option<(Span, tokio::task::JoinHandle<Fetched>)>,
    /// A buffer to lend the next read ahead.
    spare: Vec<u8>,
    decoder: BlobDecoder,
    verify_ids: bool,
    packs: Option<std::sync::Arc<PackVerifier>>,
}

impl<'a> BlobReader<'a> {
    /// A reader; `verify_ids` adds the keyed-hash check of every blob (level 2) to the
    /// authentication that always happens, and `packs` makes it read packs whole and verify
    /// them (level 1).
    pub fn new(
        repo: &'a Repository,
        index: &'a MasterIndex,
        handle: tokio::runtime::Handle,
        verify_ids: bool,
        packs: Option<std::sync::Arc<PackVerifier>>,
    ) -> Self {
        Self {
            repo,
            index,
            handle,
            current: None,
            buf: Vec::new(),
            ahead: None,
            spare: Vec::new(),
            decoder: BlobDecoder::with_capacity(repo.config().chunker.max_size as usize),
            verify_ids,
            packs,
        }
    }

    /// The plaintext of `wanted[i]`, authenticated. `wanted` is the sequence of blobs this
    /// reader will be asked for next, so that one read can cover several of them and the
    /// read after it can start early.
    pub fn read(
        &mut self,
        wanted: &[(BlobId, BlobLocation)],
        i: usize,
    ) -> Result<&[u8], BlobError> {
        let (id, loc) = wanted[i];
        let pack = self.index.pack(loc.pack).id;
        let (off, end) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        if !self.holds(loc.pack, off, end) {
            self.current = None;
            let span = self.span(wanted, i);
            let whole = span.range.is_none();
            let result = match self.ahead.take() {
                Some((ahead, task)) if ahead == span => self.land(task),
                other => {
                    // Not what was read ahead (or nothing was): read it now; a read ahead
                    // that is not wanted is left to finish and dropped.
                    drop(other);
                    self.repo.store().read_into(
                        &self.handle,
                        &pack_key(&pack),
                        span.range.clone(),
                        &mut self.buf,
                    )
                }
            };
            result.map_err(|source| BlobError::Storage { pack, source })?;
            if let (true, Some(verifier)) = (whole, &self.packs) {
                // A pack that fails is recorded there; its blobs may still authenticate, and
                // the drill reports the pack either way.
                verifier.verify(pack, &self.buf);
            }
            self.current = Some((loc.pack, span.range.map_or(0, |r| r.start)));
            self.read_ahead(wanted, i);
        }
        let (_, start) = self.current.expect("just read");
        let range = (off - start) as usize..(end - start) as usize;
        let sealed = self.buf.get(range).ok_or_else(|| BlobError::Damaged {
            pack,
            blob: id,
            detail: "pack is shorter than the index says".into(),
        })?;
        self.decoder
            .decode(self.repo.keys(), &id, &loc, pack, sealed, self.verify_ids)
    }

    /// Whether the bytes in `buf` cover `off..end` of pack `pack`.
    fn holds(&self, pack: u32, off: u64, end: u64) -> bool {
        matches!(self.current, Some((p, start)) if p == pack && start <= off && end <= start + self.buf.len() as u64)
    }

    /// The read that fetches `wanted[i]`: its whole pack when the pack is still to be checked
    /// at level 1 (read whole, once; after that only the ranges that hold wanted blobs), else
    /// a range from it through the blobs close by.
    fn span(&self, wanted: &[(BlobId, BlobLocation)], i: usize) -> Span {
        let loc = wanted[i].1;
        let pack = self.index.pack(loc.pack).id;
        let whole = self.packs.as_ref().is_some_and(|v| !v.is_checked(&pack));
        Span {
            pack: loc.pack,
            range: (!whole).then(|| loc.offset as u64..self.coalesce(wanted, i)),
        }
    }

    /// Start the read of the first blob after `wanted[i]` that the bytes just read do not
    /// hold, if there is one.
    fn read_ahead(&mut self, wanted: &[(BlobId, BlobLocation)], i: usize) {
        let Some(next) = (i + 1..wanted.len()).find(|&j| {
            let l = wanted[j].1;
            !self.holds(l.pack, l.offset as u64, l.offset as u64 + l.length as u64)
        }) else {
            return;
        };
        let span = self.span(wanted, next);
        let store = self.repo.store().clone();
        let key = pack_key(&self.index.pack(span.pack).id);
        let (range, handle) = (span.range.clone(), self.handle.clone());
        let mut buf = std::mem::take(&mut self.spare);
        let task = self.handle.spawn_blocking(move || {
            let result = store.read_into(&handle, &key, range, &mut buf);
            (buf, result)
        });
        self.ahead = Some((span, task));
    }

    /// Wait for the read ahead and make its bytes the current ones; the old buffer becomes
    /// the spare.
    fn land(&mut self, task: tokio::task::JoinHandle<Fetched>) -> Result<(), StorageError> {
        let (buf, result) = self.handle.block_on(task).expect("read ahead");
        self.spare = std::mem::replace(&mut self.buf, buf);
        result
    }

    /// The end of one read that starts at `wanted[i]` and covers the blobs after it that
    /// sit close by in the same pack.
    fn coalesce(&self, wanted: &[(BlobId, BlobLocation)], i: usize) -> u64 {
        let loc = wanted[i].1;
        let off = loc.offset as u64;
        let mut last = off + loc.length as u64;
        for (_, next) in &wanted[i + 1..] {
            let (n_off, n_end) = (next.offset as u64, next.offset as u64 + next.length as u64);
            if next.pack != loc.pack
                || n_off < off
                || n_end - off > MAX_READ
                || n_off > last + MAX_GAP
            {
                break;
            }
            last = last.max(n_end);
        }
        last
    }
}
