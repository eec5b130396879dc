//! The journal's copy in the repository: each row, sealed, under `journal/<host>/<n>-<id>`.
//! A row is mirrored into the repository its run used (an annotation goes where its run went).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::repo::crypto::Kind;
use crate::repo::ids::object_name;
use crate::repo::{RepoError, Repository};

use super::store::{Entry, Journal, JournalError, Record};

/// Store one row in the repository.
pub async fn mirror_entry(repo: &Repository, host: &str, entry: &Entry) -> Result<(), RepoError> {
    let json = serde_json::to_vec(entry).expect("entries serialize");
    let sealed = repo.keys().seal_document(Kind::Journal, &json);
    let key = format!(
        "journal/{host}/{:010}-{}",
        entry.seq,
        hex::encode(object_name(&sealed))
    );
    repo.store().put(&key, Bytes::from(sealed)).await?;
    Ok(())
}

/// Every mirrored row of `host` in the repository, by number.
pub async fn load_mirror(
    repo: &Repository,
    host: &str,
) -> Result<(BTreeMap<i64, Entry>, Vec<String>), RepoError> {
    let mut rows = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (key, _) in repo.store().list(&format!("journal/{host}/")).await? {
        let name = key.rsplit('/').next().unwrap_or_default();
        let Some((_, id)) = name.split_once('-') else {
            unreadable.push(key);
            continue;
        };
        let bytes = repo.store().get(&key).await?;
        if hex::encode(object_name(&bytes)) != id {
            unreadable.push(key);
            continue;
        }
        match repo
            .keys()
            .open_document(Kind::Journal, &bytes)
            .ok()
            .and_then(|plain| serde_json::from_slice::<Entry>(&plain).ok())
        {
            Some(e) => {
                rows.insert(e.seq, e);
            }
            None => unreadable.push(key),
        }
    }
    Ok((rows, unreadable))
}

/// Which repository a row belongs in.
pub fn repository_of(entry: &Entry, all: &[Entry]) -> Option<String> {
    match &entry.record {
        Record::Run(r) => Some(r.repository.clone()),
        Record::Annotation(a) => {
            all.iter()
                .find(|e| e.seq == a.run)
                .and_then(|e| match &e.record {
                    Record::Run(r) => Some(r.repository.clone()),
                    Record::Annotation(_) => None,
                })
        }
    }
}

/// Mirror every row still waiting; `open` gives the repository for a name (None when it
/// cannot be reached now: the row waits for the next try). Returns rows mirrored.
pub async fn mirror_pending<F, Fut>(
    journal: &Journal,
    host: &str,
    mut open: F,
) -> Result<usize, JournalError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Option<std::sync::Arc<Repository>>>,
{
    let pending = journal.pending_mirrors()?;
    if pending.is_empty() {
        return Ok(0);
    }
    let entries = journal.entries()?;
    let mut done = 0;
    for (seq, repository) in pending {
        let Some(entry) = entries.iter().find(|e| e.seq == seq) else {
            journal.mirrored(seq, &repository)?;
            continue;
        };
        let Some(repo) = open(repository.clone()).await else {
            continue;
        };
        match mirror_entry(&repo, host, entry).await {
            Ok(()) => {
                journal.mirrored(seq, &repository)?;
                done += 1;
            }
            Err(e) => tracing::warn!(seq, %repository, error = %e, "journal row not mirrored yet"),
        }
    }
    Ok(done)
}

/// The local chain held against the repository's copy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MirrorCheck {
    pub repository: String,
    pub local_rows: usize,
    pub mirrored_rows: usize,
    /// Rows here that the repository does not have (not mirrored yet, or deleted there).
    pub missing_in_mirror: Vec<i64>,
    /// Rows the repository has that are gone here.
    pub missing_locally: Vec<i64>,
    /// Rows that differ between the two.
    pub differing: Vec<i64>,
    pub unreadable: Vec<String>,
}

impl MirrorCheck {
    pub fn agrees(&self) -> bool {
        self.missing_locally.is_empty() && self.differing.is_empty() && self.unreadable.is_empty()
    }
}

/// Compare the rows that belong to `name` with the copies in `repo`.
pub async fn verify_mirror(
    entries: &[Entry],
    name: &str,
    repo: &Repository,
    host: &str,
) -> Result<MirrorCheck, RepoError> {
    let (mirror, unreadable) = load_mirror(repo, host).await?;
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| repository_of(e, entries).as_deref() == Some(name))
        .collect();
    let mut check = MirrorCheck {
        repository: name.to_string(),
        local_rows: mine.len(),
        mirrored_rows: mirror.len(),
        unreadable,
        ..Default::default()
    };
    for e in &mine {
        match mirror.get(&e.seq) {
            None => check.missing_in_mirror.push(e.seq),
            Some(m) if m.hash != e.hash || m.prev_hash != e.prev_hash => {
                check.differing.push(e.seq)
            }
            Some(_) => {}
        }
    }
    for seq in mirror.keys() {
        if !entries.iter().any(|e| e.seq == *seq) {
            check.missing_locally.push(*seq);
        }
    }
    Ok(check)
}
