//! The service's commands: config check, run, status, journal, outbox, daemon.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::clock::{Clock, SystemClock, human};
use crate::config::{Config, config_path};
use crate::journal::{Journal, Outcome, Record, Trigger};
use crate::schedule::service::Service;

use super::{EXIT_DAMAGE, EXIT_FAILED, EXIT_OK};

fn load(explicit: Option<&Path>) -> Result<Config> {
    let path = config_path(explicit);
    Ok(Config::load(&path)?)
}

fn service(explicit: Option<&Path>) -> Result<Service> {
    let config = load(explicit)?;
    Ok(Service::new(config, Arc::new(SystemClock))?)
}

/// What `config check --json` prints: every mistake, located, and when there are none what
/// the configuration holds (the jobs with their next run, where mail goes).
fn config_summary(
    path: &Path,
    config: Option<&Config>,
    errors: &[crate::config::ConfigError],
) -> serde_json::Value {
    let mut out = serde_json::json!({
        "file": path.display().to_string(),
        "ok": errors.is_empty(),
        "mistakes": errors,
    });
    let Some(c) = config.filter(|_| errors.is_empty()) else {
        return out;
    };
    let now = SystemClock.now();
    let next = |cron: Option<&crate::cron::Cron>| {
        cron.and_then(|cron| cron.next_after(now, &c.time_zone))
            .map(|t| t.to_string())
    };
    out["school"] = c.school.clone().into();
    out["time_zone"] = c.time_zone_name.clone().into();
    out["repositories"] = c.repositories.keys().cloned().collect::<Vec<_>>().into();
    out["schedules"] = c
        .schedules
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "repository": s.repository,
                "paths": s.paths,
                "cron": s.cron.text(),
                "next_run": next(Some(&s.cron)),
                "rpo_hours": s.rpo.as_secs_f64() / 3600.0,
            })
        })
        .collect::<Vec<_>>()
        .into();
    out["plans"] = c
        .plans
        .iter()
        .map(|p| {
            let cron = p
                .cron
                .as_deref()
                .and_then(|t| crate::cron::Cron::parse(t).ok());
            serde_json::json!({
                "name": p.name,
                "repository": p.repository,
                "cron": p.cron,
                "next_run": next(cron.as_ref()),
            })
        })
        .collect::<Vec<_>>()
        .into();
    out["mail"] = match &c.smtp {
        Some(s) => {
            serde_json::json!({ "smtp": format!("{}:{}", s.host, s.port), "to": c.alerts_to })
        }
        None => {
            serde_json::json!({ "folder": c.mail_folder.display().to_string(), "to": c.alerts_to })
        }
    };
    out
}

pub fn config_check(explicit: Option<&Path>, json: bool) -> Result<i32> {
    let path = config_path(explicit);
    let (config, errors) = Config::check_all(&path);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&config_summary(&path, config.as_ref(), &errors))?
        );
        return Ok(if errors.is_empty() {
            EXIT_OK
        } else {
            EXIT_FAILED
        });
    }
    if !errors.is_empty() {
        for e in &errors {
            outln!("{e}");
        }
        outln!("{} mistake(s) in the configuration", errors.len());
        return Ok(EXIT_FAILED);
    }
    let c = config.expect("no errors");
    let now = SystemClock.now();
    outln!(
        "{}: ok — {}, time zone {}",
        path.display(),
        c.school,
        c.time_zone_name
    );
    outln!(
        "  {} repositor{}: {}",
        c.repositories.len(),
        if c.repositories.len() == 1 {
            "y"
        } else {
            "ies"
        },
        c.repositories
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in &c.schedules {
        let next = s.cron.next_after(now, &c.time_zone).map(|t| {
            t.to_zoned(c.time_zone.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        });
        outln!(
            "  schedule {}: {} → {}, cron {:?} (next {}), rpo {}",
            s.name,
            s.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            s.repository,
            s.cron.text(),
            next.unwrap_or_default(),
            humantime::format_duration(s.rpo)
        );
    }
    for p in &c.plans {
        outln!(
            "  restore test {}: {}",
            p.name,
            p.cron
                .as_deref()
                .map_or("run by hand".to_string(), |c| format!("cron {c:?}"))
        );
    }
    match &c.smtp {
        Some(s) => outln!(
            "  mail: SMTP {}:{} to {}",
            s.host,
            s.port,
            c.alerts_to.join(", ")
        ),
        None => outln!("  mail: written to {} (no [smtp])", c.mail_folder.display()),
    }
    if c.alerts_to.is_empty() {
        outln!("  warning: [alerts] to is empty: nobody would hear about a failed backup");
    }
    Ok(EXIT_OK)
}

pub async fn run(
    explicit: Option<&Path>,
    job: &str,
    operator: Option<String>,
    scheduled: bool,
    json: bool,
) -> Result<i32> {
    let service = service(explicit)?;
    if job == "check-freshness" {
        service.housekeeping().await?;
        service.flush_outbox().await?;
        let stale = service.with_journal(|j| {
            crate::notify::Monitor::new(j.connection(), &service.config)
                .and_then(|m| m.incidents(false))
        })?;
        let stale: Vec<_> = stale
            .into_iter()
            .filter(|i| i.kind == crate::notify::incident::IncidentKind::Stale)
            .collect();
        if json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "stale": stale }))?
            );
        }
        for i in stale.iter().filter(|_| !json) {
            outln!("STALE: {}", i.detail);
        }
        if stale.is_empty() && !json {
            outln!("every schedule has a good backup within its RPO");
        }
        return Ok(if stale.is_empty() {
            EXIT_OK
        } else {
            EXIT_DAMAGE
        });
    }
    let operator = operator.unwrap_or_else(crate::sys::username);
    let trigger = if scheduled {
        Trigger::Schedule
    } else {
        Trigger::Manual
    };
    // SIGTERM (systemd stopping the unit, a shutdown) or Ctrl-C: as the daemon does, the job
    // gets the grace period, then a backup stops at a consistent point and is journalled as
    // interrupted, instead of the process dying with its lock and its packs half-written.
    let abort = service.abort.clone();
    let watcher = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let grace = crate::schedule::daemon::shutdown_grace();
        errln!(
            "vouch: stopping: the job gets {} to finish, then stops at a consistent point",
            humantime::format_duration(grace)
        );
        tokio::time::sleep(grace).await;
        abort.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let o = service.run_job(job, trigger, &operator).await;
    watcher.abort();
    let o = o?;
    if json {
        let (_, pending) = service.flush_outbox().await?;
        let sent = service.mail_sent.load(std::sync::atomic::Ordering::Relaxed);
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "run": o.seq,
                // As `journal list --json` shows the row.
                "record": crate::journal::Record::Run(o.record.clone()),
                "mail": { "sent": sent, "waiting": pending },
            }))?
        );
        return Ok(crate::cli::exit_for(o.record.outcome));
    }
    outln!(
        "run #{}: {} {} {}: {}",
        o.seq,
        o.record.kind,
        o.record.job,
        o.record.outcome,
        o.record.summary
    );
    if let Some(e) = &o.record.error {
        errln!("{e}");
    }
    let (_, pending) = service.flush_outbox().await?;
    let sent = service.mail_sent.load(std::sync::atomic::Ordering::Relaxed);
    if sent + pending > 0 {
        outln!(
            "mail: {sent} sent to {}, {pending} waiting",
            service.mailer().describe()
        );
    }
    Ok(crate::cli::exit_for(o.record.outcome))
}

#[derive(Serialize)]
struct JobStatus {
    name: String,
    kind: &'static str,
    repository: String,
    cron: Option<String>,
    next_run: Option<String>,
    last_run: Option<crate::journal::RowId>,
    last_outcome: Option<Outcome>,
    #[serde(with = "crate::repo::format::rfc3339::option")]
    last_ended: Option<jiff::Timestamp>,
    #[serde(with = "crate::repo::format::rfc3339::option")]
    last_good: Option<jiff::Timestamp>,
    rpo_hours: Option<f64>,
    fresh: Option<bool>,
    /// A backup whose last run paused or was interrupted: how far it has got.
    #[serde(skip_serializing_if = "Option::is_none")]
    unfinished: Option<crate::backup::SeedProgress>,
}

pub async fn status(explicit: Option<&Path>, json: bool) -> Result<i32> {
    let service = service(explicit)?;
    let c = &service.config;
    let now = service.clock.now();
    let tz = &c.time_zone;
    let local = |t: jiff::Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    };
    let runs = service.with_journal(|j| j.runs())?;
    let mut jobs = Vec::new();
    for s in &c.schedules {
        let last = runs.iter().rfind(|(_, r)| r.job == s.name);
        let good = runs
            .iter()
            .filter(|(_, r)| {
                r.job == s.name && matches!(r.outcome, Outcome::Success | Outcome::Partial)
            })
            .map(|(_, r)| r.ended)
            .max();
        let rpo =
            jiff::SignedDuration::try_from(s.rpo).unwrap_or(jiff::SignedDuration::from_hours(24));
        jobs.push(JobStatus {
            name: s.name.clone(),
            kind: "backup",
            repository: s.repository.clone(),
            cron: Some(s.cron.text().to_string()),
            next_run: s.cron.next_after(now, tz).map(&local),
            last_run: last.map(|(seq, _)| *seq),
            last_outcome: last.map(|(_, r)| r.outcome),
            last_ended: last.map(|(_, r)| r.ended),
            last_good: good,
            rpo_hours: Some(s.rpo.as_secs_f64() / 3600.0),
            fresh: Some(good.is_some_and(|g| now.duration_since(g) <= rpo)),
            unfinished: last
                .filter(|(_, r)| matches!(r.outcome, Outcome::Paused | Outcome::Interrupted))
                .and_then(|(_, r)| {
                    r.details_as::<crate::schedule::service::BackupDetails>()?
                        .unfinished
                }),
        });
    }
    for p in &c.plans {
        let last = runs.iter().rfind(|(_, r)| r.job == p.name);
        let passed = runs
            .iter()
            .filter(|(_, r)| r.job == p.name && r.outcome == Outcome::Success)
            .map(|(_, r)| r.ended)
            .max();
        let cron = p
            .cron
            .as_deref()
            .and_then(|c| crate::cron::Cron::parse(c).ok());
        jobs.push(JobStatus {
            name: p.name.clone(),
            kind: "drill",
            repository: p.repository.clone().unwrap_or_default(),
            cron: p.cron.clone(),
            next_run: cron.and_then(|c| c.next_after(now, tz)).map(&local),
            last_run: last.map(|(seq, _)| *seq),
            last_outcome: last.map(|(_, r)| r.outcome),
            last_ended: last.map(|(_, r)| r.ended),
            last_good: passed,
            rpo_hours: None,
            fresh: None,
            unfinished: None,
        });
    }
    let incidents = service.with_journal(|j| {
        crate::notify::Monitor::new(j.connection(), c).and_then(|m| m.incidents(false))
    })?;
    let pending = service
        .with_journal(|j| crate::notify::Outbox::new(j.connection()).and_then(|o| o.pending()))?;
    let stuck = service.outbox_stuck()?;
    if json {
        #[derive(Serialize)]
        struct Status<'a> {
            school: &'a str,
            jobs: &'a [JobStatus],
            incidents: &'a [crate::notify::Incident],
            outbox_pending: usize,
            mail_stuck: Option<&'a crate::notify::Stuck>,
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&Status {
                school: &c.school,
                jobs: &jobs,
                incidents: &incidents,
                outbox_pending: pending,
                mail_stuck: stuck.as_ref(),
            })?
        );
        return Ok(EXIT_OK);
    }
    outln!(
        "{} — vouch on {}, {} ({})",
        c.school,
        crate::sys::hostname(),
        local(now),
        c.time_zone_name
    );
    for j in &jobs {
        let last = match (j.last_run, j.last_outcome, j.last_ended) {
            (Some(seq), Some(o), Some(t)) => format!("last run #{seq} {o} at {}", local(t)),
            _ => "never run".to_string(),
        };
        let health = match (j.kind, j.fresh, j.last_good) {
            ("backup", Some(true), Some(g)) => format!(
                "last good backup {} ago, RPO {}h: ok",
                crate::notify::incident::ago(now.duration_since(g)),
                j.rpo_hours.unwrap_or_default()
            ),
            ("backup", _, Some(g)) => format!(
                "last good backup {} ago, RPO {}h: STALE",
                crate::notify::incident::ago(now.duration_since(g)),
                j.rpo_hours.unwrap_or_default()
            ),
            ("backup", _, None) => "no good backup yet".to_string(),
            (_, _, Some(g)) => format!("last passed {}", local(g)),
            _ => "never passed".to_string(),
        };
        outln!(
            "  {:<8} {:<22} → {:<10} next {:<22} {last}; {health}",
            j.kind,
            j.name,
            j.repository,
            j.next_run.clone().unwrap_or_else(|| "by hand".into())
        );
        if let Some(u) = &j.unfinished {
            outln!(
                "           unfinished backup, continued by its next run: {}",
                u.describe()
            );
        }
    }
    let last_drill = runs
        .iter()
        .filter(|(_, r)| r.kind == crate::journal::RunKind::Drill && r.outcome == Outcome::Success)
        .map(|(_, r)| r.ended)
        .max();
    match last_drill {
        Some(t) => outln!(
            "  last passed test restore: {} (the policy asks for one at least every year)",
            human(t)
        ),
        None if !c.plans.is_empty() => {
            outln!("  no test restore has passed yet: run `vouch drill <plan>`")
        }
        None => {}
    }
    for i in &incidents {
        outln!(
            "  OPEN since {}: {} — {}",
            local(i.opened),
            i.title,
            i.detail
        );
    }
    if incidents.is_empty() {
        outln!("  no open incidents");
    }
    if pending > 0 {
        outln!("  {pending} email(s) waiting in the outbox (`vouch outbox`)");
    }
    if let Some(st) = &stuck {
        outln!(
            "  MAIL NOT GOING OUT: {} email(s) waiting since {}; last error: {} (`vouch doctor --test-email` tests the mail settings)",
            st.waiting,
            local(st.since),
            st.last_error
        );
    }
    Ok(if incidents.is_empty() && stuck.is_none() {
        EXIT_OK
    } else {
        EXIT_DAMAGE
    })
}

fn journal(explicit: Option<&Path>) -> Result<Journal> {
    let c = load(explicit)?;
    Ok(Journal::open(&c.state_dir)?)
}

pub fn journal_list(explicit: Option<&Path>, json: bool) -> Result<i32> {
    let j = journal(explicit)?;
    let entries = j.entries()?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(EXIT_OK);
    }
    for e in &entries {
        match &e.record {
            Record::Run(r) => outln!(
                "#{:<5} {}  {:<8} {:<22} {:<12} {:<11} {}",
                e.seq,
                human(r.started),
                r.kind,
                r.job,
                r.trigger,
                r.outcome,
                r.summary
            ),
            Record::Annotation(a) => outln!(
                "#{:<5} {}  note on #{} by {}: {}",
                e.seq,
                human(a.time),
                a.run,
                a.operator,
                a.text
            ),
        }
    }
    if entries.is_empty() {
        outln!("the journal is empty");
    }
    Ok(EXIT_OK)
}

pub fn journal_show(
    explicit: Option<&Path>,
    run: crate::journal::RowId,
    json: bool,
) -> Result<i32> {
    let j = journal(explicit)?;
    let e = j.entry(run)?;
    if json {
        let notes = j.annotations(run)?;
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "entry": e, "notes": notes }))?
        );
        return Ok(EXIT_OK);
    }
    outln!("{}", serde_json::to_string_pretty(&e)?);
    for a in j.annotations(run)? {
        outln!("note {} by {}: {}", human(a.time), a.operator, a.text);
    }
    Ok(EXIT_OK)
}

pub async fn journal_verify(explicit: Option<&Path>, json: bool) -> Result<i32> {
    let service = service(explicit)?;
    let report = service.with_journal(|j| j.verify())?;
    let entries = service.with_journal(|j| j.entries())?;
    let pending = service.with_journal(|j| j.pending_mirrors())?;
    let mut mirrors = Vec::new();
    for name in service.config.repositories.keys() {
        let waiting: std::collections::HashSet<crate::journal::RowId> = pending
            .iter()
            .filter(|(_, r)| r == name)
            .map(|(seq, _)| *seq)
            .collect();
        match service.repository(name).await {
            Ok(repo) => mirrors.push(
                crate::journal::verify_mirror(
                    &entries,
                    &waiting,
                    name,
                    &repo,
                    &crate::sys::hostname(),
                )
                .await?,
            ),
            Err(e) => errln!(
                "vouch: warning: repository {name} cannot be opened to compare its copy: {e}"
            ),
        }
    }
    let ok = report.broken.is_empty() && mirrors.iter().all(|m| m.agrees());
    if json {
        #[derive(Serialize)]
        struct V<'a> {
            ok: bool,
            chain: &'a crate::journal::VerifyReport,
            mirrors: &'a [crate::journal::MirrorCheck],
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&V {
                ok,
                chain: &report,
                mirrors: &mirrors
            })?
        );
    } else {
        outln!(
            "journal {}: {} row(s), chain head {}",
            service.with_journal(|j| j.path().display().to_string()),
            report.rows,
            report.head
        );
        for (seq, why) in &report.broken {
            outln!("BROKEN: row {seq}: {why}");
        }
        for m in &mirrors {
            outln!(
                "copy in repository {}: {} of {} row(s) mirrored{}",
                m.repository,
                m.local_rows
                    .saturating_sub(m.not_yet.len() + m.missing_in_mirror.len() + m.damaged.len()),
                m.local_rows,
                if m.not_yet.is_empty() {
                    String::new()
                } else {
                    format!(" ({} waiting to be mirrored)", m.not_yet.len())
                }
            );
            for (key, why) in &m.unreadable {
                outln!(
                    "DAMAGED: {key} in repository {} cannot be read: {why}",
                    m.repository
                );
            }
            for seq in &m.missing_in_mirror {
                outln!(
                    "BROKEN: row {seq} was mirrored to repository {} and is gone from it",
                    m.repository
                );
            }
            for seq in &m.differing {
                outln!(
                    "BROKEN: row {seq} differs from the copy in repository {}",
                    m.repository
                );
            }
            for seq in &m.missing_locally {
                outln!(
                    "BROKEN: row {seq} is in repository {} but gone from the local journal",
                    m.repository
                );
            }
        }
        outln!(
            "{}",
            if ok {
                "the journal verifies"
            } else {
                "the journal does NOT verify"
            }
        );
    }
    Ok(if ok { EXIT_OK } else { EXIT_DAMAGE })
}

pub async fn journal_annotate(
    explicit: Option<&Path>,
    run: crate::journal::RowId,
    text: &str,
    operator: Option<String>,
) -> Result<i32> {
    if text.trim().is_empty() {
        bail!(
            "the note is empty: say what was done, like \"share remounted, backup re-run by J. Smith\""
        );
    }
    let service = service(explicit)?;
    let seq = service
        .annotate(run, text, &operator.unwrap_or_else(crate::sys::username))
        .await?;
    outln!("noted as row #{seq} on run #{run}");
    Ok(EXIT_OK)
}

pub async fn outbox(explicit: Option<&Path>, all: bool, flush: bool, json: bool) -> Result<i32> {
    let service = service(explicit)?;
    if flush {
        let (sent, pending) = service.deliver(true).await?;
        outln!(
            "{sent} sent to {}, {pending} waiting",
            service.mailer().describe()
        );
    }
    let list = service
        .with_journal(|j| crate::notify::Outbox::new(j.connection()).and_then(|o| o.list(all)))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(EXIT_OK);
    }
    for q in &list {
        outln!(
            "#{} {} to {}: {}{}",
            q.id,
            q.sent.as_deref().map_or(
                format!("waiting ({} tries, next {})", q.attempts, q.next_attempt),
                |s| format!("sent {s}")
            ),
            q.to.join(", "),
            q.subject,
            q.last_error
                .as_ref()
                .map(|e| format!("\n    last error: {e}"))
                .unwrap_or_default()
        );
    }
    if list.is_empty() {
        outln!("nothing waiting");
    }
    Ok(EXIT_OK)
}

pub async fn daemon(explicit: Option<&Path>) -> Result<i32> {
    let path = config_path(explicit);
    Config::load(&path).with_context(|| "the daemon does not start with a broken configuration")?;
    let signals = Arc::new(crate::schedule::daemon::Signals::default());
    crate::schedule::daemon::listen(signals.clone())?;
    let tick = std::env::var("VOUCH_DAEMON_TICK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis,
        );
    crate::schedule::daemon::run(path, Arc::new(SystemClock), signals, tick).await?;
    Ok(EXIT_OK)
}

/// `vouch acknowledge RUN --note TEXT`: a possible-ransomware alert was expected or dealt with.
pub async fn acknowledge(
    explicit: Option<&Path>,
    run: crate::journal::RowId,
    note: &str,
    operator: Option<String>,
) -> Result<i32> {
    let service = service(explicit)?;
    let operator = operator.unwrap_or_else(crate::sys::username);
    let said = service.acknowledge(run, note, &operator).await?;
    outln!("{said}");
    // The "resolved" email goes out now if the server answers; otherwise it waits.
    service.flush_outbox().await?;
    Ok(EXIT_OK)
}
