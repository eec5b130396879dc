//! Keys, sealing and the payload codec.
//!
//! One random 32-byte master secret per repository; everything else is derived from it with
//! blake3's key derivation, so a key file only has to protect 32 bytes. Sealing is AES-256-GCM
//! (ring) under a per-object subkey: each sealed object carries a random 24-byte nonce whose
//! first 12 bytes select the subkey (keyed blake3 of the encryption key) and whose last 12 bytes
//! are the GCM nonce. Random 96-bit GCM nonces under one key would wear out after ~2^32
//! objects; the 192-bit construction removes that limit at the cost of one key schedule per
//! object (well under a microsecond; blobs are about a megabyte).

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::ids::BlobId;

/// Bytes of nonce stored in front of every sealed object.
pub const SEAL_NONCE_LEN: usize = 24;
/// Bytes of authentication tag stored after every sealed object.
pub const SEAL_TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its payload.
pub const SEAL_OVERHEAD: usize = SEAL_NONCE_LEN + SEAL_TAG_LEN;

/// Codec byte at the start of every sealed payload.
pub const CODEC_RAW: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;

/// What a sealed object is; bound into the AEAD as associated data so that an object of one
/// kind can never be accepted as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Key,
    Config,
    DataBlob,
    TreeBlob,
    PackHeader,
    Index,
    Snapshot,
    Lock,
    Journal,
    Ledger,
    DrillReport,
    Hold,
    Checkpoint,
}

impl Kind {
    pub fn aad(self) -> &'static [u8] {
        match self {
            Kind::Key => b"vouch/v1 key",
            Kind::Config => b"vouch/v1 config",
            Kind::DataBlob => b"vouch/v1 data blob",
            Kind::TreeBlob => b"vouch/v1 tree blob",
            Kind::PackHeader => b"vouch/v1 pack header",
            Kind::Index => b"vouch/v1 index",
            Kind::Snapshot => b"vouch/v1 snapshot",
            Kind::Lock => b"vouch/v1 lock",
            Kind::Journal => b"vouch/v1 journal",
            Kind::Ledger => b"vouch/v1 ledger",
            Kind::DrillReport => b"vouch/v1 drill report",
            Kind::Hold => b"vouch/v1 hold",
            Kind::Checkpoint => b"vouch/v1 checkpoint",
        }
    }
}

/// A passphrase. It has no `Display`, and its `Debug` hides the text, so it cannot end up in a
/// message or a log line by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is returned.
        let bytes = std::mem::take(&mut self.0).into_bytes();
        let mut bytes = bytes;
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

/// A sealed object failed authentication: wrong key, or the bytes were changed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("too short to be a sealed object ({len} bytes)")]
    TooShort { len: usize },
    #[error("authentication failed (wrong key, or the bytes were altered)")]
    Authentication,
    #[error("unknown payload codec {0}")]
    UnknownCodec(u8),
    #[error("payload does not decompress: {0}")]
    Decompress(String),
}

/// The 32-byte repository master secret.
pub struct MasterSecret([u8; 32]);

impl MasterSecret {
    pub fn random() -> Self {
        Self(random_array())
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for MasterSecret {
    fn drop(&mut self) {
        self.0 = [0; 32];
        std::hint::black_box(&self.0);
    }
}

/// Working keys derived from the master secret.
pub struct Keys {
    encryption: [u8; 32],
    blob_id: [u8; 32],
    chunker_seed: u64,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    pub fn derive(master: &MasterSecret) -> Self {
        let m = master.as_bytes();
        let seed = blake3::derive_key("vouch repository v1 chunker seed", m);
        Self {
            encryption: blake3::derive_key("vouch repository v1 encryption", m),
            blob_id: blake3::derive_key("vouch repository v1 blob id", m),
            chunker_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
        }
    }

    /// Keyed blake3 of a blob's plaintext: its id.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId::from_bytes(*blake3::keyed_hash(&self.blob_id, plaintext).as_bytes())
    }

    /// A hasher for a blob id, for plaintext that arrives in pieces.
    pub fn blob_id_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.blob_id)
    }

    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Seal `payload` (codec byte included) and append nonce, ciphertext and tag to `out`.
    pub fn seal_into(&self, kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
        seal_into(&self.encryption, kind, &random_array(), payload, out);
    }

    /// Seal a payload that `write_payload` appends to `out`, in place: the pack writer seals
    /// blobs straight into the pack buffer, and zstd compresses straight into it too.
    pub fn seal_appending(
        &self,
        kind: Kind,
        out: &mut Vec<u8>,
        write_payload: impl FnOnce(&mut Vec<u8>),
    ) {
        let nonce: [u8; 24] = random_array();
        out.extend_from_slice(&nonce);
        let start = out.len();
        write_payload(out);
        out.reserve(SEAL_TAG_LEN);
        seal_in_place(&self.encryption, kind, &nonce, out, start);
    }

    /// Open a sealed object into `out` (cleared first), which then holds the payload, codec
    /// byte included. Reusing `out` across blobs keeps restores and checks from allocating.
    pub fn open_into(
        &self,
        kind: Kind,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::TooShort { len: sealed.len() });
        }
        let nonce: &[u8; 24] = sealed[..SEAL_NONCE_LEN].try_into().expect("24 bytes");
        out.clear();
        out.extend_from_slice(&sealed[SEAL_NONCE_LEN..]);
        let gcm_nonce = Nonce::try_assume_unique_for_key(&nonce[12..]).expect("12 bytes");
        let plain_len = subkey(&self.encryption, nonce)
            .open_in_place(gcm_nonce, Aad::from(kind.aad()), out)
            .map_err(|_| CryptoError::Authentication)?
            .len();
        out.truncate(plain_len);
        Ok(())
    }

    /// Seal with a caller-chosen nonce: only for test vectors.
    pub fn seal_with_nonce(&self, kind: Kind, nonce: &[u8; 24], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal_into(&self.encryption, kind, nonce, payload, &mut out);
        out
    }

    /// Open a sealed object and return its payload (codec byte included).
    pub fn open(&self, kind: Kind, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open(&self.encryption, kind, sealed)
    }

    /// Seal a payload already encoded (codec byte first), e.g. by `encode_json`.
    pub fn seal_payload(&self, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        self.seal_into(kind, payload, &mut out);
        out
    }

    /// Seal a document: zstd-compressed payload, as used for every metadata object.
    pub fn seal_document(&self, kind: Kind, plaintext: &[u8]) -> Vec<u8> {
        let payload = encode_payload(plaintext, 3);
        let mut out = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        self.seal_into(kind, &payload, &mut out);
        out
    }

    /// Open a document sealed by `seal_document` (or any sealed payload) and decode it.
    pub fn open_document(&self, kind: Kind, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        decode_payload(&self.open(kind, sealed)?, None)
    }
}

fn subkey(key: &[u8; 32], nonce: &[u8; 24]) -> LessSafeKey {
    let sub = blake3::keyed_hash(key, &nonce[..12]);
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, sub.as_bytes()).expect("32-byte key"))
}

pub(crate) fn seal_into(
    key: &[u8; 32],
    kind: Kind,
    nonce: &[u8; 24],
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.reserve(payload.len() + SEAL_OVERHEAD);
    out.extend_from_slice(nonce);
    let start = out.len();
    out.extend_from_slice(payload);
    seal_in_place(key, kind, nonce, out, start);
}

/// Encrypt `out[start..]` in place and append the tag.
fn seal_in_place(key: &[u8; 32], kind: Kind, nonce: &[u8; 24], out: &mut Vec<u8>, start: usize) {
    let gcm_nonce = Nonce::try_assume_unique_for_key(&nonce[12..12 + NONCE_LEN]).expect("12 bytes");
    let tag = subkey(key, nonce)
        .seal_in_place_separate_tag(gcm_nonce, Aad::from(kind.aad()), &mut out[start..])
        .expect("payload within AES-GCM limits");
    out.extend_from_slice(tag.as_ref());
}

pub(crate) fn open(key: &[u8; 32], kind: Kind, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::TooShort { len: sealed.len() });
    }
    let nonce: &[u8; 24] = sealed[..SEAL_NONCE_LEN].try_into().expect("24 bytes");
    let mut buf = sealed[SEAL_NONCE_LEN..].to_vec();
    let gcm_nonce = Nonce::try_assume_unique_for_key(&nonce[12..]).expect("12 bytes");
    let plain_len = subkey(key, nonce)
        .open_in_place(gcm_nonce, Aad::from(kind.aad()), &mut buf)
        .map_err(|_| CryptoError::Authentication)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

/// Codec byte plus body: zstd at `level` when that saves at least 1/32 of the size, raw
/// otherwise (photos and zip files gain nothing and decode faster raw).
pub fn encode_payload(plaintext: &[u8], level: i32) -> Vec<u8> {
    if plaintext.len() >= 64 {
        if let Ok(compressed) = zstd::bulk::compress(plaintext, level) {
            if compressed.len() + plaintext.len() / 32 < plaintext.len() {
                let mut out = Vec::with_capacity(compressed.len() + 1);
                out.push(CODEC_ZSTD);
                out.extend_from_slice(&compressed);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(plaintext.len() + 1);
    out.push(CODEC_RAW);
    out.extend_from_slice(plaintext);
    out
}

/// The payload of a JSON document, compressed as it is serialized: an index of 200,000 blobs is
/// 30 MB of JSON, and neither the JSON nor a buffer of its compressed bound is ever held whole,
/// only the compressed stream. Payloads that compression does not shrink are stored raw, as
/// `encode_payload` does.
pub fn encode_json<T: serde::Serialize>(doc: &T, level: i32) -> Vec<u8> {
    struct Counting<W> {
        inner: W,
        written: usize,
    }
    impl<W: std::io::Write> std::io::Write for Counting<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.written += n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let encoder = zstd::stream::Encoder::new(vec![CODEC_ZSTD], level).expect("zstd encoder");
    let mut w = std::io::BufWriter::with_capacity(
        64 << 10,
        Counting {
            inner: encoder,
            written: 0,
        },
    );
    serde_json::to_writer(&mut w, doc).expect("documents serialize");
    let Counting { inner, written } = w.into_inner().map_err(|e| e.into_error()).expect("zstd");
    let compressed = inner.finish().expect("zstd into memory");
    if written >= 64 && compressed.len() - 1 + written / 32 < written {
        return compressed;
    }
    drop(compressed);
    encode_payload(
        &serde_json::to_vec(doc).expect("documents serialize"),
        level,
    )
}

/// Decode a payload. `raw_len`, when known (from the index), bounds the output.
pub fn decode_payload(payload: &[u8], raw_len: Option<usize>) -> Result<Vec<u8>, CryptoError> {
    let (&codec, body) = payload
        .split_first()
        .ok_or(CryptoError::TooShort { len: 0 })?;
    match codec {
        CODEC_RAW => Ok(body.to_vec()),
        CODEC_ZSTD => {
            match raw_len {
                Some(n) => zstd::bulk::decompress(body, n)
                    .map_err(|e| CryptoError::Decompress(e.to_string())),
                None => zstd::stream::decode_all(body)
                    .map_err(|e| CryptoError::Decompress(e.to_string())),
            }
        }
        other => Err(CryptoError::UnknownCodec(other)),
    }
}

pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source");
    out
}

/// Parameters of the passphrase KDF, stored in every key file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    #[serde(with = "hex::serde")]
    pub salt: Vec<u8>,
}

/// Why a key file's passphrase cannot be turned into a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdfError {
    #[error("unknown KDF {0:?}")]
    Unknown(String),
    #[error(
        "argon2id parameters beyond what vouch writes or accepts ({memory_kib} KiB, {iterations} passes, {parallelism} lanes)"
    )]
    Beyond {
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    },
    #[error("argon2id: {0}")]
    Argon2(argon2::Error),
}

impl KdfParams {
    /// Defaults: argon2id, 32 MiB, 2 passes (above OWASP's minimum; ~0.1 s on a NAS CPU).
    pub fn new_random() -> Self {
        Self {
            algorithm: "argon2id".into(),
            memory_kib: 32 * 1024,
            iterations: 2,
            parallelism: 1,
            salt: random_array::<16>().to_vec(),
        }
    }

    /// Key files are plaintext: anyone who can write to the repository can plant one. Its
    /// parameters are bounded so that a planted file cannot make every open allocate without
    /// bound or run for long: 256 MiB (eight times what vouch writes, within a small NAS's
    /// memory), and at most 1 GiB of memory passes in all.
    pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
    pub const MAX_MEMORY_PASSES_KIB: u64 = 1 << 20;
    pub const MAX_PARALLELISM: u32 = 16;

    /// What trying this key costs, for trying the cheapest first.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    /// The key-encryption key for a passphrase.
    pub fn derive(&self, passphrase: &Secret) -> Result<[u8; 32], KdfError> {
        if self.algorithm != "argon2id" {
            return Err(KdfError::Unknown(self.algorithm.clone()));
        }
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || u64::from(self.memory_kib) * u64::from(self.iterations) > Self::MAX_MEMORY_PASSES_KIB
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(KdfError::Beyond {
                memory_kib: self.memory_kib,
                iterations: self.iterations,
                parallelism: self.parallelism,
            });
        }
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(KdfError::Argon2)?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(passphrase.expose().as_bytes(), &self.salt, &mut out)
            .map_err(KdfError::Argon2)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_document_compressed_as_it_is_serialized_reads_back_and_a_tiny_one_is_stored_raw() {
        let big: Vec<String> = (0..20_000).map(|i| format!("blob-{i:08}")).collect();
        let payload = super::encode_json(&big, 3);
        assert_eq!(payload[0], super::CODEC_ZSTD);
        let json = super::decode_payload(&payload, None).expect("decodes");
        assert_eq!(json, serde_json::to_vec(&big).unwrap());
        assert!(
            payload.len() < json.len() / 4,
            "{} of {}",
            payload.len(),
            json.len()
        );

        let tiny = super::encode_json(&["a"], 3);
        assert_eq!(tiny, [&[super::CODEC_RAW][..], br#"["a"]"#].concat());
    }

    #[test]
    fn key_file_parameters_beyond_what_vouch_writes_are_refused_before_the_kdf_runs() {
        let pass = Secret::new("p");
        let mut kdf = KdfParams::new_random();
        kdf.memory_kib = 8;
        kdf.iterations = 1;
        assert!(kdf.derive(&pass).is_ok(), "small is fine");
        for (memory_kib, iterations, parallelism) in [
            (u32::MAX, 2, 1),
            (300 * 1024, 1, 1),
            (64 * 1024, 1 << 30, 1),
            (8, 1, 1 << 20),
        ] {
            let k = KdfParams {
                memory_kib,
                iterations,
                parallelism,
                ..kdf.clone()
            };
            let e = k.derive(&pass).unwrap_err();
            assert!(matches!(e, KdfError::Beyond { .. }), "{e}");
        }
    }

    use super::*;

    fn keys() -> Keys {
        Keys::derive(&MasterSecret::from_bytes([7; 32]))
    }

    #[test]
    fn sealed_objects_open_only_with_their_kind_and_key() {
        let k = keys();
        let mut sealed = Vec::new();
        k.seal_into(Kind::Index, b"\0hello", &mut sealed);
        assert_eq!(sealed.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(k.open(Kind::Index, &sealed).unwrap(), b"\0hello");
        assert_eq!(
            k.open(Kind::Snapshot, &sealed),
            Err(CryptoError::Authentication)
        );
        let other = Keys::derive(&MasterSecret::from_bytes([8; 32]));
        assert_eq!(
            other.open(Kind::Index, &sealed),
            Err(CryptoError::Authentication)
        );
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert_eq!(
            k.open(Kind::Index, &flipped),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn payloads_compress_text_and_keep_random_bytes_raw() {
        let text = "INSERT INTO pupils VALUES (1,'Zoë');\n".repeat(200);
        let p = encode_payload(text.as_bytes(), 3);
        assert_eq!(p[0], CODEC_ZSTD);
        assert!(p.len() < text.len() / 4);
        assert_eq!(
            decode_payload(&p, Some(text.len())).unwrap(),
            text.as_bytes()
        );
        assert_eq!(decode_payload(&p, None).unwrap(), text.as_bytes());
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let raw = encode_payload(&noise, 3);
        if raw[0] == CODEC_RAW {
            assert_eq!(&raw[1..], &noise[..]);
        }
        assert_eq!(decode_payload(&raw, None).unwrap(), noise);
    }
}
