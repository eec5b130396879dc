//! The local metadata cache: copies of a repository's index files, snapshots and tree packs,
//! so that a nightly backup over a school's uplink does not download them again. One folder
//! per repository id (`<root>/<id>/index/…`, `snapshots/…`, `data/xx/…`).
//!
//! Only objects named by the blake3 of their bytes are cached, and a copy is checked against
//! its name every time it is read: a damaged copy is removed and the object fetched again,
//! never used. What the repository lists decides what is there (lists always go to the
//! storage), and the cache is pruned of what it no longer lists. Copies are written to a
//! temporary file and renamed, so two processes can share a cache. `check` and the drills'
//! workers read the repository itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{StorageError, Store};

/// A repository's folder in the cache.
#[derive(Debug, Clone)]
pub(super) struct Cache {
    dir: PathBuf,
}

/// What a cache folder holds, for `vouch cache`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheUsage {
    /// The repository id.
    pub repository: String,
    pub path: PathBuf,
    pub files: u64,
    pub bytes: u64,
}

/// Whether `key` names its bytes: `index/<64 hex>`, `snapshots/<64 hex>`, `data/xx/<64 hex>`.
fn cacheable(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or_default();
    (key.starts_with("index/") || key.starts_with("snapshots/") || key.starts_with("data/"))
        && name.len() == 64
        && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn named_by(key: &str, bytes: &[u8]) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| blake3::hash(bytes).to_hex().as_str() == name)
}

impl Cache {
    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    async fn read(&self, key: &str) -> Option<Bytes> {
        tokio::fs::read(self.path(key)).await.ok().map(Bytes::from)
    }

    async fn write(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(key);
        let parent = path.parent().expect("a key has a folder");
        if !parent.is_dir() {
            crate::sys::create_private_dir(parent)?;
        }
        let mut tag = [0u8; 6];
        getrandom::fill(&mut tag).expect("the operating system's random source");
        let tmp = parent.join(format!(
            ".{}.{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("part"),
            hex::encode(tag)
        ));
        let bytes = bytes.to_vec();
        let written = tokio::task::spawn_blocking({
            let tmp = tmp.clone();
            move || crate::sys::write_private(&tmp, &bytes)
        })
        .await
        .expect("cache write");
        match written {
            Ok(()) => tokio::fs::rename(&tmp, &path).await,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

impl Store {
    /// Keep copies of the repository's metadata under `root/<repository id>/` (the id is
    /// known once the repository is opened).
    pub fn with_cache_root(mut self, root: PathBuf) -> Self {
        self.cache_root = Some(root);
        self
    }

    /// The cache folder of repository `id`, when the store was given a cache root. A
    /// repository on a local disk is read directly: a copy would save nothing.
    pub(crate) fn cache_for(mut self, id: &str) -> Self {
        self.cache = self
            .cache_root
            .as_ref()
            .filter(|_| self.local_root.is_none())
            .map(|root| Cache { dir: root.join(id) });
        self
    }

    /// Whether reads of metadata go through a cache.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(|c| c.dir.as_path())
    }

    /// Read an object through the cache: a copy that matches its name, else the storage's
    /// bytes (kept in the cache when they match their name). Objects not named by their hash
    /// are always read from the storage.
    pub async fn get_cached(&self, key: &str) -> Result<Bytes, StorageError> {
        let Some(cache) = self.cache.as_ref().filter(|_| cacheable(key)) else {
            return self.get(key).await;
        };
        if let Some(bytes) = cache.read(key).await {
            if named_by(key, &bytes) {
                return Ok(bytes);
            }
            tracing::warn!(
                key,
                cache = %cache.dir.display(),
                "the cached copy is damaged (its bytes do not match its name); it is fetched again from the repository"
            );
            let _ = tokio::fs::remove_file(cache.path(key)).await;
        }
        let bytes = self.get(key).await?;
        if named_by(key, &bytes) {
            if let Err(e) = cache.write(key, &bytes).await {
                tracing::debug!(key, error = %e, "could not keep a copy in the cache");
            }
        }
        Ok(bytes)
    }

    /// Store an object and keep a copy in the cache, for metadata this process wrote (an
    /// index file, a snapshot, a tree pack): the next run need not download what it uploaded.
    pub async fn put_cached(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.put(key, bytes.clone()).await?;
        if let Some(cache) = self.cache.as_ref().filter(|_| cacheable(key)) {
            if let Err(e) = cache.write(key, &bytes).await {
                tracing::debug!(key, error = %e, "could not keep a copy in the cache");
            }
        }
        Ok(())
    }

    /// Remove from the cache the copies under `dir` (`"index/"`, `"snapshots/"`, `"data/"`)
    /// whose keys are not in `keep`: the repository no longer has them.
    pub(crate) fn cache_retain(&self, dir: &str, keep: &HashSet<String>) {
        let Some(cache) = &self.cache else { return };
        let mut stack = vec![cache.dir.join(dir.trim_end_matches('/'))];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                    continue;
                }
                let Some(key) = path.strip_prefix(&cache.dir).ok().and_then(|k| k.to_str()) else {
                    continue;
                };
                // Leftovers of a write that was cut off go too.
                let partial = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if partial || !keep.contains(key) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

/// What the cache under `root` holds, one entry per repository.
pub fn cache_usage(root: &Path) -> std::io::Result<Vec<CacheUsage>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let mut usage = CacheUsage {
            repository: entry.file_name().to_string_lossy().into_owned(),
            path: entry.path(),
            files: 0,
            bytes: 0,
        };
        let mut stack = vec![entry.path()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)?.flatten() {
                let meta = e.metadata()?;
                if meta.is_dir() {
                    stack.push(e.path());
                } else {
                    usage.files += 1;
                    usage.bytes += meta.len();
                }
            }
        }
        out.push(usage);
    }
    out.sort_by(|a, b| a.repository.cmp(&b.repository));
    Ok(out)
}

/// Where a person's commands keep the cache: `$VOUCH_CACHE_DIR`, else `$XDG_CACHE_HOME/vouch`,
/// else `~/.cache/vouch` (the service keeps its own under its state directory).
pub fn default_cache_root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VOUCH_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("vouch"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/vouch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_named_by_their_hash_are_cached() {
        let h = "ab".repeat(32);
        assert!(cacheable(&format!("index/{h}")));
        assert!(cacheable(&format!("snapshots/{h}")));
        assert!(cacheable(&format!("data/ab/{h}")));
        assert!(!cacheable("config"));
        assert!(!cacheable(&format!("locks/{h}")));
        assert!(!cacheable("index/short"));
        assert!(named_by(
            &format!("index/{}", blake3::hash(b"x").to_hex()),
            b"x"
        ));
        assert!(!named_by(
            &format!("index/{}", blake3::hash(b"x").to_hex()),
            b"y"
        ));
    }
}
