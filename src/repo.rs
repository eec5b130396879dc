//! The repository: keys, config, packs, index, trees, snapshots and locks on top of a
//! `Store`. See docs/FORMAT.md for the normative description of every object.

pub mod chunker;
pub mod crypto;
pub mod format;
pub mod ids;
pub mod index;
mod keyring;
mod lock;
pub mod packer;
mod repair;
mod trees;
mod verifier;

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::Clock;
use crate::storage::{StorageError, Store};

use crypto::{Keys, Kind};
use format::config::RepoConfig;
use format::index::IndexFile;
use format::snapshot::Snapshot;
use ids::{BlobId, IndexId, KeyId, PackId, SnapshotId, object_name};
use index::{BlobLocation, MasterIndex};

pub use lock::{LockGuard, LockMode, remove_locks};
pub use repair::repair_index;
pub use trees::TreeLoader;
pub use verifier::PackVerifier;

/// Packs that no index lists yet, and unfinished writes on a local disk, are left alone until
/// they are this old: they may belong to a backup still running (its index and snapshot come
/// at the end). Locks already keep prune from running beside a backup; this is the second
/// line, for a backup whose lock was judged stale while it was still writing (kopia keeps a
/// similar margin).
pub const UNFINISHED_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// Why the repository could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(
        "there is no vouch repository at {url}: run `vouch init --repo {url}` to create one, or check the URL"
    )]
    NotFound { url: String },
    #[error("{url} already holds a vouch repository; nothing was changed")]
    AlreadyExists { url: String },
    #[error(
        "the passphrase does not open the repository at {url} (tried {keys} key(s){}); check --password-file / VOUCH_PASSWORD_FILE",
        if *damaged > 0 { format!("; {damaged} damaged key file(s) could not be tried: `vouch check` names them") } else { String::new() }
    )]
    WrongPassword {
        url: String,
        keys: usize,
        damaged: usize,
    },
    #[error(
        "{object} in {url} is damaged: {detail} (run `vouch check --repo {url}` for a full report)"
    )]
    Corrupt {
        url: String,
        object: String,
        detail: String,
    },
    #[error(
        "the repository at {url} is locked by {by}; wait for it to finish, or remove the lock with `vouch unlock` if that process is gone"
    )]
    Locked { url: String, by: String },
    #[error(
        "the lock on {url} could not be refreshed for {minutes} minutes or more (was the storage unreachable, or the machine suspended?), so another process may have changed the repository meanwhile; nothing more was stored: run the job again"
    )]
    LockLost { url: String, minutes: i64 },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl RepoError {
    pub fn is_storage_not_found(&self) -> bool {
        matches!(self, RepoError::Storage(e) if e.is_not_found())
    }
}

/// Why a stored object (a key file, a journal copy) cannot be used, whatever its kind: its
/// name, its bytes against its name, its seal, its contents. Reports name the object beside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("its name is not {0}")]
    Name(&'static str),
    #[error("its bytes do not match its name (blake3)")]
    NameMismatch,
    #[error(transparent)]
    Sealed(#[from] crypto::CryptoError),
    #[error("not {what}: {why}")]
    Contents { what: &'static str, why: String },
    #[error("it holds row {held}, not the row its name says")]
    WrongRow { held: i64 },
}

/// Why one blob could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} is not in the index")]
    NotIndexed(BlobId),
    #[error("blob {blob} in pack {pack} is damaged: {detail}")]
    Damaged {
        pack: PackId,
        blob: BlobId,
        detail: String,
    },
    #[error("pack {pack} could not be read: {source}")]
    Storage {
        pack: PackId,
        #[source]
        source: StorageError,
    },
}

impl BlobError {
    pub fn pack(&self) -> Option<PackId> {
        match self {
            BlobError::NotIndexed(_) => None,
            BlobError::Damaged { pack, .. } | BlobError::Storage { pack, .. } => Some(*pack),
        }
    }
}

/// The largest plaintext of one blob: data blobs are chunks of at most a few MiB, and a tree
/// blob of a directory with millions of entries stays well under this.
pub const MAX_BLOB_LEN: usize = 1 << 30;

/// What the readers of one restore, check or drill may hold at once on a remote store: each
/// reader's buffer of stored bytes and its two decode buffers. Over S3 a reader waits on the
/// network, not on a core, so the count of readers comes from memory, not from the cores: 64 MiB
/// keeps every step under 100 MiB and still leaves four or more reads of 1–8 MiB in flight,
/// several times what a school link with 20–50 ms round trips holds.
pub const REMOTE_READ_BUDGET: u64 = 64 << 20;

/// Readers for a remote store when each holds up to `read` stored bytes at a time, at least
/// two and at most `most`.
pub fn remote_readers(config: &RepoConfig, read: u64, most: usize) -> usize {
    let decode = 2 * (config.chunker.max_size as u64 + 64);
    ((REMOTE_READ_BUDGET / (read + decode)) as usize).clamp(2, most.max(2))
}

/// Decodes blobs with buffers and a zstd context that are reused from blob to blob: restore
/// and check decode every stored byte, and allocating per blob fragments the heap.
pub struct BlobDecoder {
    dctx: zstd::bulk::Decompressor<'static>,
    payload: Vec<u8>,
    plain: Vec<u8>,
}

impl Default for BlobDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BlobDecoder {
    pub fn new() -> Self {
        Self {
            dctx: zstd::bulk::Decompressor::new().expect("zstd context"),
            payload: Vec::new(),
            plain: Vec::new(),
        }
    }

    /// A decoder whose buffers are allocated once for blobs up to `largest` bytes: large
    /// allocations are mapped pages that count only when touched, while buffers that grow
    /// step by step leave freed blocks behind in the heap.
    pub fn with_capacity(largest: usize) -> Self {
        let mut d = Self::new();
        d.payload.reserve_exact(largest + 64);
        d.plain.reserve_exact(largest);
        d
    }

    /// Authenticate and decompress a sealed blob; with `verify_id`, also check that the keyed
    /// hash of the plaintext is its id (level 2). A restore that checks each whole file's
    /// hash (level 3) can leave that out: the seal already authenticates every blob.
    pub fn decode(
        &mut self,
        keys: &Keys,
        id: &BlobId,
        loc: &BlobLocation,
        pack: PackId,
        sealed: &[u8],
        verify_id: bool,
    ) -> Result<&[u8], BlobError> {
        let damaged = |detail: String| BlobError::Damaged {
            pack,
            blob: *id,
            detail,
        };
        keys.open_into(loc.kind.seal_kind(), sealed, &mut self.payload)
            .map_err(|e| damaged(e.to_string()))?;
        let raw = loc.raw_length as usize;
        // The buffer is sized from the index: bounded, whatever an index file says.
        if raw > MAX_BLOB_LEN {
            return Err(damaged(format!(
                "the index gives it {raw} bytes, more than any blob vouch writes"
            )));
        }
        let plain: &[u8] = match self.payload.split_first() {
            Some((&crypto::CODEC_RAW, body)) => body,
            Some((&crypto::CODEC_ZSTD, body)) => {
                self.plain.clear();
                self.plain.reserve(raw);
                self.dctx
                    .decompress_to_buffer(body, &mut self.plain)
                    .map_err(|e| damaged(format!("payload does not decompress: {e}")))?;
                &self.plain
            }
            Some((&other, _)) => return Err(damaged(format!("unknown payload codec {other}"))),
            None => return Err(damaged("empty payload".into())),
        };
        if plain.len() != raw {
            return Err(damaged(format!(
                "{} bytes after decompression, the index says {raw}",
                plain.len()
            )));
        }
        if verify_id {
            let actual = keys.blob_id(plain);
            if actual != *id {
                return Err(damaged(format!("its plaintext hashes to {actual}")));
            }
        }
        Ok(plain)
    }
}

/// An open repository: its store, working keys and configuration.
pub struct Repository {
    store: Store,
    keys: Arc<Keys>,
    config: RepoConfig,
    key_id: KeyId,
    master: Arc<crypto::MasterSecret>,
    clock: Arc<dyn Clock>,
    /// Read without taking locks (`--no-lock`).
    no_lock: bool,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.store.url())
    }
}

enum Unlock<'a> {
    Password(&'a crypto::Secret),
    Master(crypto::MasterSecret, KeyId),
}

/// Options for `vouch init`.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// Pack size in bytes (default 8 MiB).
    pub pack_size: Option<u32>,
    /// S3 Object Lock retention for every object (the bucket must have Object Lock enabled).
    pub object_lock: Option<crate::storage::Retention>,
}

impl Repository {
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }
    pub fn url(&self) -> &str {
        self.store.url()
    }
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    /// The repository's times (snapshots, locks, records) from `clock`; the store keeps its
    /// own, the clock the storage judges retention by. A repository starts with its store's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Read without taking locks (`--no-lock`, for read-only media); work that writes still
    /// locks.
    pub fn without_locks(mut self) -> Self {
        self.no_lock = true;
        self
    }

    fn corrupt(&self, object: impl Into<String>, detail: impl ToString) -> RepoError {
        RepoError::Corrupt {
            url: self.url().to_string(),
            object: object.into(),
            detail: detail.to_string(),
        }
    }

    /// Create a repository at `store`, protected by `password`.
    pub async fn init(
        store: Store,
        password: &crypto::Secret,
        opts: &InitOptions,
    ) -> Result<Repository, RepoError> {
        match store.size("config").await {
            Ok(_) => {
                return Err(RepoError::AlreadyExists {
                    url: store.url().to_string(),
                });
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let clock = store.clock().clone();
        let master = crypto::MasterSecret::random();
        let keys = Arc::new(Keys::derive(&master));
        let mut config =
            RepoConfig::new(ids::RepoId::from_bytes(crypto::random_array()), clock.now());
        if let Some(size) = opts.pack_size {
            config.pack_size = size;
        }
        config.object_lock = opts.object_lock;
        config
            .validate()
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        let store = match opts.object_lock {
            Some(retention) => {
                let settings = store.bucket_lock_settings().await?;
                if !settings.object_lock_enabled {
                    return Err(RepoError::Invalid(format!(
                        "the bucket of {} does not have S3 Object Lock enabled, so objects cannot be retained; Object Lock can only be chosen when a bucket is created (aws s3api create-bucket --object-lock-enabled-for-bucket, or the console's \"Object Lock\" setting): create a new bucket with it, or run init without --object-lock",
                        store.url()
                    )));
                }
                store.with_retention(retention)?
            }
            // A bucket that retains every object by default needs writes that carry a
            // checksum, and retention that vouch extends: both come with --object-lock.
            None if store.is_s3() => match store.bucket_lock_settings().await {
                Ok(settings) if settings.default_retention.is_some() => {
                    return Err(RepoError::Invalid(format!(
                        "the bucket of {} retains every object by default ({}): create the repository with --object-lock DAYS --object-lock-mode MODE, so that vouch writes and extends the retention itself",
                        store.url(),
                        settings.default_retention.unwrap_or_default()
                    )));
                }
                // Settings that cannot be read (no access key for them, a server without the
                // API) do not stop an ordinary repository.
                _ => store,
            },
            None => store,
        };
        // The key first: a crash before the config is written leaves no repository, only a
        // key file that a second `init` ignores.
        let key_id = keyring::write_key(&store, &master, password, clock.now()).await?;
        let sealed = keys.seal_document(Kind::Config, &serde_json::to_vec(&config).expect("json"));
        store
            .put_new("config", Bytes::from(sealed))
            .await
            .map_err(|e| match e {
                StorageError::AlreadyExists { url, .. } => RepoError::AlreadyExists { url },
                other => other.into(),
            })?;
        Ok(Repository {
            store,
            keys,
            config,
            key_id,
            master: Arc::new(master),
            clock,
            no_lock: false,
        })
    }

    /// Open the repository at `store` with `password`.
    pub async fn open(store: Store, password: &crypto::Secret) -> Result<Repository, RepoError> {
        Self::open_with(store, Unlock::Password(password)).await
    }

    /// Open with the master secret of an already open repository: the drill worker, a child
    /// of the process that opened it, skips the passphrase KDF this way.
    pub(crate) async fn open_with_master(
        store: Store,
        master: [u8; 32],
        key_id: KeyId,
    ) -> Result<Repository, RepoError> {
        Self::open_with(
            store,
            Unlock::Master(crypto::MasterSecret::from_bytes(master), key_id),
        )
        .await
    }

    /// The master secret, to hand to the drill worker over a pipe.
    pub(crate) fn master_bytes(&self) -> [u8; 32] {
        *self.master.as_bytes()
    }

    async fn open_with(store: Store, unlock: Unlock<'_>) -> Result<Repository, RepoError> {
        // With a passphrase the key files are listed while the config is fetched: over a
        // link that is one round trip fewer on every command.
        let (config, listed) = match unlock {
            Unlock::Password(_) => {
                let (config, listed) = tokio::join!(store.get("config"), keyring::list(&store));
                (config, Some(listed))
            }
            Unlock::Master(..) => (store.get("config").await, None),
        };
        let sealed_config = match config {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NotFound {
                    url: store.url().to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let (key_id, master) = match unlock {
            Unlock::Password(password) => {
                let config = sealed_config.clone();
                let listed = listed.expect("listed with a passphrase")?;
                keyring::unlock(&store, listed, password, move |master| {
                    Keys::derive(master)
                        .open_document(Kind::Config, &config)
                        .is_ok()
                })
                .await?
            }
            Unlock::Master(master, key_id) => (key_id, master),
        };
        let keys = Arc::new(Keys::derive(&master));
        let corrupt = |detail: String| RepoError::Corrupt {
            url: store.url().to_string(),
            object: "config".into(),
            detail,
        };
        let plain = keys
            .open_document(Kind::Config, &sealed_config)
            .map_err(|e| corrupt(e.to_string()))?;
        let config: RepoConfig =
            serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))?;
        config
            .validate()
            .map_err(|e| RepoError::Unsupported(e.to_string()))?;
        let store = store.cache_for(&config.id.to_hex());
        let store = match config.object_lock {
            Some(retention) if store.is_s3() => store.with_retention(retention)?,
            Some(_) => {
                // A copy of an S3 repository on a local disk: there is nothing to retain with.
                tracing::warn!(
                    url = store.url(),
                    "the repository was created with S3 Object Lock but is opened from local storage; objects are written without retention"
                );
                store
            }
            None => store,
        };
        Ok(Repository {
            clock: store.clock().clone(),
            store,
            keys,
            config,
            key_id,
            master: Arc::new(master),
            no_lock: false,
        })
    }

    /// Seal a JSON document and store it under `dir/<blake3 of the stored bytes>`.
    pub async fn save_document<T: Serialize>(
        &self,
        kind: Kind,
        dir: &str,
        doc: &T,
    ) -> Result<[u8; 32], RepoError> {
        let (name, sealed) = self.seal(kind, doc);
        self.store
            .put_cached(&format!("{dir}/{}", hex::encode(name)), sealed)
            .await?;
        Ok(name)
    }

    /// Seal a JSON document; returns the name it is stored under (the blake3 of the sealed
    /// bytes) with the bytes, for a writer that must name it before storing it.
    pub fn seal<T: Serialize>(&self, kind: Kind, doc: &T) -> ([u8; 32], Bytes) {
        let payload = crypto::encode_json(doc, 3);
        let sealed = self.keys.seal_payload(kind, &payload);
        drop(payload);
        (object_name(&sealed), Bytes::from(sealed))
    }

    /// Load a sealed JSON document, checking that its bytes match its name.
    pub async fn load_document<T: DeserializeOwned>(
        &self,
        kind: Kind,
        key: &str,
    ) -> Result<T, RepoError> {
        let bytes = self.store.get_cached(key).await?;
        self.decode_document(kind, key, &bytes)
    }

    /// Check and open a document already read from `key`.
    pub fn decode<T: DeserializeOwned>(
        &self,
        kind: Kind,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, RepoError> {
        self.decode_document(kind, key, bytes)
    }

    fn decode_document<T: DeserializeOwned>(
        &self,
        kind: Kind,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, RepoError> {
        if let Some(name) = key.rsplit('/').next() {
            if name.len() == 64 && hex::encode(object_name(bytes)) != name {
                return Err(self.corrupt(key, "its bytes do not match its name (blake3)"));
            }
        }
        let plain = self
            .keys
            .open_document(kind, bytes)
            .map_err(|e| self.corrupt(key, e))?;
        serde_json::from_slice(&plain)
            .map_err(|e| self.corrupt(key, format!("not a valid document: {e}")))
    }

    /// Every document under `dir`, by id, plus the keys of those that could not be read.
    pub async fn load_all<T: DeserializeOwned, I: std::str::FromStr>(
        &self,
        kind: Kind,
        dir: &str,
    ) -> Result<(Vec<(I, T)>, Vec<(String, RepoError)>), RepoError> {
        let listed = self.store.list(dir).await?;
        if matches!(dir, "index/" | "snapshots/") {
            self.store
                .cache_retain(dir, &listed.iter().map(|(k, _)| k.clone()).collect());
        }
        let loaded: Vec<_> = futures::stream::iter(listed)
            .map(|(key, _)| async move {
                let r = self.load_document::<T>(kind, &key).await;
                (key, r)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (key, r) in loaded {
            match (r, key.rsplit('/').next().and_then(|n| n.parse::<I>().ok())) {
                (Ok(doc), Some(id)) => good.push((id, doc)),
                (Ok(_), None) => {
                    bad.push((key.clone(), self.corrupt(key, "its name is not an id")))
                }
                (Err(e), _) => bad.push((key, e)),
            }
        }
        Ok((good, bad))
    }

    /// Every snapshot, oldest first, plus the keys of those that could not be read.
    pub async fn snapshots(
        &self,
    ) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(String, RepoError)>), RepoError> {
        let (mut good, bad) = self
            .load_all::<Snapshot, SnapshotId>(Kind::Snapshot, "snapshots/")
            .await?;
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, bad))
    }

    /// Resolve `latest` or a unique id prefix to one snapshot.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot), RepoError> {
        let (mut all, _) = self.snapshots().await?;
        if all.is_empty() {
            return Err(RepoError::Invalid(format!(
                "the repository at {} has no snapshots yet",
                self.url()
            )));
        }
        if spec == "latest" {
            return Ok(all.pop().expect("not empty"));
        }
        let spec_lower = spec.to_ascii_lowercase();
        if spec_lower.is_empty() || !spec_lower.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!(
                "{spec:?} is not a snapshot: give `latest` or a snapshot id (or a unique prefix of one, from `vouch snapshots`)"
            )));
        }
        let matches: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_lower))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one")),
            0 => Err(RepoError::Invalid(format!(
                "no snapshot id starts with {spec:?}; `vouch snapshots` lists them"
            ))),
            n => Err(RepoError::Invalid(format!(
                "{n} snapshots start with {spec:?}; give more digits"
            ))),
        }
    }

    /// Load every index file into one master index; unreadable index files are returned
    /// beside it rather than failing the whole load.
    pub async fn load_index(&self) -> Result<(MasterIndex, Vec<(String, RepoError)>), RepoError> {
        let (mut files, bad) = self
            .load_all::<IndexFile, IndexId>(Kind::Index, "index/")
            .await?;
        let mut index = MasterIndex::default();
        // Files superseded by a newer one (after prune) are skipped.
        let superseded: std::collections::HashSet<IndexId> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        files.sort_by_key(|(id, _)| *id);
        for (id, file) in &files {
            if !superseded.contains(id) {
                index.add(*id, file);
            }
        }
        let tree_packs = index
            .packs()
            .iter()
            .filter(|p| p.kind == format::BlobKind::Tree)
            .map(|p| packer::pack_key(&p.id))
            .collect();
        self.store.cache_retain("data/", &tree_packs);
        Ok((index, bad))
    }

    /// Store an index file listing `packs`.
    pub async fn save_index(&self, file: &IndexFile) -> Result<IndexId, RepoError> {
        Ok(IndexId::from_bytes(
            self.save_document(Kind::Index, "index", file).await?,
        ))
    }

    /// Store a snapshot; the last step of a backup.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId, RepoError> {
        Ok(SnapshotId::from_bytes(
            self.save_document(Kind::Snapshot, "snapshots", snapshot)
                .await?,
        ))
    }

    /// Decrypt, decompress and verify one blob whose sealed bytes are `sealed`.
    pub fn decode_blob(
        &self,
        id: &BlobId,
        loc: &BlobLocation,
        pack: PackId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, BlobError> {
        BlobDecoder::new()
            .decode(&self.keys, id, loc, pack, sealed, true)
            .map(<[u8]>::to_vec)
    }

    /// Read one blob from storage and verify it (levels 2: AEAD tag and keyed hash).
    pub async fn read_blob(&self, index: &MasterIndex, id: &BlobId) -> Result<Vec<u8>, BlobError> {
        let loc = *index.get(id).ok_or(BlobError::NotIndexed(*id))?;
        let pack = index.pack(loc.pack).id;
        let sealed = self
            .store
            .get_range(
                &packer::pack_key(&pack),
                loc.offset as u64..loc.offset as u64 + loc.length as u64,
            )
            .await
            .map_err(|source| BlobError::Storage { pack, source })?;
        if sealed.len() != loc.length as usize {
            return Err(BlobError::Damaged {
                pack,
                blob: *id,
                detail: format!(
                    "pack is truncated: read {} of {} bytes",
                    sealed.len(),
                    loc.length
                ),
            });
        }
        self.decode_blob(id, &loc, pack, &sealed)
    }

    /// Take a lock on the repository; it is refreshed in the background until released.
    pub async fn lock(&self, mode: LockMode, operation: &str) -> Result<LockGuard, RepoError> {
        lock::acquire(self, mode, operation).await
    }

    /// A shared lock for work that only reads the repository (restore, check). A repository
    /// that refuses writes (a write-protected disk, read-only credentials) is read without a
    /// lock, as with `--no-lock`; the note says so, for the person to see.
    pub async fn lock_for_reading(
        &self,
        operation: &str,
    ) -> Result<(LockGuard, Option<String>), RepoError> {
        if self.no_lock {
            return Ok((
                LockGuard::none(),
                Some("read without a lock (--no-lock): a prune run meanwhile could remove what this reads".into()),
            ));
        }
        match lock::acquire(self, LockMode::Shared, operation).await {
            Ok(guard) => Ok((guard, None)),
            Err(RepoError::Storage(e)) if e.is_read_only() => Ok((
                LockGuard::none(),
                Some(format!(
                    "the repository refuses writes, so it is read without a lock (as with --no-lock): {e}"
                )),
            )),
            Err(e) => Err(e),
        }
    }

    /// Add a passphrase that opens this repository.
    pub async fn add_key(&self, new_password: &crypto::Secret) -> Result<KeyId, RepoError> {
        keyring::write_key(&self.store, &self.master, new_password, self.clock.now()).await
    }

    /// The key files, and those that cannot be read (key, why).
    pub async fn list_keys(
        &self,
    ) -> Result<(Vec<(KeyId, format::key::KeyFile)>, Vec<(String, String)>), RepoError> {
        keyring::list(&self.store).await
    }

    /// Remove a key file that cannot be read (it opens nothing).
    pub async fn remove_damaged_key(&self, key: &str) -> Result<(), RepoError> {
        let (_, bad) = keyring::list(&self.store).await?;
        if !bad.iter().any(|(k, _)| k == key) {
            return Err(RepoError::Invalid(format!(
                "{key} is not a damaged key file of {}",
                self.url()
            )));
        }
        Ok(self.store.delete(key).await?)
    }

    /// Remove a key; refuses the key in use and the last key.
    pub async fn remove_key(&self, id: &KeyId) -> Result<(), RepoError> {
        keyring::remove(self, id).await
    }
}
