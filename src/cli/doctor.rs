//! `vouch doctor`: the repository given with --repo, or every repository in vouch.toml and the
//! way mail goes out.

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{EXIT_DAMAGE, EXIT_OK, GlobalArgs};
use crate::config::Config;
use crate::doctor::{DoctorReport, Level};

/// Whether alerts can leave the NAS.
#[derive(Debug, Serialize)]
struct MailReport {
    /// "the SMTP server host:port" or "the mail folder …".
    via: String,
    reachable: bool,
    detail: Option<String>,
    /// With --test-email: who it was sent to.
    test_email_to: Vec<String>,
}

pub async fn run(g: &GlobalArgs, json: bool, test_email: bool) -> Result<i32> {
    let mut reports: Vec<(String, DoctorReport)> = Vec::new();
    let mut mail = None;
    if g.repo.is_some() {
        if test_email {
            bail!(
                "--test-email uses vouch.toml's [smtp] and [alerts] to: run `vouch doctor --test-email` without --repo"
            );
        }
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
        // One repository that cannot be checked does not hide the others.
        for (name, rc) in &config.repositories {
            let report = match crate::schedule::service::open_repository(rc, None).await {
                Ok(repo) => crate::doctor::doctor(&repo)
                    .await
                    .unwrap_or_else(|e| unchecked(&rc.url, e.to_string())),
                Err(e) => unchecked(&rc.url, format!("cannot open the repository: {e}")),
            };
            reports.push((name.clone(), report));
        }
        mail = Some(check_mail(&config, test_email).await?);
    }
    if json {
        let all: Vec<_> = reports
            .iter()
            .map(|(name, r)| serde_json::json!({ "repository": name, "report": r }))
            .collect();
        let out = serde_json::json!({ "repositories": all, "mail": mail });
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (name, r) in &reports {
            outln!("{name} ({})", r.url);
            for f in &r.findings {
                outln!("  {} {}", mark(f.level), f.text);
            }
        }
        if let Some(m) = &mail {
            outln!("mail");
            match &m.detail {
                None => outln!(
                    "  {} {} accepts a connection (TLS and login included)",
                    mark(Level::Ok),
                    m.via
                ),
                Some(e) => outln!(
                    "  {} {e}: alerts wait in the outbox until it works (`vouch outbox`)",
                    mark(Level::Problem)
                ),
            }
            if !m.test_email_to.is_empty() {
                outln!(
                    "  {} a test email went to {}",
                    mark(Level::Ok),
                    m.test_email_to.join(", ")
                );
            }
        }
    }
    let problems = reports.iter().any(|(_, r)| r.has_problems())
        || mail.as_ref().is_some_and(|m| !m.reachable);
    Ok(if problems { EXIT_DAMAGE } else { EXIT_OK })
}

fn unchecked(url: &str, why: String) -> DoctorReport {
    DoctorReport {
        url: url.to_string(),
        findings: vec![crate::doctor::Finding {
            level: Level::Problem,
            text: why,
        }],
        ..Default::default()
    }
}

fn mark(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok     ",
        Level::Warning => "warning",
        Level::Problem => "PROBLEM",
    }
}

async fn check_mail(config: &Config, test_email: bool) -> Result<MailReport> {
    let mailer = crate::notify::mailer::mailer_for(config)?;
    let mut report = MailReport {
        via: mailer.describe(),
        reachable: true,
        detail: None,
        test_email_to: Vec::new(),
    };
    if let Err(e) = mailer.probe().await {
        report.reachable = false;
        report.detail = Some(e.to_string());
        return Ok(report);
    }
    if test_email {
        if config.alerts_to.is_empty() {
            bail!("--test-email: vouch.toml has no [alerts] to = [...] to send it to");
        }
        let message = crate::notify::render::test_email(config);
        mailer
            .send(&message)
            .await
            .map_err(|e| anyhow::anyhow!("the test email was not sent: {e}"))?;
        report.test_email_to = message.to;
    }
    Ok(report)
}
