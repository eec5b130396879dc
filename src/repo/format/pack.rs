//! Pack files: sealed blobs back to back, then the sealed header that lists them, then the
//! header's length as a little-endian u32. A pack can be understood without the index.

use crate::repo::crypto::{CryptoError, Keys, Kind};
use crate::repo::ids::BlobId;

use super::BlobKind;

/// Bytes per header entry: kind (1), blob id (32), stored length (4), raw length (4).
pub const HEADER_ENTRY_LEN: usize = 41;

/// One blob as the pack header lists it. Offsets are implicit: blobs are in header order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderEntry {
    pub kind: BlobKind,
    pub id: BlobId,
    /// Length of the sealed blob in the pack.
    pub length: u32,
    /// Length of the plaintext after decompression.
    pub raw_length: u32,
}

/// A blob with its position, as read back from a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedBlob {
    pub entry: HeaderEntry,
    pub offset: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("pack is too short ({0} bytes) to hold a header")]
    TooShort(usize),
    #[error("header length {0} does not fit in the pack")]
    BadHeaderLength(u32),
    #[error("pack header does not decrypt: {0}")]
    Header(CryptoError),
    #[error("pack header is malformed: {0}")]
    Malformed(String),
}

/// Index entries for a pack's header entries: blobs follow each other from offset 0.
pub fn index_blobs(entries: &[HeaderEntry]) -> Vec<super::index::IndexBlob> {
    let mut offset = 0u32;
    entries
        .iter()
        .map(|e| {
            let b = super::index::IndexBlob {
                id: e.id,
                kind: e.kind,
                offset,
                length: e.length,
                raw_length: e.raw_length,
            };
            offset += e.length;
            b
        })
        .collect()
}

pub fn encode_header(entries: &[HeaderEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * HEADER_ENTRY_LEN);
    out.push(crate::repo::crypto::CODEC_RAW);
    for e in entries {
        out.push(match e.kind {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        });
        out.extend_from_slice(e.id.as_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    out
}

pub fn decode_header(payload: &[u8]) -> Result<Vec<HeaderEntry>, PackError> {
    let body = match payload.split_first() {
        Some((&crate::repo::crypto::CODEC_RAW, body)) => body,
        _ => return Err(PackError::Malformed("unknown header codec".into())),
    };
    if body.len() % HEADER_ENTRY_LEN != 0 {
        return Err(PackError::Malformed(format!(
            "{} bytes is not a whole number of entries",
            body.len()
        )));
    }
    body.chunks_exact(HEADER_ENTRY_LEN)
        .map(|c| {
            let kind = match c[0] {
                0 => BlobKind::Data,
                1 => BlobKind::Tree,
                k => return Err(PackError::Malformed(format!("unknown blob kind {k}"))),
            };
            Ok(HeaderEntry {
                kind,
                id: BlobId::from_bytes(c[1..33].try_into().expect("32 bytes")),
                length: u32::from_le_bytes(c[33..37].try_into().expect("4 bytes")),
                raw_length: u32::from_le_bytes(c[37..41].try_into().expect("4 bytes")),
            })
        })
        .collect()
}

/// Where the sealed header sits in a pack of `pack_len` bytes whose last 4 bytes are `tail`.
pub fn header_range(pack_len: usize, tail: [u8; 4]) -> Result<std::ops::Range<usize>, PackError> {
    if pack_len < 4 {
        return Err(PackError::TooShort(pack_len));
    }
    let len = u32::from_le_bytes(tail);
    let start = (pack_len - 4)
        .checked_sub(len as usize)
        .ok_or(PackError::BadHeaderLength(len))?;
    Ok(start..pack_len - 4)
}

/// Read the header of a whole pack and place every blob.
pub fn read_header(keys: &Keys, pack: &[u8]) -> Result<Vec<PackedBlob>, PackError> {
    let tail: [u8; 4] = pack
        .get(pack.len().saturating_sub(4)..)
        .and_then(|t| t.try_into().ok())
        .ok_or(PackError::TooShort(pack.len()))?;
    let range = header_range(pack.len(), tail)?;
    let payload = keys
        .open(Kind::PackHeader, &pack[range.clone()])
        .map_err(PackError::Header)?;
    let entries = decode_header(&payload)?;
    let mut offset = 0u64;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        out.push(PackedBlob {
            entry,
            offset: offset as u32,
        });
        offset += entry.length as u64;
    }
    if offset != range.start as u64 {
        return Err(PackError::Malformed(format!(
            "blobs cover {offset} bytes but the header starts at {}",
            range.start
        )));
    }
    Ok(out)
}
