//! The journal's copy in the repository: each row, sealed, under `journal/<host>/<n>-<id>`.
//! A row is mirrored into the repository its run used (an annotation goes where its run went).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::repo::crypto::Kind;
use crate::repo::ids::object_name;
use crate::repo::{Damage, RepoError, Repository};

use super::store::{Entry, Record, RowId};

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

/// Every mirrored row of `host` in the repository, by number, and the copies that cannot be
/// read (key, why).
pub async fn load_mirror(
    repo: &Repository,
    host: &str,
) -> Result<(BTreeMap<RowId, Entry>, Vec<(String, String)>), RepoError> {
    let mut rows = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (key, _) in repo.store().list(&format!("journal/{host}/")).await? {
        let bytes = match repo.store().get(&key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match decode_mirror(repo, &key, &bytes) {
            Ok(e) => {
                rows.insert(e.seq, e);
            }
            Err(why) => unreadable.push((key, why.to_string())),
        }
    }
    Ok((rows, unreadable))
}

/// One mirrored row: its name is `<row>-<blake3 of the stored bytes>`, and it opens as a
/// journal row with that number.
pub fn decode_mirror(repo: &Repository, key: &str, bytes: &[u8]) -> Result<Entry, Damage> {
    let name = key.rsplit('/').next().unwrap_or_default();
    let Some((seq, id)) = name.split_once('-') else {
        return Err(Damage::Name("<row>-<hash>"));
    };
    if hex::encode(object_name(bytes)) != id {
        return Err(Damage::NameMismatch);
    }
    let plain = repo.keys().open_document(Kind::Journal, bytes)?;
    let entry: Entry = serde_json::from_slice(&plain).map_err(|e| Damage::Contents {
        what: "a journal row",
        why: e.to_string(),
    })?;
    if seq.parse::<RowId>().ok() != Some(entry.seq) {
        return Err(Damage::WrongRow { held: entry.seq.0 });
    }
    Ok(entry)
}

/// The row number a mirror's name gives, whatever its bytes.
fn seq_of(key: &str) -> Option<RowId> {
    key.rsplit('/').next()?.split_once('-')?.0.parse().ok()
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

/// The local chain held against the repository's copy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MirrorCheck {
    pub repository: String,
    pub local_rows: usize,
    pub mirrored_rows: usize,
    /// Rows here waiting to be mirrored (the repository could not be reached yet).
    pub not_yet: Vec<RowId>,
    /// Rows here that were mirrored and that the repository no longer has.
    pub missing_in_mirror: Vec<RowId>,
    /// Rows whose copy in the repository is damaged (from the copy's name).
    pub damaged: Vec<RowId>,
    /// Rows the repository has that are gone here.
    pub missing_locally: Vec<RowId>,
    /// Rows that differ between the two.
    pub differing: Vec<RowId>,
    /// Copies that cannot be read: (key, why).
    pub unreadable: Vec<(String, String)>,
}

impl MirrorCheck {
    pub fn agrees(&self) -> bool {
        self.missing_locally.is_empty()
            && self.differing.is_empty()
            && self.unreadable.is_empty()
            && self.missing_in_mirror.is_empty()
    }
}

/// Compare the rows that belong to `name` with the copies in `repo`; `pending` are the rows
/// still waiting to be mirrored there.
pub async fn verify_mirror(
    entries: &[Entry],
    pending: &std::collections::HashSet<RowId>,
    name: &str,
    repo: &Repository,
    host: &str,
) -> Result<MirrorCheck, RepoError> {
    let (mirror, unreadable) = load_mirror(repo, host).await?;
    let damaged: std::collections::BTreeSet<RowId> =
        unreadable.iter().filter_map(|(k, _)| seq_of(k)).collect();
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
            None if damaged.contains(&e.seq) => check.damaged.push(e.seq),
            None if pending.contains(&e.seq) => check.not_yet.push(e.seq),
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
