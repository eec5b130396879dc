//! Key files: several passphrases, each wrapping the same master secret.

use bytes::Bytes;
use futures::StreamExt;
use time::OffsetDateTime;

use crate::storage::Store;

use super::RepoError;
use super::crypto::{self, KdfParams, Kind, MasterSecret, Secret};
use super::format::key::KeyFile;
use super::ids::{KeyId, object_name};

pub(super) async fn write_key(
    store: &Store,
    master: &MasterSecret,
    password: &Secret,
    now: OffsetDateTime,
) -> Result<KeyId, RepoError> {
    let kdf = KdfParams::new_random();
    let password = password.clone();
    let (kdf, kek) = tokio::task::spawn_blocking(move || {
        let kek = kdf.derive(&password);
        (kdf, kek)
    })
    .await
    .expect("kdf task");
    let kek = kek.map_err(RepoError::Invalid)?;
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

pub(super) async fn list(store: &Store) -> Result<Vec<(KeyId, KeyFile)>, RepoError> {
    let listed = store.list("keys/").await?;
    let mut out = Vec::new();
    let loaded: Vec<_> = futures::stream::iter(listed)
        .map(|(key, _)| async move { (store.get(&key).await, key) })
        .buffer_unordered(8)
        .collect()
        .await;
    for (bytes, key) in loaded {
        let bytes = bytes?;
        let name = key.rsplit('/').next().unwrap_or_default();
        let corrupt = |detail: String| RepoError::Corrupt {
            url: store.url().to_string(),
            object: key.clone(),
            detail,
        };
        let id: KeyId = name
            .parse()
            .map_err(|e: super::ids::IdParseError| corrupt(e.to_string()))?;
        if id.as_bytes() != &object_name(&bytes) {
            return Err(corrupt("its bytes do not match its name (blake3)".into()));
        }
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        out.push((id, file));
    }
    out.sort_by_key(|(_, k)| k.created);
    Ok(out)
}

/// Find the key that `password` opens and return the master secret.
pub(super) async fn unlock(
    store: &Store,
    password: &Secret,
) -> Result<(KeyId, MasterSecret), RepoError> {
    let keys = list(store).await?;
    if keys.is_empty() {
        return Err(RepoError::Corrupt {
            url: store.url().to_string(),
            object: "keys/".into(),
            detail: "the repository has a config but no key files; restore keys/ from a copy"
                .into(),
        });
    }
    let count = keys.len();
    let password = password.clone();
    let found = tokio::task::spawn_blocking(move || {
        for (id, file) in keys {
            let Ok(kek) = file.kdf.derive(&password) else {
                continue;
            };
            if let Ok(plain) = crypto::open(&kek, Kind::Key, &file.sealed_master) {
                if let Ok(bytes) = <[u8; 32]>::try_from(plain.as_slice()) {
                    return Some((id, MasterSecret::from_bytes(bytes)));
                }
            }
        }
        None
    })
    .await
    .expect("kdf task");
    found.ok_or_else(|| RepoError::WrongPassword {
        url: store.url().to_string(),
        keys: count,
    })
}

pub(super) async fn remove(repo: &super::Repository, id: &KeyId) -> Result<(), RepoError> {
    let keys = list(repo.store()).await?;
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
