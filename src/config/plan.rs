//! Restore-test plans (`restore-tests/*.toml`): what a drill restores, from which snapshot,
//! and how it checks what it restored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::values::{parse_duration, parse_size};
use super::{ConfigError, Source};

/// Which snapshot a drill restores.
#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotChoice {
    Latest,
    Oldest,
    /// A random snapshot taken within this long before the drill (seeded, recorded).
    RandomWithin(Duration),
}

/// How much of the snapshot a drill restores.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    All,
    /// This percentage of the snapshot's bytes.
    Percent(f64),
    Files(u64),
    Bytes(u64),
}

/// A command run on restored files matching a glob, inside the sandbox.
#[derive(Clone, Debug)]
pub struct AppCheck {
    pub glob: String,
    pub matcher: globset::GlobMatcher,
    /// Program and arguments; `{file}` is replaced by the restored file's path.
    pub run: Vec<String>,
    pub timeout: Duration,
}

/// A validated restore-test plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    /// A repository URL, or a name from vouch.toml.
    pub repository: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Whose snapshots: those of this schedule, or of these paths.
    pub schedule: Option<String>,
    pub paths: Vec<String>,
    pub snapshot: SnapshotChoice,
    pub cron: Option<String>,
    pub scratch_dir: Option<PathBuf>,
    pub selection: Selection,
    pub seed: Option<u64>,
    pub must_include: Vec<String>,
    pub max_bytes: Option<u64>,
    pub max_duration: Option<Duration>,
    pub compare_with_source: bool,
    pub restore_time_objective: Option<Duration>,
    pub commands: Vec<AppCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<String>,
    repository: Option<String>,
    password_file: Option<String>,
    schedule: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    snapshot: Option<Spanned<String>>,
    cron: Option<String>,
    scratch_dir: Option<String>,
    select: Option<Spanned<RawSelect>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    verify: RawVerify,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    all: Option<bool>,
    percent: Option<Spanned<f64>>,
    files: Option<Spanned<u64>>,
    bytes: Option<Spanned<String>>,
    seed: Option<u64>,
    #[serde(default)]
    must_include: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_bytes: Option<Spanned<String>>,
    max_duration: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    #[serde(default)]
    compare_with_source: bool,
    restore_time_objective: Option<Spanned<String>>,
    #[serde(default)]
    command: Vec<RawCommand>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    glob: Spanned<String>,
    run: Spanned<Vec<String>>,
    timeout: Option<Spanned<String>>,
}

impl Plan {
    /// Read and validate a plan file.
    pub fn load(file: &Path) -> Result<Plan, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: 0,
            message: format!("cannot read the plan: {e}"),
            fix: "check the path; plans live in restore-tests/".into(),
        })?;
        Plan::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Plan, ConfigError> {
        let src = Source { file, text };
        let raw: RawPlan = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let duration = |s: &Spanned<String>| {
            parse_duration(s.get_ref()).map_err(|m| src.error(s.span(), m, ""))
        };
        let size =
            |s: &Spanned<String>| parse_size(s.get_ref()).map_err(|m| src.error(s.span(), m, ""));

        let snapshot = match &raw.snapshot {
            None => SnapshotChoice::Latest,
            Some(s) => match s.get_ref().trim() {
                "latest" => SnapshotChoice::Latest,
                "oldest" => SnapshotChoice::Oldest,
                other => match other.strip_prefix("random-within:") {
                    Some(d) => SnapshotChoice::RandomWithin(parse_duration(d).map_err(|m| {
                        src.error(s.span(), m, "write snapshot = \"random-within:90d\"")
                    })?),
                    None => {
                        return Err(src.error(
                            s.span(),
                            format!("snapshot = {other:?} is not a choice"),
                            "write \"latest\", \"oldest\" or \"random-within:90d\"",
                        ));
                    }
                },
            },
        };

        let (selection, seed, must_include) = match &raw.select {
            None => (Selection::All, None, Vec::new()),
            Some(sel) => {
                let span = sel.span();
                let s = sel.get_ref();
                let mut chosen = Vec::new();
                if s.all == Some(true) {
                    chosen.push(Selection::All);
                }
                if let Some(p) = &s.percent {
                    let v = *p.get_ref();
                    if !(v > 0.0 && v <= 100.0) {
                        return Err(src.error(
                            p.span(),
                            format!("percent = {v} is out of range"),
                            "give a percentage above 0 and at most 100",
                        ));
                    }
                    chosen.push(Selection::Percent(v));
                }
                if let Some(f) = &s.files {
                    if *f.get_ref() == 0 {
                        return Err(src.error(
                            f.span(),
                            "files = 0 selects nothing",
                            "give at least 1",
                        ));
                    }
                    chosen.push(Selection::Files(*f.get_ref()));
                }
                if let Some(b) = &s.bytes {
                    chosen.push(Selection::Bytes(size(b)?));
                }
                let selection = match chosen.len() {
                    0 if s.must_include.is_empty() => {
                        return Err(src.error(
                            span,
                            "[select] chooses nothing",
                            "give one of all = true, percent = 5, files = 500 or bytes = \"2GiB\"",
                        ));
                    }
                    0 => Selection::Files(0),
                    1 => chosen.remove(0),
                    _ => {
                        return Err(src.error(
                            span,
                            "[select] gives more than one of all, percent, files and bytes",
                            "keep one of them",
                        ));
                    }
                };
                (selection, s.seed, s.must_include.clone())
            }
        };

        let max_bytes = raw.limits.max_bytes.as_ref().map(size).transpose()?;
        let max_duration = raw.limits.max_duration.as_ref().map(duration).transpose()?;
        let restore_time_objective = raw
            .verify
            .restore_time_objective
            .as_ref()
            .map(duration)
            .transpose()?;
        let mut commands = Vec::new();
        for c in &raw.verify.command {
            let glob = c.glob.get_ref();
            let matcher = globset::GlobBuilder::new(glob)
                .literal_separator(false)
                .build()
                .map_err(|e| {
                    src.error(
                        c.glob.span(),
                        format!("glob {glob:?} is not valid: {}", e.kind()),
                        "write it like \"*.sqlite\" or \"**/SIMS/*.bak\"",
                    )
                })?
                .compile_matcher();
            let run = c.run.get_ref().clone();
            if run.is_empty() || run[0].trim().is_empty() {
                return Err(src.error(c.run.span(), "run is empty", "give the program and its arguments, like [\"sqlite3\", \"{file}\", \"PRAGMA integrity_check\"]"));
            }
            if !run.iter().any(|a| a.contains("{file}")) {
                return Err(src.error(
                    c.run.span(),
                    "run never mentions {file}",
                    "put {file} where the restored file's path belongs",
                ));
            }
            let timeout = match &c.timeout {
                Some(t) => duration(t)?,
                None => Duration::from_secs(300),
            };
            commands.push(AppCheck {
                glob: glob.clone(),
                matcher,
                run,
                timeout,
            });
        }
        let name = raw.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "drill".into())
        });
        Ok(Plan {
            name,
            file: file.to_path_buf(),
            repository: raw.repository,
            password_file: raw.password_file.map(PathBuf::from),
            schedule: raw.schedule,
            paths: raw.paths,
            snapshot,
            cron: raw.cron,
            scratch_dir: raw.scratch_dir.map(PathBuf::from),
            selection,
            seed,
            must_include,
            max_bytes,
            max_duration,
            compare_with_source: raw.verify.compare_with_source,
            restore_time_objective,
            commands,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        Plan::parse(Path::new("restore-tests/t.toml"), text)
    }

    #[test]
    fn a_full_plan_parses_into_its_parts() {
        let p = parse(
            r#"
name = "monthly-staff-sample"
repository = "s3://preston-backups/nas1"
schedule = "staff-nightly"
snapshot = "random-within:90d"
[select]
percent = 5
must_include = ["/volume1/admin/SIMS/"]
seed = 7
[limits]
max_bytes = "50GiB"
max_duration = "2h"
[verify]
compare_with_source = true
restore_time_objective = "8h"
[[verify.command]]
glob = "*.sqlite"
run = ["sqlite3", "{file}", "PRAGMA integrity_check"]
timeout = "60s"
"#,
        )
        .unwrap();
        assert_eq!(p.name, "monthly-staff-sample");
        assert_eq!(
            p.snapshot,
            SnapshotChoice::RandomWithin(Duration::from_secs(90 * 86400))
        );
        assert_eq!(p.selection, Selection::Percent(5.0));
        assert_eq!(p.seed, Some(7));
        assert_eq!(p.max_bytes, Some(50 << 30));
        assert_eq!(
            p.restore_time_objective,
            Some(Duration::from_secs(8 * 3600))
        );
        assert!(p.commands[0].matcher.is_match("/x/School.sqlite"));
        assert_eq!(p.commands[0].timeout, Duration::from_secs(60));
    }

    #[test]
    fn mistakes_name_the_line_and_the_fix() {
        let e = parse("name = \"x\"\n[select]\npercent = 150\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.to_string()
                .starts_with("restore-tests/t.toml:3: percent = 150 is out of range"),
            "{e}"
        );
        let e = parse("snapshot = \"newest\"\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("random-within:90d"), "{e}");
        let e = parse("[verify]\nrestore_time_objective = \"soon\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("[select]\nprecent = 5\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.to_string().contains("precent"), "{e}");
        let e = parse("[[verify.command]]\nglob = \"*.db\"\nrun = [\"sqlite3\", \"x.db\"]\n")
            .unwrap_err();
        assert!(e.to_string().contains("{file}"), "{e}");
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn every_example_plan_in_restore_tests_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("restore-tests");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let plan = Plan::load(&p).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    Some(plan.name.as_str()),
                    p.file_stem().and_then(|s| s.to_str())
                );
                n += 1;
            }
        }
        assert!(n >= 3, "the project ships at least three example plans");
    }
}
