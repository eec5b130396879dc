//! `vouch daemon`: fires backups and drills on their cron expressions in the school's time
//! zone, runs a job missed while the NAS was off exactly once at start-up (recorded as a
//! catch-up), keeps jobs on one repository from overlapping, watches freshness and sends what
//! is due; reloads on SIGHUP; on SIGTERM starts nothing new and gives a running backup a
//! deadline to finish before stopping it at a consistent point.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::clock::Clock;
use crate::config::Config;
use crate::cron::Cron;
use crate::journal::Trigger;

use super::service::{JobKind, Service};

/// How long a running backup may take to finish after SIGTERM before it is stopped.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(60);

/// A job the daemon fires.
#[derive(Clone, Debug)]
pub struct Job {
    /// What it is; `name` is its key in the journal's job state and for `vouch run`.
    pub kind: JobKind,
    pub name: String,
    pub cron: Cron,
    pub repository: String,
}

/// Every schedule, and every plan that has a cron expression.
pub fn jobs(config: &Config) -> Vec<Job> {
    let mut out: Vec<Job> = config
        .schedules
        .iter()
        .map(|s| Job {
            kind: JobKind::Backup(s.name.clone()),
            name: s.name.clone(),
            cron: s.cron.clone(),
            repository: s.repository.clone(),
        })
        .collect();
    for (name, r) in &config.repositories {
        if let Some(cron) = &r.prune {
            let kind = JobKind::Prune(name.clone());
            out.push(Job {
                name: kind.key(),
                kind,
                cron: cron.clone(),
                repository: name.clone(),
            });
        }
    }
    if !config.evidence_to.is_empty() && config.evidence_signing_key.is_some() {
        out.push(Job {
            name: JobKind::Evidence.key(),
            kind: JobKind::Evidence,
            cron: config.evidence_cron.clone(),
            repository: String::new(),
        });
    }
    for p in &config.plans {
        if let Some(cron) = p.cron.as_deref().and_then(|c| Cron::parse(c).ok()) {
            out.push(Job {
                kind: JobKind::Drill(p.name.clone()),
                name: p.name.clone(),
                cron,
                repository: p.repository.clone().unwrap_or_default(),
            });
        }
    }
    out
}

/// The jobs due at `now`: those whose next firing after they were last considered has come.
/// A job that has never been considered is not due; it starts counting now.
pub fn due(
    jobs: &[Job],
    considered: impl Fn(&str) -> Option<Timestamp>,
    tz: &jiff::tz::TimeZone,
    now: Timestamp,
) -> Vec<Job> {
    jobs.iter()
        .filter(|j| {
            considered(&j.name)
                .and_then(|c| j.cron.next_after(c, tz))
                .is_some_and(|next| next <= now)
        })
        .cloned()
        .collect()
}

/// How long running jobs get after SIGTERM (`VOUCH_SHUTDOWN_DEADLINE_MS` for tests).
pub fn shutdown_grace() -> Duration {
    std::env::var("VOUCH_SHUTDOWN_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(SHUTDOWN_DEADLINE, Duration::from_millis)
}

/// What the daemon was told by signals.
#[derive(Default)]
pub struct Signals {
    pub reload: std::sync::atomic::AtomicBool,
    pub stop: std::sync::atomic::AtomicBool,
    pub notify: tokio::sync::Notify,
}

/// Install SIGHUP and SIGTERM (and SIGINT) handlers that set the flags.
pub fn listen(signals: Arc<Signals>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => signals.reload.store(true, std::sync::atomic::Ordering::SeqCst),
                _ = term.recv() => signals.stop.store(true, std::sync::atomic::Ordering::SeqCst),
                _ = int.recv() => signals.stop.store(true, std::sync::atomic::Ordering::SeqCst),
            }
            signals.notify.notify_waiters();
        }
    });
    Ok(())
}

/// Why the daemon stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Service(#[from] super::service::ServiceError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// Run until SIGTERM. `tick` is how often the daemon looks at the clock.
pub async fn run(
    config_file: PathBuf,
    clock: Arc<dyn Clock>,
    signals: Arc<Signals>,
    tick: Duration,
) -> Result<(), DaemonError> {
    let config = Config::load(&config_file)?;
    let mut service = Arc::new(Service::new(config, clock.clone())?);
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // Mail goes out from a task of its own, one round at a time: a mail server that accepts
    // connections and never answers delays mail, never a backup.
    let mut delivery: Option<tokio::task::JoinHandle<()>> = None;
    tracing::info!(config = %config_file.display(), jobs = jobs(&service.config).len(), "vouch daemon started");

    // Catch up, once, on what was missed while the daemon was not running.
    let mut first = true;
    loop {
        if signals.stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if signals
            .reload
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            match Config::load(&config_file) {
                Ok(c) => match Service::new(c, clock.clone()) {
                    Ok(s) => {
                        tracing::info!("configuration reloaded");
                        service = Arc::new(s);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "configuration reload failed; keeping the old one")
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload failed; keeping the old one")
                }
            }
        }
        let now = clock.now();
        let all = jobs(&service.config);
        let considered = |name: &str| service.with_journal(|j| j.considered(name).ok().flatten());
        for job in &all {
            if considered(&job.name).is_none() {
                service.with_journal(|j| j.set_considered(&job.name, now))?;
            }
        }
        let due_now = due(&all, considered, &service.config.time_zone, now);
        for job in due_now {
            if !running.lock().expect("running").insert(job.name.clone()) {
                // Still running from its last slot: this slot is skipped, and said so.
                tracing::warn!(job = %job.name, "still running when its next slot came; that slot is skipped");
                service.with_journal(|j| j.set_considered(&job.name, now))?;
                continue;
            }
            service.with_journal(|j| j.set_considered(&job.name, now))?;
            let trigger = if first {
                Trigger::CatchUp
            } else {
                Trigger::Schedule
            };
            let (service, running, name, kind) = (
                service.clone(),
                running.clone(),
                job.name.clone(),
                job.kind.clone(),
            );
            tasks.push(tokio::spawn(async move {
                tracing::info!(job = %name, %trigger, "job starting");
                match service.run(&kind, trigger, "vouch daemon").await {
                    Ok(o) => tracing::info!(job = %name, outcome = %o.record.outcome, run = %o.seq, "job finished"),
                    Err(e) => tracing::error!(job = %name, error = %e, "job could not run"),
                }
                running.lock().expect("running").remove(&name);
            }));
        }
        first = false;
        tasks.retain(|t| !t.is_finished());
        if let Err(e) = service.housekeeping().await {
            tracing::warn!(error = %e, "housekeeping");
        }
        if delivery.as_ref().is_none_or(|d| d.is_finished()) {
            let service = service.clone();
            delivery = Some(tokio::spawn(async move {
                if let Err(e) = service.flush_outbox().await {
                    tracing::warn!(error = %e, "mail delivery");
                }
                if let Ok(Some(st)) = service.outbox_stuck() {
                    tracing::error!(
                        waiting = st.waiting,
                        since = %crate::clock::human(st.since),
                        error = %st.last_error,
                        "mail has not gone out for hours: alerts are not reaching anyone"
                    );
                }
            }));
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = signals.notify.notified() => {}
        }
    }

    // SIGTERM: start nothing new; give running jobs the deadline, then stop them.
    tracing::info!(running = tasks.len(), "stopping: waiting for running jobs");
    let deadline = tokio::time::Instant::now() + shutdown_grace();
    for t in &mut tasks {
        if tokio::time::timeout_at(deadline, &mut *t).await.is_err() {
            service
                .abort
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = t.await;
        }
    }
    // Let a round already under way finish its message rather than cut it off after the
    // server took it (it would go again); then one last round for what the jobs queued. All
    // within systemd's stop timeout (90 s, 60 of them for the jobs).
    let budget = Duration::from_secs(25);
    let started = tokio::time::Instant::now();
    let idle = match delivery.take() {
        Some(mut d) => match tokio::time::timeout(budget, &mut d).await {
            Ok(_) => true,
            Err(_) => {
                d.abort();
                false
            }
        },
        None => true,
    };
    if idle {
        let _ = tokio::time::timeout(
            budget.saturating_sub(started.elapsed()),
            service.flush_outbox(),
        )
        .await;
    }
    tracing::info!("vouch daemon stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Step a manual clock a minute at a time and record when each job fires.
    fn simulate(jobs: &[Job], from: &str, to: &str) -> Vec<(String, String)> {
        let tz = jiff::tz::TimeZone::get("Europe/London").unwrap();
        let mut considered: std::collections::HashMap<String, Timestamp> =
            jobs.iter().map(|j| (j.name.clone(), at(from))).collect();
        let mut now = at(from);
        let mut fired = Vec::new();
        while now < at(to) {
            now += jiff::SignedDuration::from_mins(1);
            for j in due(jobs, |n| considered.get(n).copied(), &tz, now) {
                let local = now.to_zoned(tz.clone());
                fired.push((
                    j.name.clone(),
                    local.strftime("%Y-%m-%d %H:%M %Z").to_string(),
                ));
                considered.insert(j.name.clone(), now);
            }
        }
        fired
    }

    fn job(name: &str, cron: &str) -> Job {
        Job {
            kind: JobKind::Backup(name.into()),
            name: name.into(),
            cron: Cron::parse(cron).unwrap(),
            repository: "offsite".into(),
        }
    }

    #[test]
    fn nightly_jobs_fire_at_local_time_across_both_clock_changes() {
        let jobs = [
            job("staff-nightly", "30 1 * * *"),
            job("mis", "0 8 * * 1-5"),
        ];
        let march = simulate(&jobs, "2026-03-27T12:00:00Z", "2026-03-31T12:00:00Z");
        let nightly: Vec<&str> = march
            .iter()
            .filter(|(n, _)| n == "staff-nightly")
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(
            nightly,
            [
                "2026-03-28 01:30 GMT",
                "2026-03-29 02:00 BST",
                "2026-03-30 01:30 BST",
                "2026-03-31 01:30 BST"
            ]
        );
        let mis: Vec<&str> = march
            .iter()
            .filter(|(n, _)| n == "mis")
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(mis, ["2026-03-30 08:00 BST", "2026-03-31 08:00 BST"]);
        let october = simulate(&jobs[..1], "2026-10-24T12:00:00Z", "2026-10-27T12:00:00Z");
        let times: Vec<&str> = october.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            times,
            [
                "2026-10-25 01:30 BST",
                "2026-10-26 01:30 GMT",
                "2026-10-27 01:30 GMT"
            ]
        );
    }

    #[test]
    fn runs_missed_while_off_are_due_once_at_start_up() {
        let tz = jiff::tz::TimeZone::get("Europe/London").unwrap();
        let jobs = [job("staff-nightly", "0 1 * * *")];
        // Last considered on Friday; the NAS was off all weekend; started on Monday 09:00.
        let last = at("2026-06-05T08:00:00Z");
        let now = at("2026-06-08T08:00:00Z");
        let due_now = due(&jobs, |_| Some(last), &tz, now);
        assert_eq!(due_now.len(), 1, "three missed nights are one catch-up run");
        // Once considered at start-up, nothing more is due until the next night.
        assert!(
            due(
                &jobs,
                |_| Some(now),
                &tz,
                now + jiff::SignedDuration::from_hours(12)
            )
            .is_empty()
        );
        assert_eq!(
            due(&jobs, |_| Some(now), &tz, at("2026-06-09T00:00:00Z")).len(),
            1
        );
        // A job never considered starts counting now.
        assert!(due(&jobs, |_| None, &tz, now).is_empty());
    }
}
