//! The object-store boundary: local directories and S3 through `object_store`, with retries
//! and backoff on transient errors, and durable writes on local disks.
//!
//! Nothing here knows the repository format: keys are plain strings such as
//! `data/ab/ab12…`, values are bytes.
//!
//! This file is the store's face (errors, options, reads, writes, lists, deletes); `open`
//! makes stores, `retry` retries and classifies failures, `retained` is the S3 Object Lock
//! side, `local` what only a local disk has, `fault` the test wrapper. One contract
//! (tests/it/storage.rs) holds for every backend and both write paths.

mod cache;
mod fault;
mod local;
mod object_lock;
mod open;
mod retained;
mod retry;
mod throttle;
mod url;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

pub use cache::{cache_usage, default_cache_root};
pub use fault::{Fault, FaultyStore};
pub use object_lock::{BucketLockSettings, ObjectRetention, Retention, RetentionMode};

pub use retained::Enforcement;
pub use throttle::{Rate, download as download_limit, upload as upload_limit};
pub use url::{RepoUrl, UrlError};

use local::sync_file_and_dir;
use retained::rand_suffix;
use retry::classify_io;
pub(crate) use retry::error_chain;

/// How a storage operation failed. Retry logic reads `is_retryable`, never the message.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{key} not found in {url}")]
    NotFound { url: String, key: String },
    #[error("{key} already exists in {url}")]
    AlreadyExists { url: String, key: String },
    #[error(
        "access to {key} in {url} was refused: {detail} (check the credentials and their permissions)"
    )]
    Denied {
        url: String,
        key: String,
        detail: String,
    },
    #[error("{url} has no space left for {key}: free space on that volume, then run the job again")]
    Full { url: String, key: String },
    #[error(
        "{url} could not be reached for {key}: {detail} (check the endpoint, the network and that the server is running)"
    )]
    Unreachable {
        url: String,
        key: String,
        detail: String,
    },
    #[error("storage error on {key} in {url}: {detail}")]
    Other {
        url: String,
        key: String,
        detail: String,
    },
    #[error("cannot open {url}: {detail}")]
    Config { url: String, detail: String },
    #[error(
        "there is no vouch repository at {url}: the directory does not exist (check the path; is the disk or share mounted?); `vouch init --repo {url}` creates a new one"
    )]
    Missing { url: String },
    #[error(
        "{key} in {url} is protected by S3 Object Lock until {}; it can be removed after then",
        crate::clock::human(*until)
    )]
    Retained {
        url: String,
        key: String,
        until: jiff::Timestamp,
    },
}

impl StorageError {
    /// Worth another try after a pause: network trouble and server-side errors.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unreachable { .. })
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
    /// The storage refuses writes (a read-only disk or mount, read-only credentials).
    pub fn is_read_only(&self) -> bool {
        match self {
            StorageError::Denied { .. } => true,
            StorageError::Other { detail, .. } => detail.contains("Read-only file system"),
            _ => false,
        }
    }
    /// Refused because Object Lock retains the object (or the storage denied the delete).
    pub fn is_refused_delete(&self) -> bool {
        matches!(
            self,
            StorageError::Retained { .. } | StorageError::Denied { .. }
        )
    }
}

/// S3 settings that do not fit in the URL. Unset fields fall back to the usual AWS
/// environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …).
#[derive(Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`); the default for a custom endpoint.
    pub path_style: Option<bool>,
    /// Credentials; when unset, the AWS environment variables (or instance credentials).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// Retry policy for operations that failed with a retryable error.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
        }
    }
}

/// Whether an object is written with the repository's Object Lock retention: everything but
/// the locks and the checkpoints of unfinished backups, which protect nothing once their
/// process is done and are deleted then.
fn carries_retention(key: &str) -> bool {
    !(key.starts_with("locks/") || key.starts_with("checkpoints/"))
}

/// A handle on the objects under one repository prefix.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    /// Root directory of a local store: objects are fsynced there after writing.
    local_root: Option<PathBuf>,
    display: String,
    retry: RetryPolicy,
    /// Where an S3 store is, for the Object Lock client.
    s3: Option<object_lock::S3Target>,
    /// Set when the repository is configured with Object Lock retention.
    lock: Option<(Arc<object_lock::ObjectLock>, Retention)>,
    /// The S3 control client, built on first use and shared by clones of this store.
    control: Arc<std::sync::OnceLock<Arc<object_lock::ObjectLock>>>,
    /// The storage's clock. Retention dates and the age of local leftovers are judged by the
    /// storage against real time, so this is the system clock unless a test gives another.
    clock: Arc<dyn crate::clock::Clock>,
    /// Where copies of metadata are kept (`with_cache_root`), and this repository's folder
    /// there once its id is known.
    cache_root: Option<PathBuf>,
    cache: Option<cache::Cache>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.display)
    }
}

impl Store {
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same store, its times taken from `clock` (a repository made with it takes the
    /// same clock).
    pub fn with_clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &Arc<dyn crate::clock::Clock> {
        &self.clock
    }

    fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    /// The same objects through a different `ObjectStore` wrapper (fault injection in tests).
    pub fn map_inner(
        mut self,
        f: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) -> Self {
        self.inner = f(self.inner);
        self
    }

    /// The location, for messages (never with credentials).
    pub fn url(&self) -> &str {
        &self.display
    }

    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    fn path(&self, key: &str) -> ObjPath {
        ObjPath::from(format!("{}{key}", self.prefix))
    }

    /// Write `bytes` under `key`, replacing what was there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.put_with(key, bytes, PutMode::Overwrite).await
    }

    /// Write `bytes` under `key` only if nothing is there yet.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.put_with(key, bytes, PutMode::Create).await
    }

    async fn put_with(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let create_only = matches!(mode, PutMode::Create);
        match self.put_once(key, bytes.clone(), mode).await {
            // A create-only write that finds the object already holding exactly these bytes
            // succeeded: typically its first try was stored and only the reply was lost, and
            // the retry was refused. Object names are hashes, or hold random ids, so no other
            // writer produces the same bytes.
            Err(StorageError::AlreadyExists { url, key: k }) if create_only => {
                match self.get(key).await {
                    Ok(stored) if stored == bytes => Ok(()),
                    _ => Err(StorageError::AlreadyExists { url, key: k }),
                }
            }
            other => other,
        }
    }

    async fn put_once(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<(), StorageError> {
        if let Some((lock, retention)) = &self.lock {
            // Lock files and checkpoints are removed as soon as their work is done; they carry
            // no retention of ours. They go through the same client all the same: it sends the
            // checksum that S3 demands of every write to a bucket with a default retention rule.
            let create_only = matches!(mode, PutMode::Create);
            let locked = carries_retention(key);
            return self
                .retry_loop(key, || {
                    let until = self.now() + retention.period();
                    let retain = locked.then_some((retention.mode, until));
                    lock.put(key, bytes.clone(), retain, create_only)
                })
                .await;
        }
        let path = self.path(key);
        self.retrying(key, || {
            let opts = PutOptions {
                mode: mode.clone(),
                ..Default::default()
            };
            let payload = PutPayload::from_bytes(bytes.clone());
            let path = path.clone();
            async move { self.inner.put_opts(&path, payload, opts).await.map(|_| ()) }
        })
        .await?;
        if let Some(root) = &self.local_root {
            let file = root.join(format!("{}{key}", self.prefix));
            let display = self.display.clone();
            let key = key.to_string();
            tokio::task::spawn_blocking(move || sync_file_and_dir(&file))
                .await
                .expect("fsync task")
                .map_err(|e| classify_io(&display, &key, &e))?;
        }
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        self.retrying(key, || {
            let path = path.clone();
            async move { self.inner.get(&path).await?.bytes().await }
        })
        .await
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        self.retrying(key, || {
            let path = path.clone();
            let range = range.clone();
            async move { self.inner.get_range(&path, range).await }
        })
        .await
    }

    /// Read `range` of an object (all of it with `None`) into `out`, from a thread outside
    /// the runtime. A local store reads straight into `out` with `pread`: restores and checks
    /// reuse one buffer per thread instead of allocating per read.
    pub fn read_into(
        &self,
        handle: &tokio::runtime::Handle,
        key: &str,
        range: Option<Range<u64>>,
        out: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        out.clear();
        if let Some(root) = &self.local_root {
            use std::io::{Read, Seek, SeekFrom};
            let path = root.join(format!("{}{key}", self.prefix));
            let io = |e: std::io::Error| classify_io(&self.display, key, &e);
            let mut file = std::fs::File::open(&path).map_err(io)?;
            // read_to_end fills the buffer's spare capacity without zeroing it first.
            // A short file gives a short buffer; the caller's length checks report it.
            match range {
                Some(r) => {
                    file.seek(SeekFrom::Start(r.start)).map_err(io)?;
                    out.reserve(r.end.saturating_sub(r.start) as usize);
                    file.take(r.end.saturating_sub(r.start))
                        .read_to_end(out)
                        .map_err(io)?;
                }
                None => {
                    file.read_to_end(out).map_err(io)?;
                }
            }
            return Ok(());
        }
        // Remote: the body is streamed into `out` as it arrives, so a thread holds one copy
        // of what it reads (collecting the body first and copying it held two, which is
        // what took a check over S3 past its memory bar).
        let path = self.path(key);
        let cell = std::cell::RefCell::new(std::mem::take(out));
        let result = handle.block_on(self.retrying(key, || {
            let (path, range, cell) = (path.clone(), range.clone(), &cell);
            async move {
                let mut buf = cell.take();
                buf.clear();
                let filled = async {
                    let opts = object_store::GetOptions {
                        range: range.map(object_store::GetRange::Bounded),
                        ..Default::default()
                    };
                    let got = self.inner.get_opts(&path, opts).await?;
                    buf.reserve((got.range.end - got.range.start) as usize);
                    let mut body = got.into_stream();
                    while let Some(chunk) = body.try_next().await? {
                        buf.extend_from_slice(&chunk);
                    }
                    Ok(())
                }
                .await;
                cell.replace(buf);
                filled
            }
        }));
        *out = cell.into_inner();
        result
    }

    /// Size of the object, or `NotFound`.
    pub async fn size(&self, key: &str) -> Result<u64, StorageError> {
        let path = self.path(key);
        self.retrying(key, || {
            let path = path.clone();
            async move { self.inner.head(&path).await.map(|m| m.size) }
        })
        .await
    }

    /// Every object under `dir` (e.g. `"snapshots/"`), as (key relative to the store, size).
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, StorageError> {
        Ok(self
            .list_modified(dir)
            .await?
            .into_iter()
            .map(|(k, size, _)| (k, size))
            .collect())
    }

    /// Remove `key`. With Object Lock retention configured, every version of it goes (a plain
    /// delete on a versioned bucket frees nothing), and an object whose retention has not
    /// expired is refused with `Retained` before anything is deleted.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        if let Some((lock, _)) = &self.lock {
            if carries_retention(key) {
                return self
                    .retry_loop(key, || lock.delete_all_versions(key, self.now()))
                    .await;
            }
        }
        let path = self.path(key);
        // Deleting what is not there is done (a local disk says NotFound, S3 says nothing).
        match self
            .retrying(key, || {
                let path = path.clone();
                async move { self.inner.delete(&path).await }
            })
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Every object under `dir` with its size and when it was last written.
    pub async fn list_modified(
        &self,
        dir: &str,
    ) -> Result<Vec<(String, u64, jiff::Timestamp)>, StorageError> {
        let prefix = self.path(dir.trim_end_matches('/'));
        let strip = self.prefix.len();
        let result = self
            .retrying(dir, || {
                let prefix = prefix.clone();
                async move {
                    self.inner
                        .list(Some(&prefix))
                        .map_ok(|m| {
                            let at = jiff::Timestamp::from_second(m.last_modified.timestamp())
                                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                            (m.location.as_ref()[strip..].to_string(), m.size, at)
                        })
                        .try_collect::<Vec<_>>()
                        .await
                }
            })
            .await;
        match result {
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            other => other.map(|mut v| {
                v.sort();
                v
            }),
        }
    }

    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_store_writes_reads_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(
            &RepoUrl::Local(dir.path().join("repo")),
            &S3Options::default(),
            true,
        )
        .unwrap();
        store
            .put("data/ab/abcd", Bytes::from_static(b"pack"))
            .await
            .unwrap();
        store
            .put_new("keys/k1", Bytes::from_static(b"key"))
            .await
            .unwrap();
        assert!(matches!(
            store.put_new("keys/k1", Bytes::from_static(b"again")).await,
            Err(StorageError::AlreadyExists { .. })
        ));
        assert_eq!(store.get("data/ab/abcd").await.unwrap(), &b"pack"[..]);
        assert_eq!(
            store.get_range("data/ab/abcd", 1..3).await.unwrap(),
            &b"ac"[..]
        );
        assert_eq!(store.size("keys/k1").await.unwrap(), 3);
        assert_eq!(
            store.list("data/").await.unwrap(),
            vec![("data/ab/abcd".to_string(), 4)]
        );
        assert!(store.list("index/").await.unwrap().is_empty());
        store.delete("data/ab/abcd").await.unwrap();
        assert!(store.get("data/ab/abcd").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let real = Store::open(
            &RepoUrl::Local(dir.path().to_path_buf()),
            &S3Options::default(),
        )
        .unwrap();
        real.put("config", Bytes::from_static(b"c")).await.unwrap();
        let faulty = FaultyStore::new(real.inner.clone());
        faulty.inject(Fault::TransientErrors(2));
        let store =
            Store::from_object_store(Arc::new(faulty.clone()), "faulty").with_retry(RetryPolicy {
                attempts: 4,
                first_backoff: Duration::from_millis(1),
            });
        assert_eq!(store.get("config").await.unwrap(), &b"c"[..]);
        assert_eq!(faulty.calls(), 3);
        faulty.inject(Fault::TransientErrors(10));
        let err = store.get("config").await.unwrap_err();
        assert!(matches!(err, StorageError::Unreachable { .. }), "{err}");
        assert_eq!(faulty.calls(), 4, "gives up after the policy's attempts");
        faulty.inject(Fault::None);
        assert!(store.get("missing").await.unwrap_err().is_not_found());
    }
}
