//! The object-store boundary: local directories and S3 through `object_store`, with retries
//! and backoff on transient errors, and durable writes on local disks.
//!
//! Nothing here knows the repository format: keys are plain strings such as
//! `data/ab/ab12…`, values are bytes.

mod fault;
mod object_lock;
mod url;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};

pub use fault::{Fault, FaultyStore};
pub use object_lock::{BucketLockSettings, ObjectRetention, Retention, RetentionMode};

pub use url::{RepoUrl, UrlError};

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
        until: time::OffsetDateTime,
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.display)
    }
}

impl Store {
    /// Open the store behind `url`. Nothing is contacted yet.
    pub fn open(url: &RepoUrl, s3: &S3Options) -> Result<Self, StorageError> {
        let display = url.to_string();
        match url {
            RepoUrl::Local(path) => {
                // Only `init` creates a repository's directory (`Store::create`): a mistyped
                // path, or a disk that is not mounted, is an error, not a new empty folder.
                match std::fs::metadata(path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(StorageError::Config {
                            url: display,
                            detail: "it is a file, not a repository directory".into(),
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(StorageError::Missing { url: display });
                    }
                    Err(e) => {
                        return Err(StorageError::Config {
                            url: display,
                            detail: e.to_string(),
                        });
                    }
                }
                let fs =
                    LocalFileSystem::new_with_prefix(path).map_err(|e| StorageError::Config {
                        url: display.clone(),
                        detail: e.to_string(),
                    })?;
                Ok(Self {
                    inner: Arc::new(fs),
                    prefix: String::new(),
                    local_root: Some(path.clone()),
                    display,
                    retry: RetryPolicy::default(),
                    s3: None,
                    lock: None,
                    control: Default::default(),
                })
            }
            RepoUrl::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                let endpoint = s3
                    .endpoint
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                    .or_else(|| std::env::var("AWS_ENDPOINT").ok());
                let region = s3
                    .region
                    .clone()
                    .or_else(|| std::env::var("AWS_REGION").ok())
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                    .unwrap_or_else(|| "us-east-1".to_string());
                builder = builder.with_region(&region);
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    builder = builder
                        .with_access_key_id(id)
                        .with_secret_access_key(secret);
                }
                let mut client = ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300));
                if let Some(ep) = &endpoint {
                    builder = builder.with_endpoint(ep);
                    if ep.starts_with("http://") {
                        client = client.with_allow_http(true);
                    }
                }
                let path_style = s3.path_style.unwrap_or(endpoint.is_some());
                let target = object_lock::S3Target {
                    bucket: bucket.clone(),
                    prefix: if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}/")
                    },
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    path_style,
                    credentials: s3.access_key_id.clone().zip(s3.secret_access_key.clone()),
                };
                builder = builder
                    .with_virtual_hosted_style_request(!path_style)
                    .with_client_options(client)
                    .with_retry(RetryConfig {
                        backoff: Default::default(),
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(60),
                    });
                let s3 = builder.build().map_err(|e| StorageError::Config {
                    url: display.clone(),
                    detail: e.to_string(),
                })?;
                let prefix = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                Ok(Self {
                    inner: Arc::new(s3),
                    prefix,
                    local_root: None,
                    display,
                    retry: RetryPolicy::default(),
                    s3: Some(target),
                    lock: None,
                    control: Default::default(),
                })
            }
        }
    }

    /// Open the store behind `url` for `vouch init`, creating a local repository's directory.
    /// Without `create_parents` only the last folder is made, and not inside what looks like
    /// the mount point of a disk that is not mounted (`refuse_creating`): the backups would
    /// fill the system disk instead.
    pub fn create(
        url: &RepoUrl,
        s3: &S3Options,
        create_parents: bool,
    ) -> Result<Self, StorageError> {
        if let RepoUrl::Local(path) = url {
            let display = url.to_string();
            let fail = |detail: String| StorageError::Config {
                url: display.clone(),
                detail,
            };
            let abs = std::path::absolute(path).map_err(|e| fail(e.to_string()))?;
            if !abs.exists() {
                if !create_parents {
                    if let Some(why) = refuse_creating(&abs) {
                        return Err(fail(why));
                    }
                }
                crate::sys::create_private_dir(&abs)
                    .map_err(|e| fail(format!("cannot create the directory: {e}")))?;
            }
        }
        Self::open(url, s3)
    }

    /// Files left on a local disk by writes that were killed before they finished (the
    /// local store writes `name#N` and renames it into place), older than `older_than`.
    pub fn partial_uploads(
        &self,
        older_than: time::Duration,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let Some(root) = &self.local_root else {
            return Ok(Vec::new());
        };
        let cutoff: std::time::SystemTime = (now_utc() - older_than).into();
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(classify_io(&self.display, &dir.display().to_string(), &e)),
            };
            for entry in entries.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                let path = entry.path();
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() && is_partial_name(&entry.file_name()) {
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t <= cutoff);
                    if old {
                        out.push(path);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Remove partial uploads found by `partial_uploads`; returns how many went.
    pub fn remove_partial(&self, files: &[PathBuf]) -> Result<usize, StorageError> {
        let mut removed = 0;
        for f in files {
            match std::fs::remove_file(f) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(classify_io(&self.display, &f.display().to_string(), &e)),
            }
        }
        Ok(removed)
    }

    /// A store over any `ObjectStore` (tests wrap a real store with fault injection).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, display: impl Into<String>) -> Self {
        Self {
            inner,
            prefix: String::new(),
            local_root: None,
            display: display.into(),
            retry: RetryPolicy::default(),
            s3: None,
            lock: None,
            control: Default::default(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
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
            // Lock files are refreshed and removed all the time; they carry no retention of
            // ours. They go through the same client all the same: it sends the checksum that
            // S3 demands of every write to a bucket with a default retention rule.
            let create_only = matches!(mode, PutMode::Create);
            let locked = !key.starts_with("locks/");
            return self
                .retry_loop(key, || {
                    let until = now_utc() + retention.period();
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
        let bytes = match range {
            Some(r) => handle.block_on(self.get_range(key, r))?,
            None => handle.block_on(self.get(key))?,
        };
        out.extend_from_slice(&bytes);
        Ok(())
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
            if !key.starts_with("locks/") {
                return self
                    .retry_loop(key, || lock.delete_all_versions(key, now_utc()))
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
    ) -> Result<Vec<(String, u64, time::OffsetDateTime)>, StorageError> {
        let prefix = self.path(dir.trim_end_matches('/'));
        let strip = self.prefix.len();
        let result = self
            .retrying(dir, || {
                let prefix = prefix.clone();
                async move {
                    self.inner
                        .list(Some(&prefix))
                        .map_ok(|m| {
                            let at = time::OffsetDateTime::from_unix_timestamp(
                                m.last_modified.timestamp(),
                            )
                            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
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

    /// Write every object from now on with this Object Lock retention (S3 only).
    pub fn with_retention(mut self, retention: Retention) -> Result<Self, StorageError> {
        let lock = self.lock_client()?;
        self.lock = Some((lock, retention));
        Ok(self)
    }

    /// The Object Lock retention objects are written with, if any.
    pub fn retention(&self) -> Option<Retention> {
        self.lock.as_ref().map(|(_, r)| *r)
    }

    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    fn lock_client(&self) -> Result<Arc<object_lock::ObjectLock>, StorageError> {
        if let Some(client) = self.control.get() {
            return Ok(client.clone());
        }
        let target = self.s3.clone().ok_or_else(|| StorageError::Config {
            url: self.display.clone(),
            detail: "S3 Object Lock needs an s3:// repository".into(),
        })?;
        let client = Arc::new(object_lock::ObjectLock::new(target, &self.display)?);
        Ok(self.control.get_or_init(|| client).clone())
    }

    /// The Object Lock retention of `key` as the storage reports it.
    pub async fn object_retention(&self, key: &str) -> Result<ObjectRetention, StorageError> {
        let lock = self.lock_client()?;
        self.retry_loop(key, || lock.retention(key)).await
    }

    /// Extend the retention of `key` to `until`, in the configured mode.
    pub async fn extend_retention(
        &self,
        key: &str,
        until: time::OffsetDateTime,
    ) -> Result<(), StorageError> {
        let Some((lock, retention)) = &self.lock else {
            return Ok(());
        };
        self.retry_loop(key, || lock.extend(key, retention.mode, until))
            .await
    }

    /// The bucket's versioning and Object Lock settings (S3 only).
    pub async fn bucket_lock_settings(&self) -> Result<BucketLockSettings, StorageError> {
        let lock = self.lock_client()?;
        self.retry_loop("(bucket settings)", || lock.bucket_settings())
            .await
    }

    /// Whether these credentials may delete: a small object without retention is written
    /// under `doctor/` and deleted (every version of it, so nothing is left behind).
    /// `None`: the bucket's default retention kept the probe, so it cannot tell.
    pub async fn probe_delete(&self) -> Result<Option<bool>, StorageError> {
        let lock = self.lock_client()?;
        let key = format!("doctor/delete-probe-{}", hex::encode(rand_suffix()));
        lock.put(&key, Bytes::from_static(b"vouch doctor"), None, false)
            .await?;
        match lock.delete_all_versions(&key, now_utc()).await {
            Ok(()) => Ok(Some(true)),
            Err(StorageError::Denied { .. }) => Ok(Some(false)),
            Err(StorageError::Retained { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Prove that the storage enforces Object Lock: write a canary retained for a few minutes
    /// in `mode`, check that the storage recorded its retention, then try to delete that
    /// version. Leftover test objects whose retention has passed are cleared first.
    pub async fn prove_lock_enforced(
        &self,
        mode: RetentionMode,
    ) -> Result<Enforcement, StorageError> {
        let lock = self.lock_client()?;
        let now = now_utc();
        for (key, _) in self.list("doctor/").await? {
            // Expired leftovers go; those still retained stay for a later doctor.
            let _ = lock.delete_all_versions(&key, now).await;
        }
        let key = format!("doctor/canary-{}", hex::encode(rand_suffix()));
        let until = now + time::Duration::minutes(5);
        lock.put(
            &key,
            Bytes::from_static(b"vouch doctor canary"),
            Some((mode, until)),
            false,
        )
        .await?;
        let written = lock.retention(&key).await?;
        if written.until.is_none() {
            let _ = lock.delete_all_versions(&key, now).await;
            return Ok(Enforcement::NotRecorded);
        }
        let version = written.version.unwrap_or_default();
        if version.is_empty() || version == "null" {
            return Ok(Enforcement::Untestable(
                "the canary got no version id".into(),
            ));
        }
        match lock.delete_version(&key, &version).await {
            Err(StorageError::Denied { detail, .. }) => Ok(Enforcement::Refused(detail)),
            Err(e) => Err(e),
            Ok(()) => Ok(Enforcement::Deleted),
        }
    }

    async fn retrying<T, F, Fut>(&self, key: &str, mut op: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        self.retry_loop(key, || {
            let fut = op();
            async move { fut.await.map_err(|e| classify(&self.display, key, e)) }
        })
        .await
    }

    async fn retry_loop<T, F, Fut>(&self, key: &str, mut op: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StorageError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(err) => {
                    if !err.is_retryable() || attempt >= self.retry.attempts {
                        return Err(err);
                    }
                    let pause = self.retry.first_backoff * 2u32.pow(attempt - 1);
                    tracing::warn!(%err, key, attempt, ?pause, "storage operation failed; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// What happened to `vouch doctor`'s retained canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// The delete of the retained version was refused: retention is enforced.
    Refused(String),
    /// The retained version was deleted: the storage ignores Object Lock.
    Deleted,
    /// The storage accepted the write but reports no retention on it.
    NotRecorded,
    /// The test could not be made.
    Untestable(String),
}

/// Retention dates are compared by the storage with its own clock, so they come from the
/// system clock, never from a test's manual one.
pub(crate) fn now_utc() -> time::OffsetDateTime {
    use crate::clock::Clock;
    crate::clock::SystemClock.now()
}

/// `name#123`: a local write that never reached its rename.
fn is_partial_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.rsplit_once('#').is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Why `init` should not create the directory `path`: its parent is missing too (a mistyped
/// path, or a disk that is not mounted, would become folders on the system disk; borg asks
/// for `--make-parent-dirs` for the same reason), or its parent is an empty mount point whose
/// disk is not mounted: an empty folder on the same device as the folder above it, named in
/// /etc/fstab or where NASes and desktops mount disks.
fn refuse_creating(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let parent = path.parent()?;
    if !parent.exists() {
        return Some(format!(
            "{} does not exist either; a mistyped path, or a disk that is not mounted, would become folders on the system disk, so nothing was created. Check the path (is the disk mounted?), or pass --create-parents to make the folders",
            parent.display()
        ));
    }
    let above = parent.parent()?;
    let empty = std::fs::read_dir(parent).ok()?.next().is_none();
    let same_device = std::fs::metadata(parent).ok()?.dev() == std::fs::metadata(above).ok()?.dev();
    if !(empty && same_device && (in_fstab(parent) || where_disks_mount(parent))) {
        return None;
    }
    Some(format!(
        "{} is an empty folder on the same disk as {}, which is what a mount point looks like when its disk is not mounted; nothing was created. Mount the disk (or share) there and run init again, or, if the repository should live on this disk, pass --create-parents",
        parent.display(),
        above.display()
    ))
}

/// Whether /etc/fstab names `dir` as a mount point.
fn in_fstab(dir: &std::path::Path) -> bool {
    std::fs::read_to_string("/etc/fstab").is_ok_and(|t| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_whitespace().nth(1))
            .any(|m| std::path::Path::new(m) == dir)
    })
}

/// Whether `dir` is where disks are mounted on Linux desktops and NASes: directly under
/// /mnt, /media or /run/media/USER, or a Synology, QNAP or OpenMediaVault external-disk root.
fn where_disks_mount(dir: &std::path::Path) -> bool {
    let text = dir.to_string_lossy();
    let under = |root: &str| {
        dir.parent()
            .is_some_and(|p| p == std::path::Path::new(root))
    };
    under("/mnt")
        || under("/media")
        || dir.parent().and_then(|p| p.parent()) == Some(std::path::Path::new("/run/media"))
        || text.starts_with("/volumeUSB")
        || text.starts_with("/volumeSATA")
        || text.starts_with("/share/external/")
        || text.starts_with("/srv/dev-disk-by-")
}

fn rand_suffix() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random bytes");
    b
}

fn sync_file_and_dir(file: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::File::open(file)?;
    // Owner only: key files are plaintext JSON (their secret is wrapped, but offline guessing
    // of the passphrase starts from them), and nothing of a repository is for other users.
    // Best effort: FAT and exFAT disks, and some network mounts, refuse modes they cannot
    // store, and the write is sound without it.
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    f.sync_all()?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn classify_io(url: &str, key: &str, e: &std::io::Error) -> StorageError {
    let (url, key) = (url.to_string(), key.to_string());
    match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::NotFound { url, key },
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            StorageError::Full { url, key }
        }
        std::io::ErrorKind::ConnectionRefused
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::NotConnected
        | std::io::ErrorKind::TimedOut
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::Interrupted => StorageError::Unreachable {
            url,
            key,
            detail: e.to_string(),
        },
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            StorageError::Denied {
                url,
                key,
                detail: e.to_string(),
            }
        }
        _ => StorageError::Other {
            url,
            key,
            detail: e.to_string(),
        },
    }
}

/// Map object_store's error into ours: by variant first, then by the I/O error underneath.
fn classify(url: &str, key: &str, e: object_store::Error) -> StorageError {
    use object_store::Error as E;
    let (u, k) = (url.to_string(), key.to_string());
    match e {
        E::NotFound { .. } => StorageError::NotFound { url: u, key: k },
        E::AlreadyExists { .. } | E::Precondition { .. } => {
            StorageError::AlreadyExists { url: u, key: k }
        }
        E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
            StorageError::Denied {
                url: u,
                key: k,
                detail: source.to_string(),
            }
        }
        other => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&other);
            while let Some(err) = source {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    return classify_io(url, key, io);
                }
                source = err.source();
            }
            let detail = error_chain(&other);
            if is_local_error(&other) {
                StorageError::Other {
                    url: u,
                    key: k,
                    detail,
                }
            } else {
                StorageError::Unreachable {
                    url: u,
                    key: k,
                    detail,
                }
            }
        }
    }
}

fn is_local_error(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { store, .. } if *store == "LocalFileSystem")
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
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
