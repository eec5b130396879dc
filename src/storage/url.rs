//! Where a repository lives: a local path, a `file://` URL or an `s3://bucket/prefix` URL.

use std::fmt;
use std::path::PathBuf;

/// A parsed repository location. Its `Display` never includes credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// The URL text is not a repository location vouch understands.
#[derive(Debug, thiserror::Error)]
#[error(
    "{text:?} is not a repository URL: {why} (use a local path, file:///path or s3://bucket/prefix)"
)]
pub struct UrlError {
    pub text: String,
    pub why: String,
}

impl RepoUrl {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let err = |why: &str| UrlError {
            text: redact(text),
            why: why.to_string(),
        };
        if text.trim().is_empty() {
            return Err(err("it is empty"));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.contains('@') {
                return Err(err(
                    "credentials do not belong in the URL; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                ));
            }
            if bucket.is_empty() {
                return Err(err("the bucket name is missing"));
            }
            let prefix = prefix.trim_matches('/').to_string();
            return Ok(RepoUrl::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if text.starts_with("file:") {
            let url = url::Url::parse(text).map_err(|e| err(&e.to_string()))?;
            let path = url
                .to_file_path()
                .map_err(|_| err("a file URL needs an absolute path, like file:///srv/backups"))?;
            return Ok(RepoUrl::Local(path));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(err(&format!("the scheme {scheme:?} is not supported")));
        }
        let path = PathBuf::from(text);
        let path = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|e| err(&format!("the current directory is unknown: {e}")))?
                .join(path)
        };
        Ok(RepoUrl::Local(path))
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoUrl::Local(p) => write!(f, "{}", p.display()),
            RepoUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Drop anything between `//` and `@`, so that a URL with a password can be quoted in an error.
fn redact(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***{}", &text[..s], &text[a..]),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_file_urls_and_s3_urls_parse() {
        assert_eq!(
            RepoUrl::parse("/srv/repo").unwrap(),
            RepoUrl::Local("/srv/repo".into())
        );
        assert_eq!(
            RepoUrl::parse("file:///srv/repo").unwrap(),
            RepoUrl::Local("/srv/repo".into())
        );
        assert_eq!(
            RepoUrl::parse("s3://school-backups/nas1/").unwrap(),
            RepoUrl::S3 {
                bucket: "school-backups".into(),
                prefix: "nas1".into()
            }
        );
        assert_eq!(RepoUrl::parse("s3://b").unwrap().to_string(), "s3://b");
        assert!(
            RepoUrl::parse("relative/dir")
                .unwrap()
                .to_string()
                .ends_with("relative/dir")
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_credentials() {
        let e = RepoUrl::parse("s3://key:secret@bucket/x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
        assert!(
            RepoUrl::parse("ftp://host/x")
                .unwrap_err()
                .to_string()
                .contains("ftp")
        );
        assert!(RepoUrl::parse("s3:///x").is_err());
        assert!(RepoUrl::parse("").is_err());
    }
}
