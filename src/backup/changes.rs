//! What a backup changed since its parent snapshot, and how much of it looks like ransomware:
//! files whose content became incompressible (encrypted data does not compress) where the
//! earlier version compressed, files that reappear under a removed file's name with an
//! extension added (`report.docx` → `report.docx.locked`), files with a known ransomware
//! extension, and ransom notes. Compressibility is read from the index: the backup stores a
//! blob raw exactly when zstd could not shrink it, so nothing is read back.
//!
//! Unchanged subtrees have the same tree id and are skipped, so the comparison costs about as
//! much as the directories that changed.

use std::collections::HashMap;

use crate::repo::crypto::SEAL_OVERHEAD;
use crate::repo::format::tree::{Node, NodeKind, Tree};
use crate::repo::ids::BlobId;
use crate::repo::{BlobError, TreeLoader};

/// Extensions ransomware families are known to append.
const RANSOM_EXTENSIONS: [&str; 24] = [
    "locked",
    "encrypted",
    "enc",
    "crypt",
    "crypted",
    "crypto",
    "cry",
    "lockbit",
    "wncry",
    "wnry",
    "wcry",
    "cerber",
    "locky",
    "zepto",
    "odin",
    "crysis",
    "dharma",
    "phobos",
    "ryk",
    "conti",
    "akira",
    "basta",
    "royal",
    "hive",
];

/// Files under this size are not judged by compressibility (a few bytes of text do not
/// compress either).
const JUDGED_FROM: u64 = 1024;

/// Examples kept for the alert.
const EXAMPLES: usize = 5;

pub use crate::repo::format::snapshot::ChangeStats;

/// Whether a file's content was stored raw because it does not compress; `None` when the file
/// is too small to say or its first blob is not indexed.
fn incompressible(trees: &TreeLoader, node: &Node) -> Option<bool> {
    if node.size < JUDGED_FROM {
        return None;
    }
    let first = node.content.first()?;
    let loc = trees.index().get(first)?;
    Some(loc.length as usize >= loc.raw_length as usize + 1 + SEAL_OVERHEAD)
}

fn extension(name: &str) -> Option<&str> {
    name.rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 12)
}

/// A name ransomware leaves for people to read ("HOW_TO_DECRYPT.txt", "_readme.txt" beside
/// encrypted files, "RESTORE-MY-FILES.html").
fn is_ransom_note(name: &str) -> bool {
    let squashed: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    [
        "decrypt",
        "ransom",
        "restoremyfiles",
        "recoverfiles",
        "recovermyfiles",
        "howtorecover",
        "howtorestore",
        "yourfilesare",
        "filesencrypted",
    ]
    .iter()
    .any(|w| squashed.contains(w))
}

fn looks_encrypted_by_name(name: &str) -> bool {
    extension(name).is_some_and(|e| RANSOM_EXTENSIONS.iter().any(|r| r.eq_ignore_ascii_case(e)))
}

/// Compare the tree `after` with its parent `before`.
pub async fn compare(
    trees: &TreeLoader,
    before: BlobId,
    after: BlobId,
    files_before: u64,
) -> Result<ChangeStats, BlobError> {
    let mut stats = ChangeStats {
        files_before,
        ..Default::default()
    };
    let mut stack: Vec<(Option<BlobId>, BlobId, String)> =
        vec![(Some(before), after, String::new())];
    while let Some((old, new, path)) = stack.pop() {
        if old == Some(new) {
            continue;
        }
        let old_tree = match old {
            Some(id) => trees.load(&id).await?,
            None => Tree::default(),
        };
        let new_tree = trees.load(&new).await?;
        let old_by_name: HashMap<&[u8], &Node> = old_tree
            .nodes
            .iter()
            .map(|n| (n.name.as_slice(), n))
            .collect();
        let new_names: std::collections::HashSet<&[u8]> =
            new_tree.nodes.iter().map(|n| n.name.as_slice()).collect();
        for node in &new_tree.nodes {
            let name = node.name_lossy();
            let here = format!("{path}/{name}");
            match node.kind {
                NodeKind::Dir => {
                    if let Some(sub) = node.subtree {
                        let old_sub = old_by_name
                            .get(node.name.as_slice())
                            .filter(|o| o.kind == NodeKind::Dir)
                            .and_then(|o| o.subtree);
                        stack.push((old_sub, sub, here));
                    }
                }
                NodeKind::File => {
                    let previous = old_by_name
                        .get(node.name.as_slice())
                        .filter(|o| o.kind == NodeKind::File);
                    let suspicious = match previous {
                        Some(prev) if prev.content == node.content => continue,
                        Some(prev) => {
                            stats.files_changed += 1;
                            incompressible(trees, node) == Some(true)
                                && (incompressible(trees, prev) == Some(false)
                                    || looks_encrypted_by_name(&name))
                        }
                        None => {
                            stats.files_new += 1;
                            if is_ransom_note(&name) && stats.ransom_notes.len() < 10 {
                                stats.ransom_notes.push(here.clone());
                            }
                            // The same name with an extension added, where the old file is gone.
                            let renamed_from = name
                                .rsplit_once('.')
                                .map(|(stem, _)| stem.as_bytes())
                                .filter(|stem| !new_names.contains(stem))
                                .and_then(|stem| old_by_name.get(stem))
                                .filter(|o| o.kind == NodeKind::File);
                            match renamed_from {
                                Some(prev) => {
                                    incompressible(trees, node) == Some(true)
                                        && (incompressible(trees, prev) == Some(false)
                                            || prev.content != node.content)
                                }
                                None => {
                                    looks_encrypted_by_name(&name)
                                        && incompressible(trees, node) != Some(false)
                                }
                            }
                        }
                    };
                    if suspicious {
                        stats.files_encrypted_looking += 1;
                        if stats.examples.len() < EXAMPLES {
                            stats.examples.push(here);
                        }
                    }
                }
                _ => {}
            }
        }
        // Whatever the new tree no longer has was removed (whole directories included).
        let mut gone: Vec<BlobId> = Vec::new();
        for node in &old_tree.nodes {
            if new_names.contains(node.name.as_slice()) {
                let same_kind = new_tree
                    .nodes
                    .iter()
                    .any(|n| n.name == node.name && n.kind == node.kind);
                if same_kind {
                    continue;
                }
            }
            match (node.kind, node.subtree) {
                (NodeKind::File, _) => stats.files_removed += 1,
                (NodeKind::Dir, Some(sub)) => gone.push(sub),
                _ => {}
            }
        }
        while let Some(id) = gone.pop() {
            for node in trees.load(&id).await?.nodes {
                match (node.kind, node.subtree) {
                    (NodeKind::File, _) => stats.files_removed += 1,
                    (NodeKind::Dir, Some(sub)) => gone.push(sub),
                    _ => {}
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ransom_notes_and_extensions_are_recognised_and_ordinary_names_are_not() {
        for note in [
            "HOW_TO_DECRYPT.txt",
            "RESTORE-MY-FILES.html",
            "!!!_RECOVER_FILES_!!!.txt",
            "YOUR FILES ARE ENCRYPTED.hta",
            "ransom_note.txt",
        ] {
            assert!(is_ransom_note(note), "{note}");
        }
        for ordinary in [
            "README.txt",
            "Year 3 reports.docx",
            "decorations.jpg",
            "_readme.md",
        ] {
            assert!(!is_ransom_note(ordinary), "{ordinary}");
        }
        assert!(looks_encrypted_by_name("report.docx.locked"));
        assert!(looks_encrypted_by_name("IMG_0042.jpg.WNCRY"));
        assert!(!looks_encrypted_by_name("minutes.docx"));
        assert!(!looks_encrypted_by_name("noextension"));
    }
}
