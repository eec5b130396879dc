//! Key files: several passphrases, each wrapping the same master secret.

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;

use crate::storage::Store;

use super::crypto::{self, KdfParams, Kind, MasterSecret, Secret};
use super::format::key::KeyFile;
use super::ids::{KeyId, object_name};
use super::{Damage, RepoError};

pub(super) async fn write_key(
    store: &Store,
    master: &MasterSecret,
    password: &Secret,
    now: Timestamp,
) -> Result<KeyId, RepoError> {
    let kdf = KdfParams::new_random();
    let password = password.clone();
    let (kdf, kek) = tokio::task::spawn_blocking(move || {
        let kek = kdf.derive(&password);
        (kdf, kek)
    })
    .await
    .expect("kdf task");
    let kek = kek.map_err(|e| RepoError::Invalid(e.to_string()))?;
    let mut sealed = Vec::new();
    crypto::seal_into(
        &kek,
        Kind::Key,
        &crypto::random_array(),
        master.as_bytes(),
        &mut sealed,
    );
    let file = KeyFile {
        version: super::format::FORMAT_VERSION,
        created: now,
        host: crate::sys::hostname(),
        username: crate::sys::username(),
        kdf,
        sealed_master: sealed,
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("json");
    let id = KeyId::from_bytes(object_name(&bytes));
    store
        .put_new(&format!("keys/{id}"), Bytes::from(bytes))
        .await?;
    Ok(id)
}

/// Every key file, oldest first, and beside them the key files that cannot be read (with
/// why): one damaged key file must not lock out the passphrases of the others.
/// The key files that parse, and the keys of those that do not with why.
pub(super) type Listed = (Vec<(KeyId, KeyFile)>, Vec<(String, String)>);

pub(super) async fn list(store: &Store) -> Result<Listed, RepoError> {
    let listed = store.list("keys/").await?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let loaded: Vec<_> = futures::stream::iter(listed)
        .map(|(key, _)| async move { (store.get(&key).await, key) })
        .buffer_unordered(8)
        .collect()
        .await;
    for (bytes, key) in loaded {
        let bytes = match bytes {
            Ok(b) => b,
            // Removed between list and read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match parse(&key, &bytes) {
            Ok(k) => out.push(k),
            Err(why) => bad.push((key, why.to_string())),
        }
    }
    out.sort_by_key(|(_, k)| k.created);
    bad.sort();
    Ok((out, bad))
}

/// A key file's id and contents, or why it cannot be used.
fn parse(key: &str, bytes: &[u8]) -> Result<(KeyId, KeyFile), Damage> {
    let name = key.rsplit('/').next().unwrap_or_default();
    let id: KeyId = name.parse().map_err(|_| Damage::Name("a key id"))?;
    if id.as_bytes() != &object_name(bytes) {
        return Err(Damage::NameMismatch);
    }
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| Damage::Contents {
        what: "a valid key file",
        why: e.to_string(),
    })?;
    Ok((id, file))
}

/// Find a key that `password` opens and whose master secret `fits` (opens the config), and
/// return it. Damaged key files are skipped and named in a warning; a key that opens but does
/// not fit (left by an interrupted `init`) is passed over for the next.
/// Find the key file that `password` opens among `listed` (from `list`), and whose master
/// secret `fits` the repository.
pub(super) async fn unlock(
    store: &Store,
    listed: Listed,
    password: &Secret,
    fits: impl Fn(&MasterSecret) -> bool + Send + 'static,
) -> Result<(KeyId, MasterSecret), RepoError> {
    let (keys, bad) = listed;
    for (key, why) in &bad {
        tracing::warn!(
            key,
            why,
            "a key file cannot be read; trying the others (`vouch check` reports it)"
        );
    }
    if keys.is_empty() {
        let detail = match bad.first() {
            Some((key, why)) => format!(
                "no key file can be read ({} damaged; {key}: {why}); restore keys/ from a copy",
                bad.len()
            ),
            None => {
                "the repository has a config but no key files; restore keys/ from a copy".into()
            }
        };
        return Err(RepoError::Corrupt {
            url: store.url().to_string(),
            object: "keys/".into(),
            detail,
        });
    }
    let count = keys.len();
    let password = password.clone();
    // The cheapest first: a planted key file (its parameters and date are whatever its
    // writer chose) cannot make every open pay for it before the real keys are tried.
    let mut keys = keys;
    keys.sort_by_key(|(_, k)| (k.kdf.cost(), k.created));
    let (found, opened) = tokio::task::spawn_blocking(move || {
        let mut opened = 0;
        for (id, file) in keys {
            let Ok(kek) = file.kdf.derive(&password) else {
                continue;
            };
            if let Ok(plain) = crypto::open(&kek, Kind::Key, &file.sealed_master) {
                if let Ok(bytes) = <[u8; 32]>::try_from(plain.as_slice()) {
                    let master = MasterSecret::from_bytes(bytes);
                    opened += 1;
                    if fits(&master) {
                        return (Some((id, master)), opened);
                    }
                }
            }
        }
        (None, opened)
    })
    .await
    .expect("kdf task");
    if let Some(found) = found {
        return Ok(found);
    }
    if opened > 0 {
        return Err(RepoError::Corrupt {
            url: store.url().to_string(),
            object: "config".into(),
            detail: format!(
                "the passphrase opens {opened} key(s), but none of them decrypts the config"
            ),
        });
    }
    Err(RepoError::WrongPassword {
        url: store.url().to_string(),
        keys: count,
        damaged: bad.len(),
    })
}

pub(super) async fn remove(repo: &super::Repository, id: &KeyId) -> Result<(), RepoError> {
    let (keys, _) = list(repo.store()).await?;
    if !keys.iter().any(|(k, _)| k == id) {
        return Err(RepoError::Invalid(format!(
            "there is no key {id} in {}; `vouch key list` shows the keys",
            repo.url()
        )));
    }
    if *id == repo.key_id() {
        return Err(RepoError::Invalid(
            "that is the key this passphrase opened; open the repository with another passphrase to remove it".into(),
        ));
    }
    if keys.len() < 2 {
        return Err(RepoError::Invalid("the last key cannot be removed".into()));
    }
    match repo.store().delete(&format!("keys/{id}")).await {
        Ok(()) => Ok(()),
        // Prune keeps extending key files, or a repository could lose every key to expiry.
        Err(crate::storage::StorageError::Retained { .. }) => Err(RepoError::Invalid(format!(
            "key {id} cannot be removed: this repository keeps every object, key files included, under S3 Object Lock, and prune extends them for as long as the repository lives; a passphrase given out stays usable (add a new key and keep the old passphrase safe, or move to a new repository)"
        ))),
        Err(e) => Err(e.into()),
    }
}
