//! `keys/<id>`: a passphrase-wrapped copy of the master secret. Plain JSON (the KDF parameters
//! must be readable before any key is known); the master secret inside is sealed with the
//! argon2id output.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::repo::crypto::KdfParams;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    #[serde(with = "super::rfc3339")]
    pub created: Timestamp,
    pub host: String,
    pub username: String,
    pub kdf: KdfParams,
    /// Sealed (kind "key") 32-byte master secret, hex.
    #[serde(with = "hex::serde")]
    pub sealed_master: Vec<u8>,
}
