//! schedules/*.toml: what is backed up, where, when, how fresh it must be, and how long
//! its snapshots are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::hours::{HOURS_FIX, Hours};
use super::service::{RepositoryConfig, known, toml_files};
use super::values::parse_duration;
use super::{ConfigError, Source};
use crate::cron::Cron;
use crate::storage::Rate;

/// A schedule: one backup job.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub name: String,
    pub file: PathBuf,
    pub repository: String,
    pub label: Option<String>,
    pub paths: Vec<PathBuf>,
    pub exclude: Vec<String>,
    pub tags: Vec<String>,
    pub cron: Cron,
    pub rpo: Duration,
    pub heartbeat_url: Option<String>,
    /// Retention, applied after each good backup to this schedule's snapshots (empty: keep
    /// everything).
    pub keep: crate::retention::Policy,
    /// When its scheduled backups may use the link: a backup still running when these hours
    /// end stops at a checkpoint (journalled `paused`) and continues on its next run.
    pub window: Option<Hours>,
    /// Bandwidth limits while its backups run: the first of `limits` whose hours hold, else
    /// these (none: the command line's, else unlimited).
    pub limit_upload: Option<Rate>,
    pub limit_download: Option<Rate>,
    pub limits: Vec<TimedLimit>,
}

/// `[[limit]]`: limits for some hours, like the school day.
#[derive(Clone, Debug)]
pub struct TimedLimit {
    pub when: Hours,
    pub upload: Option<Rate>,
    pub download: Option<Rate>,
}

impl Schedule {
    /// The (upload, download) limits of this schedule's backups at `at`; `None` leaves the
    /// direction as the command line set it.
    pub fn limits_at(&self, at: &jiff::Zoned) -> (Option<Rate>, Option<Rate>) {
        match self.limits.iter().find(|l| l.when.contains(at)) {
            Some(l) => (
                l.upload.or(self.limit_upload),
                l.download.or(self.limit_download),
            ),
            None => (self.limit_upload, self.limit_download),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: Option<String>,
    repository: Spanned<String>,
    label: Option<String>,
    paths: Spanned<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    cron: Spanned<String>,
    rpo: Spanned<String>,
    heartbeat_url: Option<Spanned<String>>,
    #[serde(default)]
    keep: RawKeep,
    window: Option<Spanned<String>>,
    limit_upload: Option<Spanned<String>>,
    limit_download: Option<Spanned<String>>,
    #[serde(default)]
    limit: Vec<RawLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    when: Spanned<String>,
    upload: Option<Spanned<String>>,
    download: Option<Spanned<String>>,
}

const RATE_FIX: &str = "a rate like \"20Mbit/s\", \"10 Mbps\" or \"2MiB/s\"";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeep {
    last: Option<u32>,
    hourly: Option<u32>,
    daily: Option<u32>,
    weekly: Option<u32>,
    monthly: Option<u32>,
    yearly: Option<u32>,
    within: Option<Spanned<String>>,
    /// Each entry a tag, or tags joined by commas that a snapshot must all carry (as
    /// `vouch forget --keep-tag` takes them).
    #[serde(default)]
    tags: Vec<String>,
}

pub(super) const CRON_FIX: &str = "five fields, minute hour day-of-month month day-of-week: \"0 1 * * *\" is 01:00 every day, \"30 6 * * 1\" Mondays at 06:30";

pub(super) fn load_schedules(
    dir: &Path,
    repositories: &BTreeMap<String, RepositoryConfig>,
    tz: &jiff::tz::TimeZone,
    errors: &mut Vec<ConfigError>,
) -> Vec<Schedule> {
    let mut out: Vec<Schedule> = Vec::new();
    for file in toml_files(dir) {
        match Schedule::load(&file, repositories, tz) {
            Ok(s) => {
                if out.iter().any(|o| o.name == s.name) {
                    errors.push(ConfigError {
                        file: file.clone(),
                        line: 0,
                        message: format!("a second schedule named {:?}", s.name),
                        fix: "give every schedule its own name".into(),
                    });
                } else {
                    out.push(s);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    out
}

impl Schedule {
    /// Read one schedule file, collecting every mistake in it.
    pub fn load(
        file: &Path,
        repositories: &BTreeMap<String, RepositoryConfig>,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Schedule, Vec<ConfigError>> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            vec![ConfigError {
                file: file.to_path_buf(),
                line: 0,
                message: format!("cannot read the schedule: {e}"),
                fix: String::new(),
            }]
        })?;
        let src = Source { file, text: &text };
        let raw: RawSchedule = toml::from_str(&text).map_err(|e| vec![src.toml_error(&e)])?;
        let mut errors = Vec::new();
        if !repositories.contains_key(raw.repository.get_ref()) {
            errors.push(src.error(
                raw.repository.span(),
                format!(
                    "repository = {:?} is not in vouch.toml's [repositories] (it has {})",
                    raw.repository.get_ref(),
                    known(repositories.keys())
                ),
                "use one of those names, or add a [repositories.NAME] table to vouch.toml",
            ));
        }
        if raw.paths.get_ref().is_empty() {
            errors.push(src.error(
                raw.paths.span(),
                "paths is empty",
                "list the shares to back up, like [\"/volume1/staff\"]",
            ));
        }
        for p in raw.paths.get_ref() {
            if !p.starts_with('/') {
                errors.push(src.error(
                    raw.paths.span(),
                    format!("path {p:?} is not absolute"),
                    "write the full path, like \"/volume1/staff\"",
                ));
            }
        }
        if let Err(e) = crate::backup::Excludes::new(&raw.exclude) {
            errors.push(ConfigError {
                file: file.to_path_buf(),
                line: text
                    .lines()
                    .position(|l| l.trim_start().starts_with("exclude"))
                    .map_or(0, |i| i + 1),
                message: e.to_string(),
                fix: "patterns are globs: \"Thumbs.db\", \"~$*\", \"/volume1/staff/tmp/**\"".into(),
            });
        }
        let cron = match Cron::parse(raw.cron.get_ref()) {
            Ok(c) => Some(c),
            Err(m) => {
                errors.push(src.error(
                    raw.cron.span(),
                    format!(
                        "cron {:?} is not a cron expression: {m}",
                        raw.cron.get_ref()
                    ),
                    CRON_FIX,
                ));
                None
            }
        };
        let rpo = match parse_duration(raw.rpo.get_ref()) {
            Ok(d) => Some(d),
            Err(m) => {
                errors.push(src.error(raw.rpo.span(), m, ""));
                None
            }
        };
        if let (Some(c), Some(rpo)) = (&cron, rpo) {
            let now = jiff::Timestamp::from_second(1_767_225_600).expect("2026-01-01");
            if let Some(gap) = c.longest_gap(now, tz) {
                if rpo.as_secs() as i64 <= gap.as_secs() {
                    errors.push(src.error(
                        raw.rpo.span(),
                        format!(
                            "rpo = {:?} is not longer than the longest time between runs of cron {:?} ({}): the backup would be reported stale before its next run",
                            raw.rpo.get_ref(),
                            c.text(),
                            humantime::format_duration(Duration::from_secs(gap.as_secs() as u64))
                        ),
                        format!("allow for a slow run too, e.g. rpo = \"{}h\"", gap.as_hours() + 2),
                    ));
                }
            }
        }
        if let Some(u) = &raw.heartbeat_url {
            if !(u.get_ref().starts_with("https://") || u.get_ref().starts_with("http://")) {
                errors.push(src.error(u.span(), format!("heartbeat_url {:?} is not an http(s) URL", u.get_ref()), "paste the ping URL from the monitoring service, like \"https://hc-ping.com/…\""));
            }
        }
        let within = match &raw.keep.within {
            Some(w) => match crate::retention::Within::parse(w.get_ref()) {
                Ok(w) => Some(w),
                Err(m) => {
                    errors.push(src.error(
                        w.span(),
                        format!("[keep] within: {m}"),
                        "for example within = \"30d\"",
                    ));
                    None
                }
            },
            None => None,
        };
        let hours = |field: &str, v: &Spanned<String>, errors: &mut Vec<ConfigError>| {
            Hours::parse(v.get_ref())
                .map_err(|m| errors.push(src.error(v.span(), format!("{field}: {m}"), HOURS_FIX)))
                .ok()
        };
        let window = raw
            .window
            .as_ref()
            .and_then(|w| hours("window", w, &mut errors));
        let rate = |field: &str, v: &Option<Spanned<String>>, errors: &mut Vec<ConfigError>| {
            v.as_ref().and_then(|v| {
                Rate::parse(v.get_ref())
                    .map_err(|m| {
                        errors.push(src.error(v.span(), format!("{field}: {m}"), RATE_FIX))
                    })
                    .ok()
            })
        };
        let limit_upload = rate("limit_upload", &raw.limit_upload, &mut errors);
        let limit_download = rate("limit_download", &raw.limit_download, &mut errors);
        let mut limits = Vec::new();
        for l in &raw.limit {
            let when = hours("[[limit]] when", &l.when, &mut errors);
            let upload = rate("[[limit]] upload", &l.upload, &mut errors);
            let download = rate("[[limit]] download", &l.download, &mut errors);
            if l.upload.is_none() && l.download.is_none() {
                errors.push(src.error(
                    l.when.span(),
                    "this [[limit]] gives neither upload nor download",
                    "add upload = \"10Mbit/s\" (or download = …) to it, or remove it",
                ));
            }
            if let Some(when) = when {
                limits.push(TimedLimit {
                    when,
                    upload,
                    download,
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Schedule {
            window,
            limit_upload,
            limit_download,
            limits,
            name: raw.name.clone().unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
            file: file.to_path_buf(),
            repository: raw.repository.into_inner(),
            label: raw.label,
            paths: raw
                .paths
                .into_inner()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            exclude: raw.exclude,
            tags: raw.tags,
            cron: cron.expect("checked"),
            rpo: rpo.expect("checked"),
            heartbeat_url: raw.heartbeat_url.map(Spanned::into_inner),
            keep: crate::retention::Policy {
                last: raw.keep.last.map(crate::retention::Count::N),
                hourly: raw.keep.hourly.map(crate::retention::Count::N),
                daily: raw.keep.daily.map(crate::retention::Count::N),
                weekly: raw.keep.weekly.map(crate::retention::Count::N),
                monthly: raw.keep.monthly.map(crate::retention::Count::N),
                yearly: raw.keep.yearly.map(crate::retention::Count::N),
                within,
                tags: raw
                    .keep
                    .tags
                    .iter()
                    .map(|t| t.split(',').map(|s| s.trim().to_string()).collect())
                    .collect(),
            },
        })
    }
}
