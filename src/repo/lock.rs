//! Repository locks, restic's protocol: write a lock object, list the others, back off if one
//! conflicts. It needs nothing from the store but put, list and delete, so it works on stores
//! that ignore conditional writes. Locks are refreshed while held; a lock not refreshed for
//! `STALE_AFTER`, or held by a process that no longer exists on this host, is stale.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::crypto::Kind;
use super::format::lock::LockFile;
use super::{RepoError, Repository};
use crate::clock::Clock;
use crate::storage::{StorageError, Store};

/// How long a lock lives without a refresh.
pub const STALE_AFTER: time::Duration = time::Duration::minutes(30);
/// How often a held lock is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Backup, restore, check: any number at once.
    Shared,
    /// Prune: alone.
    Exclusive,
}

/// A held lock. `release` removes it; dropping it stops the refresh and leaves it to go stale.
pub struct LockGuard {
    store: Store,
    key: Arc<Mutex<String>>,
    refresher: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    pub async fn release(self) -> Result<(), RepoError> {
        self.refresher.abort();
        let key = self.key.lock().await.clone();
        match self.store.delete(&key).await {
            Ok(()) => Ok(()),
            // Credentials that may write but not delete (a school's backup-only key): the
            // work is done; the lock goes stale once this process has exited.
            Err(StorageError::Denied { .. }) => {
                released_in_place().insert(key.clone());
                tracing::warn!(
                    lock = key,
                    "the storage refused to delete this lock file (the credentials cannot delete); it is stale once this process ends"
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

fn describe(l: &LockFile) -> String {
    format!(
        "{} (pid {} on {}, user {}, {} lock since {})",
        l.operation,
        l.pid,
        l.host,
        l.username,
        if l.exclusive { "exclusive" } else { "shared" },
        crate::clock::human(l.time)
    )
}

/// Whether a lock no longer protects anything.
pub fn is_stale(l: &LockFile, now: OffsetDateTime, this_host: &str) -> bool {
    if now - l.time > STALE_AFTER {
        return true;
    }
    l.host == this_host && !crate::sys::pid_alive(l.pid)
}

/// The locks in the repository that are not stale (key, lock).
/// Lock files this process released but could not delete: they protect nothing, and a later
/// job of the same long-running process (the daemon) must not wait for them to go stale.
fn released_in_place() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static RELEASED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    RELEASED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

pub async fn live_locks(repo: &Repository) -> Result<Vec<(String, LockFile)>, RepoError> {
    let now = repo.clock().now();
    let host = crate::sys::hostname();
    let mut out = Vec::new();
    for (key, _) in repo.store().list("locks/").await? {
        if released_in_place().contains(&key) {
            continue;
        }
        match repo.load_document::<LockFile>(Kind::Lock, &key).await {
            Ok(l) if !is_stale(&l, now, &host) => out.push((key, l)),
            Ok(_) => {}
            // Deleted between list and read: released meanwhile.
            Err(e) if e.is_storage_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn conflicts(mode: LockMode, other: &LockFile) -> bool {
    mode == LockMode::Exclusive || other.exclusive
}

pub(super) async fn acquire(
    repo: &Repository,
    mode: LockMode,
    operation: &str,
) -> Result<LockGuard, RepoError> {
    let locked = |by: &LockFile| RepoError::Locked {
        url: repo.url().to_string(),
        by: describe(by),
    };
    if let Some((_, l)) = live_locks(repo)
        .await?
        .iter()
        .find(|(_, l)| conflicts(mode, l))
    {
        return Err(locked(l));
    }
    let key = put_lock(
        repo.store(),
        repo.keys(),
        repo.clock().as_ref(),
        mode,
        operation,
    )
    .await?;
    // Someone may have written theirs between our list and our write: look again.
    if let Some((_, l)) = live_locks(repo)
        .await?
        .iter()
        .find(|(k, l)| *k != key && conflicts(mode, l))
    {
        let err = locked(l);
        repo.store().delete(&key).await?;
        return Err(err);
    }
    let key = Arc::new(Mutex::new(key));
    let refresher = {
        let key = key.clone();
        let store = repo.store().clone();
        let keys = repo.keys().clone();
        let clock = repo.clock().clone();
        let operation = operation.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let mut current = key.lock().await;
                match put_lock(&store, &keys, clock.as_ref(), mode, &operation).await {
                    Ok(new_key) => {
                        let _ = store.delete(&current).await;
                        *current = new_key;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not refresh the repository lock"),
                }
            }
        })
    };
    Ok(LockGuard {
        store: repo.store().clone(),
        key,
        refresher,
    })
}

/// Write a lock object stamped now; returns its key.
async fn put_lock(
    store: &Store,
    keys: &super::crypto::Keys,
    clock: &dyn Clock,
    mode: LockMode,
    operation: &str,
) -> Result<String, RepoError> {
    let lock = LockFile {
        version: super::format::FORMAT_VERSION,
        host: crate::sys::hostname(),
        pid: std::process::id(),
        username: crate::sys::username(),
        time: clock.now(),
        exclusive: mode == LockMode::Exclusive,
        operation: operation.to_string(),
    };
    let sealed = keys.seal_document(Kind::Lock, &serde_json::to_vec(&lock).expect("json"));
    let key = format!("locks/{}", hex::encode(super::ids::object_name(&sealed)));
    store.put(&key, bytes::Bytes::from(sealed)).await?;
    Ok(key)
}

/// Remove stale locks (all locks with `all`); returns how many were removed.
pub async fn remove_locks(repo: &Repository, all: bool) -> Result<usize, RepoError> {
    let now = repo.clock().now();
    let host = crate::sys::hostname();
    let mut removed = 0;
    for (key, _) in repo.store().list("locks/").await? {
        let remove = match repo.load_document::<LockFile>(Kind::Lock, &key).await {
            Ok(l) => all || is_stale(&l, now, &host),
            Err(e) if e.is_storage_not_found() => false,
            // An unreadable lock protects nothing.
            Err(_) => true,
        };
        if remove {
            repo.store().delete(&key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
