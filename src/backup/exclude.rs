//! Exclude patterns. A pattern without a `/` matches a name anywhere (`Thumbs.db`, `~$*`);
//! a pattern with a `/` matches the whole absolute path (`/volume1/staff/tmp`,
//! `**/cache/**`), where `*` stays within one path component and `**` crosses them.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, thiserror::Error)]
#[error("exclude pattern {pattern:?} is not valid: {detail}")]
pub struct ExcludeError {
    pub pattern: String,
    pub detail: String,
}

#[derive(Clone, Debug)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    /// Directories excluded by exact path (the repository itself, when it is inside a source).
    dirs: Vec<std::path::PathBuf>,
    empty: bool,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self, ExcludeError> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let err = |e: globset::Error| ExcludeError {
                pattern: p.clone(),
                detail: e.kind().to_string(),
            };
            if p.trim().is_empty() {
                return Err(ExcludeError {
                    pattern: p.clone(),
                    detail: "it is empty".into(),
                });
            }
            let trimmed = p.trim_end_matches('/');
            if trimmed.contains('/') {
                let glob = GlobBuilder::new(trimmed)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(err)?;
                paths.add(glob);
            } else {
                names.add(Glob::new(trimmed).map_err(err)?);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| ExcludeError {
                pattern: patterns.join(", "),
                detail: e.to_string(),
            })
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
            dirs: Vec::new(),
            empty: patterns.is_empty(),
        })
    }

    /// Also exclude this directory and everything under it.
    pub fn add_dir(&mut self, dir: std::path::PathBuf) {
        self.dirs.push(dir);
        self.empty = false;
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        if self.empty {
            return false;
        }
        if self.dirs.iter().any(|d| d == path) {
            return true;
        }
        if let Some(name) = path.file_name() {
            if self.names.is_match(Path::new(name)) {
                return true;
            }
        }
        self.paths.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_match_anywhere_and_paths_match_whole() {
        let e = ex(&["Thumbs.db", "~$*", "/srv/staff/tmp", "**/cache/**"]);
        assert!(e.is_excluded(Path::new("/srv/staff/Year 3/Thumbs.db")));
        assert!(e.is_excluded(Path::new("/srv/staff/~$Report.docx")));
        assert!(!e.is_excluded(Path::new("/srv/staff/Report.docx")));
        assert!(e.is_excluded(Path::new("/srv/staff/tmp")));
        assert!(!e.is_excluded(Path::new("/srv/staff/tmp2")));
        assert!(e.is_excluded(Path::new("/srv/a/cache/b")));
        assert!(!ex(&[]).is_excluded(Path::new("/x")));
    }

    #[test]
    fn a_star_does_not_cross_directories_in_path_patterns() {
        let e = ex(&["/srv/*/secret"]);
        assert!(e.is_excluded(Path::new("/srv/staff/secret")));
        assert!(!e.is_excluded(Path::new("/srv/staff/x/secret")));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let err = Excludes::new(&["[abc".to_string()]).unwrap_err();
        assert!(err.to_string().contains("[abc"), "{err}");
    }
}
