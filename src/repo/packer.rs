//! Assembling packs: sealed blobs are appended to a buffer until it reaches the repository's
//! pack size, then the sealed header and its length close it and its blake3 names it.

use bytes::Bytes;

use super::crypto::SEAL_OVERHEAD;
use super::crypto::{Keys, Kind};
use super::format::BlobKind;
use super::format::index::IndexPack;
use super::format::pack::{HEADER_ENTRY_LEN, HeaderEntry, encode_header, index_blobs};
use super::ids::{BlobId, PackId, object_name};

pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<HeaderEntry>,
    target: usize,
}

/// A closed pack, ready to store.
pub struct FinishedPack {
    pub id: PackId,
    pub bytes: Bytes,
    pub index: IndexPack,
}

impl PackWriter {
    pub fn new(target: usize) -> Self {
        Self {
            buf: Vec::new(),
            entries: Vec::new(),
            target,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.target
    }

    /// Whether a blob with a `body_len`-byte body still fits, header included, within the
    /// pack size; a writer closes the pack first when it does not, so that a pack buffer
    /// reserved at the pack size never grows. An empty pack takes any blob.
    pub fn fits(&self, body_len: usize) -> bool {
        let header = (self.entries.len() + 1) * HEADER_ENTRY_LEN + SEAL_OVERHEAD + 1 + 4;
        self.is_empty() || self.buf.len() + 1 + body_len + SEAL_OVERHEAD + header <= self.target
    }

    /// Use `buf` (emptied) for the next pack: the backup recycles pack buffers, sized once
    /// for a full pack plus its largest blob, so that the heap never grows a new one.
    pub fn use_buffer(&mut self, mut buf: Vec<u8>) {
        debug_assert!(self.is_empty());
        buf.clear();
        self.buf = buf;
    }

    /// Make room for `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    pub fn has_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Seal `codec || body` as a blob of `kind` and append it.
    #[cfg(test)]
    pub fn add(
        &mut self,
        keys: &Keys,
        kind: BlobKind,
        id: BlobId,
        raw_length: usize,
        codec: u8,
        body: &[u8],
    ) {
        self.add_with(keys, kind, id, raw_length, |buf| {
            buf.push(codec);
            buf.extend_from_slice(body);
        });
    }

    /// Append a blob whose payload (codec byte, then body) `write_payload` appends to the
    /// pack buffer; it is sealed in place.
    pub fn add_with(
        &mut self,
        keys: &Keys,
        kind: BlobKind,
        id: BlobId,
        raw_length: usize,
        write_payload: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.buf.len();
        keys.seal_appending(kind.seal_kind(), &mut self.buf, write_payload);
        self.entries.push(HeaderEntry {
            kind,
            id,
            length: (self.buf.len() - start) as u32,
            raw_length: raw_length as u32,
        });
    }

    /// Close the pack: append the sealed header and its length, and name it.
    pub fn finish(&mut self, keys: &Keys) -> FinishedPack {
        let mut buf = std::mem::take(&mut self.buf);
        let entries = std::mem::take(&mut self.entries);
        let header_start = buf.len();
        keys.seal_into(Kind::PackHeader, &encode_header(&entries), &mut buf);
        let header_len = (buf.len() - header_start) as u32;
        buf.extend_from_slice(&header_len.to_le_bytes());
        let id = PackId::from_bytes(object_name(&buf));
        let blobs = index_blobs(&entries);
        FinishedPack {
            id,
            index: IndexPack {
                id,
                size: buf.len() as u64,
                blobs,
            },
            bytes: Bytes::from(buf),
        }
    }
}

/// Where a pack is stored: `data/<first two hex digits>/<id>`.
pub fn pack_key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::{MasterSecret, encode_payload};
    use crate::repo::format::pack::read_header;

    #[test]
    fn a_finished_pack_is_named_by_its_hash_and_parses_back() {
        let keys = Keys::derive(&MasterSecret::from_bytes([1; 32]));
        let mut w = PackWriter::new(1 << 20);
        let a = b"first blob".repeat(10);
        let b = b"second".to_vec();
        let (pa, pb) = (encode_payload(&a, 3), encode_payload(&b, 3));
        w.add(
            &keys,
            BlobKind::Data,
            keys.blob_id(&a),
            a.len(),
            pa[0],
            &pa[1..],
        );
        w.add(
            &keys,
            BlobKind::Tree,
            keys.blob_id(&b),
            b.len(),
            pb[0],
            &pb[1..],
        );
        let p = w.finish(&keys);
        assert_eq!(p.id.as_bytes(), &object_name(&p.bytes));
        let blobs = read_header(&keys, &p.bytes).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[1].entry.kind, BlobKind::Tree);
        assert_eq!(blobs[1].offset, p.index.blobs[1].offset);
        assert_eq!(p.index.size, p.bytes.len() as u64);
        assert!(w.is_empty());
    }
}
