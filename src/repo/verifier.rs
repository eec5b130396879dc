//! Level 1 of verification for packs read whole: each pack's blake3 against its name, once
//! per pack whichever thread reads it first.

use std::collections::HashMap;
use std::sync::Mutex;

use super::ids::{PackId, object_name};

/// Level 1 for every pack a restore reads: each pack is hashed once, whichever thread
/// reads it first.
#[derive(Debug, Default)]
pub struct PackVerifier {
    results: Mutex<HashMap<PackId, Option<String>>>,
}

impl PackVerifier {
    /// Check a whole pack's bytes; returns why it fails, if it does.
    pub fn verify(&self, pack: PackId, bytes: &[u8]) -> Option<String> {
        if let Some(r) = self.results.lock().expect("pack results").get(&pack) {
            return r.clone();
        }
        let actual = object_name(bytes);
        let result = (actual != *pack.as_bytes()).then(|| {
            format!(
                "pack bytes hash to {}, not to its name: the stored file was altered",
                hex::encode(actual)
            )
        });
        self.results
            .lock()
            .expect("pack results")
            .insert(pack, result.clone());
        result
    }

    /// Whether the pack has been checked already (passed or failed).
    pub fn is_checked(&self, pack: &PackId) -> bool {
        self.results
            .lock()
            .expect("pack results")
            .contains_key(pack)
    }

    /// Record a pack verified elsewhere (a tree pack read by the tree loader).
    pub fn record(&self, pack: PackId, result: Option<String>) {
        self.results
            .lock()
            .expect("pack results")
            .insert(pack, result);
    }

    /// Packs that passed, and those that failed with why.
    pub fn results(&self) -> (Vec<PackId>, Vec<(PackId, String)>) {
        let results = self.results.lock().expect("pack results");
        let mut ok: Vec<PackId> = results
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(p, _)| *p)
            .collect();
        let mut bad: Vec<(PackId, String)> = results
            .iter()
            .filter_map(|(p, r)| r.clone().map(|r| (*p, r)))
            .collect();
        ok.sort();
        bad.sort();
        (ok, bad)
    }
}
