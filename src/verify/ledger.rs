//! The verification ledger: when each pack and each file path was last read back and
//! verified, by a drill or by `check --read-data`. Each run appends one sealed record under
//! `ledger/` in the repository (so the history survives the loss of the NAS); the ledger is
//! the fold of all records. Sampled checks and drills pick the least recently verified first,
//! so that within a window every stored byte is read back.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::repo::crypto::Kind;
use crate::repo::ids::{PackId, SnapshotId};
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};

/// One run's verifications, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub version: u32,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub time: Timestamp,
    /// "drill" or "check".
    pub source: String,
    /// The drill or check this came from (a drill report id, or a description).
    pub run: String,
    pub host: String,
    /// Packs read back whole and verified at levels 1 and 2.
    pub packs: Vec<PackId>,
    /// The snapshot whose files were restored, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    /// Files restored and verified at level 3, as 8-byte keys of their paths (see
    /// `path_key`), concatenated, in hex: compact enough for a drill of a million files.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub files: String,
}

/// The key a path is recorded under: the first 8 bytes of its blake3.
pub fn path_key(path: &str) -> u64 {
    u64::from_le_bytes(
        blake3::hash(path.as_bytes()).as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

/// Encode verified paths for a record.
pub fn encode_paths<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for p in paths {
        out.push_str(&hex::encode(path_key(p).to_le_bytes()));
    }
    out
}

/// When each pack and path was last verified.
#[derive(Debug, Default)]
pub struct Ledger {
    packs: HashMap<PackId, Timestamp>,
    files: HashMap<u64, Timestamp>,
    pub records: usize,
}

impl Ledger {
    pub fn add(&mut self, r: &LedgerRecord) {
        self.records += 1;
        for p in &r.packs {
            let t = self.packs.entry(*p).or_insert(r.time);
            *t = (*t).max(r.time);
        }
        let mut key = [0u8; 8];
        for chunk in r.files.as_bytes().chunks_exact(16) {
            if hex::decode_to_slice(chunk, &mut key).is_ok() {
                let t = self.files.entry(u64::from_le_bytes(key)).or_insert(r.time);
                *t = (*t).max(r.time);
            }
        }
    }

    pub fn pack_verified(&self, id: &PackId) -> Option<Timestamp> {
        self.packs.get(id).copied()
    }

    pub fn file_verified(&self, path: &str) -> Option<Timestamp> {
        self.files.get(&path_key(path)).copied()
    }

    /// Read every record; unreadable records are returned beside the ledger.
    pub async fn load(repo: &Repository) -> Result<(Ledger, Vec<(String, RepoError)>), RepoError> {
        let mut ledger = Ledger::default();
        let mut bad = Vec::new();
        for (key, _) in repo.store().list("ledger/").await? {
            match repo.load_document::<LedgerRecord>(Kind::Ledger, &key).await {
                Ok(r) => ledger.add(&r),
                Err(e) => bad.push((key, e)),
            }
        }
        Ok((ledger, bad))
    }
}

/// Append a record to the repository's ledger.
pub async fn record(repo: &Repository, record: &LedgerRecord) -> Result<(), RepoError> {
    repo.save_document(Kind::Ledger, "ledger", record).await?;
    Ok(())
}

/// How much of what is stored was verified within a window.
#[derive(Clone, Debug, Serialize)]
pub struct CoverageReport {
    pub window_days: f64,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub since: Timestamp,
    pub packs: usize,
    pub bytes: u64,
    pub packs_verified: usize,
    pub bytes_verified: u64,
    /// Percentage of stored bytes verified within the window.
    pub percent: f64,
    /// Packs never verified at all (ids), oldest index order.
    pub never_verified: Vec<PackId>,
    /// Packs verified, but not within the window.
    pub stale: Vec<PackId>,
    pub ledger_records: usize,
}

pub fn coverage(
    index: &MasterIndex,
    ledger: &Ledger,
    now: Timestamp,
    window: jiff::SignedDuration,
) -> CoverageReport {
    let since = now - window;
    let mut r = CoverageReport {
        window_days: window.as_secs_f64() / 86_400.0,
        since,
        packs: index.packs().len(),
        bytes: 0,
        packs_verified: 0,
        bytes_verified: 0,
        percent: 0.0,
        never_verified: Vec::new(),
        stale: Vec::new(),
        ledger_records: ledger.records,
    };
    for p in index.packs() {
        r.bytes += p.size;
        match ledger.pack_verified(&p.id) {
            Some(t) if t >= since => {
                r.packs_verified += 1;
                r.bytes_verified += p.size;
            }
            Some(_) => r.stale.push(p.id),
            None => r.never_verified.push(p.id),
        }
    }
    r.percent = if r.bytes == 0 {
        100.0
    } else {
        r.bytes_verified as f64 * 100.0 / r.bytes as f64
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * 20_000 + day)
    }

    #[test]
    fn the_latest_verification_of_a_pack_or_path_wins() {
        let p = PackId::from_bytes([1; 32]);
        let mut l = Ledger::default();
        for day in [5, 9, 7] {
            l.add(&LedgerRecord {
                version: 1,
                time: at(day),
                source: "check".into(),
                run: String::new(),
                host: "nas".into(),
                packs: vec![p],
                snapshot: Some(SnapshotId::from_bytes([2; 32])),
                files: encode_paths(["/srv/a", "/srv/c"].into_iter()),
            });
        }
        assert_eq!(l.pack_verified(&p), Some(at(9)));
        assert_eq!(l.file_verified("/srv/a"), Some(at(9)));
        assert_eq!(l.file_verified("/srv/b"), None);
        assert_eq!(l.records, 3);
    }
}
