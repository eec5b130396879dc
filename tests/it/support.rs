//! Helpers for the integration tests: the real binary, temporary folders, and a real S3
//! server (moto) on a free loopback port, started once for the whole test run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "correct horse battery staple";

/// A scratch folder with a passphrase file; removed when dropped.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub pass_file: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vouch-it-")
            .tempdir()
            .expect("tempdir");
        let pass_file = dir.path().join("passphrase");
        std::fs::write(&pass_file, format!("{PASSWORD}\n")).unwrap();
        Self { dir, pass_file }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The binary with the passphrase file set and no inherited repository settings.
    pub fn vouch(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vouch"));
        c.env("VOUCH_PASSWORD_FILE", &self.pass_file)
            .env_remove("VOUCH_PASSWORD")
            .env_remove("VOUCH_REPOSITORY")
            .env("VOUCH_LOG", "error")
            .env("VOUCH_CACHE_DIR", self.path("cache"))
            .stdin(Stdio::null());
        c
    }

    /// Run `vouch ARGS` and return its output.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::of(self.vouch().args(args).output().expect("run vouch"))
    }
}

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Assert the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Write a file, creating its parent folders.
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Compressible text of about `len` bytes: words in a pseudo-random order, like a dump.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "pupil",
        "attendance",
        "reading",
        "maths",
        "Zoë",
        "term",
        "report",
        "governor",
        "INSERT",
        "VALUES",
        "(1204,",
        "'Year 3',",
        "0.97);",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        out.push(if x % 11 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// Every file, directory, symlink, FIFO and device under `root`: relative path → description
/// (kind, mode, mtime, bytes or link target). Sockets are left out: a restore names them and
/// does not make them. Two trees are identical when their maps are equal.
pub fn tree_map(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) {
                continue;
            }
            let desc = if m.file_type().is_symlink() {
                format!(
                    "link -> {:?} mtime {}",
                    std::fs::read_link(&p).unwrap(),
                    m.mtime()
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} mtime {}", m.mode() & 0o7777, m.mtime())
            } else if !m.is_file() {
                format!(
                    "{:?} {:o} rdev {} mtime {}",
                    m.file_type(),
                    m.mode() & 0o7777,
                    m.rdev(),
                    m.mtime()
                )
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!(
                    "file {:o} mtime {}.{} len {} blake3 {}",
                    m.mode() & 0o7777,
                    m.mtime(),
                    m.mtime_nsec(),
                    bytes.len(),
                    blake3::hash(&bytes)
                )
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// Assert that `restored` (the restore target) holds an identical copy of `source`.
#[track_caller]
pub fn assert_same_tree(source: &Path, target: &Path) {
    let inside = target.join(source.strip_prefix("/").unwrap());
    let a = tree_map(source);
    let b = tree_map(&inside);
    if a != b {
        let only_a: Vec<_> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .take(5)
            .collect();
        let only_b: Vec<_> = b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(v))
            .take(5)
            .collect();
        panic!("restored tree differs\nsource: {only_a:#?}\nrestored: {only_b:#?}");
    }
}

/// Everything `stat`, `getfattr` and `getfacl` say of each entry under `root` beyond
/// `tree_map`: owner, link count and which entries share an inode, times in nanoseconds,
/// every extended attribute (all namespaces) and the ACL. Sockets are left out (a restore
/// does not make them). Two trees have the same metadata when their maps are equal.
pub fn metadata_map(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    let mut first_of_inode = std::collections::HashMap::new();
    let mut out = std::collections::BTreeMap::new();
    for p in paths {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            continue;
        }
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let same = first_of_inode
            .entry(m.ino())
            .or_insert_with(|| rel.clone())
            .clone();
        let xattrs = command_out(
            Command::new("getfattr")
                .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
                .arg(&p),
        );
        // Drop the "# file:" header: the path differs between the trees.
        let xattrs: Vec<&str> = xattrs.lines().skip(1).filter(|l| !l.is_empty()).collect();
        let acl = if ft.is_symlink() {
            String::new()
        } else {
            command_out(
                Command::new("getfacl")
                    .args(["-p", "-n", "--omit-header", "--"])
                    .arg(&p),
            )
        };
        let mtime = if ft.is_dir() || ft.is_symlink() || ft.is_file() {
            format!("{}.{:09}", m.mtime(), m.mtime_nsec())
        } else {
            m.mtime().to_string()
        };
        out.insert(
            rel,
            format!(
                "{:?} {:o} owner {}:{} links {} same as {} mtime {} size {} xattrs {:?} acl {:?}",
                ft,
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.nlink(),
                same.display(),
                mtime,
                if ft.is_dir() { 0 } else { m.size() },
                xattrs,
                acl.lines().collect::<Vec<_>>()
            ),
        );
    }
    out
}

fn command_out(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .expect("run a metadata tool (acl and attr are installed by scripts/test)");
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Assert that the restore target holds `source` with the same metadata as well.
#[track_caller]
pub fn assert_same_metadata(source: &Path, target: &Path) {
    let inside = target.join(source.strip_prefix("/").unwrap());
    let a = metadata_map(source);
    let b = metadata_map(&inside);
    if a != b {
        let diff: Vec<_> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .take(5)
            .map(|(k, v)| (k, v, b.get(k)))
            .collect();
        panic!("restored metadata differs (path, source, restored): {diff:#?}");
    }
}

/// Every pack file of a local repository.
pub fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(repo.join("data")) {
        for sub in rd {
            for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                out.push(f.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A moto S3 server on 127.0.0.1, shared by every S3 test of this run.
pub struct S3Server {
    pub endpoint: String,
    _child: Child,
}

static S3: OnceLock<S3Server> = OnceLock::new();

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn s3() -> &'static S3Server {
    S3.get_or_init(|| {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("vouch-moto-{port}.log"));
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()))
            .spawn()
            .expect("moto_server must be installed (scripts/test installs it: pip install 'moto[server]')");
        // The server lives in a static, which is never dropped: a watcher ends it once this
        // test process is gone, so that runs leave no servers behind.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
                std::process::id(),
                child.id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    })
}

impl S3Server {
    /// Create a bucket with a plain HTTP request (moto does not check signatures).
    pub fn create_bucket(&self, name: &str) {
        self.create_bucket_with(name, "");
    }

    /// A bucket created with S3 Object Lock enabled (which turns versioning on), as a school
    /// creates it in the console or with `aws s3api create-bucket --object-lock-enabled-for-bucket`.
    pub fn create_locked_bucket(&self, name: &str) {
        self.create_bucket_with(name, "x-amz-bucket-object-lock-enabled: true\r\n");
    }

    /// Give a bucket with Object Lock a default retention rule, which S3 applies to every
    /// object written without its own (and which makes it demand a checksum on every write).
    pub fn set_default_retention(&self, bucket: &str, mode: &str, days: u32) {
        let body = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>{mode}</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>"
        );
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT /{bucket}?object-lock HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    /// The bucket's ListObjectVersions reply for `prefix` (versions and delete markers), raw.
    pub fn list_versions(&self, bucket: &str, prefix: &str) -> String {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /{bucket}?versions&prefix={prefix} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        reply
    }

    fn create_bucket_with(&self, name: &str, headers: &str) {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "bucket {name} not created: {reply}"
        );
    }

    /// Environment for the binary to reach this server.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true");
    }
}

/// A repository in its own bucket on the test S3 server, driven through the real binary.
pub struct S3Repo {
    pub env: Env,
    pub url: String,
    pub bucket: String,
    pub prefix: String,
}

impl S3Repo {
    /// `locked`: the bucket is created with Object Lock enabled.
    pub fn new(test: &str, prefix: &str, locked: bool) -> Self {
        let bucket = bucket_name(test);
        if locked {
            s3().create_locked_bucket(&bucket);
        } else {
            s3().create_bucket(&bucket);
        }
        Self {
            env: Env::new(),
            url: format!("s3://{bucket}/{prefix}"),
            bucket,
            prefix: prefix.to_string(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.env.vouch();
        s3().apply(&mut cmd);
        cmd.args(args).args(["--repo", &self.url]);
        Run::of(cmd.output().unwrap())
    }

    /// The repository's objects as any S3 client sees them: plain requests, no retention.
    pub fn store(&self) -> vouch::Store {
        vouch::Store::open(
            &vouch::RepoUrl::S3 {
                bucket: self.bucket.clone(),
                prefix: self.prefix.clone(),
            },
            &vouch::S3Options {
                endpoint: Some(s3().endpoint.clone()),
                access_key_id: Some("testing".into()),
                secret_access_key: Some("testing".into()),
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// The keys under `dir` (relative to the repository).
    pub fn keys(&self, rt: &tokio::runtime::Runtime, dir: &str) -> Vec<String> {
        rt.block_on(self.store().list(dir))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}

/// A unique bucket name for one test.
pub fn bucket_name(test: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "vouch-{}-{}-{}",
        test.replace('_', "-"),
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Where the first blob of `path` (absolute, as backed up) is stored in the latest snapshot
/// of a local repository: the pack file and the blob's offset in it. Uses the library, so
/// damage can be aimed at one file.
pub fn blob_location(repo: &Path, path: &str) -> (PathBuf, usize) {
    use std::sync::Arc;
    use vouch::TreeLoader;
    use vouch::format::pack_key;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = vouch::Store::open(
            &vouch::RepoUrl::Local(repo.to_path_buf()),
            &Default::default(),
        )
        .unwrap();
        let r = Arc::new(
            vouch::Repository::open(store, &vouch::Secret::new(PASSWORD))
                .await
                .unwrap(),
        );
        let (index, _) = r.load_index().await.unwrap();
        let index = Arc::new(index);
        let (_, snap) = r.find_snapshot("latest").await.unwrap();
        let trees = TreeLoader::new(r.clone(), index.clone());
        let mut tree = trees.load(&snap.tree).await.unwrap();
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            let node = tree
                .find(part.as_bytes())
                .unwrap_or_else(|| panic!("{path} not in snapshot"))
                .clone();
            if i + 1 == parts.len() {
                let loc = index.get(&node.content[0]).unwrap();
                let pack = index.pack(loc.pack).id;
                return (repo.join(pack_key(&pack)), loc.offset as usize);
            }
            tree = trees.load(&node.subtree.unwrap()).await.unwrap();
        }
        unreachable!()
    })
}

/// A real SMTP server (aiosmtpd) on a free loopback port, storing what it receives in a
/// Maildir. Stopped when dropped.
pub struct Smtp {
    pub port: u16,
    pub mbox: PathBuf,
    child: Option<Child>,
}

impl Smtp {
    pub fn start(dir: &Path) -> Smtp {
        let port = free_port();
        let mut s = Smtp {
            port,
            mbox: dir.join(format!("smtp-{port}.mbox")),
            child: None,
        };
        s.restart();
        s
    }

    /// Start (again) on the same port, appending to the same mbox.
    pub fn restart(&mut self) {
        let child = Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.port),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&self.mbox)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd must be installed (scripts/test installs it: pip install aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The messages received so far, oldest first, as text (aiosmtpd's Mailbox handler
    /// keeps a Maildir).
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .flat_map(|d| files_in(&self.mbox.join(d)))
            .map(|p| (std::fs::metadata(&p).and_then(|m| m.modified()).unwrap(), p))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The same objects as `store`, through a fault-injecting wrapper around its real store, and
/// the handle that switches the faults.
pub fn with_faults(store: vouch::Store) -> (vouch::Store, vouch::FaultyStore) {
    let mut handle = None;
    let store = store.map_inner(|inner| {
        let f = vouch::FaultyStore::new(inner);
        handle = Some(f.clone());
        std::sync::Arc::new(f)
    });
    (store, handle.expect("map_inner calls its function"))
}
