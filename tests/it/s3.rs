//! The same round trip and damage tests against a real S3 server (moto) on loopback.

use std::sync::Arc;

use crate::support::{Env, Run, S3Repo, assert_same_tree, noise, text, write};

fn share(env: &Env) -> std::path::PathBuf {
    let src = env.path("share");
    write(&src.join("Staff/plan.txt"), &text(200_000, 1));
    write(&src.join("Admin/mis.sql"), &text(3_000_000, 2));
    write(&src.join("Photos/IMG_0001.jpg"), &noise(5_000_000, 3));
    write(&src.join("empty"), b"");
    src
}

#[test]
fn round_trip_through_s3() {
    let r = S3Repo::new("roundtrip", "school/nas1", false);
    r.run(&["init"]).expect(0);
    let src = share(&r.env);
    r.run(&["backup", src.to_str().unwrap(), "--label", "Off-site copy"])
        .expect(0);
    let snaps = r.run(&["snapshots"]).expect(0);
    assert!(snaps.stdout.contains("Off-site copy"), "{}", snaps.stdout);
    r.run(&["check", "--read-data"]).expect(0);
    let target = r.env.path("restore");
    r.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &target);
    // Nothing outside the prefix was written.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = rt.block_on(r.store().list("")).unwrap();
    assert!(keys.iter().any(|(k, _)| k == "config"), "{keys:?}");
    assert!(
        keys.iter().all(|(k, _)| !k.starts_with("school/")),
        "{keys:?}"
    );
}

#[test]
fn damage_in_s3_is_found_and_the_rest_restores() {
    let r = S3Repo::new("damage", "school/nas1", false);
    r.run(&["init"]).expect(0);
    let src = share(&r.env);
    r.run(&["backup", src.to_str().unwrap()]).expect(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = r.store();
    let packs = rt.block_on(store.list("data/")).unwrap();
    // Flip one byte in the largest pack: it lands in one blob of one file.
    let (key, _) = packs.iter().max_by_key(|(_, size)| *size).unwrap().clone();
    let mut bytes = rt.block_on(store.get(&key)).unwrap().to_vec();
    bytes[1000] ^= 0x80;
    rt.block_on(store.put(&key, bytes.into())).unwrap();
    let out = r.run(&["check", "--read-data"]).expect(4);
    assert!(
        out.stdout.contains(&format!("DAMAGE: {key}")),
        "{}",
        out.stdout
    );
    let target = r.env.path("restore");
    let res = r
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(4);
    assert!(
        res.stderr.contains("could not be restored"),
        "{}",
        res.stderr
    );
    // The file whose blob holds the flipped byte is named and not left behind; every other
    // file is restored intact (how blobs are grouped into packs varies with timing).
    let inside = target.join(src.strip_prefix("/").unwrap());
    let (mut damaged, mut intact) = (0, 0);
    for (rel, content) in [
        ("Staff/plan.txt", text(200_000, 1)),
        ("Admin/mis.sql", text(3_000_000, 2)),
        ("Photos/IMG_0001.jpg", noise(5_000_000, 3)),
    ] {
        if res.stderr.contains(rel) {
            assert!(
                !inside.join(rel).exists(),
                "a damaged {rel} is not left behind"
            );
            damaged += 1;
        } else {
            assert_eq!(std::fs::read(inside.join(rel)).unwrap(), content, "{rel}");
            intact += 1;
        }
    }
    assert!(damaged == 1 && intact == 2, "{}", res.stderr);

    // An index deleted from the bucket is reported.
    let index = rt.block_on(store.list("index/")).unwrap();
    rt.block_on(store.delete(&index[0].0)).unwrap();
    let out = r.run(&["check"]).expect(4);
    assert!(out.stdout.contains("in no index"), "{}", out.stdout);
    drop(Arc::new(()));
}

#[test]
fn an_unreachable_s3_endpoint_is_a_clear_error() {
    let env = Env::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = env.vouch();
    cmd.env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y-secret-value");
    let out = Run::of(
        cmd.args([
            "snapshots",
            "--repo",
            "s3://nobucket/x",
            "--s3-endpoint",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap(),
    )
    .expect(1);
    assert!(
        out.stderr.contains("could not be reached"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("y-secret-value"), "{}", out.stderr);
}
