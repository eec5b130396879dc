//! The retained-write side of the store: S3 Object Lock retention (every object written
//! through aws-sdk-s3 with its retention, reading and extending it), the bucket's settings,
//! and `vouch doctor`'s probes (can these credentials delete; is the lock really enforced).
use std::sync::Arc;

use bytes::Bytes;

use super::{
    BucketLockSettings, ObjectRetention, Retention, RetentionMode, StorageError, Store, object_lock,
};

impl Store {
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

    pub(super) fn lock_client(&self) -> Result<Arc<object_lock::ObjectLock>, StorageError> {
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
        until: jiff::Timestamp,
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
        self.retry_loop("(bucket settings)", || lock.bucket_settings(self.now()))
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
        match lock.delete_all_versions(&key, self.now()).await {
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
        let now = self.now();
        for (key, _) in self.list("doctor/").await? {
            // Expired leftovers go; those still retained stay for a later doctor.
            let _ = lock.delete_all_versions(&key, now).await;
        }
        let key = format!("doctor/canary-{}", hex::encode(rand_suffix()));
        let until = now + jiff::SignedDuration::from_mins(5);
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

pub(super) fn rand_suffix() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random bytes");
    b
}
