//! `vouch doctor`: the repository given with --repo, or every repository in vouch.toml.

use anyhow::{Context, Result};

use super::{EXIT_DAMAGE, EXIT_OK, GlobalArgs};
use crate::config::Config;
use crate::doctor::{DoctorReport, Level};

pub async fn run(g: &GlobalArgs, json: bool) -> Result<i32> {
    let mut reports: Vec<(String, DoctorReport)> = Vec::new();
    if g.repo.is_some() {
        let repo = g.open().await?;
        reports.push((repo.url().to_string(), crate::doctor::doctor(&repo).await?));
    } else {
        let path = crate::config::config_path(g.config.as_deref());
        let config = Config::load(&path).with_context(|| {
            format!(
                "no --repo given and {} cannot be used; name a repository with --repo URL",
                path.display()
            )
        })?;
        for (name, rc) in &config.repositories {
            let repo = crate::schedule::service::open_repository(rc)
                .await
                .map_err(|e| anyhow::anyhow!("repository {name:?}: {e}"))?;
            reports.push((name.clone(), crate::doctor::doctor(&repo).await?));
        }
    }
    if json {
        let all: Vec<_> = reports
            .iter()
            .map(|(name, r)| serde_json::json!({ "repository": name, "report": r }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (name, r) in &reports {
            println!("{name} ({})", r.url);
            for f in &r.findings {
                let mark = match f.level {
                    Level::Ok => "ok     ",
                    Level::Warning => "warning",
                    Level::Problem => "PROBLEM",
                };
                println!("  {mark} {}", f.text);
            }
        }
    }
    Ok(if reports.iter().any(|(_, r)| r.has_problems()) {
        EXIT_DAMAGE
    } else {
        EXIT_OK
    })
}
