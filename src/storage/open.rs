//! Opening a store: a local directory (never created, except by `init` through
//! `Store::create`, which refuses what looks like an unmounted disk's mount point) or an S3
//! bucket through object_store with its retries and timeouts.
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::{RepoUrl, RetryPolicy, S3Options, StorageError, Store, object_lock};

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
                    cache_root: None,
                    cache: None,
                    clock: Arc::new(crate::clock::SystemClock),
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
                let mut client = ClientOptions::new();
                let mut connector = super::throttle::ThrottledConnector {
                    connect_timeout: Duration::from_secs(10),
                    timeout: Duration::from_secs(300),
                    allow_http: false,
                };
                if let Some(ep) = &endpoint {
                    builder = builder.with_endpoint(ep);
                    if ep.starts_with("http://") {
                        client = client.with_allow_http(true);
                        connector.allow_http = true;
                    }
                }
                builder = builder.with_http_connector(connector);
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
                    cache_root: None,
                    cache: None,
                    clock: Arc::new(crate::clock::SystemClock),
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
            clock: Arc::new(crate::clock::SystemClock),
            cache_root: None,
            cache: None,
        }
    }
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
