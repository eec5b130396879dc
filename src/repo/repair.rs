//! `vouch repair index`: rebuild index entries from the pack headers for packs that no index
//! lists (a lost or damaged index file). Packs carry their own header for exactly this.

use super::format::index::{IndexBlob, IndexFile, IndexPack};
use super::format::pack::{PackError, decode_header, header_range, index_blobs};
use super::ids::PackId;
use super::packer::pack_key;
use super::{LockMode, RepoError, Repository};

#[derive(Debug, Default)]
pub struct RepairReport {
    pub packs_indexed: usize,
    pub blobs_indexed: usize,
    /// Packs whose header could not be read (key, error): their blobs stay lost.
    pub packs_unreadable: Vec<(String, String)>,
    /// Unreadable index files removed because everything they listed is indexed again.
    pub indexes_removed: Vec<String>,
}

pub async fn repair_index(repo: &Repository) -> Result<RepairReport, RepoError> {
    let lock = repo.lock(LockMode::Exclusive, "repair index").await?;
    let result = repair_locked(repo).await;
    lock.release().await?;
    result
}

async fn repair_locked(repo: &Repository) -> Result<RepairReport, RepoError> {
    let mut report = RepairReport::default();
    let (index, bad) = repo.load_index().await?;
    let mut packs = Vec::new();
    for (key, size) in repo.store().list("data/").await? {
        let Some(id) = key
            .rsplit('/')
            .next()
            .and_then(|n| n.parse::<PackId>().ok())
        else {
            continue;
        };
        if index.pack_position(&id).is_some() || key != pack_key(&id) {
            continue;
        }
        match read_pack_header(repo, &key, size).await {
            Ok(blobs) => {
                report.blobs_indexed += blobs.len();
                packs.push(IndexPack { id, size, blobs });
            }
            Err(e) => report.packs_unreadable.push((key, e.to_string())),
        }
    }
    report.packs_indexed = packs.len();
    if !packs.is_empty() {
        repo.save_index(&IndexFile {
            version: super::format::FORMAT_VERSION,
            supersedes: Vec::new(),
            packs,
        })
        .await?;
    }
    if report.packs_unreadable.is_empty() {
        for (key, _) in bad {
            repo.store().delete(&key).await?;
            report.indexes_removed.push(key);
        }
    }
    Ok(report)
}

/// Why a pack's header could not be read for the index.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Pack(#[from] PackError),
}

async fn read_pack_header(
    repo: &Repository,
    key: &str,
    size: u64,
) -> Result<Vec<IndexBlob>, HeaderError> {
    if size < 4 {
        return Err(PackError::TooShort(size as usize).into());
    }
    let tail = repo.store().get_range(key, size - 4..size).await?;
    let tail: [u8; 4] = tail
        .as_ref()
        .try_into()
        .map_err(|_| PackError::TooShort(tail.len()))?;
    let range = header_range(size as usize, tail)?;
    let sealed = repo
        .store()
        .get_range(key, range.start as u64..range.end as u64)
        .await?;
    let payload = repo
        .keys()
        .open(super::crypto::Kind::PackHeader, &sealed)
        .map_err(PackError::Header)?;
    let entries = decode_header(&payload)?;
    Ok(index_blobs(&entries))
}
