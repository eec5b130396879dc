//! Reading trees. Tree blobs live in their own packs, so the loader fetches a tree pack
//! whole on first use and serves the rest of its trees from memory: one request per tree pack
//! instead of one per directory, which matters on S3.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::format::BlobKind;
use super::format::tree::Tree;
use super::ids::BlobId;
use super::index::MasterIndex;
use super::packer::pack_key;
use super::{BlobDecoder, BlobError, PackVerifier, Repository};

/// Bytes of tree packs kept in memory before the cache is emptied.
const CACHE_LIMIT: usize = 32 << 20;

pub struct TreeLoader {
    repo: Arc<Repository>,
    index: Arc<MasterIndex>,
    packs: Mutex<(HashMap<u32, Bytes>, usize)>,
    verifier: Option<Arc<PackVerifier>>,
    decoder: Mutex<BlobDecoder>,
}

impl TreeLoader {
    pub fn new(repo: Arc<Repository>, index: Arc<MasterIndex>) -> Self {
        Self {
            repo,
            index,
            packs: Mutex::new((HashMap::new(), 0)),
            verifier: None,
            decoder: Mutex::new(BlobDecoder::new()),
        }
    }

    /// Check each tree pack read whole against its name (level 1) as well.
    pub fn with_verifier(mut self, verifier: Arc<PackVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    pub fn index(&self) -> &Arc<MasterIndex> {
        &self.index
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    pub async fn load(&self, id: &BlobId) -> Result<Tree, BlobError> {
        let loc = *self.index.get(id).ok_or(BlobError::NotIndexed(*id))?;
        let pack = self.index.pack(loc.pack);
        let plain = if loc.kind == BlobKind::Tree && pack.kind == BlobKind::Tree {
            let cached = self
                .packs
                .lock()
                .expect("tree cache")
                .0
                .get(&loc.pack)
                .cloned();
            let bytes = match cached {
                Some(b) => b,
                None => {
                    let b = self
                        .repo
                        .store()
                        .get_cached(&pack_key(&pack.id))
                        .await
                        .map_err(|source| BlobError::Storage {
                            pack: pack.id,
                            source,
                        })?;
                    if let Some(v) = &self.verifier {
                        v.verify(pack.id, &b);
                    }
                    let mut cache = self.packs.lock().expect("tree cache");
                    if cache.1 + b.len() > CACHE_LIMIT {
                        cache.0.clear();
                        cache.1 = 0;
                    }
                    cache.1 += b.len();
                    cache.0.insert(loc.pack, b.clone());
                    b
                }
            };
            let range = loc.offset as usize..loc.offset as usize + loc.length as usize;
            let sealed = bytes.get(range).ok_or_else(|| BlobError::Damaged {
                pack: pack.id,
                blob: *id,
                detail: format!("pack is truncated ({} bytes)", bytes.len()),
            })?;
            let mut decoder = self.decoder.lock().expect("tree decoder");
            decoder
                .decode(self.repo.keys(), id, &loc, pack.id, sealed, true)?
                .to_vec()
        } else {
            self.repo.read_blob(&self.index, id).await?
        };
        let mut tree: Tree = serde_json::from_slice(&plain).map_err(|e| BlobError::Damaged {
            pack: pack.id,
            blob: *id,
            detail: format!("not a valid tree: {e}"),
        })?;
        // A vector read from JSON grows by doubling: a one-blob file's content would hold room
        // for four ids. Restores and drills keep every node of a snapshot, so it is given back.
        for node in &mut tree.nodes {
            node.content.shrink_to_fit();
            node.name.shrink_to_fit();
        }
        Ok(tree)
    }

    /// `load` from a thread outside the runtime.
    pub fn load_blocking(
        &self,
        handle: &tokio::runtime::Handle,
        id: &BlobId,
    ) -> Result<Tree, BlobError> {
        handle.block_on(self.load(id))
    }
}
