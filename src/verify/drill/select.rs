//! What a drill restores: which snapshot, and which of its files. Samples take the files
//! verified longest ago (or never) first, ties broken by a seeded shuffle; the seed is
//! recorded, so a drill's selection can be repeated.

use jiff::Timestamp;

use crate::config::{Selection, SnapshotChoice};
use crate::repo::format::snapshot::Snapshot;
use crate::repo::ids::SnapshotId;
use crate::restore::Plan;
use crate::verify::check::seeded_rank;
use crate::verify::ledger::Ledger;

/// Why a drill has no snapshot to restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum NoSnapshot {
    #[error("there is no snapshot to test")]
    None,
    #[error(
        "no snapshot was taken in the last {}: the backups themselves need looking at first",
        humantime::format_duration(*.0)
    )]
    NoneWithin(std::time::Duration),
}

/// Choose the snapshot for a drill among `candidates` (oldest first).
pub(super) fn snapshot(
    candidates: &[(SnapshotId, Snapshot)],
    choice: &SnapshotChoice,
    seed: u64,
    now: Timestamp,
) -> Result<(SnapshotId, Snapshot), NoSnapshot> {
    let pick = match choice {
        SnapshotChoice::Latest => candidates.last(),
        SnapshotChoice::Oldest => candidates.first(),
        SnapshotChoice::RandomWithin(window) => {
            let since = now - *window;
            let recent: Vec<_> = candidates.iter().filter(|(_, s)| s.time >= since).collect();
            if recent.is_empty() {
                return Err(NoSnapshot::NoneWithin(*window));
            }
            recent
                .iter()
                .min_by_key(|(id, _)| seeded_rank(seed, id.as_bytes()))
                .copied()
        }
    };
    pick.cloned().ok_or(NoSnapshot::None)
}

/// Whether a must-include entry covers a file: an absolute entry is a path prefix; a relative
/// one ("admin/SIMS/") matches at any directory boundary.
fn covers(entry: &str, path: &str) -> bool {
    if entry.starts_with('/') {
        path.starts_with(entry.trim_end_matches('/'))
            && matches!(
                path.as_bytes().get(entry.trim_end_matches('/').len()),
                None | Some(b'/')
            )
    } else {
        let needle = format!("/{}", entry.trim_start_matches("./"));
        let needle = needle.trim_end_matches('/');
        path.match_indices(needle)
            .any(|(i, _)| matches!(path.as_bytes().get(i + needle.len()), None | Some(b'/')))
    }
}

/// The files to restore, as positions in `plan.files`, and the must-include entries that
/// matched nothing.
pub(super) struct Chosen {
    pub files: Vec<u32>,
    pub bytes: u64,
    pub missing_must_include: Vec<String>,
    pub must_include_files: usize,
}

pub(super) fn files(
    plan: &Plan,
    selection: &Selection,
    must_include: &[String],
    ledger: &Ledger,
    seed: u64,
) -> Chosen {
    let paths: Vec<String> = plan
        .files
        .iter()
        .map(|f| format!("/{}", f.rel.display()))
        .collect();
    let mut chosen = vec![false; plan.files.len()];
    let mut missing = Vec::new();
    let mut must = 0;
    for entry in must_include {
        let mut any = false;
        for (i, p) in paths.iter().enumerate() {
            if covers(entry, p) {
                any = true;
                if !chosen[i] {
                    chosen[i] = true;
                    must += 1;
                }
            }
        }
        if !any {
            missing.push(entry.clone());
        }
    }
    let total: u64 = plan.files.iter().map(|f| f.node.size).sum();
    let mut order: Vec<usize> = (0..plan.files.len()).filter(|&i| !chosen[i]).collect();
    order.sort_by_key(|&i| {
        (
            ledger.file_verified(&paths[i]),
            seeded_rank(seed, paths[i].as_bytes()),
        )
    });
    let (mut files, mut bytes) = (0u64, 0u64);
    for i in order {
        let full = match *selection {
            Selection::All => false,
            Selection::Percent(p) => bytes as f64 >= total as f64 * p / 100.0,
            Selection::Files(n) => files >= n,
            Selection::Bytes(b) => bytes >= b,
        };
        if full {
            break;
        }
        chosen[i] = true;
        files += 1;
        bytes += plan.files[i].node.size;
    }
    let picked: Vec<u32> = (0..plan.files.len() as u32)
        .filter(|&i| chosen[i as usize])
        .collect();
    Chosen {
        bytes: picked
            .iter()
            .map(|&i| plan.files[i as usize].node.size)
            .sum(),
        files: picked,
        missing_must_include: missing,
        must_include_files: must,
    }
}

/// Keep only the chosen files of `plan` and the directories above them; everything when
/// `selected` is `None`.
pub(super) fn restrict(plan: Plan, selected: Option<&[u32]>) -> Plan {
    let Some(selected) = selected else {
        return plan;
    };
    let files: Vec<_> = selected
        .iter()
        .filter_map(|&i| plan.files.get(i as usize).cloned())
        .collect();
    let needed: std::collections::HashSet<&std::path::Path> = files
        .iter()
        .flat_map(|f| f.rel.ancestors().skip(1))
        .collect();
    let dirs = plan
        .dirs
        .iter()
        .filter(|(p, _)| needed.contains(p.as_path()))
        .cloned()
        .collect();
    Plan {
        dirs,
        files,
        symlinks: Vec::new(),
        special: Vec::new(),
        links: Vec::new(),
        format: plan.format,
        damaged: plan.damaged,
        // A drill restores into a fresh sandbox: nothing is in the way there.
        through: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn must_include_entries_match_at_directory_boundaries() {
        assert!(covers("admin/SIMS/", "/volume1/admin/SIMS/export.bak"));
        assert!(covers("/volume1/admin", "/volume1/admin/x"));
        assert!(!covers("/volume1/admin", "/volume1/administration/x"));
        assert!(!covers("admin/SIMS", "/volume1/admin/SIMS2/x"));
        assert!(covers("SIMS/export.bak", "/volume1/admin/SIMS/export.bak"));
    }
}
