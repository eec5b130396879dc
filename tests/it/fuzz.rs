//! Fuzzing of every parser of bytes that vouch stores or receives: pack headers, index files,
//! trees, snapshots, key files, locks, ledger records, drill reports, holds, journal copies,
//! blob payloads, evidence packs, configuration files, cron expressions and other values a
//! person types. Inputs are random bytes and damaged copies of real objects from a real
//! repository; sealed objects are also re-sealed after the damage with the repository's own
//! keys, so that the parsers behind the encryption see malformed plaintext too.
//!
//! No input may panic, hang or allocate without bound. The targets run in a child process of
//! this test binary under an address-space limit (`prlimit --as`), so that an allocation sized
//! by an input aborts the child and fails the test. The test command runs a few hundred cases
//! per target; `bench/fuzz` runs them for ten minutes (`VOUCH_FUZZ_SECONDS`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use vouch::format::BlobLocation;
use vouch::format::Kind;
use vouch::format::index::IndexFile;
use vouch::format::lock::LockFile;
use vouch::format::snapshot::Snapshot;
use vouch::format::tree::Tree;
use vouch::format::{BlobId, PackId};
use vouch::{RepoUrl, Repository, Secret, Store};

use crate::support::{Env, PASSWORD, Run, noise, packs, text, write};

/// The address space the fuzzed parsers run in: generous for a debug test binary with a
/// runtime, far below what an input-sized allocation asks for.
const ADDRESS_SPACE: &str = "4G";

#[test]
fn every_parser_survives_random_and_damaged_input_within_a_memory_limit() {
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let out = std::process::Command::new("prlimit")
        .arg(format!("--as={}", bytes_of(ADDRESS_SPACE)))
        .arg("--")
        .arg(&exe)
        .args([
            "--exact",
            "fuzz::targets",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VOUCH_FUZZ_CHILD", "1")
        .output()
        .expect("prlimit (util-linux) runs the fuzz targets under a memory limit");
    let run = Run::of(out);
    assert!(
        run.code == 0 && run.stdout.contains("test result: ok. 1 passed"),
        "the fuzz targets failed (exit {}) after {:?}:\n{}\n{}",
        run.code,
        started.elapsed(),
        run.stdout,
        run.stderr
    );
    // Each target says how many inputs it survived (shown with --nocapture, as bench/fuzz
    // runs it).
    for line in run
        .stdout
        .lines()
        .filter(|l| l.contains("fuzz ") && l.contains(" inputs"))
    {
        println!("{}", line.trim_start_matches("test fuzz::targets ... "));
    }
    for target in TARGETS {
        assert!(
            run.stdout.contains(&format!("fuzz {target}: ")),
            "{target} did not run:\n{}",
            run.stdout
        );
    }
}

fn bytes_of(size: &str) -> u64 {
    size.trim_end_matches('G').parse::<u64>().unwrap() << 30
}

const TARGETS: &[&str] = &[
    "pack header",
    "blob payload",
    "index file",
    "snapshot",
    "tree",
    "lock",
    "ledger record",
    "drill report",
    "hold",
    "journal copy",
    "key file",
    "evidence pack",
    "configuration",
    "cron",
    "typed values",
];

/// The targets themselves; run by the test above in a limited child process (outside it,
/// this entry point does nothing: the parent is the check).
#[test]
fn targets() {
    if std::env::var_os("VOUCH_FUZZ_CHILD").is_none() {
        return;
    }
    let corpus = Corpus::new();
    corpus.pack_header();
    corpus.blob_payload();
    corpus.documents();
    corpus.key_files();
    evidence_pack(&corpus.env);
    configuration(&corpus.env);
    cron();
    typed_values();
}

/// How long, or how many cases, each target gets.
fn budget(cases: u32) -> (u32, Option<Instant>) {
    match std::env::var("VOUCH_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        // Ten minutes shared between the targets.
        Some(s) => (
            cases.max(64),
            Some(Instant::now() + Duration::from_secs(s / TARGETS.len() as u64)),
        ),
        None => (cases, None),
    }
}

/// Run `test` on inputs from `strategy`: one round of `cases`, or rounds until the deadline.
/// A panic in `test` is caught by proptest, shrunk, and reported with its input.
fn fuzz<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let (cases, deadline) = budget(cases);
    let mut done = 0u64;
    let mut round = 0u64;
    loop {
        let seed = blake3::hash(format!("{name} {round}").as_bytes());
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, seed.as_bytes()),
        );
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz {name}: {e}");
        }
        done += u64::from(cases);
        round += 1;
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    println!("fuzz {name}: {done} inputs");
}

/// One edit of a damaged copy.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Repeat(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let interesting = prop_oneof![
        Just(0u8),
        Just(0xff),
        Just(b'9'),
        Just(b'"'),
        Just(b'{'),
        Just(b'['),
        Just(b'-'),
        Just(b'\\'),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(a, b)| Edit::Flip(a, b)),
        (any::<usize>(), interesting).prop_map(|(a, b)| Edit::Set(a, b)),
        (any::<usize>(), 1usize..64).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(a, v)| Edit::Insert(a, v)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..256).prop_map(|(a, n)| Edit::Repeat(a, n)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for e in edits {
        let at = |a: usize, len: usize| if len == 0 { 0 } else { a % len };
        match e {
            Edit::Flip(a, b) if !v.is_empty() => {
                let i = at(*a, v.len());
                v[i] ^= b;
            }
            Edit::Set(a, b) if !v.is_empty() => {
                let i = at(*a, v.len());
                v[i] = *b;
            }
            Edit::Delete(a, n) if !v.is_empty() => {
                let i = at(*a, v.len());
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Edit::Insert(a, bytes) => {
                let i = at(*a, v.len() + 1);
                v.splice(i..i, bytes.iter().copied());
            }
            Edit::Truncate(a) => {
                let i = at(*a, v.len() + 1);
                v.truncate(i);
            }
            Edit::Repeat(a, n) if !v.is_empty() => {
                let i = at(*a, v.len());
                let end = (i + n).min(v.len());
                let part = v[i..end].to_vec();
                v.splice(end..end, part);
            }
            _ => {}
        }
    }
    v
}

/// Damaged copies of `seed`, or random bytes.
fn damaged(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let seed = Arc::new(seed);
    prop_oneof![
        4 => prop::collection::vec(edit(), 1..8).prop_map(move |e| apply(&seed, &e)),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

/// A real repository with a backup, a drill report, ledger records, a hold and journal
/// copies, to take real objects from.
struct Corpus {
    env: Env,
    dir: PathBuf,
    repo: Arc<Repository>,
    rt: tokio::runtime::Runtime,
}

impl Corpus {
    fn new() -> Corpus {
        let env = Env::new();
        let etc = env.path("etc");
        std::fs::create_dir_all(etc.join("schedules")).unwrap();
        std::fs::create_dir_all(etc.join("restore-tests")).unwrap();
        std::fs::copy(&env.pass_file, etc.join("offsite.pass")).unwrap();
        let dir = env.path("repo");
        let share = env.path("share");
        write(&share.join("Staff/plan.docx"), &noise(150_000, 1));
        write(&share.join("Admin/mis.sql"), &text(200_000, 2));
        write(&share.join("Pupils/Year 3/story.txt"), &text(3_000, 3));
        std::fs::write(
            etc.join("vouch.toml"),
            format!(
                "school = \"Preston Primary Academy\"\nstate_dir = \"{}\"\nscratch_dir = \"{}\"\n[repositories.offsite]\nurl = \"{}\"\npassword_file = \"offsite.pass\"\n[alerts]\nto = [\"nm@school.example\"]\n",
                env.path("state").display(),
                env.path("scratch").display(),
                dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            etc.join("schedules/staff.toml"),
            format!(
                "repository = \"offsite\"\nlabel = \"Staff\"\npaths = [\"{}\"]\nexclude = [\"**/Thumbs.db\"]\ncron = \"30 1 * * 1-5\"\nrpo = \"74h\"\n[keep]\ndaily = 14\nweekly = 8\n",
                share.display()
            ),
        )
        .unwrap();
        std::fs::write(
            etc.join("restore-tests/monthly.toml"),
            "repository = \"offsite\"\nschedule = \"staff\"\nsnapshot = \"random-within:90d\"\ncron = \"0 3 1 * *\"\n[select]\npercent = 50\nmust_include = [\"Admin/\"]\n[verify]\nrestore_time_objective = \"8h\"\n[[verify.command]]\nglob = \"*.sql\"\nrun = [\"true\", \"{file}\"]\ntimeout = \"60s\"\n",
        )
        .unwrap();
        env.run(&["init", "--repo", dir.to_str().unwrap()])
            .expect(0);
        let cfg = etc.join("vouch.toml");
        let run = |args: &[&str]| {
            Run::of(
                env.vouch()
                    .env("VOUCH_CONFIG", &cfg)
                    .args(args)
                    .output()
                    .unwrap(),
            )
        };
        run(&["run", "staff"]).expect(0);
        run(&["run", "monthly"]).expect(0);
        let r = dir.to_str().unwrap();
        env.run(&["check", "--read-data", "--repo", r]).expect(0);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Store::open(&RepoUrl::Local(dir.clone()), &Default::default()).unwrap();
        let repo = Arc::new(
            rt.block_on(Repository::open(store, &Secret::new(PASSWORD)))
                .unwrap(),
        );
        let (id, _) = rt.block_on(repo.find_snapshot("latest")).unwrap();
        rt.block_on(vouch::hold(&repo, id, "fuzz corpus")).unwrap();
        Corpus { env, dir, repo, rt }
    }

    /// The stored bytes of the first object under `dir`, and its key.
    fn object(&self, dir: &str) -> (String, Vec<u8>) {
        let mut stack = vec![self.dir.join(dir)];
        while let Some(d) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let key = e
                        .path()
                        .strip_prefix(&self.dir)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string();
                    return (key, std::fs::read(e.path()).unwrap());
                }
            }
        }
        panic!("the corpus repository has nothing under {dir}");
    }

    fn pack_header(&self) {
        let keys = self.repo.keys().clone();
        let pack = std::fs::read(&packs(&self.dir)[0]).unwrap();
        let header_len = u32::from_le_bytes(pack[pack.len() - 4..].try_into().unwrap()) as usize;
        let start = pack.len() - 4 - header_len;
        let payload = keys
            .open(Kind::PackHeader, &pack[start..pack.len() - 4])
            .unwrap();
        // The whole pack damaged, or its header's plaintext damaged and sealed again.
        let (k2, body) = (keys.clone(), pack[..start].to_vec());
        let strategy = prop_oneof![
            damaged(pack.clone()),
            damaged(payload).prop_map(move |p| {
                let mut out = body.clone();
                let mut sealed = Vec::new();
                k2.seal_into(Kind::PackHeader, &p, &mut sealed);
                out.extend_from_slice(&sealed);
                out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
                out
            })
        ];
        fuzz("pack header", 256, strategy, |bytes| {
            let _ = vouch::format::pack::read_header(&keys, &bytes);
            let _ = vouch::format::pack::decode_header(&bytes);
            Ok(())
        });
    }

    fn blob_payload(&self) {
        let keys = self.repo.keys().clone();
        let strategy = (
            prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
            damaged(zstd::encode_all(&text(20_000, 5)[..], 3).unwrap()),
            prop_oneof![Just(20_000u32), any::<u32>()],
            any::<bool>(),
        );
        fuzz(
            "blob payload",
            256,
            strategy,
            |(codec, body, raw, verify)| {
                let mut payload = vec![codec];
                payload.extend_from_slice(&body);
                let mut sealed = Vec::new();
                keys.seal_into(Kind::DataBlob, &payload, &mut sealed);
                let loc = BlobLocation {
                    pack: 0,
                    kind: vouch::format::BlobKind::Data,
                    offset: 0,
                    length: sealed.len() as u32,
                    raw_length: raw,
                };
                let mut decoder = vouch::BlobDecoder::new();
                let id = BlobId::from_bytes([7; 32]);
                let _ = decoder.decode(
                    &keys,
                    &id,
                    &loc,
                    PackId::from_bytes([9; 32]),
                    &sealed,
                    verify,
                );
                Ok(())
            },
        );
    }

    /// A sealed document under `dir`: damaged as stored, or its plaintext damaged and
    /// sealed again (under the name its new bytes hash to), then decoded as `T`.
    fn document<T: serde::de::DeserializeOwned>(&self, name: &str, dir: &str, kind: Kind) {
        let (key, stored) = self.object(dir);
        let keys = self.repo.keys().clone();
        let plain = keys.open_document(kind, &stored).unwrap();
        let folder = key.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap();
        let k2 = keys.clone();
        let strategy = prop_oneof![
            damaged(stored).prop_map(|b| (false, b)),
            damaged(plain).prop_map(move |p| (true, k2.seal_document(kind, &p))),
        ];
        let repo = self.repo.clone();
        fuzz(name, 256, strategy, |(renamed, bytes)| {
            let key = if renamed {
                format!("{folder}/{}", hex(blake3::hash(&bytes).as_bytes()))
            } else {
                key.clone()
            };
            let _ = repo.decode::<T>(kind, &key, &bytes);
            Ok(())
        });
    }

    fn documents(&self) {
        self.document::<IndexFile>("index file", "index", Kind::Index);
        self.document::<Snapshot>("snapshot", "snapshots", Kind::Snapshot);
        self.document::<vouch::records::LedgerRecord>("ledger record", "ledger", Kind::Ledger);
        self.document::<vouch::records::DrillReport>("drill report", "drills", Kind::DrillReport);
        self.document::<vouch::Hold>("hold", "holds", Kind::Hold);
        // A lock as a prune would find it.
        let lock = LockFile {
            version: 1,
            host: "nas1".into(),
            pid: 4242,
            username: "vouch".into(),
            time: "2026-12-01T02:00:00Z".parse::<jiff::Timestamp>().unwrap(),
            exclusive: true,
            operation: "prune".into(),
        };
        let sealed = self
            .repo
            .keys()
            .seal_document(Kind::Lock, &serde_json::to_vec(&lock).unwrap());
        write(
            &self
                .dir
                .join("locks")
                .join(hex(blake3::hash(&sealed).as_bytes())),
            &sealed,
        );
        self.document::<LockFile>("lock", "locks", Kind::Lock);
        // Trees are blobs: their plaintext is JSON.
        let (_, snapshot) = self.rt.block_on(self.repo.find_snapshot("latest")).unwrap();
        let (index, _) = self.rt.block_on(self.repo.load_index()).unwrap();
        let tree = self
            .rt
            .block_on(self.repo.read_blob(&index, &snapshot.tree))
            .unwrap();
        fuzz("tree", 256, damaged(tree), |bytes| {
            if let Ok(t) = serde_json::from_slice::<Tree>(&bytes) {
                for n in &t.nodes {
                    let _ = n.name_lossy();
                }
            }
            Ok(())
        });
        // Journal copies: `<row>-<hash>`, checked against their name and their row number.
        let (key, stored) = self.object("journal");
        let keys = self.repo.keys().clone();
        let plain = keys.open_document(Kind::Journal, &stored).unwrap();
        let row = key
            .rsplit('/')
            .next()
            .unwrap()
            .split('-')
            .next()
            .unwrap()
            .to_string();
        let k2 = keys.clone();
        let strategy = prop_oneof![
            damaged(stored).prop_map(|b| (false, b)),
            damaged(plain).prop_map(move |p| (true, k2.seal_document(Kind::Journal, &p))),
        ];
        let repo = self.repo.clone();
        fuzz("journal copy", 256, strategy, |(renamed, bytes)| {
            let key = if renamed {
                format!(
                    "journal/nas1/{row}-{}",
                    hex(blake3::hash(&bytes).as_bytes())
                )
            } else {
                key.clone()
            };
            let _ = vouch::records::decode_mirror(&repo, &key, &bytes);
            Ok(())
        });
    }

    /// Key files are plaintext: planted beside the real key (under the name its bytes hash
    /// to), listed, and tried with the passphrase, whose KDF runs with the planted
    /// parameters.
    fn key_files(&self) {
        let (_, stored) = self.object("keys");
        let dir = self.dir.clone();
        let rt = &self.rt;
        fuzz("key file", 24, damaged(stored), |bytes| {
            let planted = dir.join("keys").join(hex(blake3::hash(&bytes).as_bytes()));
            std::fs::write(&planted, &bytes).unwrap();
            let store = Store::open(&RepoUrl::Local(dir.clone()), &Default::default()).unwrap();
            let opened = rt.block_on(Repository::open(store, &Secret::new(PASSWORD)));
            let _ = std::fs::remove_file(&planted);
            // The real key still opens the repository, whatever was planted beside it.
            prop_assert!(opened.is_ok(), "{:?}", opened.err());
            Ok(())
        });
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An auditor's copy of an evidence pack whose evidence.json is damaged: the signature
/// fails, and the parsing and re-rendering behind it must cope.
fn evidence_pack(env: &Env) {
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/evidence-v1");
    let json = std::fs::read(pack.join("evidence.json")).unwrap();
    let pk = vouch::audit::load_public_key(&pack.join("evidence.pub")).unwrap();
    let dir = env.path("evidence");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "evidence.html",
        "evidence.html.minisig",
        "evidence.json.minisig",
    ] {
        std::fs::copy(pack.join(f), dir.join(f)).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    fuzz("evidence pack", 128, damaged(json), |bytes| {
        std::fs::write(dir.join("evidence.json"), &bytes).unwrap();
        let out = rt.block_on(vouch::audit::verify_pack(&dir, &pk, None));
        let _ = format!("{out:?}");
        Ok(())
    });
}

/// vouch.toml, a schedule and a plan, each damaged in turn, checked as `vouch config check`
/// does.
fn configuration(env: &Env) {
    let etc = env.path("etc");
    let files = [
        etc.join("vouch.toml"),
        etc.join("schedules/staff.toml"),
        etc.join("restore-tests/monthly.toml"),
    ];
    for file in &files {
        let good = std::fs::read(file).unwrap();
        let config = etc.join("vouch.toml");
        fuzz("configuration", 96, damaged(good.clone()), |bytes| {
            std::fs::write(file, &bytes).unwrap();
            let (_, errors) = vouch::service::Config::check_all(&config);
            for e in &errors {
                let _ = e.to_string();
            }
            let _ = vouch::service::Plan::load(&etc.join("restore-tests/monthly.toml"));
            Ok(())
        });
        std::fs::write(file, &good).unwrap();
    }
}

/// Cron expressions as a person might type them; every one that parses must find its next
/// firing (or say there is none) without looping.
fn cron() {
    let tz = jiff::tz::TimeZone::get("Europe/London").unwrap();
    let field = prop_oneof![
        Just("*".to_string()),
        (0u32..70).prop_map(|n| n.to_string()),
        (0u32..40, 0u32..40).prop_map(|(a, b)| format!("{a}-{b}")),
        (1u32..20).prop_map(|n| format!("*/{n}")),
        (0u32..40, 0u32..40).prop_map(|(a, b)| format!("{a},{b}")),
        "[a-zA-Z0-9*/,-]{0,6}",
    ];
    let strategy = prop_oneof![
        prop::collection::vec(field, 0..7).prop_map(|f| f.join(" ")),
        ".{0,40}",
    ];
    let start: jiff::Timestamp = "2026-03-29T00:30:00Z".parse().unwrap();
    fuzz("cron", 512, strategy, |text| {
        if let Ok(c) = vouch::service::Cron::parse(&text) {
            let _ = c.next_after(start, &tz);
        }
        Ok(())
    });
}

/// Durations, sizes, repository URLs and percentages, as typed on the command line and in
/// the configuration.
fn typed_values() {
    fuzz("typed values", 512, ".{0,40}", |text| {
        let _ = vouch::service::parse_duration(&text);
        let _ = vouch::service::parse_size(&text);
        let _ = vouch::RepoUrl::parse(&text);
        Ok(())
    });
}
