//! keygen and the evidence commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::clock::SystemClock;
use crate::config::{Config, config_path};
use crate::evidence::send::SigningKey;
use crate::evidence::{Evidence, Period, sign};
use crate::journal::Trigger;
use crate::schedule::service::Service;

use super::{EXIT_DAMAGE, EXIT_OK, GlobalArgs, SigningArgs};

pub fn keygen(out: &Path, password_file: Option<PathBuf>, unencrypted: bool) -> Result<i32> {
    let password = match (password_file, unencrypted) {
        (Some(f), _) => Some(super::read_password_file(&f)?.expose().to_string()),
        (None, true) => None,
        (None, false) => Some(super::prompt_password("Passphrase for the evidence signing key: ", true).context(
            "give --key-password-file FILE, or --unencrypted to rely on the key file's 0600 permissions",
        )?
        .expose()
        .to_string()),
    };
    let comment = format!("vouch evidence key, made on {}", crate::sys::hostname());
    let (sk, pk, id) = sign::keygen(out, password, &comment)?;
    outln!("made an evidence signing key, key id {id}");
    outln!(
        "  secret: {} (keep it on the NAS; set [evidence] signing_key in vouch.toml)",
        sk.display()
    );
    outln!(
        "  public: {} (give this to the auditor, by a channel other than the evidence email)",
        pk.display()
    );
    Ok(EXIT_OK)
}

fn parse_date(s: &str) -> Result<jiff::civil::Date> {
    s.parse::<jiff::civil::Date>()
        .with_context(|| format!("{s:?} is not a date: write it as YYYY-MM-DD, like 2025-09-01"))
}

fn period(from: Option<String>, to: Option<String>, today: jiff::civil::Date) -> Result<Period> {
    let default = Period::school_year_before(today);
    let p = Period {
        from: from
            .as_deref()
            .map(parse_date)
            .transpose()?
            .unwrap_or(default.from),
        to: to
            .as_deref()
            .map(parse_date)
            .transpose()?
            .unwrap_or(default.to),
    };
    if p.from > p.to {
        bail!("--from {} is after --to {}", p.from, p.to);
    }
    Ok(p)
}

fn today() -> jiff::civil::Date {
    crate::clock::utc_date(crate::clock::Clock::now(&SystemClock))
}

fn service(g: &GlobalArgs) -> Result<Service> {
    let config = Config::load(&config_path(g.config.as_deref()))?;
    Ok(Service::new(config, Arc::new(SystemClock))?)
}

fn key(signing: SigningArgs, config: Option<&Config>) -> SigningKey {
    SigningKey {
        path: signing
            .signing_key
            .or_else(|| config.and_then(|c| c.evidence_signing_key.clone())),
        password_file: signing
            .signing_key_password_file
            .or_else(|| config.and_then(|c| c.evidence_signing_key_password_file.clone())),
    }
}

fn print_summary(e: &Evidence, dir: &Path) {
    outln!("{}", e.derived.verdict);
    for c in &e.derived.clauses {
        outln!(
            "  {} {}: {}",
            if c.met { "met    " } else { "NOT MET" },
            c.id,
            c.evidence
        );
    }
    outln!(
        "signed pack in {}: evidence.html, evidence.json and their .minisig signatures (key id {})",
        dir.display(),
        e.signing_key_id
    );
}

pub async fn build(
    g: &GlobalArgs,
    from: Option<String>,
    to: Option<String>,
    out: &Path,
    school: Option<String>,
    signing: SigningArgs,
) -> Result<i32> {
    let period = period(from, to, today())?;
    if let Some(url) = &g.repo {
        // From the repository's own records: the NAS and its journal may be gone.
        errln!(
            "vouch: building from the records in {url} alone (--repo or VOUCH_REPOSITORY is set); \
             without it the pack is built from vouch.toml and the local journal"
        );
        let config = Config::load(&config_path(g.config.as_deref())).ok();
        let school = school
            .or_else(|| config.as_ref().map(|c| c.school.clone()))
            .context("give --school NAME: the repository does not record the school's name")?;
        let (sk, pk) = key(signing, config.as_ref()).load()?;
        let repo = g.open().await?;
        let inputs = crate::evidence::build::from_repository(repo.clone(), &school, period).await?;
        let e = Evidence::new(inputs, repo.clock().now(), sign::key_id(pk.keynum()));
        crate::evidence::write_pack(out, &e, &sk, &pk)?;
        print_summary(&e, out);
        return Ok(EXIT_OK);
    }
    let service = service(g)?;
    let key = key(signing, Some(&service.config));
    let e = service.build_evidence(period, out, &key).await?;
    print_summary(&e, out);
    Ok(EXIT_OK)
}

pub async fn verify(g: &GlobalArgs, dir: &Path, pubkey: &Path, json: bool) -> Result<i32> {
    let pk = sign::load_public_key(pubkey)?;
    let repo = match g.repo {
        Some(_) => Some(g.open().await?),
        None => None,
    };
    let outcome = if dir.join("proof.json").exists() {
        crate::evidence::proof::verify(dir, &pk, repo.as_deref()).await
    } else {
        crate::evidence::verify_pack(dir, &pk, repo.as_deref()).await
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        if let (Some(school), Some(verdict)) = (&outcome.school, &outcome.verdict) {
            outln!(
                "{school}{}",
                outcome
                    .period
                    .as_ref()
                    .map(|p| format!(", {p}"))
                    .unwrap_or_default()
            );
            outln!("  the pack says: {verdict}");
        }
        for c in &outcome.checks {
            outln!(
                "  {} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.what,
                c.detail
            );
        }
        outln!(
            "{}",
            if outcome.ok() {
                "VERIFIED: signed with this key, unchanged, and consistent"
            } else {
                "NOT VERIFIED: see FAIL above"
            }
        );
    }
    Ok(if outcome.ok() { EXIT_OK } else { EXIT_DAMAGE })
}

pub async fn send(
    g: &GlobalArgs,
    from: Option<String>,
    to: Option<String>,
    out: Option<PathBuf>,
    operator: Option<String>,
) -> Result<i32> {
    let service = service(g)?;
    let period = period(from, to, today())?;
    let operator = operator.unwrap_or_else(crate::sys::username);
    let (outcome, dir) = service
        .send_evidence(Some(period), out, Trigger::Manual, &operator)
        .await?;
    let seq = outcome.seq;
    if let Some(error) = &outcome.record.error {
        errln!("vouch: {}: {error}", outcome.record.summary);
        return Ok(crate::cli::exit_for(outcome.record.outcome));
    }
    let (sent, pending) = service.deliver(true).await?;
    let _ = sent;
    let sent = service.mail_sent.load(std::sync::atomic::Ordering::Relaxed);
    outln!(
        "evidence pack in {} (journal run #{seq}); email to {}: {sent} sent, {pending} waiting",
        dir.display(),
        service.config.evidence_to.join(", ")
    );
    Ok(EXIT_OK)
}

pub async fn proof(
    g: &GlobalArgs,
    run: crate::journal::RowId,
    out: &Path,
    signing: SigningArgs,
) -> Result<i32> {
    let service = service(g)?;
    let key = key(signing, Some(&service.config));
    let p = service.evidence_proof(run, out, &key).await?;
    outln!(
        "signed proof of run #{run} (test restore {} on {}: {}) in {}: proof.html, proof.json and their signatures",
        p.report.plan,
        crate::clock::human(p.report.started),
        if p.report.passed { "passed" } else { "FAILED" },
        out.display()
    );
    Ok(EXIT_OK)
}
