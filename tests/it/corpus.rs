//! A school share made by code, for the tests that need one bigger than a handful of files:
//! folders of staff, pupils and admin, documents and exports that compress, photos and office
//! files that do not, tiny desktop.ini-style files, odd names; and a deterministic "day of
//! changes" (files edited, some deleted, some added), as a working day leaves a share.

use std::path::{Path, PathBuf};

use crate::support::{noise, text, write};

/// A small deterministic generator (xorshift), so that a seed gives the same share anywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, salt: &str) -> Rng {
        let h = blake3::hash(format!("{seed} {salt}").as_bytes());
        Rng(u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const FOLDERS: &[&str] = &[
    "Staff/Planning",
    "Staff/Reports",
    "Staff/Zoë Ahmed",
    "Pupils/Year 3/Siobhán",
    "Pupils/Year 6/Class (Oak)",
    "Admin/MIS-Exports",
    "Admin/Finance",
    "Shared/Curriculum/Maths",
    "Shared/Photos/Sports Day",
    "Archive/2019/Old Staff/desktop",
];

/// What a file is: its extension, and whether its bytes compress (text) or not (photos,
/// zipped office files).
fn kind(rng: &mut Rng) -> (&'static str, bool) {
    match rng.below(10) {
        0..=3 => ("docx.txt", true),
        4 => ("csv", true),
        5 => ("xml", true),
        6 => ("ini", true),
        7 => ("jpg", false),
        8 => ("xlsx", false),
        _ => ("rtf", true),
    }
}

fn contents(rng: &mut Rng, compressible: bool) -> Vec<u8> {
    // Mostly small, some tens of KiB, as office shares are.
    let len = match rng.below(10) {
        0..=5 => 200 + rng.below(4_000),
        6..=8 => 4_000 + rng.below(40_000),
        _ => 40_000 + rng.below(200_000),
    } as usize;
    if compressible {
        text(len, rng.next())
    } else {
        noise(len, rng.next())
    }
}

/// A share of `files` files under `root`.
pub fn school_share(root: &Path, files: usize, seed: u64) {
    let mut rng = Rng::new(seed, "share");
    for i in 0..files {
        let folder = rng.pick(FOLDERS);
        let (ext, compressible) = kind(&mut rng);
        let name = format!("{folder}/file {i:05}.{ext}");
        write(&root.join(name), &contents(&mut rng, compressible));
    }
}

/// One working day (`seed` tells the days apart): about `percent`% of the files touched, nine
/// in ten of them edited and one deleted, and as many new files as were deleted (at least
/// one). Returns (edited, deleted, added).
pub fn day_of_changes(root: &Path, percent: u64, seed: u64) -> (usize, usize, usize) {
    let all = files(root);
    let day = seed;
    let mut rng = Rng::new(day, "day");
    let (mut edited, mut deleted, mut added) = (0, 0, 0);
    for f in &all {
        if rng.below(100) >= percent {
            continue;
        }
        if rng.below(10) == 0 {
            std::fs::remove_file(f).unwrap();
            deleted += 1;
            continue;
        }
        // An edit keeps a file's nature: text stays text, a photo is re-saved.
        let compressible = !f.extension().is_some_and(|e| e == "jpg" || e == "xlsx");
        let mut bytes = std::fs::read(f).unwrap();
        let tail = contents(&mut rng, compressible);
        let keep = bytes.len() / 2;
        bytes.truncate(keep);
        bytes.extend_from_slice(&tail[..tail.len().min(8_000)]);
        std::fs::write(f, bytes).unwrap();
        edited += 1;
    }
    for i in 0..deleted.max(1) {
        let folder = rng.pick(FOLDERS);
        let (ext, compressible) = kind(&mut rng);
        let name = format!("{folder}/new {day}-{i}.{ext}");
        write(&root.join(name), &contents(&mut rng, compressible));
        added += 1;
    }
    (edited, deleted, added)
}

/// Every file under `root`.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}
