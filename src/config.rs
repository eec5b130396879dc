//! Configuration files: restore-test plans now, vouch.toml and schedules with the service.
//! Files are parsed into raw serde structs, then validated once into domain types; every
//! error names the file, the line and the fix.

mod hours;
mod plan;
mod schedule;
mod service;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use plan::{Plan, Selection, SnapshotChoice};
pub use service::{Config, RepositoryConfig, Schedule, SmtpConfig, SmtpSecurity, config_path};
pub use values::{parse_duration, parse_size};

/// A configuration mistake, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the whole file is at fault.
    pub line: usize,
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)?;
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        }
        if !self.fix.is_empty() {
            write!(f, " ({})", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A TOML file's text, for turning byte spans into line numbers.
pub(crate) struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub fn error(
        &self,
        span: std::ops::Range<usize>,
        message: impl std::fmt::Display,
        fix: impl std::fmt::Display,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.line_of(span.start),
            message: message.to_string(),
            fix: fix.to_string(),
        }
    }

    /// A TOML syntax or shape error, with its line.
    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let line = e.span().map(|s| self.line_of(s.start)).unwrap_or(0);
        let message = e.message().trim().to_string();
        let fix = if message.contains("unknown field") {
            "check the spelling; the examples in restore-tests/ show every setting".to_string()
        } else {
            String::new()
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            message,
            fix,
        }
    }
}
