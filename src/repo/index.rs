//! The master index: every blob the repository's index files know, and where it is.

use std::collections::HashMap;

use super::format::BlobKind;
use super::format::index::{IndexFile, IndexPack};
use super::ids::{BlobId, IndexId, PackId};

/// Where one blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Position of the pack in `MasterIndex::packs`.
    pub pack: u32,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackInfo {
    pub id: PackId,
    pub size: u64,
    /// Which index file listed it.
    pub index: IndexId,
    pub blobs: u32,
    pub kind: BlobKind,
}

#[derive(Clone, Default)]
pub struct MasterIndex {
    blobs: HashMap<BlobId, BlobLocation>,
    packs: Vec<PackInfo>,
    pack_pos: HashMap<PackId, u32>,
    index_files: Vec<IndexId>,
}

impl MasterIndex {
    pub fn add(&mut self, index_id: IndexId, file: &IndexFile) {
        self.index_files.push(index_id);
        for pack in &file.packs {
            self.add_pack(index_id, pack);
        }
    }

    pub fn add_pack(&mut self, index_id: IndexId, pack: &IndexPack) {
        if self.pack_pos.contains_key(&pack.id) {
            return;
        }
        let pos = self.packs.len() as u32;
        let kind = pack.kind();
        self.packs.push(PackInfo {
            id: pack.id,
            size: pack.size,
            index: index_id,
            blobs: pack.blobs.len() as u32,
            kind,
        });
        self.pack_pos.insert(pack.id, pos);
        for b in &pack.blobs {
            self.blobs.entry(b.id).or_insert(BlobLocation {
                pack: pos,
                kind: b.kind,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
            });
        }
    }

    pub fn get(&self, id: &BlobId) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn pack(&self, pos: u32) -> &PackInfo {
        &self.packs[pos as usize]
    }

    pub fn pack_position(&self, id: &PackId) -> Option<u32> {
        self.pack_pos.get(id).copied()
    }

    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    pub fn index_files(&self) -> &[IndexId] {
        &self.index_files
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn blob_ids(&self) -> impl Iterator<Item = &BlobId> {
        self.blobs.keys()
    }

    /// Blobs of one pack, ordered by offset.
    pub fn blobs_of_pack(&self, pos: u32) -> Vec<(BlobId, BlobLocation)> {
        let mut v: Vec<_> = self
            .blobs
            .iter()
            .filter(|(_, l)| l.pack == pos)
            .map(|(id, l)| (*id, *l))
            .collect();
        v.sort_by_key(|(_, l)| l.offset);
        v
    }

    /// Every blob grouped by pack, each group ordered by offset (one pass over the index).
    pub fn blobs_by_pack(&self) -> Vec<Vec<(BlobId, BlobLocation)>> {
        let mut out = vec![Vec::new(); self.packs.len()];
        for (id, loc) in &self.blobs {
            out[loc.pack as usize].push((*id, *loc));
        }
        for v in &mut out {
            v.sort_by_key(|(_, l)| l.offset);
        }
        out
    }
}
