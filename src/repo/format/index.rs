//! `index/<id>`: which pack holds which blob, at which offset.

use serde::{Deserialize, Serialize};

use crate::repo::ids::{BlobId, IndexId, PackId};

use super::BlobKind;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub version: u32,
    /// Index files whose entries this one carries over (written by prune, so that a reader
    /// that sees both can ignore the older ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<IndexId>,
    pub packs: Vec<IndexPack>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: PackId,
    /// Total bytes of the pack file.
    pub size: u64,
    pub blobs: Vec<IndexBlob>,
}

impl IndexPack {
    /// A tree pack holds trees only (metadata: cached, read by every walk); any other is data.
    pub fn kind(&self) -> BlobKind {
        if !self.blobs.is_empty() && self.blobs.iter().all(|b| b.kind == BlobKind::Tree) {
            BlobKind::Tree
        } else {
            BlobKind::Data
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBlob {
    pub id: BlobId,
    #[serde(rename = "type")]
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}
