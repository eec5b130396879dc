//! What commands print: plain text for people, `--json` for programs.

use anyhow::Result;
use serde::Serialize;

use crate::Repository;
use crate::clock::human;
use crate::repo::format::key::KeyFile;
use crate::repo::format::snapshot::Snapshot;
use crate::repo::format::tree::NodeKind;
use crate::repo::ids::{KeyId, SnapshotId};
use crate::repo::{RepoError, TreeLoader};
use crate::verify::{CheckReport, Severity};
use crate::{BackupReport, RestoreOptions, RestoreReport};

/// `1.5 GiB`.
pub use crate::units::size;

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// An error with its causes, without repeating a cause the message already contains.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn json<T: Serialize>(v: &T) {
    outln!("{}", serde_json::to_string_pretty(v).expect("json"));
}

#[derive(Serialize)]
struct SnapshotJson<'a> {
    id: SnapshotId,
    short_id: String,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

pub fn backup(r: &BackupReport, as_json: bool) {
    if as_json {
        json(&SnapshotJson {
            id: r.snapshot_id,
            short_id: r.snapshot_id.short(),
            snapshot: &r.snapshot,
        });
        return;
    }
    let s = &r.snapshot.summary;
    outln!(
        "snapshot {} saved{}",
        r.snapshot_id.short(),
        r.snapshot
            .label
            .as_ref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default()
    );
    outln!(
        "  files: {} ({} new, {} changed, {} unchanged), {} directories, {}",
        s.total_files,
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        s.dirs,
        size(s.total_bytes)
    );
    outln!(
        "  read {}, added {} of new data ({} stored) in {}",
        size(s.bytes_read),
        size(s.bytes_added_raw),
        size(s.bytes_added_stored),
        seconds(s.duration_ms)
    );
    if !s.changed_during_read.is_empty() {
        outln!(
            "  warning: {} file(s) changed while being read (backed up as read; the next backup takes them again):",
            s.changed_during_read.len()
        );
        for p in s.changed_during_read.iter().take(20) {
            outln!("    {p}");
        }
    }
    if s.special > 0 {
        outln!(
            "  recorded {} special file(s) (FIFOs, sockets, devices): FIFOs and devices are made again on restore, sockets are not",
            s.special
        );
    }
    if !s.skipped_special.is_empty() {
        outln!(
            "  skipped {} special file(s) (sockets, devices, FIFOs): they are not backed up",
            s.skipped_special.len()
        );
        for p in s.skipped_special.iter().take(20) {
            outln!("    {p}");
        }
        if s.skipped_special.len() > 20 {
            outln!(
                "    … and {} more (`vouch snapshots --json` lists them all)",
                s.skipped_special.len() - 20
            );
        }
    }
    if !s.unreadable.is_empty() {
        errln!(
            "vouch: warning: {} path(s) could not be read; the snapshot is partial (exit code 3):",
            s.unreadable.len()
        );
        for p in &s.unreadable {
            errln!("    {}: {}", p.path, p.error);
        }
    }
}

pub fn snapshots(list: &[(SnapshotId, Snapshot)], bad: &[(String, RepoError)], as_json: bool) {
    for (key, err) in bad {
        errln!("vouch: warning: {key} cannot be read: {err}");
    }
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, s)| SnapshotJson {
                id: *id,
                short_id: id.short(),
                snapshot: s,
            })
            .collect();
        json(&v);
        return;
    }
    if list.is_empty() {
        outln!("no snapshots");
        return;
    }
    outln!(
        "{:<8}  {:<23}  {:<12}  {:>7}  {:>9}  label / paths",
        "id",
        "time",
        "host",
        "files",
        "size"
    );
    for (id, s) in list {
        let label = s.label.clone().unwrap_or_else(|| s.paths.join(", "));
        let partial = if s.summary.unreadable.is_empty() {
            ""
        } else {
            "  [partial]"
        };
        let tags = if s.tags.is_empty() {
            String::new()
        } else {
            format!("  [{}]", s.tags.join(", "))
        };
        outln!(
            "{:<8}  {:<23}  {:<12}  {:>7}  {:>9}  {label}{tags}{partial}",
            id.short(),
            human(s.time),
            s.host,
            s.summary.total_files,
            size(s.summary.total_bytes)
        );
    }
    outln!("{} snapshot(s)", list.len());
}

/// How `ls` shows entries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Names,
    Long,
    /// One JSON object a line (a snapshot of a million files is not one document in memory).
    Json,
}

pub async fn ls(
    repo: &std::sync::Arc<Repository>,
    id: SnapshotId,
    snap: &Snapshot,
    path: Option<&str>,
    style: Listing,
) -> Result<i32> {
    let (index, _) = repo.load_index().await?;
    let trees = TreeLoader::new(repo.clone(), std::sync::Arc::new(index));
    let want: Vec<&str> = path
        .map(|p| p.split('/').filter(|c| !c.is_empty()).collect())
        .unwrap_or_default();
    let mut stack = vec![(snap.tree, String::new(), 0usize)];
    let mut printed = 0usize;
    let mut damaged = false;
    if style == Listing::Json {
        outln!(
            "{}",
            serde_json::json!({
                "snapshot": id,
                "time": snap.time.to_string(),
                "paths": snap.paths,
                "label": snap.label,
            })
        );
    } else {
        outln!(
            "snapshot {} of {} at {}:",
            id.short(),
            snap.paths.join(", "),
            human(snap.time)
        );
    }
    while let Some((tid, prefix, depth)) = stack.pop() {
        let tree = match trees.load(&tid).await {
            Ok(t) => t,
            Err(e) => {
                errln!(
                    "vouch: error: {}: {e}",
                    if prefix.is_empty() { "/" } else { &prefix }
                );
                damaged = true;
                continue;
            }
        };
        for node in tree.nodes.iter().rev() {
            let name = node.name_lossy();
            if depth < want.len() && want[depth] != name {
                continue;
            }
            let p = format!("{prefix}/{name}");
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                stack.push((sub, p.clone(), depth + 1));
            }
            if depth + 1 >= want.len() {
                printed += 1;
                if style == Listing::Json {
                    let kind = serde_json::to_value(node.kind).unwrap_or_default();
                    let mtime = jiff::Timestamp::from_nanosecond(node.mtime_ns as i128)
                        .map(|t| t.to_string())
                        .ok();
                    let mut entry = serde_json::json!({
                        "path": p,
                        "type": kind,
                        "mode": node.mode,
                        "uid": node.uid,
                        "gid": node.gid,
                        "size": node.size,
                        "mtime": mtime,
                    });
                    if let Some(u) = &node.user {
                        entry["user"] = u.to_string().into();
                    }
                    if let Some(g) = &node.group {
                        entry["group"] = g.to_string().into();
                    }
                    if let Some(t) = &node.target {
                        entry["target"] = String::from_utf8_lossy(t).into_owned().into();
                    }
                    if !node.xattrs().is_empty() {
                        entry["acl"] = node.has_acl().into();
                        entry["xattrs"] = node
                            .xattrs()
                            .iter()
                            .map(|x| {
                                serde_json::json!({
                                    "name": String::from_utf8_lossy(&x.name),
                                    "size": x.value.len(),
                                })
                            })
                            .collect::<Vec<_>>()
                            .into();
                    }
                    if let Some(e) = node.extra.as_deref() {
                        if e.links > 1 {
                            entry["links"] = e.links.into();
                            entry["inode"] = node.inode.into();
                        }
                        if !e.holes.is_empty() {
                            let hole: u64 = e.holes.iter().map(|h| h.length()).sum();
                            entry["holes"] = e.holes.len().into();
                            entry["stored_size"] = (node.size - hole).into();
                        }
                        if matches!(node.kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
                            entry["major"] = e.major.into();
                            entry["minor"] = e.minor.into();
                        }
                    }
                    outln!("{entry}");
                } else if style == Listing::Long {
                    let kind = match node.kind {
                        NodeKind::Dir => 'd',
                        NodeKind::File => '-',
                        NodeKind::Symlink => 'l',
                        NodeKind::Fifo => 'p',
                        NodeKind::Socket => 's',
                        NodeKind::CharDevice => 'c',
                        NodeKind::BlockDevice => 'b',
                    };
                    // `+` after the mode, as `ls -l` shows an ACL.
                    let acl = if node.has_acl() { '+' } else { ' ' };
                    let links = node.extra.as_deref().map_or(1, |e| e.links.max(1));
                    let user = node
                        .user
                        .as_deref()
                        .map_or_else(|| node.uid.to_string(), str::to_string);
                    let group = node
                        .group
                        .as_deref()
                        .map_or_else(|| node.gid.to_string(), str::to_string);
                    let t = jiff::Timestamp::from_nanosecond(node.mtime_ns as i128)
                        .map(human)
                        .unwrap_or_default();
                    let target = node
                        .target
                        .as_ref()
                        .map(|t| format!(" -> {}", String::from_utf8_lossy(t)))
                        .unwrap_or_default();
                    outln!(
                        "{kind}{:04o}{acl} {links:>3} {user:>8} {group:>8} {:>12}  {t}  {p}{target}",
                        node.mode,
                        node.size
                    );
                } else {
                    outln!("{p}");
                }
            }
        }
    }
    if printed == 0 && path.is_some() {
        anyhow::bail!(
            "{:?} is not in snapshot {}",
            path.unwrap_or_default(),
            id.short()
        );
    }
    Ok(if damaged {
        super::EXIT_DAMAGE
    } else {
        super::EXIT_OK
    })
}

pub fn restore(id: SnapshotId, opts: &RestoreOptions, r: &RestoreReport, as_json: bool) {
    for n in &r.notes {
        errln!("vouch: note: {n}");
    }
    if as_json {
        json(r);
        return;
    }
    outln!(
        "restored snapshot {} into {}: {} files ({}), {} directories, {} symlinks in {}",
        id.short(),
        opts.target.display(),
        r.files,
        size(r.bytes),
        r.dirs,
        r.symlinks,
        seconds(r.duration_ms)
    );
    outln!(
        "  every restored file matched its blake3 hash from backup time ({} files verified)",
        r.files_verified
    );
    if r.hard_links > 0 || r.special > 0 {
        outln!(
            "  {} of the files are hard links of another, as they were; {} FIFOs and devices made",
            r.hard_links,
            r.special
        );
    }
    for w in r.warnings.iter().take(10) {
        errln!("vouch: warning: {w}");
    }
    if r.warnings.len() > 10 {
        errln!(
            "vouch: warning: … and {} more metadata warnings (`--json` lists them all)",
            r.warnings.len() - 10
        );
    }
    if !r.warnings.is_empty() {
        errln!(
            "vouch: {} metadata warning(s): the content is restored and verified, but not every recorded permission, ACL, attribute, owner or time could be applied",
            r.warnings.len()
        );
    }
    for m in &r.mismatches {
        errln!(
            "vouch: DAMAGE: {} does not match its backup: expected blake3 {}, got {} (not restored)",
            m.path,
            m.expected,
            m.actual
        );
    }
    for d in &r.damaged {
        errln!(
            "vouch: DAMAGE: {} could not be restored: {}",
            d.path,
            d.error
        );
    }
    for u in &r.unwritable {
        errln!(
            "vouch: error: {} could not be written into the target: {}",
            u.path,
            u.error
        );
    }
    if !r.is_clean() {
        errln!(
            "vouch: {} file(s) could not be restored intact; run `vouch check --read-data` for a full report",
            r.mismatches.len() + r.damaged.len()
        );
    }
    if !r.is_complete() {
        errln!(
            "vouch: {} file(s) were not restored because the target refused them (nothing stored is damaged): give a --target on a filesystem that takes them, or make room",
            r.unwritable.len()
        );
    }
}

pub fn check(r: &CheckReport, as_json: bool) {
    for n in &r.notes {
        errln!("vouch: note: {n}");
    }
    if as_json {
        json(r);
        return;
    }
    outln!(
        "checked {}: {} snapshot(s), {} tree(s), {} file(s), {} pack(s) holding {} blob(s)",
        r.repository,
        r.snapshots,
        r.trees,
        r.files,
        r.packs,
        r.blobs
    );
    if r.read_data != "none" {
        outln!(
            "read {} pack(s) ({}) [{}{}]: {} blob(s) verified at levels 1 (storage hash) and 2 (authenticated, keyed blob hash)",
            r.packs_read,
            size(r.bytes_read),
            r.read_data,
            r.subset_seed
                .map(|s| format!(", seed {s}"))
                .unwrap_or_default(),
            r.blobs_verified
        );
    }
    for f in &r.findings {
        let tag = match f.severity {
            Severity::Damage => "DAMAGE",
            Severity::Warning => "warning",
        };
        outln!("{tag}: {}: {}", f.object, f.message);
        if f.affected_total > 0 {
            outln!("  affects {} file(s):", f.affected_total);
            for a in f.affected.iter().take(10) {
                outln!("    snapshot {}  {}", a.snapshot, a.path);
            }
            if f.affected_total > 10 {
                outln!("    … {} more (see --json)", f.affected_total - 10);
            }
        }
    }
    if r.is_damaged() {
        outln!(
            "damage found: {} problem(s); the files listed cannot be restored intact",
            r.findings
                .iter()
                .filter(|f| f.severity == Severity::Damage)
                .count()
        );
    } else {
        outln!("no damage found ({})", seconds(r.duration_ms));
    }
}

pub fn keys(keys: &[(KeyId, KeyFile)], current: KeyId, as_json: bool) {
    if as_json {
        #[derive(Serialize)]
        struct K<'a> {
            id: KeyId,
            current: bool,
            created: String,
            host: &'a str,
            username: &'a str,
        }
        let v: Vec<_> = keys
            .iter()
            .map(|(id, k)| K {
                id: *id,
                current: *id == current,
                created: human(k.created),
                host: &k.host,
                username: &k.username,
            })
            .collect();
        json(&v);
        return;
    }
    for (id, k) in keys {
        outln!(
            "{} {}  created {} by {}@{}",
            if *id == current { "*" } else { " " },
            id.short(),
            human(k.created),
            k.username,
            k.host
        );
    }
}
