//! `vouch doctor`: is this repository protected the way the school believes it is?
//!
//! For S3 it reads the bucket's versioning and Object Lock settings, the retention the
//! repository writes with and the retention its objects really carry, learns whether the
//! credentials in use can delete, and proves that retention is enforced by trying to delete a
//! retained canary: some S3-compatible servers accept Object Lock requests and ignore them.

use serde::Serialize;

use crate::repo::{RepoError, Repository};
use crate::storage::{BucketLockSettings, Enforcement, Retention, RetentionMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Problem,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DoctorReport {
    pub url: String,
    pub storage: String,
    /// The retention the repository writes every object with (from its config).
    pub retention: Option<Retention>,
    pub bucket: Option<BucketLockSettings>,
    /// The retain-until date of the repository's `config` object, as the storage reports it.
    pub config_retained_until: Option<String>,
    /// Whether the storage refused to delete a retained canary (`None`: not tried).
    pub enforced: Option<bool>,
    /// Whether these credentials can delete objects (`None`: not tried).
    pub can_delete: Option<bool>,
    pub findings: Vec<Finding>,
}

impl DoctorReport {
    pub fn has_problems(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Problem)
    }
    fn say(&mut self, level: Level, text: impl Into<String>) {
        self.findings.push(Finding {
            level,
            text: text.into(),
        });
    }
}

pub async fn doctor(repo: &Repository) -> Result<DoctorReport, RepoError> {
    let store = repo.store();
    let mut r = DoctorReport {
        url: repo.url().to_string(),
        retention: repo.config().object_lock,
        ..Default::default()
    };
    r.say(
        Level::Ok,
        format!(
            "repository {} opens with this passphrase",
            repo.config().id.short()
        ),
    );
    if !store.is_s3() {
        r.storage = "local".into();
        r.say(
            Level::Warning,
            "local storage has no Object Lock: anyone who can write to this volume can delete the backups; keep an off-site copy in an S3 bucket with Object Lock",
        );
        if r.retention.is_some() {
            r.say(
                Level::Warning,
                "the repository was created with Object Lock but is opened from local storage: new objects are written without retention",
            );
        }
        return Ok(r);
    }
    r.storage = "s3".into();
    let bucket = match store.bucket_lock_settings().await {
        Ok(b) => b,
        Err(e) => {
            r.say(
                Level::Problem,
                format!("cannot read the bucket's versioning and Object Lock settings: {e}"),
            );
            return Ok(r);
        }
    };
    let lock_on = bucket.object_lock_enabled;
    r.say(
        if lock_on { Level::Ok } else { Level::Warning },
        format!(
            "bucket: versioning {}, Object Lock {}, default retention {}",
            bucket.versioning,
            if lock_on { "enabled" } else { "not enabled" },
            bucket.default_retention.as_deref().unwrap_or("none")
        ),
    );
    if let Some(rule) = &bucket.default_retention {
        r.say(
            Level::Warning,
            format!(
                "the bucket's default retention ({rule}) also applies to lock files: vouch removes them with delete markers, so add a lifecycle rule that expires noncurrent versions after a day or two"
            ),
        );
    }
    r.bucket = Some(bucket);

    match r.retention {
        Some(ret) => {
            r.say(
                Level::Ok,
                format!(
                    "the repository writes every object retained for {} days in {} mode; prune extends what is still needed",
                    ret.days, ret.mode
                ),
            );
            if ret.mode == RetentionMode::Governance {
                r.say(
                    Level::Warning,
                    "GOVERNANCE mode: credentials with s3:BypassGovernanceRetention can still delete; COMPLIANCE mode protects against anyone",
                );
            }
            if !lock_on {
                r.say(
                    Level::Problem,
                    "the repository expects Object Lock but the bucket does not have it: nothing is retained",
                );
            }
            match store.object_retention("config").await {
                Ok(o) => match o.until {
                    Some(until) if until <= store.clock().now() => {
                        r.config_retained_until = Some(crate::clock::human(until));
                        r.say(
                            Level::Problem,
                            format!(
                                "the repository's config object was retained only until {}: it can be deleted now; run `vouch prune`, which extends what is still needed, and make sure it runs on a schedule",
                                crate::clock::human(until)
                            ),
                        );
                    }
                    Some(until) if until < store.clock().now() + ret.period() / 2 => {
                        r.config_retained_until = Some(crate::clock::human(until));
                        r.say(
                            Level::Warning,
                            format!(
                                "the repository's config object is retained only until {}, less than half the period: prune extends it; is it running on a schedule?",
                                crate::clock::human(until)
                            ),
                        );
                    }
                    Some(until) => {
                        r.config_retained_until = Some(crate::clock::human(until));
                        r.say(
                            Level::Ok,
                            format!(
                                "the repository's config object is retained ({}) until {}",
                                o.mode.map(|m| m.as_str()).unwrap_or("?"),
                                crate::clock::human(until)
                            ),
                        );
                    }
                    None => r.say(
                        Level::Problem,
                        "the repository's config object carries no retention: the storage did not apply Object Lock",
                    ),
                },
                Err(e) => r.say(
                    Level::Problem,
                    format!("cannot read the config object's retention: {e}"),
                ),
            }
        }
        None if lock_on => r.say(
            Level::Warning,
            "the bucket has Object Lock but this repository was created without --object-lock: objects are written without retention, so anyone holding the credentials can delete them",
        ),
        None => r.say(
            Level::Warning,
            "no immutability: anyone holding these credentials can delete the backups; create the repository with --object-lock in a bucket with Object Lock enabled",
        ),
    }

    // Delete rights first: a refused canary delete proves enforcement only from credentials
    // that may delete at all.
    let can_delete = match store.probe_delete().await {
        Ok(can) => can,
        Err(e) => {
            r.say(Level::Problem, format!("cannot write a test object: {e}"));
            None
        }
    };
    r.can_delete = can_delete;

    if lock_on {
        let mode = r
            .retention
            .map_or(RetentionMode::Governance, |ret| ret.mode);
        match store.prove_lock_enforced(mode).await {
            Ok(Enforcement::Refused(_)) if can_delete == Some(false) => r.say(
                Level::Warning,
                "Object Lock enforcement is unproven: these credentials cannot delete anything, so the refused delete of a retained canary shows nothing; run doctor with the credentials forget and prune use",
            ),
            Ok(Enforcement::Refused(refusal)) => {
                r.enforced = Some(true);
                r.say(
                    Level::Ok,
                    format!(
                        "Object Lock is enforced: deleting a retained canary was refused ({refusal})"
                    ),
                );
            }
            Ok(Enforcement::Deleted) => {
                r.enforced = Some(false);
                r.say(
                    Level::Problem,
                    "Object Lock is NOT enforced: the storage deleted a retained canary object; this server only pretends to support Object Lock",
                );
            }
            Ok(Enforcement::NotRecorded) => {
                r.enforced = Some(false);
                r.say(
                    Level::Problem,
                    "Object Lock is NOT enforced: the storage accepted a canary written with retention but reports none on it",
                );
            }
            Ok(Enforcement::Untestable(why)) => r.say(
                Level::Warning,
                format!("Object Lock enforcement could not be tested: {why}"),
            ),
            Err(e) => r.say(
                Level::Problem,
                format!("could not test Object Lock with a canary: {e}"),
            ),
        }
    }

    match can_delete {
        None => r.say(
            Level::Warning,
            "whether these credentials can delete is unknown: the bucket's default retention kept the test object",
        ),
        Some(true) if r.retention.is_some() && r.enforced == Some(true) => r.say(
            Level::Ok,
            "these credentials can delete objects (forget and prune need it); objects under retention stay protected",
        ),
        Some(true) => r.say(
            Level::Warning,
            "these credentials can delete objects, and nothing retains them: ransomware on this machine could delete the backups",
        ),
        Some(false) => r.say(
            Level::Ok,
            "these credentials cannot delete objects: backups do not need to (a lock file they cannot remove counts until its process ends, or for 30 minutes), but forget and prune need credentials that can",
        ),
    }
    Ok(r)
}
