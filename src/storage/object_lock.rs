//! S3 Object Lock through `aws-sdk-s3` (object_store has no Object Lock API).
//!
//! With retention configured, every object except lock files is written by one PutObject that
//! carries its retention (mode and retain-until date): there is no moment at which a written
//! object is unprotected. Deletes remove every version of an object (a plain DELETE on a
//! versioned bucket only hides it behind a delete marker and frees nothing), after checking
//! that no version is still retained. The bucket's settings and whether the storage really
//! enforces them (proven with a canary object, never assumed) are read for `vouch doctor`.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ObjectLockEnabled, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
};
use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StorageError;

/// The Object Lock mode objects are written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete or shorten.
    Governance,
    /// Nobody, not even the account's root user, can delete before the date.
    Compliance,
}

impl RetentionMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "governance" => Some(Self::Governance),
            "compliance" => Some(Self::Compliance),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
    fn object_mode(self) -> ObjectLockMode {
        match self {
            Self::Governance => ObjectLockMode::Governance,
            Self::Compliance => ObjectLockMode::Compliance,
        }
    }
    fn retention_mode(self) -> ObjectLockRetentionMode {
        match self {
            Self::Governance => ObjectLockRetentionMode::Governance,
            Self::Compliance => ObjectLockRetentionMode::Compliance,
        }
    }
    fn from_sdk(text: &str) -> Option<Self> {
        Self::parse(text)
    }
}

impl std::fmt::Display for RetentionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long every object is protected from the moment it is written (and, for what is still
/// needed, from each prune that extends it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub mode: RetentionMode,
    pub days: u32,
}

impl Retention {
    pub const MAX_DAYS: u32 = 3650;

    pub fn period(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(24 * i64::from(self.days))
    }
}

/// Where the S3 client connects, resolved once from the options and the environment.
#[derive(Clone)]
pub(super) struct S3Target {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub credentials: Option<(String, String)>,
}

/// An object's retention as the storage reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRetention {
    pub mode: Option<RetentionMode>,
    pub until: Option<Timestamp>,
    /// The current version's id ("null" or none without versioning).
    pub version: Option<String>,
}

/// A bucket's Object Lock settings, as `vouch doctor` reports them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BucketLockSettings {
    /// "Enabled", "Suspended", "never enabled", or why it could not be read.
    pub versioning: String,
    pub object_lock_enabled: bool,
    /// The bucket's default retention rule (mode and period), if it has one.
    pub default_retention: Option<String>,
}

/// The S3 client for Object Lock work on one repository prefix.
pub(super) struct ObjectLock {
    client: Client,
    target: S3Target,
    url: String,
}

impl ObjectLock {
    pub fn new(target: S3Target, url: &str) -> Result<Self, StorageError> {
        let (id, secret) = target
            .credentials
            .clone()
            .or_else(|| {
                Some((
                    std::env::var("AWS_ACCESS_KEY_ID").ok()?,
                    std::env::var("AWS_SECRET_ACCESS_KEY").ok()?,
                ))
            })
            .ok_or_else(|| StorageError::Config {
                url: url.to_string(),
                detail: "Object Lock needs an access key: set access_key_id and secret_access_key_file for this repository in vouch.toml, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            })?;
        let session = std::env::var("AWS_SESSION_TOKEN").ok();
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(300))
            .build();
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .region(Region::new(target.region.clone()))
            .force_path_style(target.path_style)
            .credentials_provider(Credentials::new(id, secret, session, None, "vouch"));
        if let Some(endpoint) = &target.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            target,
            url: url.to_string(),
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.target.prefix)
    }

    fn error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError {
        classify(&self.url, key, e)
    }

    /// Write `bytes` under `key`, retained in `mode` until `until`. With `create_only`, fail
    /// with `AlreadyExists` if the key exists.
    pub async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        retention: Option<(RetentionMode, Timestamp)>,
        create_only: bool,
    ) -> Result<(), StorageError> {
        // The SDK sends the body in one go: the upload limit paces whole objects here.
        super::throttle::upload().take(bytes.len()).await;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.target.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(bytes));
        if let Some((mode, until)) = retention {
            req = req
                .object_lock_mode(mode.object_mode())
                .object_lock_retain_until_date(to_sdk(until));
        }
        if create_only {
            req = req.if_none_match("*");
        }
        req.send().await.map_err(|e| self.error(key, e))?;
        Ok(())
    }

    /// The retention and version id of the current version of `key`.
    pub async fn retention(&self, key: &str) -> Result<ObjectRetention, StorageError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.target.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(ObjectRetention {
            mode: head
                .object_lock_mode()
                .and_then(|m| RetentionMode::from_sdk(m.as_str())),
            until: head.object_lock_retain_until_date().and_then(from_sdk),
            version: head.version_id().map(str::to_string),
        })
    }

    /// Set the retention of the current version of `key` (to extend it).
    pub async fn extend(
        &self,
        key: &str,
        mode: RetentionMode,
        until: Timestamp,
    ) -> Result<(), StorageError> {
        self.client
            .put_object_retention()
            .bucket(&self.target.bucket)
            .key(self.full_key(key))
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode.retention_mode())
                    .retain_until_date(to_sdk(until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    /// Remove every version of `key`. Refused, before anything is deleted, when a version is
    /// retained past `now`; a key that does not exist is not an error.
    pub async fn delete_all_versions(&self, key: &str, now: Timestamp) -> Result<(), StorageError> {
        let full = self.full_key(key);
        // Every version and delete marker of exactly this key, page by page.
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.target.bucket)
                .prefix(&full)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.error(key, e))?;
            versions.extend(
                page.versions()
                    .iter()
                    .filter(|v| v.key() == Some(full.as_str()))
                    .filter_map(|v| v.version_id().map(str::to_string)),
            );
            markers.extend(
                page.delete_markers()
                    .iter()
                    .filter(|m| m.key() == Some(full.as_str()))
                    .filter_map(|m| m.version_id().map(str::to_string)),
            );
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() && version_marker.is_none() {
                break;
            }
        }
        for version in &versions {
            let mut req = self
                .client
                .head_object()
                .bucket(&self.target.bucket)
                .key(&full);
            // "null" is the one version of an object in a bucket without versioning.
            if version != "null" {
                req = req.version_id(version);
            }
            let head = req.send().await.map_err(|e| self.error(key, e))?;
            if let Some(until) = head.object_lock_retain_until_date().and_then(from_sdk) {
                if until > now {
                    return Err(StorageError::Retained {
                        url: self.url.clone(),
                        key: key.to_string(),
                        until,
                    });
                }
            }
        }
        for version in versions.iter().chain(&markers) {
            let mut req = self
                .client
                .delete_object()
                .bucket(&self.target.bucket)
                .key(&full);
            if version != "null" {
                req = req.version_id(version);
            }
            req.send().await.map_err(|e| self.error(key, e))?;
        }
        Ok(())
    }

    /// Delete one version of `key`; S3 refuses while that version is retained.
    pub async fn delete_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.target.bucket)
            .key(self.full_key(key))
            .version_id(version)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    /// The bucket's versioning and Object Lock settings; `now` is the storage's time, for
    /// removing the probe object some servers need.
    pub async fn bucket_settings(
        &self,
        now: jiff::Timestamp,
    ) -> Result<BucketLockSettings, StorageError> {
        let mut settings = BucketLockSettings::default();
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.target.bucket)
            .send()
            .await
        {
            Ok(out) => {
                if let Some(conf) = out.object_lock_configuration() {
                    settings.object_lock_enabled =
                        conf.object_lock_enabled() == Some(&ObjectLockEnabled::Enabled);
                    if let Some(rule) = conf.rule().and_then(|r| r.default_retention()) {
                        let period = match (rule.days(), rule.years()) {
                            (Some(d), _) => format!("{d} days"),
                            (_, Some(y)) => format!("{y} years"),
                            _ => "no period".into(),
                        };
                        let mode = rule.mode().map(|m| m.as_str().to_string());
                        settings.default_retention =
                            Some(format!("{} for {period}", mode.as_deref().unwrap_or("?")));
                    }
                }
            }
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => {}
            Err(e) => return Err(self.error("(bucket Object Lock configuration)", e)),
        }
        settings.versioning = match self
            .client
            .get_bucket_versioning()
            .bucket(&self.target.bucket)
            .send()
            .await
        {
            Ok(out) => match out.status() {
                Some(s) => s.as_str().to_string(),
                None => "never enabled".into(),
            },
            // Object Lock cannot be enabled without versioning, and S3 refuses to suspend it.
            Err(_) if settings.object_lock_enabled => "Enabled (Object Lock requires it)".into(),
            // Some S3-compatible servers answer in a form the SDK cannot read: ask the bucket
            // itself, with an object that gets a version id only if versioning is on.
            Err(_) => {
                let probe = format!(
                    "doctor/versioning-probe-{}",
                    hex::encode(super::rand_suffix())
                );
                self.put(&probe, Bytes::from_static(b"vouch doctor"), None, false)
                    .await?;
                let version = self.retention(&probe).await.map(|r| r.version);
                self.delete_all_versions(&probe, now).await?;
                match version? {
                    Some(v) if v != "null" => "Enabled".into(),
                    _ => "not enabled".into(),
                }
            }
        };
        Ok(settings)
    }
}

fn to_sdk(t: Timestamp) -> DateTime {
    DateTime::from_secs(t.as_second())
}

fn from_sdk(t: &DateTime) -> Option<Timestamp> {
    Timestamp::from_second(t.secs()).ok()
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    url: &str,
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError {
    let (url, key) = (url.to_string(), key.to_string());
    let status = e.raw_response().map(|r| r.status().as_u16());
    let detail = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
        None => super::error_chain(&e),
    };
    match (&e, status, e.code()) {
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => {
            StorageError::Unreachable { url, key, detail }
        }
        (_, Some(404), _) | (_, _, Some("NoSuchKey" | "NotFound")) => {
            StorageError::NotFound { url, key }
        }
        (_, Some(412), _) | (_, _, Some("PreconditionFailed")) => {
            StorageError::AlreadyExists { url, key }
        }
        (_, Some(401 | 403), _) | (_, _, Some("AccessDenied")) => {
            StorageError::Denied { url, key, detail }
        }
        (_, Some(s), _) if s == 429 || s >= 500 => StorageError::Unreachable { url, key, detail },
        (SdkError::ResponseError(_), _, _) => StorageError::Unreachable { url, key, detail },
        _ => StorageError::Other { url, key, detail },
    }
}
