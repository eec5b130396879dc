//! `config`: the repository's identity and parameters, sealed with the master key.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::repo::ids::RepoId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub version: u32,
    pub id: RepoId,
    #[serde(with = "super::rfc3339")]
    pub created: Timestamp,
    pub chunker: ChunkerParams,
    pub compression: CompressionParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u32,
    /// S3 Object Lock: every object but lock files is written retained for this long, in
    /// this mode. Absent: no retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::storage::Retention>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Always "fastcdc-v2020" (normalization level 1, gear table XORed with the keyed seed).
    pub algorithm: String,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionParams {
    /// Always "zstd".
    pub algorithm: String,
    pub level: i32,
}

impl RepoConfig {
    /// The most bytes one pack holds: it is closed once the next blob would take it past
    /// `pack_size`, so it exceeds that by less than one largest blob.
    pub fn largest_pack(&self) -> u64 {
        self.pack_size as u64 + self.chunker.max_size as u64
    }

    pub fn new(id: RepoId, created: Timestamp) -> Self {
        Self {
            version: super::FORMAT_VERSION,
            id,
            created,
            chunker: ChunkerParams::default(),
            compression: CompressionParams {
                algorithm: "zstd".into(),
                level: 3,
            },
            pack_size: 8 * 1024 * 1024,
            object_lock: None,
        }
    }

    /// Refuse parameters this build cannot honour.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.version != super::FORMAT_VERSION {
            return Err(ParamError::Version(self.version));
        }
        let c = &self.chunker;
        if c.algorithm != "fastcdc-v2020"
            || !(64..=1 << 20).contains(&c.min_size)
            || !(256..=4 << 20).contains(&c.avg_size)
            || !(1024..=16 << 20).contains(&c.max_size)
            || c.min_size > c.avg_size
            || c.avg_size > c.max_size
        {
            return Err(ParamError::Chunker(c.clone()));
        }
        if self.compression.algorithm != "zstd" || !(1..=19).contains(&self.compression.level) {
            return Err(ParamError::Compression(self.compression.clone()));
        }
        if !(1 << 20..=128 << 20).contains(&self.pack_size) {
            return Err(ParamError::PackSize(self.pack_size));
        }
        if let Some(lock) = &self.object_lock {
            if !(1..=crate::storage::Retention::MAX_DAYS).contains(&lock.days) {
                return Err(ParamError::Retention(lock.days));
            }
        }
        Ok(())
    }
}

/// A repository parameter this build cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error(
        "repository format version {0} is not supported by this vouch (it reads version {supported}); upgrade vouch",
        supported = super::FORMAT_VERSION
    )]
    Version(u32),
    #[error("unsupported chunker parameters {0:?}")]
    Chunker(ChunkerParams),
    #[error("unsupported compression {0:?}")]
    Compression(CompressionParams),
    #[error("unsupported pack size {0}")]
    PackSize(u32),
    #[error("unsupported Object Lock retention of {0} days")]
    Retention(u32),
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self {
            algorithm: "fastcdc-v2020".into(),
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}
