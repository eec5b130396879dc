//! The storage layer's contract, one suite run against every backend a school can have and
//! through the fault wrapper: a local disk, S3 through object_store (moto on loopback), and S3
//! with Object Lock, whose writes go through aws-sdk-s3. Create-only writes, replies lost after
//! a write was stored, range reads, listing, deletes (refused under retention), read-only and
//! full stores.

use bytes::Bytes;
use vouch::{Fault, FaultyStore};
use vouch::{RepoUrl, Retention, RetentionMode, S3Options, StorageError, Store};

use crate::support::{Env, bucket_name, noise, s3, with_faults};

/// What every store must do. `retained`: objects other than locks are under Object Lock.
async fn contract(store: &Store, name: &str, retained: bool) {
    // Create-only writes: a second write of other bytes is refused; the same bytes again
    // (a retry whose first reply was lost) succeed.
    store
        .put_new("keys/k1", Bytes::from_static(b"one"))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    match store.put_new("keys/k1", Bytes::from_static(b"two")).await {
        Err(StorageError::AlreadyExists { .. }) => {}
        other => panic!("{name}: a create-only write over other bytes gave {other:?}"),
    }
    store
        .put_new("keys/k1", Bytes::from_static(b"one"))
        .await
        .unwrap_or_else(|e| panic!("{name}: the same bytes again: {e}"));
    assert_eq!(store.get("keys/k1").await.unwrap(), &b"one"[..], "{name}");

    // Overwrites (lock refreshes).
    store
        .put("locks/l1", Bytes::from_static(b"a"))
        .await
        .unwrap();
    store
        .put("locks/l1", Bytes::from_static(b"b"))
        .await
        .unwrap();
    assert_eq!(store.get("locks/l1").await.unwrap(), &b"b"[..], "{name}");

    // Whole and ranged reads, at the start, the middle and the end.
    let data = noise(100_000, 3);
    store
        .put("data/ab/pack", Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.get("data/ab/pack").await.unwrap(),
        &data[..],
        "{name}"
    );
    for r in [0..10u64, 50_000..50_100, 99_990..100_000] {
        let got = store.get_range("data/ab/pack", r.clone()).await.unwrap();
        assert_eq!(
            &got[..],
            &data[r.start as usize..r.end as usize],
            "{name} {r:?}"
        );
    }
    assert_eq!(store.size("data/ab/pack").await.unwrap(), 100_000, "{name}");
    let handle = tokio::runtime::Handle::current();
    let (s2, mut buf) = (store.clone(), Vec::new());
    let buf = tokio::task::spawn_blocking(move || {
        s2.read_into(&handle, "data/ab/pack", Some(10..20), &mut buf)
            .map(|()| buf)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(buf, &data[10..20], "{name}: read_into");

    // Listing: keys relative to the store, sorted, with sizes; an empty folder is empty.
    store
        .put("data/cd/second", Bytes::from_static(b"22"))
        .await
        .unwrap();
    assert_eq!(
        store.list("data/").await.unwrap(),
        vec![
            ("data/ab/pack".to_string(), 100_000),
            ("data/cd/second".to_string(), 2)
        ],
        "{name}"
    );
    assert!(store.list("index/").await.unwrap().is_empty(), "{name}");
    let now = vouch::Clock::now(&vouch::SystemClock);
    for (key, _, at) in store.list_modified("data/").await.unwrap() {
        assert!(
            now.duration_since(at).abs() < jiff::SignedDuration::from_mins(10),
            "{name}: {key} written at {at}, now is {now}"
        );
    }

    // What is not there.
    assert!(
        store
            .get("snapshots/none")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .size("snapshots/none")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .get_range("snapshots/none", 0..1)
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Deletes: done, and done again; refused while retained.
    if retained {
        match store.delete("data/ab/pack").await {
            Err(StorageError::Retained { .. }) => {}
            other => panic!("{name}: delete of a retained object gave {other:?}"),
        }
        assert_eq!(store.size("data/ab/pack").await.unwrap(), 100_000);
    } else {
        store.delete("data/ab/pack").await.unwrap();
        assert!(store.get("data/ab/pack").await.unwrap_err().is_not_found());
        store
            .delete("data/ab/pack")
            .await
            .unwrap_or_else(|e| panic!("{name}: deleting what is gone: {e}"));
    }
    // Locks are never retained.
    store.delete("locks/l1").await.unwrap();
    assert!(store.get("locks/l1").await.unwrap_err().is_not_found());
}

/// What every store must do when its replies are lost, its connection drops, it refuses
/// writes or it is full. Only calls that pass through `fault` are affected.
async fn under_faults(store: &Store, fault: &FaultyStore, name: &str, writes_through: bool) {
    fault.inject(Fault::TransientErrors(2));
    assert_eq!(
        store.get("keys/k1").await.unwrap(),
        &b"one"[..],
        "{name}: reads are retried"
    );
    fault.inject(Fault::TransientErrors(1));
    assert!(store.list("keys/").await.unwrap().len() == 1, "{name}");
    if writes_through {
        fault.inject(Fault::LoseReplies(1));
        store
            .put_new("keys/k2", Bytes::from_static(b"stored, reply lost"))
            .await
            .unwrap_or_else(|e| panic!("{name}: create-only write with a lost reply: {e}"));
        fault.inject(Fault::LoseReplies(1));
        store
            .put("index/i1", Bytes::from_static(b"stored, reply lost"))
            .await
            .unwrap_or_else(|e| panic!("{name}: write with a lost reply: {e}"));
        fault.inject(Fault::None);
        assert_eq!(
            store.get("keys/k2").await.unwrap(),
            &b"stored, reply lost"[..]
        );
        fault.inject(Fault::ReadOnly);
        let e = store
            .put("index/i2", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(e.is_read_only(), "{name}: {e:?}");
        assert!(
            store.get("index/i1").await.is_ok(),
            "{name}: reads still work"
        );
        fault.inject(Fault::DiskFullAfter(0));
        match store.put("index/i3", Bytes::from_static(b"x")).await {
            Err(StorageError::Full { .. }) => {}
            other => panic!("{name}: a full store gave {other:?}"),
        }
    }
    fault.inject(Fault::None);
}

fn moto(bucket: &str) -> Store {
    Store::open(
        &RepoUrl::S3 {
            bucket: bucket.to_string(),
            prefix: "nas1".into(),
        },
        &S3Options {
            endpoint: Some(s3().endpoint.clone()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn a_local_disk_keeps_the_storage_contract() {
    let env = Env::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = RepoUrl::Local(env.path("repo"));
        let store = Store::create(&url, &S3Options::default(), false).unwrap();
        contract(&store, "local", false).await;
        let (faulty, fault) = with_faults(Store::open(&url, &S3Options::default()).unwrap());
        under_faults(&faulty, &fault, "local through faults", true).await;
    });
}

#[test]
fn s3_keeps_the_storage_contract() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = bucket_name("contract");
    s3().create_bucket(&bucket);
    rt.block_on(async {
        contract(&moto(&bucket), "s3", false).await;
        let (faulty, fault) = with_faults(moto(&bucket));
        under_faults(&faulty, &fault, "s3 through faults", true).await;
    });
}

#[test]
fn s3_with_object_lock_keeps_the_storage_contract() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = bucket_name("contract-locked");
    s3().create_locked_bucket(&bucket);
    let retention = Retention {
        mode: RetentionMode::Governance,
        days: 1,
    };
    rt.block_on(async {
        // Writes go through aws-sdk-s3, with their retention; reads through object_store.
        let store = moto(&bucket).with_retention(retention).unwrap();
        contract(&store, "s3 with Object Lock", true).await;
        let (faulty, fault) = with_faults(moto(&bucket));
        let faulty = faulty.with_retention(retention).unwrap();
        under_faults(&faulty, &fault, "s3 with Object Lock through faults", false).await;
    });
}
