//! How drill reports and coverage are printed.

use std::time::Duration;

use crate::clock::human;
use crate::verify::drill::{Confinement, DrillOutcome};
use crate::verify::ledger::CoverageReport;

use super::show::size;

fn secs(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
}

pub fn drill(o: &DrillOutcome, as_json: bool) {
    let r = &o.report;
    if as_json {
        #[derive(serde::Serialize)]
        struct WithId<'a> {
            report_id: &'a str,
            #[serde(flatten)]
            report: &'a crate::verify::drill::DrillReport,
        }
        let v = WithId {
            report_id: &o.report_id,
            report: r,
        };
        outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return;
    }
    outln!(
        "drill {}: {}",
        r.plan,
        if r.passed { "PASSED" } else { "FAILED" }
    );
    outln!(
        "  snapshot {} of {}{}, seed {}",
        r.snapshot.id.short(),
        human(r.snapshot.time),
        r.snapshot
            .label
            .as_ref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default(),
        r.selection.seed
    );
    outln!(
        "  selection: {} — {} files, {}{}",
        r.selection.method,
        r.selection.files,
        size(r.selection.bytes),
        if r.selection.must_include.is_empty() {
            String::new()
        } else {
            format!(
                " (must include {}: {} files)",
                r.selection.must_include.join(", "),
                r.selection.must_include_files
            )
        }
    );
    let confinement = match &r.sandbox.confinement {
        Confinement::Enforced => "confined by Landlock".to_string(),
        other => other.to_string(),
    };
    outln!(
        "  restored {} files ({}) into a sandbox in {} ({confinement}) in {:.1} s, {}/s",
        r.restore.files,
        size(r.restore.bytes),
        r.sandbox.scratch,
        r.restore.duration_ms as f64 / 1000.0,
        size(r.restore.bytes_per_second as u64)
    );
    let l = &r.levels;
    outln!(
        "  level 1 (storage): {} pack(s) read whole, blake3 matches name{}",
        l.packs_verified,
        failed(l.packs_failed)
    );
    outln!("  level 2 (blob):    every blob authenticated, keyed hash equals its id");
    outln!(
        "  level 3 (file):    {} of {} file(s) match their backup-time blake3",
        l.files_verified,
        r.selection.files
    );
    if let Some(m) = &l.metadata {
        outln!(
            "  level 3 (metadata): {} read back and compared with the snapshot{}",
            m.describe(),
            if m.mismatches > 0 {
                format!(", {} FAILED", m.mismatches)
            } else {
                String::new()
            }
        );
        if !m.acls_and_xattrs {
            outln!(
                "    (the snapshot was taken by a vouch that did not record ACLs and extended attributes)"
            );
        }
    }
    if let Some(s) = &l.source {
        outln!(
            "  level 4 (source):  {} compared with the live share and identical, {} changed since the backup, {} deleted, {} unreadable",
            s.identical,
            s.changed,
            s.missing,
            s.unreadable
        );
    }
    let passed = r.checks.iter().filter(|c| c.passed).count();
    if !r.checks.is_empty() {
        outln!(
            "  application checks: {passed} of {} passed",
            r.checks.len()
        );
    }
    for c in r.checks.iter().filter(|c| !c.passed) {
        let how = if c.outcome.timed_out {
            "timed out".to_string()
        } else {
            format!(
                "exit code {}",
                c.outcome.exit_code.map_or("none".into(), |c| c.to_string())
            )
        };
        outln!("    FAILED {} on {}: {how}", c.command.join(" "), c.file);
        for line in c.outcome.output.lines().take(10) {
            outln!("      | {line}");
        }
    }
    if let Some(est) = r.full_restore_estimate_s {
        let objective = match (r.objective_s, r.objective_met) {
            (Some(o), Some(true)) => format!(" — objective {}: met", secs(o)),
            (Some(o), _) => format!(" — objective {}: MISSED", secs(o)),
            _ => String::new(),
        };
        outln!(
            "  a full restore of this snapshot ({}) at this rate: {}{objective}",
            size(r.snapshot.bytes),
            secs(est)
        );
    }
    for f in &r.failures {
        outln!(
            "  DAMAGE level {}: {}{}{}: {}",
            f.level,
            f.path.clone().unwrap_or_default(),
            f.pack
                .as_ref()
                .map(|p| format!(" (pack {})", &p[..16.min(p.len())]))
                .unwrap_or_default(),
            match (f.expected, f.actual) {
                (Some(e), Some(a)) => format!(", expected blake3 {e}, actual {a}"),
                (Some(e), None) => format!(", expected blake3 {e}"),
                _ => String::new(),
            },
            f.detail
        );
    }
    for reason in &r.reasons {
        outln!("  failed: {reason}");
    }
    outln!(
        "  report stored as drills/{}; sandbox {}",
        &o.report_id[..16],
        if r.sandbox.removed {
            "removed"
        } else {
            "NOT removed"
        }
    );
}

fn failed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} FAILED")
    }
}

pub fn coverage(url: &str, r: &CoverageReport, as_json: bool) {
    if as_json {
        outln!("{}", serde_json::to_string_pretty(r).expect("json"));
        return;
    }
    outln!(
        "coverage of {url}: {:.1}% of stored bytes read back and verified since {} ({} of {}, {} of {} packs, window {} days)",
        r.percent,
        human(r.since),
        size(r.bytes_verified),
        size(r.bytes),
        r.packs_verified,
        r.packs,
        r.window_days.round()
    );
    if !r.never_verified.is_empty() {
        outln!("  {} pack(s) never verified", r.never_verified.len());
    }
    if !r.stale.is_empty() {
        outln!(
            "  {} pack(s) last verified before the window",
            r.stale.len()
        );
    }
    if r.percent < 100.0 {
        outln!(
            "  a drill, or `vouch check --read-data-subset 25%`, reads the least recently verified first"
        );
    }
}
