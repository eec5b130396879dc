//! Incidents: something wrong that a person must hear about once when it starts, be reminded
//! of while it lasts, and hear about once more when it is put right. Nothing else is sent.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::config::Config;
use crate::journal::{JournalError, Outcome, RowId, RunRecord};

use super::outbox::Outbox;
use super::render;

#[derive(Clone, Debug, Serialize)]
pub struct Incident {
    pub id: i64,
    /// What it is about, unique while open: "backup-failed:staff-nightly".
    pub key: String,
    pub kind: IncidentKind,
    pub job: String,
    #[serde(with = "crate::repo::format::rfc3339")]
    pub opened: Timestamp,
    #[serde(with = "crate::repo::format::rfc3339::option")]
    pub resolved: Option<Timestamp>,
    pub title: String,
    pub detail: String,
    /// The journal row of the run that opened it.
    pub run: Option<RowId>,
}

/// What an incident is about. Stored (and shown in `status --json`) as its kebab-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentKind {
    BackupFailed,
    BackupPartial,
    /// No good backup within the schedule's RPO.
    Stale,
    DrillFailed,
    /// No test restore passed within the policy's year.
    NoDrill,
    /// One is due within 30 days.
    DrillDue,
    /// Another job (prune, retention, evidence) failed.
    JobFailed,
    /// A night far above the schedule's normal change rate.
    Ransomware,
    /// A kind this vouch does not know (written by a later one).
    Unknown,
}

impl IncidentKind {
    const ALL: [IncidentKind; 8] = [
        IncidentKind::BackupFailed,
        IncidentKind::BackupPartial,
        IncidentKind::Stale,
        IncidentKind::DrillFailed,
        IncidentKind::NoDrill,
        IncidentKind::DrillDue,
        IncidentKind::JobFailed,
        IncidentKind::Ransomware,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::BackupFailed => "backup-failed",
            IncidentKind::BackupPartial => "backup-partial",
            IncidentKind::Stale => "stale",
            IncidentKind::DrillFailed => "drill-failed",
            IncidentKind::NoDrill => "no-drill",
            IncidentKind::DrillDue => "drill-due",
            IncidentKind::JobFailed => "job-failed",
            IncidentKind::Ransomware => "ransomware",
            IncidentKind::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> IncidentKind {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or(IncidentKind::Unknown)
    }

    /// The incident's key for a job: unique while open.
    pub fn key(self, job: &str) -> String {
        format!("{}:{job}", self.as_str())
    }
}

impl std::fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

fn db(e: rusqlite::Error) -> JournalError {
    JournalError::Db {
        path: "incidents".into(),
        detail: e.to_string(),
    }
}

fn fmt(t: Timestamp) -> String {
    crate::clock::rfc3339(t)
}

fn parse(t: &str) -> Timestamp {
    crate::clock::parse_rfc3339(t).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Opens and resolves incidents, and queues the emails they call for.
pub struct Monitor<'a> {
    conn: &'a Connection,
    config: &'a Config,
    outbox: Outbox<'a>,
}

impl<'a> Monitor<'a> {
    /// Incidents in the state database (their table is the journal's schema).
    pub fn new(conn: &'a Connection, config: &'a Config) -> Result<Self, JournalError> {
        Ok(Self {
            conn,
            config,
            outbox: Outbox::new(conn)?,
        })
    }

    #[cfg(test)]
    pub fn outbox(&self) -> &Outbox<'a> {
        &self.outbox
    }

    fn row(r: &rusqlite::Row) -> rusqlite::Result<Incident> {
        Ok(Incident {
            id: r.get(0)?,
            key: r.get(1)?,
            kind: IncidentKind::parse(&r.get::<_, String>(2)?),
            job: r.get(3)?,
            opened: parse(&r.get::<_, String>(4)?),
            resolved: r.get::<_, Option<String>>(5)?.map(|t| parse(&t)),
            title: r.get(6)?,
            detail: r.get(7)?,
            run: r.get(8)?,
        })
    }

    const COLUMNS: &'static str = "id, key, kind, job, opened, resolved, title, detail, run";

    fn find_open(&self, key: &str) -> Result<Option<Incident>, JournalError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {} FROM incidents WHERE key = ?1 AND resolved IS NULL",
                    Self::COLUMNS
                ),
                [key],
                Self::row,
            )
            .optional()
            .map_err(db)
    }

    /// Incidents still open, oldest first (and with `all`, every incident).
    pub fn incidents(&self, all: bool) -> Result<Vec<Incident>, JournalError> {
        let filter = if all { "" } else { "WHERE resolved IS NULL" };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM incidents {filter} ORDER BY id",
                Self::COLUMNS
            ))
            .map_err(db)?;
        let rows = stmt.query_map([], Self::row).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// Open an incident (an email goes out) unless one with this key is open already.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &self,
        key: &str,
        kind: IncidentKind,
        job: &str,
        title: &str,
        detail: &str,
        run: Option<RowId>,
        now: Timestamp,
    ) -> Result<bool, JournalError> {
        if let Some(existing) = self.find_open(key)? {
            self.conn
                .execute(
                    "UPDATE incidents SET detail = ?2, run = coalesce(?3, run) WHERE id = ?1",
                    params![existing.id, detail, run],
                )
                .map_err(db)?;
            return Ok(false);
        }
        self.conn
            .execute(
                "INSERT INTO incidents (key, kind, job, opened, last_notified, title, detail, run) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
                params![key, kind.as_str(), job, fmt(now), title, detail, run],
            )
            .map_err(db)?;
        let incident = self.find_open(key)?.expect("just opened");
        self.outbox
            .enqueue(&render::opened(self.config, &incident), now)?;
        Ok(true)
    }

    /// Resolve the open incident with this key, if any (an email goes out).
    pub fn resolve(&self, key: &str, how: &str, now: Timestamp) -> Result<bool, JournalError> {
        let Some(incident) = self.find_open(key)? else {
            return Ok(false);
        };
        self.conn
            .execute(
                "UPDATE incidents SET resolved = ?2 WHERE id = ?1",
                params![incident.id, fmt(now)],
            )
            .map_err(db)?;
        self.outbox
            .enqueue(&render::resolved(self.config, &incident, how, now), now)?;
        Ok(true)
    }

    /// Close an open incident without telling anyone (it was superseded by another).
    pub fn close_quietly(&self, key: &str, now: Timestamp) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE incidents SET resolved = ?2 WHERE key = ?1 AND resolved IS NULL",
                params![key, fmt(now)],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Remind about incidents open longer than the reminder interval since the last email.
    pub fn remind(&self, now: Timestamp) -> Result<usize, JournalError> {
        let every = jiff::SignedDuration::try_from(self.config.reminder)
            .unwrap_or(jiff::SignedDuration::from_hours(24));
        let mut sent = 0;
        let due: Vec<(Incident, String)> = {
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT {}, last_notified FROM incidents WHERE resolved IS NULL",
                    Self::COLUMNS
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| Ok((Self::row(r)?, r.get::<_, String>(9)?)))
                .map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        for (incident, last) in due {
            if parse(&last) + every <= now {
                self.outbox
                    .enqueue(&render::reminder(self.config, &incident, now), now)?;
                self.conn
                    .execute(
                        "UPDATE incidents SET last_notified = ?2 WHERE id = ?1",
                        params![incident.id, fmt(now)],
                    )
                    .map_err(db)?;
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Open or resolve incidents from a finished run.
    pub fn after_run(
        &self,
        seq: RowId,
        run: &RunRecord,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let job = &run.job;
        let key = |kind: IncidentKind| kind.key(job);
        let detail = run.error.clone().unwrap_or_else(|| run.summary.clone());
        if matches!(run.outcome, Outcome::Interrupted | Outcome::Paused) {
            // A shutdown, or a backup window closing, is not a failure; staleness still
            // catches a job that never completes within its RPO.
            return Ok(());
        }
        use crate::journal::RunKind;
        match (run.kind, run.outcome) {
            (RunKind::Backup, Outcome::Success) => {
                for k in [
                    IncidentKind::BackupFailed,
                    IncidentKind::BackupPartial,
                    IncidentKind::Stale,
                ] {
                    self.resolve(
                        &key(k),
                        &format!("backup {} succeeded: {}", job, run.summary),
                        now,
                    )?;
                }
            }
            (RunKind::Backup, Outcome::Partial) => {
                self.resolve(
                    &key(IncidentKind::BackupFailed),
                    "the backup ran again (with some files unreadable)",
                    now,
                )?;
                self.resolve(&key(IncidentKind::Stale), "a backup finished", now)?;
                self.open(
                    &key(IncidentKind::BackupPartial),
                    IncidentKind::BackupPartial,
                    job,
                    &format!("backup {job} could not read some files"),
                    &detail,
                    Some(seq),
                    now,
                )?;
            }
            (RunKind::Backup, _) => {
                self.open(
                    &key(IncidentKind::BackupFailed),
                    IncidentKind::BackupFailed,
                    job,
                    &format!("backup {job} failed"),
                    &detail,
                    Some(seq),
                    now,
                )?;
            }
            (RunKind::Drill, Outcome::Success) => {
                let how = format!("drill {job} passed");
                self.resolve(&key(IncidentKind::DrillFailed), &how, now)?;
                self.resolve(&IncidentKind::NoDrill.key("all"), &how, now)?;
                self.resolve(&IncidentKind::DrillDue.key("all"), &how, now)?;
            }
            (RunKind::Drill, _) => {
                self.open(
                    &key(IncidentKind::DrillFailed),
                    IncidentKind::DrillFailed,
                    job,
                    &format!("test restore {job} failed"),
                    &detail,
                    Some(seq),
                    now,
                )?;
            }
            (_, Outcome::Success) => {
                self.resolve(
                    &key(IncidentKind::JobFailed),
                    &format!("{} {job} succeeded", run.kind),
                    now,
                )?;
            }
            (kind, _) => {
                self.open(
                    &key(IncidentKind::JobFailed),
                    IncidentKind::JobFailed,
                    job,
                    &format!("{kind} {job} failed"),
                    &detail,
                    Some(seq),
                    now,
                )?;
            }
        }
        Ok(())
    }

    /// Staleness: a schedule whose last good backup is older than its RPO. `last_good` gives,
    /// per schedule, the end of its last good backup, or when it was first configured.
    pub fn check_freshness(
        &self,
        last_good: &[(String, Timestamp, bool)],
        now: Timestamp,
    ) -> Result<(), JournalError> {
        for s in &self.config.schedules {
            let Some((_, since, ever)) = last_good.iter().find(|(n, _, _)| n == &s.name) else {
                continue;
            };
            let rpo = jiff::SignedDuration::try_from(s.rpo)
                .unwrap_or(jiff::SignedDuration::from_hours(24));
            let key = IncidentKind::Stale.key(&s.name);
            if now.duration_since(*since) > rpo {
                let detail = if *ever {
                    format!(
                        "the last good backup of {} finished {} ({} ago); the schedule allows {}",
                        s.name,
                        crate::clock::human(*since),
                        ago(now.duration_since(*since)),
                        ago(rpo)
                    )
                } else {
                    format!(
                        "{} has had no good backup since it was set up {} ago; the schedule allows {}",
                        s.name,
                        ago(now.duration_since(*since)),
                        ago(rpo)
                    )
                };
                self.open(
                    &key,
                    IncidentKind::Stale,
                    &s.name,
                    &format!("backups of {} are out of date", s.name),
                    &detail,
                    None,
                    now,
                )?;
            } else {
                self.resolve(&key, "a good backup is within the RPO again", now)?;
            }
        }
        Ok(())
    }

    /// The policy's year: no drill passed in the last 365 days opens an incident; within 30
    /// days of that a warning.
    pub fn check_drills(
        &self,
        last_passed: Option<Timestamp>,
        first_seen: Timestamp,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        if self.config.plans.is_empty() {
            return Ok(());
        }
        let since = last_passed.unwrap_or(first_seen);
        let age = now.duration_since(since);
        let what = match last_passed {
            Some(t) => format!(
                "the last test restore that passed was on {}",
                crate::clock::human(t)
            ),
            None => "no test restore has passed yet".to_string(),
        };
        if age > jiff::SignedDuration::from_hours(24 * 365) {
            // The warning becomes the alert: close it without a "resolved" email.
            self.close_quietly(&IncidentKind::DrillDue.key("all"), now)?;
            self.open(
                &IncidentKind::NoDrill.key("all"),
                IncidentKind::NoDrill,
                "all",
                "no test restore has passed within a year",
                &format!("{what}; the policy asks for one at least annually"),
                None,
                now,
            )?;
        } else if age > jiff::SignedDuration::from_hours(24 * 335) {
            self.open(
                &IncidentKind::DrillDue.key("all"),
                IncidentKind::DrillDue,
                "all",
                "a test restore is due within 30 days",
                &format!(
                    "{what}; one must pass by {}",
                    crate::clock::human(since + jiff::SignedDuration::from_hours(24 * 365))
                ),
                None,
                now,
            )?;
        }
        Ok(())
    }
}

/// "3 days 4 hours".
pub fn ago(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs().max(0) as u64;
    let rounded = if secs > 3600 {
        secs / 3600 * 3600
    } else {
        secs / 60 * 60
    };
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{RunKind, Trigger};

    /// A school's configuration with one schedule, and a state database.
    fn setup() -> (tempfile::TempDir, Config, Connection) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("schedules")).unwrap();
        std::fs::write(dir.path().join("offsite.pass"), "p\n").unwrap();
        std::fs::write(
            dir.path().join("vouch.toml"),
            format!(
                "school = \"Preston Primary Academy\"\nstate_dir = \"{}\"\n[repositories.offsite]\nurl = \"/srv/vouch\"\npassword_file = \"offsite.pass\"\n[alerts]\nto = [\"nm@school.example\"]\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("schedules/staff.toml"),
            "repository = \"offsite\"\npaths = [\"/srv/staff\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\n",
        )
        .unwrap();
        let config = Config::load(&dir.path().join("vouch.toml")).unwrap();
        let conn = Connection::open_in_memory().unwrap();
        crate::journal::schema::migrate(&conn).unwrap();
        (dir, config, conn)
    }

    fn at(hours: i64) -> Timestamp {
        "2026-05-11T01:00:00Z".parse::<jiff::Timestamp>().unwrap()
            + jiff::SignedDuration::from_hours(hours)
    }

    fn run(kind: RunKind, outcome: Outcome, hours: i64) -> RunRecord {
        RunRecord {
            kind,
            job: "staff".into(),
            trigger: Trigger::Schedule,
            operator: "vouch daemon".into(),
            host: "nas1".into(),
            repository: "offsite".into(),
            started: at(hours),
            ended: at(hours),
            outcome,
            summary: format!("{kind} {outcome}"),
            snapshot: None,
            report: None,
            error: (outcome != Outcome::Success).then(|| "the share is not mounted".into()),
            details: crate::journal::Details::none(),
        }
    }

    fn subjects(m: &Monitor) -> Vec<String> {
        m.outbox()
            .list(true)
            .unwrap()
            .into_iter()
            .map(|q| q.subject)
            .collect()
    }

    #[test]
    fn a_failure_alerts_once_reminds_daily_and_its_fix_resolves_it_once() {
        let (_dir, config, conn) = setup();
        let m = Monitor::new(&conn, &config).unwrap();
        m.after_run(RowId(1), &run(RunKind::Backup, Outcome::Failed, 0), at(0))
            .unwrap();
        m.after_run(RowId(2), &run(RunKind::Backup, Outcome::Failed, 24), at(24))
            .unwrap();
        let open = m.incidents(false).unwrap();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(
            open[0].run,
            Some(RowId(2)),
            "the incident names the latest failed run"
        );
        assert_eq!(subjects(&m).len(), 1, "one alert for one problem");
        // Reminders: once a day while it stays open, not more.
        assert_eq!(m.remind(at(23)).unwrap(), 0);
        assert_eq!(m.remind(at(24)).unwrap(), 1);
        assert_eq!(m.remind(at(30)).unwrap(), 0);
        assert_eq!(m.remind(at(48)).unwrap(), 1);
        m.after_run(
            RowId(3),
            &run(RunKind::Backup, Outcome::Success, 50),
            at(50),
        )
        .unwrap();
        m.after_run(
            RowId(4),
            &run(RunKind::Backup, Outcome::Success, 74),
            at(74),
        )
        .unwrap();
        assert!(m.incidents(false).unwrap().is_empty());
        let s = subjects(&m);
        assert_eq!(s.len(), 4, "alert, two reminders, one resolved: {s:?}");
        assert!(s[0].contains("backup staff failed"), "{s:?}");
        assert!(s[3].contains("resolved"), "{s:?}");
        assert_eq!(
            m.remind(at(100)).unwrap(),
            0,
            "nothing open, nothing to remind"
        );
    }

    #[test]
    fn a_partial_backup_replaces_a_failure_and_an_interrupted_one_changes_nothing() {
        let (_dir, config, conn) = setup();
        let m = Monitor::new(&conn, &config).unwrap();
        m.after_run(RowId(1), &run(RunKind::Backup, Outcome::Failed, 0), at(0))
            .unwrap();
        m.after_run(
            RowId(2),
            &run(RunKind::Backup, Outcome::Interrupted, 1),
            at(1),
        )
        .unwrap();
        let open: Vec<&str> = m
            .incidents(false)
            .unwrap()
            .into_iter()
            .map(|i| i.kind.as_str())
            .collect();
        assert_eq!(
            open,
            ["backup-failed"],
            "a shutdown is not a failure, nor a fix"
        );
        m.after_run(RowId(3), &run(RunKind::Backup, Outcome::Partial, 2), at(2))
            .unwrap();
        let open: Vec<&str> = m
            .incidents(false)
            .unwrap()
            .into_iter()
            .map(|i| i.kind.as_str())
            .collect();
        assert_eq!(open, ["backup-partial"]);
        let s = subjects(&m);
        assert_eq!(
            s.len(),
            3,
            "failed, resolved, could not read some files: {s:?}"
        );
        assert!(s[2].contains("could not read some files"), "{s:?}");
    }

    #[test]
    fn a_failed_drill_and_a_failed_prune_are_incidents_of_their_own() {
        let (_dir, config, conn) = setup();
        let m = Monitor::new(&conn, &config).unwrap();
        m.after_run(RowId(1), &run(RunKind::Drill, Outcome::Damage, 0), at(0))
            .unwrap();
        m.after_run(RowId(2), &run(RunKind::Prune, Outcome::Failed, 0), at(0))
            .unwrap();
        m.after_run(RowId(3), &run(RunKind::Backup, Outcome::Success, 1), at(1))
            .unwrap();
        let mut open: Vec<&str> = m
            .incidents(false)
            .unwrap()
            .into_iter()
            .map(|i| i.kind.as_str())
            .collect();
        open.sort();
        assert_eq!(
            open,
            ["drill-failed", "job-failed"],
            "a good backup fixes neither"
        );
        m.after_run(RowId(4), &run(RunKind::Drill, Outcome::Success, 2), at(2))
            .unwrap();
        m.after_run(RowId(5), &run(RunKind::Prune, Outcome::Success, 2), at(2))
            .unwrap();
        assert!(m.incidents(false).unwrap().is_empty());
        assert_eq!(subjects(&m).len(), 4);
    }
}
