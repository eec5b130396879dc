//! `evidence.html`: the report for people. It is a pure function of `evidence.json`, which is
//! how `evidence verify` checks that the two agree.

use std::fmt::Write;

use crate::clock::human;

use super::Evidence;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn size(n: u64) -> String {
    crate::units::size(n)
}

/// A time in a table: minutes are enough, and the column says UTC.
fn short(t: jiff::Timestamp) -> String {
    let t = t.to_zoned(jiff::tz::TimeZone::UTC);
    format!("{}&nbsp;{:02}:{:02}", t.date(), t.hour(), t.minute())
}

fn duration(s: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s.round() as u64)).to_string()
}

const STYLE: &str = "body{font-family:Georgia,serif;max-width:60em;margin:2em auto;color:#222;line-height:1.4}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #999;margin-top:1.6em}\
table{border-collapse:collapse;width:100%;margin:.5em 0;font-size:.9em}th,td{border:1px solid #bbb;padding:.25em .4em;text-align:left;vertical-align:top}\
th{background:#eee}.met{color:#060;font-weight:bold}.notmet{color:#a00;font-weight:bold}.verdict{font-size:1.1em;padding:.6em;border:2px solid #444;margin:1em 0}\
.small{font-size:.8em;color:#555}code{font-size:.85em}td.when{white-space:nowrap}table.drills{font-size:.8em}\
@page{size:A4;margin:14mm}@media print{body{margin:0;max-width:none}h2{page-break-after:avoid}tr{page-break-inside:avoid}}";

pub fn render_html(e: &Evidence) -> String {
    let i = &e.inputs;
    let d = &e.derived;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Backup and restore evidence: {} ({})</title><style>{STYLE}</style></head><body>\n",
        esc(&i.school),
        esc(&i.period.name())
    );
    let _ = write!(
        h,
        "<h1>Backup and restore evidence</h1>\n<p><b>{}</b> — {} ({} to {})</p>\n",
        esc(&i.school),
        esc(&i.period.name()),
        i.period.from,
        i.period.to
    );
    let _ = writeln!(
        h,
        "<p class=\"verdict {}\">{}</p>",
        if d.met { "met" } else { "notmet" },
        esc(&d.verdict)
    );

    h.push_str("<h2>The policy, clause by clause</h2>\n<table><tr><th>Clause</th><th>Met</th><th>Shown by</th></tr>\n");
    for c in &d.clauses {
        let _ = writeln!(
            h,
            "<tr><td>“{}”</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&c.text),
            if c.met { "met" } else { "notmet" },
            if c.met { "yes" } else { "NO" },
            esc(&c.evidence)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Scheduled backups</h2>\n<table><tr><th>Schedule</th><th>What it is</th><th>Runs</th><th>Good</th><th>Partial</th><th>Failed</th><th>Success</th><th>Longest gap between good backups</th><th>RPO</th></tr>\n");
    for s in &d.schedules {
        let gap = match (s.longest_gap_hours, s.longest_gap_from, s.longest_gap_to) {
            (Some(g), Some(a), Some(b)) => format!("{g} h ({} to {})", human(a), human(b)),
            _ => "—".into(),
        };
        let rpo = match (s.rpo_hours, s.within_rpo) {
            (Some(r), Some(true)) => format!("{r} h: kept"),
            (Some(r), Some(false)) => format!("{r} h: <span class=\"notmet\">exceeded</span>"),
            (Some(r), None) => format!("{r} h"),
            _ => "—".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}%</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(s.label.as_deref().unwrap_or("")),
            {
                let mut cell = s.runs.to_string();
                if s.interrupted > 0 {
                    let _ = write!(
                        cell,
                        "<br><span class=\"small\">{} interrupted by a shutdown</span>",
                        s.interrupted
                    );
                }
                if s.paused > 0 {
                    let _ = write!(
                        cell,
                        "<br><span class=\"small\">{} paused by the backup window</span>",
                        s.paused
                    );
                }
                if let Some(u) = &s.unfinished {
                    let _ = write!(
                        cell,
                        "<br><span class=\"small\">unfinished: {}</span>",
                        esc(&u.describe())
                    );
                }
                cell
            },
            s.good,
            s.partial,
            s.failed,
            s.success_rate,
            esc(&gap),
            rpo
        );
    }
    h.push_str("</table>\n");
    for s in &i.schedules {
        let _ = writeln!(
            h,
            "<p class=\"small\">{}: {} — cron <code>{}</code></p>",
            esc(&s.name),
            esc(&s.paths.join(", ")),
            esc(s.cron.as_deref().unwrap_or("run by hand"))
        );
    }

    let _ = writeln!(h, "<h2>Test restores ({} passed)</h2>", d.drills_passed);
    h.push_str("<table class=\"drills\"><tr><th>Run</th><th>Plan</th><th>When (UTC)</th><th>Snapshot</th><th>Selection</th><th>Verified</th><th>Problems</th><th>Took</th><th>Full restore (estimate)</th><th>Checks</th><th>Result</th></tr>\n");
    for row in &d.drills {
        let r = row
            .report_id
            .as_ref()
            .and_then(|id| i.drills.iter().find(|s| &s.report_id == id));
        // Cells as HTML: the main fact, then the detail in small print.
        let cells: [String; 7] = match r {
            Some(r) => [
                format!(
                    "{}<br><span class=\"small\">taken&nbsp;{}{}</span>",
                    esc(&r.snapshot_id.chars().take(8).collect::<String>()),
                    short(r.snapshot_time),
                    r.snapshot_label
                        .as_ref()
                        .map(|l| format!(", {}", esc(l)))
                        .unwrap_or_default()
                ),
                match r.selection.split_once(" (") {
                    Some((what, detail)) => format!(
                        "{}<br><span class=\"small\">({}</span>",
                        esc(what),
                        esc(detail)
                    ),
                    None => esc(&r.selection),
                },
                format!(
                    "{} files, {}<br><span class=\"small\">levels 1–3{}; {} packs{}</span>",
                    r.files_verified,
                    size(r.bytes_restored),
                    r.source_compared
                        .map(|n| format!("; {n} compared with the live share"))
                        .unwrap_or_default(),
                    r.packs_verified,
                    r.metadata_verified
                        .as_ref()
                        .map(|m| format!("; metadata: {}", esc(m)))
                        .unwrap_or_default()
                ),
                if r.failures.is_empty() && r.reasons.is_empty() {
                    "none".to_string()
                } else {
                    esc(&r
                        .failures
                        .iter()
                        .map(|f| {
                            format!(
                                "level {} {}{}",
                                f.level,
                                f.path.as_deref().unwrap_or(""),
                                match (f.expected, f.actual) {
                                    (Some(x), Some(y)) => format!(
                                        ": expected {}…, found {}…",
                                        &x.to_hex()[..12],
                                        &y.to_hex()[..12]
                                    ),
                                    _ => String::new(),
                                }
                            )
                        })
                        .chain(r.reasons.iter().cloned())
                        .collect::<Vec<_>>()
                        .join("; "))
                },
                esc(&duration(r.duration_ms as f64 / 1000.0)),
                esc(
                    &match (r.full_restore_estimate_s, r.objective_s, r.objective_met) {
                        (Some(est), Some(obj), Some(met)) => format!(
                            "{} (objective {}: {})",
                            duration(est),
                            duration(obj),
                            if met { "met" } else { "missed" }
                        ),
                        (Some(est), _, _) => duration(est),
                        _ => "—".into(),
                    },
                ),
                if r.checks.is_empty() {
                    "—".to_string()
                } else {
                    format!(
                        "{} of {} passed",
                        r.checks.iter().filter(|c| c.passed).count(),
                        r.checks.len()
                    )
                },
            ],
            None => [
                "—".into(),
                "—".into(),
                "—".into(),
                esc(&row.summary),
                "—".into(),
                "—".into(),
                "—".into(),
            ],
        };
        let [snapshot, selection, verified, problems, took, full, checks] = cells;
        let _ = writeln!(
            h,
            "<tr><td>#{}</td><td>{}</td><td class=\"when\">{}</td><td>{snapshot}</td><td>{selection}</td><td>{verified}</td><td>{problems}</td><td>{took}</td><td>{full}</td><td>{checks}</td><td class=\"{}\">{}</td></tr>",
            row.run,
            esc(&row.plan),
            short(row.started),
            if row.outcome.is_good() {
                "met"
            } else {
                "notmet"
            },
            if row.outcome.is_good() {
                "passed"
            } else {
                "FAILED"
            }
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Verification coverage</h2>\n");
    if i.coverage.is_empty() {
        h.push_str("<p>Not measured for this pack.</p>\n");
    }
    for c in &i.coverage {
        let _ = writeln!(
            h,
            "<p>{}: {:.1}% of stored data ({} of {}) was read back and verified within the last {} days; {} pack(s) never verified.</p>",
            esc(&c.repository),
            c.percent,
            size(c.bytes_verified),
            size(c.bytes),
            c.window_days.round(),
            c.packs_never_verified
        );
    }

    let _ = writeln!(
        h,
        "<h2>Incidents and resulting actions ({})</h2>",
        d.incidents.len()
    );
    if d.incidents.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<table><tr><th>From (UTC)</th><th>To</th><th>What</th><th>Detail</th><th>Resulting actions</th></tr>\n");
        for x in &d.incidents {
            let _ = writeln!(
                h,
                "<tr><td class=\"when\">{}</td><td class=\"when\">{}</td><td>{} {}{}</td><td>{}</td><td>{}</td></tr>",
                short(x.from),
                x.to.map(short).unwrap_or_default(),
                esc(&x.kind),
                esc(&x.job),
                x.run.map(|r| format!(" (run #{r})")).unwrap_or_default(),
                esc(&x.detail),
                esc(&x.actions.join("; "))
            );
        }
        h.push_str("</table>\n");
    }
    if !d.actions.is_empty() {
        h.push_str("<p>Recorded actions:</p><ul>\n");
        for a in &d.actions {
            let _ = writeln!(
                h,
                "<li>{} — {} on run #{}: {}</li>",
                human(a.time),
                esc(&a.operator),
                a.run,
                esc(&a.text)
            );
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<h2>Where the copies are</h2>\n<table><tr><th>Repository</th><th>Location</th><th>Off site</th><th>Encryption</th><th>Immutability</th></tr>\n");
    for r in &i.repositories {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(&r.url),
            if r.off_site { "yes" } else { "no" },
            esc(&r.encryption),
            esc(&r.immutability)
        );
    }
    h.push_str("</table>\n");

    let _ = write!(
        h,
        "<h2>How to check this report</h2>\n<p>This report and <code>evidence.json</code> are signed with the school's evidence key, key id <b>{}</b>. \
         <code>vouch evidence verify DIR --pubkey evidence.pub</code> checks both signatures, that this report follows from the journal rows and test-restore reports in \
         <code>evidence.json</code>, and (with <code>--repo</code>) that nothing was left out of the off-site records. \
         <code>minisign -Vm evidence.html -p evidence.pub</code> checks a signature alone.</p>\n\
         <p class=\"small\">Journal: {} run(s) in the period; chain head {}. Generated {} by {} on {}.</p>\n",
        esc(&e.signing_key_id),
        d.journal_rows_in_period,
        esc(&i.journal.head),
        human(e.generated),
        esc(&e.generated_by),
        esc(&e.host)
    );
    h.push_str("</body></html>\n");
    h
}
