//! The SQLite side of the journal: the chained rows, and the tables the service keeps beside
//! them (what is still to be mirrored, when each job last fired).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Schedule,
    CatchUp,
    Manual,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
            Trigger::Manual => "manual",
        })
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    /// A backup that finished without some unreadable files.
    Partial,
    /// Verification found damage, or a drill failed.
    Damage,
    /// Could not run.
    Failed,
    /// Stopped by a shutdown; it runs again when the service starts.
    Interrupted,
    /// A backup stopped at the end of its schedule's window, checkpointed; its next run
    /// continues it.
    Paused,
}

impl Outcome {
    pub fn is_good(self) -> bool {
        self == Outcome::Success
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Damage => "damage",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Paused => "paused",
        })
    }
}

/// What kind of run a row records. Stored as its lowercase name, as the first release wrote
/// it (the rows' hashes are over that text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Backup,
    Drill,
    Forget,
    Prune,
    Evidence,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Backup => "backup",
            RunKind::Drill => "drill",
            RunKind::Forget => "forget",
            RunKind::Prune => "prune",
            RunKind::Evidence => "evidence",
        }
    }
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A run as journalled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: RunKind,
    /// The schedule or plan.
    pub job: String,
    pub trigger: Trigger,
    pub operator: String,
    pub host: String,
    pub repository: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub started: Timestamp,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub ended: Timestamp,
    pub outcome: Outcome,
    /// One line for people.
    pub summary: String,
    /// The snapshot a backup wrote, or a drill tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::repo::ids::SnapshotId>,
    /// The drill report in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Figures for evidence and status (files, bytes, duration, …), in the shape of the run's
    /// kind: read them with [`RunRecord::details_as`].
    #[serde(default)]
    pub details: Details,
}

/// What a run recorded beyond its summary. Each kind of run writes its own type (a
/// [`RunDetails`]); the row keeps the JSON it was written as (members in sorted order), so that
/// its hash never depends on how a later build would write the same figures, and figures a
/// later vouch adds survive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Details(serde_json::Value);

/// The details one kind of run writes.
pub trait RunDetails: Serialize + serde::de::DeserializeOwned {
    const KIND: RunKind;
}

impl Details {
    /// No details (a failed run, say).
    pub fn none() -> Details {
        Details(serde_json::Value::Null)
    }

    pub fn of<T: RunDetails>(details: &T) -> Details {
        Details(serde_json::to_value(details).unwrap_or_default())
    }

    pub fn is_none(&self) -> bool {
        self.0.is_null()
    }
}

impl RunRecord {
    /// The details as this run's kind wrote them: `None` for a run of another kind, a run
    /// that recorded none, or details this build cannot read.
    pub fn details_as<T: RunDetails>(&self) -> Option<T> {
        if self.kind != T::KIND || self.details.is_none() {
            return None;
        }
        serde_json::from_value(self.details.0.clone()).ok()
    }
}

/// A journal row's number. A run is known by its row (`run #12`, `vouch journal show 12`),
/// and a note names the run it is on by that number. Stored and shown as the plain number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RowId(pub i64);

impl RowId {
    /// The row after this one.
    pub fn next(self) -> RowId {
        RowId(self.0 + 1)
    }
}

impl std::fmt::Display for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `12` or `#12`, as people write a run.
impl std::str::FromStr for RowId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<RowId, Self::Err> {
        s.trim().trim_start_matches('#').parse().map(RowId)
    }
}

impl rusqlite::ToSql for RowId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for RowId {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(v).map(RowId)
    }
}

/// A note on a run: the "resulting actions" a policy asks to be logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub run: RowId,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub time: Timestamp,
    pub operator: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // rows are few; boxing buys nothing
pub enum Record {
    Run(RunRecord),
    Annotation(Annotation),
}

/// A journal row: its number, its record, and the chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub seq: RowId,
    pub record: Record,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {detail}")]
    Db { path: String, detail: String },
    #[error("no run {0} in the journal; `vouch journal list` shows them")]
    NoRun(RowId),
}

/// The hash that links a row to the one before it.
pub fn chain_hash(prev: &str, record_json: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"vouch journal v1\0");
    h.update(prev.as_bytes());
    h.update(b"\0");
    h.update(record_json.as_bytes());
    h.finalize().to_hex().to_string()
}

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What `journal verify` found in the local chain.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub rows: usize,
    pub head: String,
    /// Rows that do not chain, by number, with why.
    pub broken: Vec<(i64, String)>,
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

impl Journal {
    /// Open (creating if need be) the journal in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        let path = state_dir.join("journal.sqlite");
        let err = |e: &dyn std::fmt::Display| JournalError::Db {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        crate::sys::create_private_dir(state_dir)
            .map_err(|e| err(&format!("cannot create the state directory: {e}")))?;
        // The journal and its outbox name the school's systems and people: owner only. SQLite
        // gives its -wal and -shm files the permissions of the database file.
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| err(&format!("cannot create the journal: {e}")))?;
        }
        let conn = Connection::open(&path).map_err(|e| err(&e))?;
        // The wait comes first: a daemon and a `vouch run` from cron may open (and create) the
        // journal at the same moment, and switching it to WAL takes a lock too.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| err(&e))?;
        // Switching a new journal to WAL can answer "locked" at once, without waiting, while
        // another process does the same: try again for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ready = conn
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
                .map_err(super::schema::SchemaError::Db)
                .and_then(|()| super::schema::migrate(&conn));
            match ready {
                Ok(()) => break,
                Err(super::schema::SchemaError::Db(rusqlite::Error::SqliteFailure(f, _)))
                    if matches!(
                        f.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(err(&e)),
            }
        }
        Ok(Journal { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn err(&self, e: impl std::fmt::Display) -> JournalError {
        JournalError::Db {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    /// Append a record, chained to the last row; returns the new row.
    pub fn append(&mut self, record: Record) -> Result<Entry, JournalError> {
        let json = serde_json::to_string(&record).expect("records serialize");
        // Immediate: the write lock is taken (waiting for it if need be) before the last row
        // is read, so two processes cannot both chain to the same row, and a reader's lock is
        // never upgraded (which SQLite refuses at once instead of waiting).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| JournalError::Db {
                path: self.path.display().to_string(),
                detail: e.to_string(),
            })?;
        let prev: String = tx
            .query_row(
                "SELECT hash FROM journal ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| JournalError::Db {
                path: self.path.display().to_string(),
                detail: e.to_string(),
            })?
            .unwrap_or_else(|| GENESIS.to_string());
        let hash = chain_hash(&prev, &json);
        tx.execute(
            "INSERT INTO journal (record, prev_hash, hash) VALUES (?1, ?2, ?3)",
            params![json, prev, hash],
        )
        .map_err(|e| JournalError::Db {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        })?;
        let seq = tx.last_insert_rowid();
        tx.commit().map_err(|e| JournalError::Db {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(Entry {
            seq: RowId(seq),
            record,
            prev_hash: prev,
            hash,
        })
    }

    /// Every row as stored: number, record text, previous hash, hash.
    fn raw_rows(&self) -> Result<Vec<(i64, String, String, String)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, record, prev_hash, hash FROM journal ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every row, oldest first.
    pub fn entries(&self) -> Result<Vec<Entry>, JournalError> {
        self.raw_rows()?
            .into_iter()
            .map(|(seq, json, prev_hash, hash)| {
                let record = serde_json::from_str(&json)
                    .map_err(|e| self.err(format!("row {seq} is not a journal record: {e}")))?;
                Ok(Entry {
                    seq: RowId(seq),
                    record,
                    prev_hash,
                    hash,
                })
            })
            .collect()
    }

    pub fn entry(&self, seq: RowId) -> Result<Entry, JournalError> {
        self.entries()?
            .into_iter()
            .find(|e| e.seq == seq)
            .ok_or(JournalError::NoRun(seq))
    }

    /// Recompute the chain from the stored text of every row.
    pub fn verify(&self) -> Result<VerifyReport, JournalError> {
        let rows = self.raw_rows()?;
        let mut report = VerifyReport {
            head: GENESIS.to_string(),
            ..Default::default()
        };
        let mut expected_seq = 1;
        for (seq, json, prev_hash, hash) in rows {
            report.rows += 1;
            if seq != expected_seq {
                report.broken.push((
                    seq,
                    format!("rows {expected_seq} to {} are missing", seq - 1),
                ));
            }
            expected_seq = seq + 1;
            if prev_hash != report.head {
                report.broken.push((
                    seq,
                    "it does not follow the row before it (a row was removed or replaced)".into(),
                ));
            }
            let actual = chain_hash(&prev_hash, &json);
            if actual != hash {
                report
                    .broken
                    .push((seq, "its contents were changed after it was written".into()));
            }
            report.head = hash;
        }
        Ok(report)
    }

    /// Runs of a job, newest last.
    pub fn runs(&self) -> Result<Vec<(RowId, RunRecord)>, JournalError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|e| match e.record {
                Record::Run(r) => Some((e.seq, r)),
                Record::Annotation(_) => None,
            })
            .collect())
    }

    pub fn annotations(&self, run: RowId) -> Result<Vec<Annotation>, JournalError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|e| match e.record {
                Record::Annotation(a) if a.run == run => Some(a),
                _ => None,
            })
            .collect())
    }

    /// When the scheduler last considered a job (for catching up missed runs).
    pub fn considered(&self, job: &str) -> Result<Option<Timestamp>, JournalError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT considered FROM job_state WHERE job = ?1",
                [job],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(text.and_then(|t| crate::clock::parse_rfc3339(&t)))
    }

    pub fn set_considered(&self, job: &str, t: Timestamp) -> Result<(), JournalError> {
        let text = crate::clock::rfc3339(t);
        self.conn
            .execute(
                "INSERT INTO job_state (job, considered) VALUES (?1, ?2)
                 ON CONFLICT(job) DO UPDATE SET considered = excluded.considered",
                params![job, text],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn queue_mirror(&self, seq: RowId, repository: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO mirror_pending (seq, repository) VALUES (?1, ?2)",
                params![seq, repository],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn pending_mirrors(&self) -> Result<Vec<(RowId, String)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, repository FROM mirror_pending ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn mirrored(&self, seq: RowId, repository: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "DELETE FROM mirror_pending WHERE seq = ?1 AND repository = ?2",
                params![seq, repository],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon and `vouch run` processes from cron open and write the same journal at once,
    /// from its creation on: every row lands, chained in one line.
    #[test]
    fn writers_that_start_together_all_land_in_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let dir = dir.path().to_path_buf();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let mut j = Journal::open(&dir).expect("opens beside the others");
                    for _ in 0..5 {
                        j.append(run(&format!("job-{i}"), Outcome::Success))
                            .expect("appends beside the others");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        let rows = j.entries().unwrap();
        assert_eq!(rows.len(), 40);
        for pair in rows.windows(2) {
            assert_eq!(
                pair[1].prev_hash, pair[0].hash,
                "row {} chains to its predecessor",
                pair[1].seq
            );
        }
    }

    fn run(job: &str, outcome: Outcome) -> Record {
        let t = Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * 20_000);
        Record::Run(RunRecord {
            kind: RunKind::Backup,
            job: job.into(),
            trigger: Trigger::Schedule,
            operator: "vouch".into(),
            host: "nas1".into(),
            repository: "offsite".into(),
            started: t,
            ended: t + jiff::SignedDuration::from_mins(3),
            outcome,
            summary: "ok".into(),
            snapshot: None,
            report: None,
            error: None,
            details: Details::none(),
        })
    }

    #[test]
    fn the_chain_verifies_until_a_row_is_edited_and_then_names_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        for i in 0..5 {
            j.append(run(&format!("job-{i}"), Outcome::Success))
                .unwrap();
        }
        let ok = j.verify().unwrap();
        assert_eq!(ok.rows, 5);
        assert!(ok.broken.is_empty());
        // Someone edits row 3 by hand: a failed backup made to look good, say.
        j.connection()
            .execute(
                "UPDATE journal SET record = replace(record, 'job-2', 'job-x') WHERE seq = 3",
                [],
            )
            .unwrap();
        let bad = j.verify().unwrap();
        assert_eq!(bad.broken.len(), 1);
        assert_eq!(bad.broken[0].0, 3);
        // Deleting a row breaks the next one's link.
        j.connection()
            .execute("DELETE FROM journal WHERE seq = 4", [])
            .unwrap();
        let gone = j.verify().unwrap();
        assert!(
            gone.broken
                .iter()
                .any(|(seq, why)| *seq == 5 && why.contains("missing")),
            "{:?}",
            gone.broken
        );
    }
}
