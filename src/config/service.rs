//! vouch.toml: the school, where state lives, the repositories and their credentials, mail,
//! and who is alerted; and schedules/*.toml beside it: what is backed up, where, when, and
//! how fresh it must be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::plan::Plan;
use super::values::parse_duration;
use super::{ConfigError, Source};
use crate::cron::Cron;

use super::schedule::CRON_FIX;
pub use super::schedule::Schedule;

/// A repository as vouch.toml names it.
#[derive(Clone, Debug)]
pub struct RepositoryConfig {
    pub name: String,
    pub url: String,
    pub password_file: PathBuf,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_path_style: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// When the daemon prunes this repository (job `prune:<name>`); none: only by hand.
    pub prune: Option<Cron>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    StartTls,
    Tls,
    None,
}

#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    /// A certificate authority to trust besides the system's (a school's own mail relay).
    pub ca_file: Option<PathBuf>,
}

/// Everything the service reads, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub school: String,
    pub state_dir: PathBuf,
    pub time_zone: jiff::tz::TimeZone,
    pub time_zone_name: String,
    pub scratch_dir: PathBuf,
    pub repositories: BTreeMap<String, RepositoryConfig>,
    pub smtp: Option<SmtpConfig>,
    pub mail_folder: PathBuf,
    pub from: String,
    pub alerts_to: Vec<String>,
    pub reminder: Duration,
    pub evidence_to: Vec<String>,
    pub evidence_signing_key: Option<PathBuf>,
    pub evidence_signing_key_password_file: Option<PathBuf>,
    pub evidence_cron: Cron,
    pub schedules: Vec<Schedule>,
    pub plans: Vec<Plan>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    school: Spanned<String>,
    state_dir: Option<String>,
    time_zone: Option<Spanned<String>>,
    scratch_dir: Option<String>,
    schedules_dir: Option<String>,
    restore_tests_dir: Option<String>,
    #[serde(default)]
    repositories: BTreeMap<String, Spanned<RawRepository>>,
    smtp: Option<Spanned<RawSmtp>>,
    #[serde(default)]
    mail: RawMail,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    evidence: RawEvidence,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: Spanned<String>,
    password_file: Spanned<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_path_style: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key_file: Option<Spanned<String>>,
    prune: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    security: Option<Spanned<String>>,
    username: Option<String>,
    password_file: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMail {
    folder: Option<String>,
    from: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    #[serde(default)]
    to: Vec<Spanned<String>>,
    reminder: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvidence {
    #[serde(default)]
    to: Vec<Spanned<String>>,
    signing_key: Option<Spanned<String>>,
    signing_key_password_file: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
}

/// Where vouch.toml is: `--config`, else `$VOUCH_CONFIG`, else /etc/vouch/vouch.toml.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("VOUCH_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/vouch/vouch.toml"))
}

fn relative_to(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() { p } else { base.join(p) }
}

const SECRET_FIX: &str = "create it (the secret on its first line, chmod 600), or correct the path";

fn check_file(
    src: &Source,
    value: &Spanned<String>,
    base: &Path,
    what: &str,
    fix: &str,
) -> Result<PathBuf, ConfigError> {
    let p = relative_to(base, value.get_ref());
    if !p.is_file() {
        return Err(src.error(
            value.span(),
            format!("{what} {:?} does not exist", value.get_ref()),
            fix,
        ));
    }
    Ok(p)
}

impl Config {
    /// Read vouch.toml and every schedule and restore-test plan it points at. The first
    /// mistake stops it; `check_all` collects them all.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let config = Self::load_collecting(file, &mut errors);
        match (config, errors.into_iter().next()) {
            (_, Some(e)) => Err(e),
            (Some(c), None) => Ok(c),
            (None, None) => unreachable!("no configuration and no error"),
        }
    }

    /// Every mistake in the configuration, each with file, line and fix.
    pub fn check_all(file: &Path) -> (Option<Config>, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let config = Self::load_collecting(file, &mut errors);
        (config.filter(|_| errors.is_empty()), errors)
    }

    fn load_collecting(file: &Path, errors: &mut Vec<ConfigError>) -> Option<Config> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError {
                    file: file.to_path_buf(),
                    line: 0,
                    message: format!("cannot read the configuration: {e}"),
                    fix: "give --config PATH, set VOUCH_CONFIG, or write /etc/vouch/vouch.toml (deploy/vouch.toml is an example)".into(),
                });
                return None;
            }
        };
        let src = Source { file, text: &text };
        let raw: RawConfig = match toml::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                errors.push(src.toml_error(&e));
                return None;
            }
        };
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut push = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        if raw.school.get_ref().trim().is_empty() {
            push(Err(src.error(
                raw.school.span(),
                "school is empty",
                "write the school's name, as the evidence report should show it",
            )));
        }
        // Addresses are checked here, not when the first alert is due: a mistyped one would
        // otherwise surface only as mail that never leaves.
        let addresses = raw
            .alerts
            .to
            .iter()
            .map(|a| ("[alerts] to", a))
            .chain(raw.evidence.to.iter().map(|a| ("[evidence] to", a)))
            .chain(raw.mail.from.iter().map(|a| ("[mail] from", a)))
            .chain(
                raw.smtp
                    .iter()
                    .filter_map(|s| s.get_ref().from.as_ref())
                    .map(|a| ("[smtp] from", a)),
            );
        for (what, address) in addresses {
            if let Err(e) = address.get_ref().parse::<lettre::message::Mailbox>() {
                push(Err(src.error(
                    address.span(),
                    format!(
                        "{what}: {:?} is not an email address ({e})",
                        address.get_ref()
                    ),
                    "write it like \"network.manager@school.example\" or \"Network Manager <nm@school.example>\"",
                )));
            }
        }
        let time_zone_name = raw
            .time_zone
            .as_ref()
            .map_or("Europe/London".to_string(), |t| t.get_ref().clone());
        let time_zone = match jiff::tz::TimeZone::get(&time_zone_name) {
            Ok(tz) => tz,
            Err(_) => {
                let span = raw.time_zone.as_ref().map(|t| t.span()).unwrap_or(0..0);
                push(Err(src.error(
                    span,
                    format!("time_zone {time_zone_name:?} is not a known time zone"),
                    "write an IANA name such as \"Europe/London\"",
                )));
                jiff::tz::TimeZone::UTC
            }
        };
        let mut repositories = BTreeMap::new();
        for (name, r) in &raw.repositories {
            let span = r.span();
            let r = r.get_ref();
            if let Err(e) = crate::storage::RepoUrl::parse(r.url.get_ref()) {
                push(Err(src.error(
                    r.url.span(),
                    format!("[repositories.{name}] url: {e}"),
                    "",
                )));
            }
            let password_file =
                match check_file(&src, &r.password_file, &base, "password_file", SECRET_FIX) {
                    Ok(p) => p,
                    Err(e) => {
                        push(Err(e));
                        PathBuf::new()
                    }
                };
            let secret_access_key_file = match &r.secret_access_key_file {
                Some(s) => match check_file(&src, s, &base, "secret_access_key_file", SECRET_FIX) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        push(Err(e));
                        None
                    }
                },
                None => None,
            };
            if r.access_key_id.is_some() != secret_access_key_file.is_some()
                && r.secret_access_key_file.is_none()
            {
                push(Err(src.error(span.clone(), format!("[repositories.{name}] has access_key_id without secret_access_key_file"), "add secret_access_key_file, or leave both out to use the AWS environment variables")));
            }
            let prune = match &r.prune {
                Some(c) => {
                    match Cron::parse(c.get_ref()) {
                        Ok(cron) => Some(cron),
                        Err(m) => {
                            push(Err(src.error(
                            c.span(),
                            format!("[repositories.{name}] prune {:?} is not a cron expression: {m}", c.get_ref()),
                            super::schedule::CRON_FIX,
                        )));
                            None
                        }
                    }
                }
                None => None,
            };
            repositories.insert(
                name.clone(),
                RepositoryConfig {
                    prune,
                    name: name.clone(),
                    url: r.url.get_ref().clone(),
                    password_file,
                    s3_endpoint: r.s3_endpoint.clone(),
                    s3_region: r.s3_region.clone(),
                    s3_path_style: r.s3_path_style,
                    access_key_id: r.access_key_id.clone(),
                    secret_access_key_file,
                },
            );
        }
        let smtp = match &raw.smtp {
            None => None,
            Some(s) => {
                let span = s.span();
                let s = s.get_ref();
                let security = match s.security.as_ref().map(|x| x.get_ref().as_str()) {
                    None | Some("starttls") => SmtpSecurity::StartTls,
                    Some("tls") => SmtpSecurity::Tls,
                    Some("none") => SmtpSecurity::None,
                    Some(other) => {
                        let span = s
                            .security
                            .as_ref()
                            .map(|x| x.span())
                            .unwrap_or(span.clone());
                        push(Err(src.error(span, format!("security = {other:?} is not a choice"), "write \"starttls\" (port 587), \"tls\" (port 465) or \"none\" (a relay on the local network)")));
                        SmtpSecurity::StartTls
                    }
                };
                let password_file = match &s.password_file {
                    Some(p) => match check_file(&src, p, &base, "password_file", SECRET_FIX) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            push(Err(e));
                            None
                        }
                    },
                    None => None,
                };
                let ca_file = match &s.ca_file {
                    Some(p) => match check_file(&src, p, &base, "ca_file", SECRET_FIX) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            push(Err(e));
                            None
                        }
                    },
                    None => None,
                };
                let port = s.port.unwrap_or(match security {
                    SmtpSecurity::Tls => 465,
                    SmtpSecurity::StartTls => 587,
                    SmtpSecurity::None => 25,
                });
                let from = s
                    .from
                    .as_ref()
                    .or(raw.mail.from.as_ref())
                    .map(|f| f.get_ref().clone())
                    .unwrap_or_else(|| format!("vouch <vouch@{}>", crate::sys::hostname()));
                Some(SmtpConfig {
                    host: s.host.clone(),
                    port,
                    security,
                    username: s.username.clone(),
                    password_file,
                    from,
                    ca_file,
                })
            }
        };
        let reminder = match &raw.alerts.reminder {
            Some(r) => parse_duration(r.get_ref()).unwrap_or_else(|m| {
                push(Err(src.error(r.span(), m, "write it like \"24h\"")));
                Duration::from_secs(86400)
            }),
            None => Duration::from_secs(86400),
        };
        let mut optional_file = |value: &Option<Spanned<String>>, what: &str, fix: &str| {
            value
                .as_ref()
                .and_then(|v| match check_file(&src, v, &base, what, fix) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        push(Err(e));
                        None
                    }
                })
        };
        let evidence_signing_key = optional_file(
            &raw.evidence.signing_key,
            "[evidence] signing_key",
            "make one with `vouch keygen --out DIR`, or correct the path",
        );
        let evidence_signing_key_password_file = optional_file(
            &raw.evidence.signing_key_password_file,
            "[evidence] signing_key_password_file",
            SECRET_FIX,
        );
        let evidence_cron = match &raw.evidence.cron {
            Some(c) => Cron::parse(c.get_ref()).unwrap_or_else(|m| {
                push(Err(src.error(
                    c.span(),
                    format!(
                        "[evidence] cron {:?} is not a cron expression: {m}",
                        c.get_ref()
                    ),
                    CRON_FIX,
                )));
                Cron::parse("0 8 1 9 *").expect("valid")
            }),
            None => Cron::parse("0 8 1 9 *").expect("valid"),
        };
        let state_dir = raw
            .state_dir
            .as_deref()
            .map_or(PathBuf::from("/var/lib/vouch"), |p| relative_to(&base, p));
        let mail_folder = raw
            .mail
            .folder
            .as_deref()
            .map_or(state_dir.join("mail"), |p| relative_to(&base, p));
        let from = smtp
            .as_ref()
            .map(|s| s.from.clone())
            .or(raw.mail.from.as_ref().map(|f| f.get_ref().clone()))
            .unwrap_or_else(|| format!("vouch <vouch@{}>", crate::sys::hostname()));
        let schedules_dir = relative_to(&base, raw.schedules_dir.as_deref().unwrap_or("schedules"));
        let plans_dir = relative_to(
            &base,
            raw.restore_tests_dir.as_deref().unwrap_or("restore-tests"),
        );
        let schedules =
            super::schedule::load_schedules(&schedules_dir, &repositories, &time_zone, errors);
        // A plan that names a schedule whose file has a mistake should say so, not that the
        // schedule does not exist.
        let broken_schedules: Vec<PathBuf> = errors
            .iter()
            .filter(|e| e.file.starts_with(&schedules_dir))
            .map(|e| e.file.clone())
            .collect();
        let plans = load_plans(
            &plans_dir,
            &repositories,
            &schedules,
            &broken_schedules,
            errors,
        );
        Some(Config {
            file: file.to_path_buf(),
            school: raw.school.into_inner(),
            state_dir,
            time_zone,
            time_zone_name,
            scratch_dir: raw
                .scratch_dir
                .as_deref()
                .map_or(std::env::temp_dir(), |p| relative_to(&base, p)),
            repositories,
            smtp,
            mail_folder,
            from,
            alerts_to: raw.alerts.to.into_iter().map(Spanned::into_inner).collect(),
            reminder,
            evidence_to: raw
                .evidence
                .to
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            evidence_signing_key,
            evidence_signing_key_password_file,
            evidence_cron,
            schedules,
            plans,
        })
    }

    pub fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.name == name)
    }

    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }
}

pub(super) fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

fn load_plans(
    dir: &Path,
    repositories: &BTreeMap<String, RepositoryConfig>,
    schedules: &[Schedule],
    broken_schedules: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) -> Vec<Plan> {
    let mut out = Vec::new();
    for file in toml_files(dir) {
        match Plan::load(&file) {
            Ok(p) => {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let line_of = |key: &str| {
                    text.lines()
                        .position(|l| l.trim_start().starts_with(key))
                        .map_or(0, |i| i + 1)
                };
                if let Some(r) = &p.repository {
                    let is_url = r.contains("://") || r.starts_with('/');
                    if !is_url && !repositories.contains_key(r) {
                        errors.push(ConfigError {
                            file: file.clone(),
                            line: line_of("repository"),
                            message: format!("repository = {r:?} is not in vouch.toml's [repositories] (it has {})", known(repositories.keys())),
                            fix: "use one of those names, or a repository URL".into(),
                        });
                    }
                }
                if let Some(s) = &p.schedule {
                    if !schedules.iter().any(|x| &x.name == s) {
                        let broken: Vec<String> = broken_schedules
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        let (message, fix) = if broken.is_empty() {
                            (
                                format!(
                                    "schedule = {s:?} is not a schedule in schedules/ (there are {})",
                                    known(schedules.iter().map(|s| &s.name))
                                ),
                                "use one of those names, or paths = [...]".to_string(),
                            )
                        } else {
                            (
                                format!(
                                    "schedule = {s:?} is not among the schedules that loaded ({}); {} could not be read because of the mistakes reported for {}",
                                    known(schedules.iter().map(|s| &s.name)),
                                    if broken.len() == 1 { "one schedule file" } else { "some schedule files" },
                                    broken.join(", ")
                                ),
                                "fix the schedule file(s) first; this plan may then be right as it is".to_string(),
                            )
                        };
                        errors.push(ConfigError {
                            file: file.clone(),
                            line: line_of("schedule"),
                            message,
                            fix,
                        });
                    }
                }
                if let Some(c) = &p.cron {
                    if let Err(m) = Cron::parse(c) {
                        errors.push(ConfigError {
                            file: file.clone(),
                            line: line_of("cron"),
                            message: format!("cron {c:?} is not a cron expression: {m}"),
                            fix: CRON_FIX.into(),
                        });
                    }
                }
                out.push(p);
            }
            Err(e) => errors.push(e),
        }
    }
    out
}

pub(super) fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration directory: vouch.toml, schedules/, restore-tests/ and a password file.
    fn setup(vouch: &str, schedules: &[(&str, &str)], plans: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("offsite.pass"), "secret\n").unwrap();
        std::fs::write(dir.path().join("vouch.toml"), vouch).unwrap();
        std::fs::create_dir(dir.path().join("schedules")).unwrap();
        std::fs::create_dir(dir.path().join("restore-tests")).unwrap();
        for (name, text) in schedules {
            std::fs::write(dir.path().join("schedules").join(name), text).unwrap();
        }
        for (name, text) in plans {
            std::fs::write(dir.path().join("restore-tests").join(name), text).unwrap();
        }
        dir
    }

    const GOOD: &str = "school = \"Preston Primary\"\n[repositories.offsite]\nurl = \"/srv/backups\"\npassword_file = \"offsite.pass\"\n";
    const SCHEDULE: &str =
        "repository = \"offsite\"\npaths = [\"/srv/staff\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\n";

    fn messages(dir: &tempfile::TempDir) -> Vec<String> {
        let (_, errors) = Config::check_all(&dir.path().join("vouch.toml"));
        errors
            .iter()
            .map(|e| {
                e.to_string()
                    .replace(&format!("{}/", dir.path().display()), "")
            })
            .collect()
    }

    #[test]
    fn a_good_configuration_loads_with_its_schedules_and_plans() {
        let dir = setup(
            GOOD,
            &[("staff.toml", SCHEDULE)],
            &[(
                "monthly.toml",
                "repository = \"offsite\"\nschedule = \"staff\"\n[select]\npercent = 5\n",
            )],
        );
        let c = Config::load(&dir.path().join("vouch.toml")).unwrap();
        assert_eq!(c.school, "Preston Primary");
        assert_eq!(c.time_zone_name, "Europe/London");
        assert_eq!(c.schedules[0].name, "staff");
        assert_eq!(c.schedules[0].rpo, Duration::from_secs(26 * 3600));
        assert_eq!(c.plans[0].name, "monthly");
        assert_eq!(c.mail_folder, PathBuf::from("/var/lib/vouch/mail"));
    }

    /// A schedule's `[keep]` takes every rule `vouch forget` does.
    #[test]
    fn a_schedules_keep_takes_every_rule_forget_does() {
        let keep = "[keep]\nlast = 3\nhourly = 24\ndaily = 7\nweekly = 4\nmonthly = 12\nyearly = 2\nwithin = \"30d\"\ntags = [\"exam\", \"board, final\"]\n";
        let dir = setup(GOOD, &[("staff.toml", &format!("{SCHEDULE}{keep}"))], &[]);
        let c = Config::load(&dir.path().join("vouch.toml")).unwrap();
        let n = |n| Some(crate::retention::Count::N(n));
        let p = &c.schedules[0].keep;
        assert_eq!(
            (p.last, p.hourly, p.daily, p.weekly, p.monthly, p.yearly),
            (n(3), n(24), n(7), n(4), n(12), n(2))
        );
        assert_eq!(
            p.within,
            Some(crate::retention::Within::parse("30d").unwrap())
        );
        assert_eq!(
            p.tags,
            [
                vec!["exam".to_string()],
                vec!["board".into(), "final".into()]
            ]
        );
    }

    #[test]
    fn broken_configurations_are_named_with_file_line_and_fix() {
        let dir = setup(
            "school = \"Preston Primary\"\ntime_zone = \"Europe/Londres\"\n[repositories.offsite]\nurl = \"/srv/backups\"\npassword_file = \"missing.pass\"\n",
            &[
                (
                    "bad-cron.toml",
                    "repository = \"offsite\"\npaths = [\"/srv/staff\"]\ncron = \"0 1 * *\"\nrpo = \"26h\"\n",
                ),
                (
                    "unknown-repo.toml",
                    "repository = \"usb\"\npaths = [\"/srv/staff\"]\ncron = \"0 1 * * *\"\nrpo = \"26h\"\n",
                ),
                (
                    "short-rpo.toml",
                    "repository = \"offsite\"\npaths = [\"/srv/staff\"]\ncron = \"0 1 * * *\"\nrpo = \"12h\"\n",
                ),
            ],
            &[(
                "plan.toml",
                "repository = \"nowhere\"\n[select]\nall = true\n",
            )],
        );
        let m = messages(&dir);
        let expect = [
            "vouch.toml:2: time_zone \"Europe/Londres\" is not a known time zone",
            "vouch.toml:5: password_file \"missing.pass\" does not exist",
            "schedules/bad-cron.toml:3: cron \"0 1 * *\" is not a cron expression: it has 4 field(s)",
            "schedules/short-rpo.toml:4: rpo = \"12h\" is not longer than the longest time between runs of cron \"0 1 * * *\"",
            "schedules/unknown-repo.toml:1: repository = \"usb\" is not in vouch.toml's [repositories] (it has \"offsite\")",
            "restore-tests/plan.toml:1: repository = \"nowhere\" is not in vouch.toml's [repositories]",
        ];
        for e in expect {
            assert!(
                m.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in\n{}",
                m.join("\n")
            );
        }
        assert_eq!(m.len(), expect.len(), "{}", m.join("\n"));
        assert!(
            m.iter().all(|x| x.contains(" (")),
            "every message carries a fix: {m:?}"
        );
    }

    #[test]
    fn the_shipped_examples_need_only_the_nas_secrets() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            root.join("deploy/vouch.toml"),
            dir.path().join("vouch.toml"),
        )
        .unwrap();
        for sub in ["schedules", "restore-tests"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            for e in std::fs::read_dir(root.join(sub)).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
        let (_, errors) = Config::check_all(&dir.path().join("vouch.toml"));
        let unexpected: Vec<String> = errors
            .iter()
            .map(|e| e.to_string())
            .filter(|m| !m.contains("/etc/vouch/") || !m.contains("does not exist"))
            .collect();
        assert!(unexpected.is_empty(), "{unexpected:#?}");
        assert_eq!(
            errors.len(),
            4,
            "offsite.pass, smtp.pass, the evidence key and its passphrase, which live on the NAS: {errors:#?}"
        );
    }
}
