//! The outbox: messages are written to the journal database first and delivered from there,
//! with backoff, so that nothing is lost to an SMTP outage or a restart.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::journal::JournalError;

/// An email, as queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Files to attach: (file name, content type, bytes).
    #[serde(default)]
    pub attachments: Vec<(String, String, Vec<u8>)>,
}

/// One queued message and its delivery state.
#[derive(Clone, Debug, Serialize)]
pub struct Queued {
    pub id: i64,
    pub created: String,
    pub subject: String,
    pub to: Vec<String>,
    pub attempts: i64,
    pub next_attempt: String,
    pub sent: Option<String>,
    pub last_error: Option<String>,
}

/// Mail that has not gone out for too long.
#[derive(Clone, Debug, Serialize)]
pub struct Stuck {
    pub waiting: usize,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub since: Timestamp,
    pub last_error: String,
}

/// How long the oldest message may wait before that is itself reported.
pub const OUTBOX_ALARM: jiff::SignedDuration = jiff::SignedDuration::from_hours(12);

pub struct Outbox<'a> {
    conn: &'a Connection,
}

fn fmt(t: Timestamp) -> String {
    crate::clock::rfc3339(t)
}

fn db(e: rusqlite::Error) -> JournalError {
    JournalError::Db {
        path: "outbox".into(),
        detail: e.to_string(),
    }
}

/// Wait before the next try after `attempts` failures: 1, 2, 4 … minutes, at most an hour.
pub fn backoff(attempts: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_mins(1i64 << attempts.clamp(0, 6))
        .min(jiff::SignedDuration::from_hours(1))
}

impl<'a> Outbox<'a> {
    /// The outbox in the state database (its table is the journal's schema, `journal::schema`).
    pub fn new(conn: &'a Connection) -> Result<Self, JournalError> {
        Ok(Self { conn })
    }

    pub fn enqueue(&self, message: &Message, now: Timestamp) -> Result<i64, JournalError> {
        let json = serde_json::to_string(message).expect("messages serialize");
        self.conn
            .execute(
                "INSERT INTO outbox (created, message, next_attempt) VALUES (?1, ?2, ?1)",
                params![fmt(now), json],
            )
            .map_err(db)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Messages due for a try: (id, message, attempts so far).
    pub fn due(&self, now: Timestamp) -> Result<Vec<(i64, Message, i64)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, message, attempts FROM outbox WHERE sent IS NULL AND next_attempt <= ?1 ORDER BY id")
            .map_err(db)?;
        let rows = stmt
            .query_map([fmt(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json, attempts) = row.map_err(db)?;
            if let Ok(m) = serde_json::from_str(&json) {
                out.push((id, m, attempts));
            }
        }
        Ok(out)
    }

    pub fn sent(&self, id: i64, now: Timestamp) -> Result<(), JournalError> {
        self.conn
            .execute("UPDATE outbox SET sent = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1", params![id, fmt(now)])
            .map_err(db)?;
        Ok(())
    }

    pub fn failed(
        &self,
        id: i64,
        attempts: i64,
        error: &str,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?2, last_error = ?3 WHERE id = ?1",
                params![id, fmt(now + backoff(attempts)), error],
            )
            .map_err(db)?;
        Ok(())
    }

    pub fn pending(&self) -> Result<usize, JournalError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM outbox WHERE sent IS NULL", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        Ok(n as usize)
    }

    /// Messages not yet delivered, oldest first (and with `all`, the delivered ones too).
    pub fn list(&self, all: bool) -> Result<Vec<Queued>, JournalError> {
        let sql = if all {
            "SELECT id, created, message, attempts, next_attempt, sent, last_error FROM outbox ORDER BY id"
        } else {
            "SELECT id, created, message, attempts, next_attempt, sent, last_error FROM outbox WHERE sent IS NULL ORDER BY id"
        };
        let mut stmt = self.conn.prepare(sql).map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                let json: String = r.get(2)?;
                let m: Option<Message> = serde_json::from_str(&json).ok();
                Ok(Queued {
                    id: r.get(0)?,
                    created: r.get(1)?,
                    subject: m.as_ref().map(|m| m.subject.clone()).unwrap_or_default(),
                    to: m.map(|m| m.to).unwrap_or_default(),
                    attempts: r.get(3)?,
                    next_attempt: r.get(4)?,
                    sent: r.get(5)?,
                    last_error: r.get(6)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// Mail is stuck when a message has waited longer than `alarm`, delivery of it has been
    /// tried, and nothing at all has been delivered within `alarm`: the mail server is not
    /// taking mail. (One message refused for its own sake, while others go out, is not that.)
    pub fn stuck(
        &self,
        now: Timestamp,
        alarm: jiff::SignedDuration,
    ) -> Result<Option<Stuck>, JournalError> {
        let row: Option<(String, Option<String>, i64, i64)> = self
            .conn
            .query_row(
                "SELECT created, last_error, attempts, (SELECT count(*) FROM outbox WHERE sent IS NULL) FROM outbox WHERE sent IS NULL ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(db)?;
        let Some((created, last_error, attempts, waiting)) = row else {
            return Ok(None);
        };
        let parse = |t: &str| crate::clock::parse_rfc3339(t);
        let Some(since) = parse(&created) else {
            return Ok(None);
        };
        let delivered_lately = self
            .last_sent()?
            .and_then(|t| parse(&t))
            .is_some_and(|t| now.duration_since(t) < alarm);
        if now.duration_since(since) < alarm || attempts == 0 || delivered_lately {
            return Ok(None);
        }
        Ok(Some(Stuck {
            waiting: waiting as usize,
            since,
            last_error: last_error.unwrap_or_default(),
        }))
    }

    pub fn last_sent(&self) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row("SELECT max(sent) FROM outbox", [], |r| r.get(0))
            .optional()
            .map(|v| v.flatten())
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_a_minute_to_an_hour() {
        assert_eq!(backoff(0), jiff::SignedDuration::from_mins(1));
        assert_eq!(backoff(1), jiff::SignedDuration::from_mins(2));
        assert_eq!(backoff(3), jiff::SignedDuration::from_mins(8));
        assert_eq!(backoff(6), jiff::SignedDuration::from_hours(1));
        assert_eq!(backoff(40), jiff::SignedDuration::from_hours(1));
    }

    #[test]
    fn a_failed_delivery_waits_and_a_sent_one_leaves_the_queue() {
        let conn = Connection::open_in_memory().unwrap();
        crate::journal::schema::migrate(&conn).unwrap();
        let outbox = Outbox::new(&conn).unwrap();
        let t0 = Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * 20_000);
        let m = Message {
            to: vec!["nm@school.example".into()],
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
            attachments: vec![],
        };
        let id = outbox.enqueue(&m, t0).unwrap();
        assert_eq!(outbox.due(t0).unwrap().len(), 1);
        outbox.failed(id, 0, "connection refused", t0).unwrap();
        assert!(
            outbox
                .due(t0 + jiff::SignedDuration::from_secs(59))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            outbox.due(t0 + jiff::SignedDuration::from_mins(1)).unwrap()[0].2,
            1
        );
        outbox
            .sent(id, t0 + jiff::SignedDuration::from_mins(1))
            .unwrap();
        assert_eq!(outbox.pending().unwrap(), 0);
        assert_eq!(outbox.list(true).unwrap()[0].attempts, 2);
    }
}
