//! `vouch forget` and `vouch prune`: retention and reclaiming space.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::show::size;
use super::{EXIT_OK, GlobalArgs};
use crate::config::Config;
use crate::prune::{PruneOptions, PruneReport};
use crate::retention::{Count, ForgetOptions, ForgetReport, Policy, Within};

/// The keep rules as given on the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    keep_last: Option<String>,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, value_name = "N")]
    keep_hourly: Option<String>,
    /// ... days (in the school's time zone)
    #[arg(long, value_name = "N")]
    keep_daily: Option<String>,
    /// ... ISO weeks (Monday to Sunday)
    #[arg(long, value_name = "N")]
    keep_weekly: Option<String>,
    /// ... months
    #[arg(long, value_name = "N")]
    keep_monthly: Option<String>,
    /// ... years
    #[arg(long, value_name = "N")]
    keep_yearly: Option<String>,
    /// Keep every snapshot within this span of the newest (90d, 6m, 1y2m)
    #[arg(long, value_name = "SPAN")]
    keep_within: Option<String>,
    /// Keep snapshots with these tags (comma-separated: all of them; repeatable: any list)
    #[arg(long = "keep-tag", value_name = "TAGS")]
    keep_tags: Vec<String>,
}

impl KeepArgs {
    pub fn policy(&self) -> Result<Policy> {
        let count = |flag: &str, v: &Option<String>| -> Result<Option<Count>> {
            v.as_deref()
                .map(|s| Count::parse(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
                .transpose()
        };
        Ok(Policy {
            last: count("keep-last", &self.keep_last)?,
            hourly: count("keep-hourly", &self.keep_hourly)?,
            daily: count("keep-daily", &self.keep_daily)?,
            weekly: count("keep-weekly", &self.keep_weekly)?,
            monthly: count("keep-monthly", &self.keep_monthly)?,
            yearly: count("keep-yearly", &self.keep_yearly)?,
            within: self
                .keep_within
                .as_deref()
                .map(|s| Within::parse(s).map_err(|e| anyhow::anyhow!("--keep-within: {e}")))
                .transpose()?,
            tags: self
                .keep_tags
                .iter()
                .map(|t| t.split(',').map(|s| s.trim().to_string()).collect())
                .collect(),
        })
    }
}

/// The school's time zone from vouch.toml when there is one, else the system's.
fn time_zone(g: &GlobalArgs) -> jiff::tz::TimeZone {
    Config::load(&crate::config::config_path(g.config.as_deref()))
        .map(|c| c.time_zone)
        .unwrap_or_else(|_| jiff::tz::TimeZone::system())
}

#[allow(clippy::too_many_arguments)]
pub async fn forget(
    g: &GlobalArgs,
    keep: KeepArgs,
    tags: Vec<String>,
    schedule: Option<String>,
    dry_run: bool,
    prune: bool,
    json: bool,
) -> Result<i32> {
    let opts = ForgetOptions {
        policy: keep.policy()?,
        tags,
        schedule,
        dry_run,
    };
    let repo = g.open().await?;
    let tz = time_zone(g);
    let report = crate::retention::forget(&repo, &opts, &tz).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        show_forget(&report, &tz);
    }
    if prune && !dry_run {
        let r = crate::prune::prune(repo, &PruneOptions::default()).await?;
        if json {
            outln!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            show_prune(&r);
        }
    }
    Ok(EXIT_OK)
}

fn show_forget(r: &ForgetReport, tz: &jiff::tz::TimeZone) {
    for g in &r.groups {
        outln!(
            "{} {}: keeping {} of {} snapshot(s)",
            g.host,
            g.paths.join(", "),
            g.kept(),
            g.decisions.len()
        );
        for d in &g.decisions {
            let when = d
                .time
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string();
            outln!(
                "  {} {}  {}  {}",
                if d.keep { "keep  " } else { "remove" },
                d.id.short(),
                when,
                d.reasons.join(", ")
            );
        }
    }
    let to_remove: usize = r.groups.iter().map(|g| g.decisions.len() - g.kept()).sum();
    if r.dry_run {
        outln!("dry run: {to_remove} snapshot(s) would be removed; nothing was changed");
    } else {
        outln!(
            "removed {} snapshot(s); `vouch prune` frees the data only they used",
            r.removed.len()
        );
    }
    for (id, why) in &r.refused {
        outln!(
            "  kept {} because the storage refused to delete it: {why}",
            id.short()
        );
    }
}

pub async fn prune(g: &GlobalArgs, max_unused: &str, dry_run: bool, json: bool) -> Result<i32> {
    let max_unused_percent: f64 = max_unused
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|p: &f64| (0.0..100.0).contains(p))
        .with_context(|| {
            format!("--max-unused {max_unused:?} is not a percentage: give a number from 0 to 99, like 5")
        })?;
    let repo: Arc<_> = g.open().await?;
    let r = crate::prune::prune(
        repo,
        &PruneOptions {
            max_unused_percent,
            dry_run,
        },
    )
    .await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        show_prune(&r);
    }
    Ok(EXIT_OK)
}

fn show_prune(r: &PruneReport) {
    outln!(
        "{} snapshot(s) use {} blob(s), {}; {} pack(s), {} in storage",
        r.snapshots,
        r.used_blobs,
        size(r.used_bytes),
        r.packs_before,
        size(r.bytes_before)
    );
    outln!(
        "  {} pack(s) unused, {} partly used to repack, {} not in any index{}",
        r.packs_unused,
        r.packs_repacked,
        r.packs_unindexed,
        if r.packs_recent > 0 {
            format!(
                " ({} of them under an hour old, kept: a backup may still be writing them)",
                r.packs_recent
            )
        } else {
            String::new()
        }
    );
    if r.packs_resumable > 0 {
        outln!(
            "  {} pack(s) kept for an unfinished backup that will reuse them when it continues",
            r.packs_resumable
        );
    }
    if r.checkpoints_removed > 0 {
        outln!(
            "  removed {} checkpoint(s) of a backup unfinished for more than 30 days",
            r.checkpoints_removed
        );
    }
    if r.dry_run {
        outln!(
            "dry run: would remove {} pack(s) and free {}; nothing was changed",
            r.packs_removed,
            size(r.bytes_freed)
        );
        return;
    }
    outln!(
        "  wrote {} pack(s) ({}) and {} index file(s); removed {} index file(s) and {} pack(s)",
        r.packs_written,
        size(r.bytes_written),
        r.index_files_written,
        r.index_files_removed,
        r.packs_removed
    );
    for (key, why) in &r.refused {
        outln!(
            "  kept {key}: the storage refused to delete it ({why}); a later prune will try again"
        );
    }
    if r.partial_files_removed > 0 {
        outln!(
            "  removed {} unfinished write(s) left by a stopped process",
            r.partial_files_removed
        );
    }
    if r.retention_extended > 0 {
        outln!(
            "  extended the Object Lock retention of {} object(s) still needed",
            r.retention_extended
        );
    }
    outln!(
        "freed {}: {} pack(s), {} in storage now ({} unused kept, under the threshold)",
        size(r.bytes_freed.saturating_sub(r.bytes_written)),
        r.packs_after,
        size(r.bytes_after),
        size(r.bytes_unused_kept)
    );
}
