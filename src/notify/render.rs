//! The words of the emails: plain English, what failed, since when, the error, what to do
//! next, and the one command to look closer. Each has a plain-text and an HTML part.

use jiff::Timestamp;

use crate::clock::human;
use crate::config::Config;

use super::incident::{Incident, ago};
use super::outbox::Message;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What a network manager should do about an incident of this kind.
fn next_steps(i: &Incident) -> Vec<String> {
    let run = i.run.map(|r| format!("vouch journal show {r}"));
    use super::incident::IncidentKind as K;
    match i.kind {
        K::BackupFailed => vec![
            run.unwrap_or_else(|| "vouch status".into()),
            "fix what the error names (a share not mounted, the repository unreachable, a disk full), then".into(),
            format!("vouch run {}", i.job),
        ],
        K::BackupPartial => vec![
            run.unwrap_or_else(|| "vouch status".into()),
            "give the vouch user read access to the files listed, or exclude them in the schedule".into(),
        ],
        K::Stale => vec![
            "vouch status".into(),
            "check that the service runs: systemctl status vouch (or the NAS task scheduler)".into(),
            format!("vouch run {}", i.job),
        ],
        K::DrillFailed => vec![
            run.unwrap_or_else(|| "vouch status".into()),
            "vouch check --read-data".into(),
            format!("vouch drill {}", i.job),
        ],
        K::NoDrill | K::DrillDue => vec!["vouch status".into(), "vouch drill <plan> (restore-tests/ lists the plans)".into()],
        _ => vec![run.unwrap_or_else(|| "vouch status".into())],
    }
}

fn message(config: &Config, subject: String, lines: Vec<String>, steps: Vec<String>) -> Message {
    let mut text = lines.join("\n\n");
    if !steps.is_empty() {
        text.push_str("\n\nWhat to do next:\n");
        for s in &steps {
            text.push_str(&format!("  {s}\n"));
        }
    }
    text.push_str(&format!(
        "\n-- \nvouch on {} for {}\n",
        crate::sys::hostname(),
        config.school
    ));
    let mut html = String::from("<html><body style=\"font-family: sans-serif\">");
    for l in &lines {
        html.push_str(&format!("<p>{}</p>", escape(l)));
    }
    if !steps.is_empty() {
        html.push_str("<p><b>What to do next:</b></p><ul>");
        for s in &steps {
            html.push_str(&format!("<li><code>{}</code></li>", escape(s)));
        }
        html.push_str("</ul>");
    }
    html.push_str(&format!(
        "<p style=\"color:#666\">vouch on {} for {}</p></body></html>",
        escape(&crate::sys::hostname()),
        escape(&config.school)
    ));
    Message {
        to: config.alerts_to.clone(),
        subject,
        text,
        html,
        attachments: Vec::new(),
    }
}

/// `vouch doctor --test-email`: proof that alerts reach the people who should get them.
pub fn test_email(config: &Config) -> Message {
    message(
        config,
        format!("[vouch] {}: test email", config.school),
        vec![
            format!(
                "This is a test email from vouch on {}. Alerts about {}'s backups and test restores come to this address the same way.",
                crate::sys::hostname(),
                config.school
            ),
            "Nothing needs doing.".into(),
        ],
        Vec::new(),
    )
}

pub fn opened(config: &Config, i: &Incident) -> Message {
    message(
        config,
        format!("[vouch] {}: {}", config.school, i.title),
        vec![
            format!("{} (since {}).", capital(&i.title), human(i.opened)),
            i.detail.clone(),
            "You will get one more email when this is put right, and a reminder each day until then.".into(),
        ],
        next_steps(i),
    )
}

pub fn reminder(config: &Config, i: &Incident, now: Timestamp) -> Message {
    message(
        config,
        format!("[vouch] {}: still open: {}", config.school, i.title),
        vec![
            format!(
                "{} — still the case, {} after it started ({}).",
                capital(&i.title),
                ago(now.duration_since(i.opened)),
                human(i.opened)
            ),
            i.detail.clone(),
        ],
        next_steps(i),
    )
}

pub fn resolved(config: &Config, i: &Incident, how: &str, now: Timestamp) -> Message {
    message(
        config,
        format!("[vouch] {}: resolved: {}", config.school, i.title),
        vec![
            format!(
                "Resolved: {} ({}, after {}).",
                i.title,
                human(now),
                ago(now.duration_since(i.opened))
            ),
            capital(how),
        ],
        Vec::new(),
    )
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
