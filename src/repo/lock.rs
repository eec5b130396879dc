//! Repository locks, restic's protocol: write a lock object, list the others, back off if one
//! conflicts. It needs nothing from the store but put, list and delete, so it works on stores
//! that ignore conditional writes. Locks are refreshed while held; a lock not refreshed for
//! `STALE_AFTER`, or held by a process that no longer exists on this host, is stale.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Mutex;

use super::crypto::Kind;
use super::format::lock::LockFile;
use super::{RepoError, Repository};
use crate::clock::Clock;
use crate::storage::{StorageError, Store};

/// How long a lock lives without a refresh.
pub const STALE_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_mins(30);
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
/// A guard without a lock (`LockGuard::none`) stands in when a read-only repository is read.
pub struct LockGuard {
    held: Option<Held>,
}

struct Held {
    store: Store,
    url: String,
    key: Arc<Mutex<String>>,
    refresher: tokio::task::JoinHandle<()>,
    /// When the lock file in storage was last written, by the wall clock.
    refreshed: Arc<std::sync::Mutex<Timestamp>>,
    /// Set for good when two writes of the lock were further apart than `TRUST_FOR`: even
    /// once it is written again, another process may have judged it stale in between.
    lapsed: Arc<std::sync::atomic::AtomicBool>,
}

/// A lock older than this may be judged stale by another process before the work that it
/// covers is stored: `LockGuard::check` then refuses to go on.
const TRUST_FOR: jiff::SignedDuration = jiff::SignedDuration::from_mins(20);

impl LockGuard {
    /// No lock at all: reading a repository that refuses writes, or `--no-lock`.
    pub fn none() -> LockGuard {
        LockGuard { held: None }
    }

    /// Whether the lock still protects this process: it has been refreshed recently enough
    /// that no other process can have judged it stale. A backup checks before it stores its
    /// snapshot and prune before it deletes anything: a lock that could not be refreshed
    /// (storage unreachable, the machine suspended) may have let another process in.
    pub fn check(&self) -> Result<(), RepoError> {
        let Some(held) = &self.held else {
            return Ok(());
        };
        let refreshed = *held.refreshed.lock().unwrap_or_else(|e| e.into_inner());
        let age = wall_clock().duration_since(refreshed);
        if held.lapsed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RepoError::LockLost {
                url: held.url.clone(),
                minutes: TRUST_FOR.as_mins(),
            });
        }
        if age > TRUST_FOR {
            return Err(RepoError::LockLost {
                url: held.url.clone(),
                minutes: age.as_mins(),
            });
        }
        Ok(())
    }

    pub async fn release(mut self) -> Result<(), RepoError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        held.refresher.abort();
        let key = held.key.lock().await.clone();
        match held.store.delete(&key).await {
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
        if let Some(held) = &self.held {
            held.refresher.abort();
        }
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
pub fn is_stale(l: &LockFile, now: Timestamp, this_host: &str) -> bool {
    if now.duration_since(l.time) > STALE_AFTER {
        return true;
    }
    l.host == this_host && !crate::sys::pid_alive(l.pid)
}

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

/// A lock in the repository that still protects something.
pub enum Holder {
    Lock(LockFile),
    /// A lock file that cannot be read (damaged, or not written by vouch), younger than the
    /// stale age: nobody can tell what it protects, so it conflicts with everything until it
    /// is that old or removed.
    Unreadable {
        written: Timestamp,
        why: String,
    },
}

impl Holder {
    fn conflicts(&self, mode: LockMode) -> bool {
        match self {
            Holder::Lock(l) => mode == LockMode::Exclusive || l.exclusive,
            Holder::Unreadable { .. } => true,
        }
    }

    fn describe(&self, key: &str) -> String {
        match self {
            Holder::Lock(l) => describe(l),
            Holder::Unreadable { written, why } => format!(
                "an unreadable lock file {key} written {} ({why}); it counts as stale 30 minutes after it was written, and `vouch unlock` removes it now",
                crate::clock::human(*written)
            ),
        }
    }
}

/// The locks in the repository that are not stale (key, holder). A lock file that cannot be
/// read is stale once it is older than the stale age, by its time in storage.
pub async fn live_locks(repo: &Repository) -> Result<Vec<(String, Holder)>, RepoError> {
    live_locks_but(repo, None).await
}

/// The live locks other than `ours` (which is not read: it is the one just written). The lock
/// files are read eight at a time.
async fn live_locks_but(
    repo: &Repository,
    ours: Option<&str>,
) -> Result<Vec<(String, Holder)>, RepoError> {
    use futures::StreamExt;
    let now = repo.clock().now();
    let wall = wall_clock();
    let host = crate::sys::hostname();
    let listed = repo.store().list_modified("locks/").await?;
    let listed: Vec<_> = {
        let released = released_in_place();
        listed
            .into_iter()
            .filter(|(key, _, _)| Some(key.as_str()) != ours && !released.contains(key))
            .collect()
    };
    let read: Vec<_> = futures::stream::iter(listed)
        .map(|(key, _, written)| async move {
            let doc = repo.load_document::<LockFile>(Kind::Lock, &key).await;
            (key, written, doc)
        })
        .buffered(8)
        .collect()
        .await;
    let mut out = Vec::new();
    for (key, written, doc) in read {
        match doc {
            Ok(l) if !is_stale(&l, now, &host) => out.push((key, Holder::Lock(l))),
            Ok(_) => {}
            // Deleted between list and read: released meanwhile.
            Err(e) if e.is_storage_not_found() => {}
            Err(RepoError::Corrupt { detail, .. }) => {
                if wall.duration_since(written) <= STALE_AFTER {
                    out.push((
                        key,
                        Holder::Unreadable {
                            written,
                            why: detail,
                        },
                    ));
                } else {
                    tracing::warn!(
                        lock = key,
                        why = detail,
                        "ignoring an unreadable lock file older than the stale age; `vouch unlock` removes it"
                    );
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub(super) async fn acquire(
    repo: &Repository,
    mode: LockMode,
    operation: &str,
) -> Result<LockGuard, RepoError> {
    let locked = |key: &str, by: &Holder| RepoError::Locked {
        url: repo.url().to_string(),
        by: by.describe(key),
    };
    // Write first, then look: a lock in the way is found by the one listing after the write
    // (ours is then removed), and over a link a listing before it would be a round trip more
    // on every command. Two that start at once both see each other and both back off.
    let key = match put_lock(
        repo.store(),
        repo.keys(),
        repo.clock().as_ref(),
        mode,
        operation,
    )
    .await
    {
        Ok(key) => key,
        // A repository that refuses writes is still not read through a lock in the way (a
        // reader may then go on without one; that is the caller's choice).
        Err(RepoError::Storage(e)) if e.is_read_only() => {
            if let Some((k, l)) = live_locks(repo)
                .await?
                .iter()
                .find(|(_, l)| l.conflicts(mode))
            {
                return Err(locked(k, l));
            }
            return Err(RepoError::Storage(e));
        }
        Err(e) => return Err(e),
    };
    let others = match live_locks_but(repo, Some(&key)).await {
        Ok(others) => others,
        Err(e) => {
            let _ = repo.store().delete(&key).await;
            return Err(e);
        }
    };
    if let Some((k, l)) = others.iter().find(|(_, l)| l.conflicts(mode)) {
        let err = locked(k, l);
        repo.store().delete(&key).await?;
        return Err(err);
    }
    let key = Arc::new(Mutex::new(key));
    let refreshed = Arc::new(std::sync::Mutex::new(wall_clock()));
    let lapsed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refresher = {
        let key = key.clone();
        let refreshed = refreshed.clone();
        let lapsed = lapsed.clone();
        let store = repo.store().clone();
        let keys = repo.keys().clone();
        let clock = repo.clock().clone();
        let operation = operation.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let mut current = key.lock().await;
                let written = wall_clock();
                match put_lock(&store, &keys, clock.as_ref(), mode, &operation).await {
                    Ok(new_key) => {
                        {
                            let mut last = refreshed.lock().unwrap_or_else(|e| e.into_inner());
                            // A gap (storage unreachable, the machine asleep) long enough for
                            // others to judge the lock stale is not mended by writing it again.
                            if written.duration_since(*last) > TRUST_FOR {
                                lapsed.store(true, std::sync::atomic::Ordering::SeqCst);
                            }
                            *last = written;
                        }
                        let _ = store.delete(&current).await;
                        *current = new_key;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not refresh the repository lock"),
                }
            }
        })
    };
    Ok(LockGuard {
        held: Some(Held {
            store: repo.store().clone(),
            url: repo.url().to_string(),
            key,
            refresher,
            refreshed,
            lapsed,
        }),
    })
}

/// How long a lock has really been held is a question about the wall clock, whatever clock
/// the repository's records are stamped with (tests run those on a manual one).
fn wall_clock() -> Timestamp {
    crate::clock::SystemClock.now()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{InitOptions, Repository};
    use crate::storage::{RepoUrl, S3Options, Store};

    #[tokio::test]
    async fn a_lock_that_went_unrefreshed_for_too_long_is_no_longer_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let url = RepoUrl::Local(dir.path().join("repo"));
        let store = Store::create(&url, &S3Options::default(), true).unwrap();
        let password = crate::repo::crypto::Secret::new("p");
        let repo = Repository::init(store, &password, &InitOptions::default())
            .await
            .unwrap();
        let guard = repo.lock(LockMode::Shared, "backup").await.unwrap();
        guard.check().unwrap();
        let held = guard.held.as_ref().unwrap();
        // Last written 21 minutes ago: another process may judge it stale soon.
        *held.refreshed.lock().unwrap() = wall_clock() - jiff::SignedDuration::from_mins(21);
        assert!(matches!(guard.check(), Err(RepoError::LockLost { .. })));
        // Written again just now, but after a gap: still not trusted.
        *held.refreshed.lock().unwrap() = wall_clock();
        guard.check().unwrap();
        held.lapsed.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(guard.check(), Err(RepoError::LockLost { .. })));
        guard.release().await.unwrap();
    }
}
