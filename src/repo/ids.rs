//! Typed identifiers. Every id in the repository is 32 bytes (a blake3 output) shown as
//! lowercase hex; one newtype per kind keeps a pack id from being used where a blob id belongs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An id string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a {kind} (expected 64 hexadecimal digits)")]
pub struct IdParseError {
    pub kind: &'static str,
    pub text: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            pub fn to_hex(self) -> String {
                hex::encode(self.0)
            }
            /// The first eight hex digits, as shown to people.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| IdParseError {
                    kind: $label,
                    text: s.to_string(),
                })?;
                Ok(Self(bytes))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// Name of a pack file: blake3 of its stored bytes.
    PackId, "pack id"
);
id_type!(
    /// Id of a data or tree blob: keyed blake3 of its plaintext.
    BlobId, "blob id"
);
id_type!(
    /// Name of a snapshot object: blake3 of its stored bytes.
    SnapshotId, "snapshot id"
);
id_type!(
    /// Name of an index object: blake3 of its stored bytes.
    IndexId, "index id"
);
id_type!(
    /// Name of a key object: blake3 of its stored bytes.
    KeyId, "key id"
);
id_type!(
    /// Random identity of a repository, fixed at `init`.
    RepoId, "repository id"
);
id_type!(
    /// Plain (unkeyed) blake3 of a file's whole content: what restores and drills verify.
    FileHash, "file hash"
);

/// The blake3 name of stored bytes, for any kind of content-addressed object.
pub fn object_name(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

impl FileHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex_and_json() {
        let id = PackId::from_bytes([0xab; 32]);
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(id.short(), "abababab");
        let parsed: PackId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<PackId>(&json).unwrap(), id);
    }

    #[test]
    fn a_short_or_non_hex_id_is_refused_with_its_kind() {
        let err = "abc".parse::<SnapshotId>().unwrap_err();
        assert!(err.to_string().contains("snapshot id"), "{err}");
        assert!("zz".repeat(32).parse::<BlobId>().is_err());
    }
}
