//! Reading blobs for a run of files in storage order, coalescing neighbouring blobs of one
//! pack into one ranged read (one request for a pack's worth of small files on S3). For a
//! drill it reads packs whole instead, and checks each pack's blake3 against its name.

use crate::repo::ids::BlobId;
use crate::repo::index::{BlobLocation, MasterIndex};
use crate::repo::packer::pack_key;
use crate::repo::{BlobDecoder, BlobError, PackVerifier, Repository};

/// Largest single read.
const MAX_READ: u64 = 4 << 20;
/// Largest gap between two wanted blobs that is read through rather than skipped.
const MAX_GAP: u64 = 256 << 10;

pub struct BlobReader<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    handle: tokio::runtime::Handle,
    /// The last range read: pack position and first byte; its bytes are in `buf`.
    current: Option<(u32, u64)>,
    buf: Vec<u8>,
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
            decoder: BlobDecoder::with_capacity(repo.config().chunker.max_size as usize),
            verify_ids,
            packs,
        }
    }

    /// The plaintext of `wanted[i]`, authenticated. `wanted` is the sequence of blobs this
    /// reader will be asked for next, so that one read can cover several of them.
    pub fn read(
        &mut self,
        wanted: &[(BlobId, BlobLocation)],
        i: usize,
    ) -> Result<&[u8], BlobError> {
        let (id, loc) = wanted[i];
        let pack = self.index.pack(loc.pack).id;
        let (off, end) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        let hit = matches!(self.current, Some((p, start)) if p == loc.pack && start <= off && end <= start + self.buf.len() as u64);
        if !hit {
            self.current = None;
            // A pack not yet checked at level 1 is read whole, once; after that, like any
            // other restore, only the ranges that hold wanted blobs.
            let whole = self.packs.as_ref().is_some_and(|v| !v.is_checked(&pack));
            let range = if whole {
                None
            } else {
                Some(off..self.coalesce(wanted, i))
            };
            let start = range.as_ref().map_or(0, |r| r.start);
            self.repo
                .store()
                .read_into(&self.handle, &pack_key(&pack), range, &mut self.buf)
                .map_err(|source| BlobError::Storage { pack, source })?;
            if let (true, Some(verifier)) = (whole, &self.packs) {
                // A pack that fails is recorded there; its blobs may still authenticate, and
                // the drill reports the pack either way.
                verifier.verify(pack, &self.buf);
            }
            self.current = Some((loc.pack, start));
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
