//! The state database's schema (`state_dir/journal.sqlite`: the journal, the mirror queue,
//! job state, the outbox and incidents), owned here and nowhere else. `PRAGMA user_version`
//! counts the migrations applied; each is applied once, in order, in one transaction with
//! the version, so that a school upgrading vouch keeps every row, and a journal written by a
//! newer vouch is refused rather than half understood.

use rusqlite::{Connection, TransactionBehavior};

/// One migration per schema version, in order: `MIGRATIONS[n]` takes version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first release's tables. Its journals have these tables and `user_version` 0;
    // `IF NOT EXISTS` adopts them as they are.
    "CREATE TABLE IF NOT EXISTS journal (
         seq INTEGER PRIMARY KEY,
         record TEXT NOT NULL,
         prev_hash TEXT NOT NULL,
         hash TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS mirror_pending (
         seq INTEGER NOT NULL,
         repository TEXT NOT NULL,
         PRIMARY KEY (seq, repository));
     CREATE TABLE IF NOT EXISTS job_state (
         job TEXT PRIMARY KEY,
         considered TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS outbox (
         id INTEGER PRIMARY KEY,
         created TEXT NOT NULL,
         message TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         next_attempt TEXT NOT NULL,
         sent TEXT,
         last_error TEXT);
     CREATE TABLE IF NOT EXISTS incidents (
         id INTEGER PRIMARY KEY,
         key TEXT NOT NULL,
         kind TEXT NOT NULL,
         job TEXT NOT NULL,
         opened TEXT NOT NULL,
         resolved TEXT,
         last_notified TEXT NOT NULL,
         title TEXT NOT NULL,
         detail TEXT NOT NULL,
         run INTEGER);",
    // 2: the outbox and the incidents are read by their state on every round of the
    // daemon; an index each keeps that cheap as the years of rows grow.
    "CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox (sent, next_attempt);
     CREATE INDEX IF NOT EXISTS incidents_open ON incidents (resolved, key);",
];

/// The schema version this vouch writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "it was written by a newer vouch (schema version {found}; this one knows up to {VERSION}): run that version, or a later one"
    )]
    Newer { found: i64 },
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
}

/// The schema version of the database.
pub fn version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Apply the migrations the database has not had yet; a no-op when it is current.
pub fn migrate(conn: &Connection) -> Result<(), SchemaError> {
    if version(conn)? == VERSION {
        return Ok(());
    }
    // Immediate: two processes starting at once (the daemon and a `vouch run` from cron)
    // migrate one after the other, and the second finds nothing left to do.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found > VERSION {
        return Err(SchemaError::Newer { found });
    }
    for m in &MIGRATIONS[found.max(0) as usize..] {
        tx.execute_batch(m)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_gets_every_migration_and_the_version() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        migrate(&conn).unwrap();
        assert_eq!(version(&conn).unwrap(), VERSION);
        // Again: nothing to do.
        migrate(&conn).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 5);
    }

    #[test]
    fn a_database_from_a_newer_vouch_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let e = migrate(&conn).unwrap_err();
        assert!(e.to_string().contains("newer vouch"), "{e}");
    }
}
