//! The on-disk types of the repository, together, as docs/FORMAT.md describes them.
//! Metadata objects are JSON documents (zstd-compressed, then sealed); the pack header is a
//! fixed-width binary table so that a pack can be parsed without the index.

pub mod checkpoint;
pub mod config;
pub mod index;
pub mod key;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;

/// Format version written by this build. A reader refuses versions it does not know.
pub const FORMAT_VERSION: u32 = 1;

/// Whether two backups are of the same source: one host, the same paths in any order.
pub(crate) fn same_source(host_a: &str, paths_a: &[String], host: &str, paths: &[String]) -> bool {
    let mut a = paths_a.to_vec();
    let mut b = paths.to_vec();
    a.sort();
    b.sort();
    host_a == host && a == b
}

/// Kinds of blob stored in packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    pub fn seal_kind(self) -> super::crypto::Kind {
        match self {
            BlobKind::Data => super::crypto::Kind::DataBlob,
            BlobKind::Tree => super::crypto::Kind::TreeBlob,
        }
    }
}

/// Timestamps are RFC 3339 strings in UTC with nanoseconds, as many digits as needed
/// (`2026-12-01T23:55:36.01776191Z`); any RFC 3339 offset is read.
pub mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }

    /// The same, for a time that may be absent (`null`).
    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(t),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            text.map(|t| t.parse().map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Days as `2025-09-01`.
pub mod iso_date {
    use jiff::civil::Date;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&d.strftime("%Y-%m-%d"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        jiff::fmt::strtime::parse("%Y-%m-%d", text.as_ref())
            .and_then(|t| t.to_date())
            .map_err(serde::de::Error::custom)
    }
}

/// Bytes as a JSON string when they are UTF-8 without control characters, else as hex in a
/// sibling field: file names are bytes, and a non-UTF-8 name must survive unchanged.
pub(crate) fn split_bytes(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => (Some(s.to_string()), None),
        _ => (None, Some(hex::encode(bytes))),
    }
}

pub(crate) fn join_bytes(
    text: Option<String>,
    hex_text: Option<String>,
    field: &'static str,
) -> Result<Option<Vec<u8>>, BytesError> {
    match (text, hex_text) {
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(h)) => hex::decode(h)
            .map(Some)
            .map_err(|e| BytesError::NotHex { field, why: e }),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(BytesError::Both { field }),
    }
}

/// Why a field written by `split_bytes` cannot be read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BytesError {
    #[error("{field}_hex is not hex: {why}")]
    NotHex {
        field: &'static str,
        why: hex::FromHexError,
    },
    #[error("both {field} and {field}_hex are present")]
    Both { field: &'static str },
}
