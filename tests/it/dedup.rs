//! Deduplication as the repository size shows it.

use crate::support::{Env, noise, text, write};

fn repo_bytes(dir: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.map(|e| {
                    let e = e.unwrap();
                    let m = e.metadata().unwrap();
                    if m.is_dir() { walk(&e.path()) } else { m.len() }
                })
                .sum()
            })
            .unwrap_or(0)
    }
    walk(&dir.join("data"))
}

fn stored(out: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(out).unwrap()["summary"].clone()
}

#[test]
fn the_same_data_twice_adds_almost_nothing_and_a_five_percent_change_about_five_percent() {
    let env = Env::new();
    let repo = env.path("repo");
    let r = repo.to_str().unwrap();
    env.run(&["init", "--repo", r]).expect(0);
    let src = env.path("share");
    // 40 MiB of incompressible data in 20 files, so sizes are easy to reason about.
    for i in 0..20 {
        write(
            &src.join(format!("photos/IMG_{i:03}.jpg")),
            &noise(2 << 20, i),
        );
    }
    let first = stored(
        &env.run(&["backup", "--repo", r, src.to_str().unwrap(), "--json"])
            .expect(0)
            .stdout,
    );
    let after_first = repo_bytes(&repo);
    assert!(after_first > 40 << 20, "{after_first}");

    // The same bytes under other names, read again with --force: nothing new to store.
    let copy = env.path("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for i in 0..20 {
        std::fs::copy(
            src.join(format!("photos/IMG_{i:03}.jpg")),
            copy.join(format!("again-{i}.jpg")),
        )
        .unwrap();
    }
    let again = stored(
        &env.run(&[
            "backup",
            "--repo",
            r,
            copy.to_str().unwrap(),
            "--force",
            "--json",
        ])
        .expect(0)
        .stdout,
    );
    assert_eq!(again["data_blobs_added"], 0, "{again}");
    let after_copy = repo_bytes(&repo);
    assert!(
        after_copy - after_first < 64 << 10,
        "the same data added {} bytes",
        after_copy - after_first
    );

    // Rewrite one file of twenty (5%): about 5% more.
    write(&src.join("photos/IMG_007.jpg"), &noise(2 << 20, 1000));
    let third = stored(
        &env.run(&["backup", "--repo", r, src.to_str().unwrap(), "--json"])
            .expect(0)
            .stdout,
    );
    assert_eq!(third["files_changed"], 1, "{third}");
    assert_eq!(third["files_unmodified"], 19, "{third}");
    let grew = repo_bytes(&repo) - after_copy;
    let five_percent = after_first / 20;
    assert!(
        grew > five_percent * 9 / 10 && grew < five_percent * 12 / 10,
        "grew {grew}, 5% is {five_percent}"
    );
    assert!(first["bytes_added_stored"].as_u64().unwrap() > 40 << 20);
}

#[test]
fn an_edit_in_the_middle_of_a_large_dump_stores_only_the_chunks_around_it() {
    let env = Env::new();
    let r = env.path("repo").display().to_string();
    env.run(&["init", "--repo", &r]).expect(0);
    let src = env.path("share");
    let mut dump = text(24 << 20, 5);
    write(&src.join("mis.sql"), &dump);
    env.run(&["backup", "--repo", &r, src.to_str().unwrap()])
        .expect(0);
    // Insert a row in the middle: content-defined chunking realigns after it.
    let row = b"INSERT INTO pupils VALUES (99,'New Pupil');\n";
    dump.splice(12 << 20..12 << 20, row.iter().copied());
    write(&src.join("mis.sql"), &dump);
    let s = stored(
        &env.run(&["backup", "--repo", &r, src.to_str().unwrap(), "--json"])
            .expect(0)
            .stdout,
    );
    let added = s["bytes_added_raw"].as_u64().unwrap();
    assert!(
        added < 10 << 20,
        "an insertion re-stored {added} of {} bytes",
        dump.len()
    );
    assert!(s["data_blobs_added"].as_u64().unwrap() <= 4, "{s}");
}
