//! The drill sandbox: a fresh directory on the scratch volume that the restore and the
//! application checks may write into, and nowhere else (Landlock, where the kernel has it).
//! It is removed afterwards, also after a failure; one left by a killed drill is removed by
//! the next.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

const PREFIX: &str = "vouch-drill-";
const MARKER: &str = ".vouch-drill";
/// Output kept from each application check, per stream.
const OUTPUT_LIMIT: usize = 16 << 10;

/// A sandbox directory; removed when dropped.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Remove sandboxes left in `scratch` by drills that are no longer running, then make a
    /// new one. Returns the sandbox and how many stale ones were removed.
    pub fn create(scratch: &Path) -> std::io::Result<(Sandbox, usize)> {
        std::fs::create_dir_all(scratch)?;
        let removed = remove_stale(scratch);
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(scratch)?;
        std::fs::write(
            dir.path().join(MARKER),
            format!("{} {}\n", std::process::id(), crate::sys::hostname()),
        )?;
        std::fs::create_dir(dir.path().join("restore"))?;
        std::fs::create_dir(dir.path().join("tmp"))?;
        Ok((Sandbox { dir }, removed))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the files are restored.
    pub fn restore_dir(&self) -> PathBuf {
        self.dir.path().join("restore")
    }

    /// Remove it now, reporting whether that worked. A full drill leaves tens of thousands
    /// of files; unlinking is kernel time, so subtrees are removed on several threads.
    pub fn remove(self) -> std::io::Result<()> {
        if crate::sys::euid() != 0 {
            // Restored folders carry their recorded permissions; a read-only one would keep
            // its files from an owner who is not root.
            make_writable(&self.restore_dir());
        }
        remove_parallel(&self.restore_dir(), 4);
        self.dir.close()
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&e.path());
        }
    }
}

/// Remove the contents of `root` on `threads` threads: descend until there are enough
/// subtrees to share out, then remove those in parallel. What is left is removed by the
/// caller.
fn remove_parallel(root: &Path, threads: usize) {
    let mut frontier = vec![root.to_path_buf()];
    for _ in 0..4 {
        if frontier.len() >= threads * 4 {
            break;
        }
        let mut next = Vec::new();
        for dir in &frontier {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => next.push(e.path()),
                    _ => {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        if next.is_empty() {
            return;
        }
        frontier = next;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(dir) =
                    frontier.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let _ = std::fs::remove_dir_all(dir);
                }
            });
        }
    });
}

/// Remove `vouch-drill-*` directories whose drill process is gone.
fn remove_stale(scratch: &Path) -> usize {
    let host = crate::sys::hostname();
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return 0;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let stale = match std::fs::read_to_string(e.path().join(MARKER)) {
            Ok(text) => {
                let mut parts = text.split_whitespace();
                let pid: Option<u32> = parts.next().and_then(|p| p.parse().ok());
                let owner = parts.next().unwrap_or_default();
                owner == host && pid.is_none_or(|p| !crate::sys::pid_alive(p))
            }
            // No marker: killed between creating the directory and writing it, or not ours;
            // only an hour-old one is taken to be ours and gone.
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600)),
        };
        if stale && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Bytes free for an unprivileged writer on the volume holding `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether writes outside the sandbox are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Confinement {
    /// Landlock refuses every write outside the sandbox.
    Enforced,
    /// Landlock is on but this kernel lacks some of the rights vouch asks for.
    Partial,
    /// Not confined; why.
    Unavailable(String),
}

impl std::fmt::Display for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Confinement::Enforced => {
                f.write_str("Landlock: writes outside the sandbox are refused")
            }
            Confinement::Partial => f.write_str("Landlock: partly enforced (older kernel)"),
            Confinement::Unavailable(why) => write!(f, "not confined: {why}"),
        }
    }
}

/// Confine this process, and what it starts afterwards, so that it can write only under
/// `dirs` (and to /dev/null). Reading stays allowed everywhere. Call it before starting any
/// thread: Landlock restricts the calling thread and its future children.
pub fn confine_writes(dirs: &[&Path]) -> Confinement {
    use landlock::{
        ABI, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
    };
    let abi = ABI::V5;
    let result = Ruleset::default()
        .handle_access(AccessFs::from_write(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(dirs, AccessFs::from_write(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(["/dev/null"], AccessFs::WriteFile)))
        .and_then(|r| r.restrict_self());
    match result {
        Ok(status) => match status.ruleset {
            RulesetStatus::FullyEnforced => Confinement::Enforced,
            RulesetStatus::PartiallyEnforced => Confinement::Partial,
            RulesetStatus::NotEnforced => Confinement::Unavailable(
                "this kernel does not support Landlock (Linux 5.13 or later with Landlock enabled)"
                    .into(),
            ),
        },
        Err(e) => Confinement::Unavailable(format!("Landlock could not be set up: {e}")),
    }
}

/// How an application check ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub output: String,
    pub duration_ms: u64,
}

/// Run `argv` confined to `sandbox`, with the sandbox as working and temporary directory,
/// killing it (and what it started) after `timeout`. It goes through `vouch __sandbox-exec`,
/// which confines itself and then becomes the command.
pub fn run_confined(
    sandbox: &Path,
    argv: &[String],
    timeout: Duration,
) -> std::io::Result<CommandOutcome> {
    let exe = super::worker_program()?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .arg("__sandbox-exec")
        .arg(sandbox)
        .arg("--")
        .args(argv)
        .current_dir(sandbox)
        .env("TMPDIR", sandbox.join("tmp"))
        .env("HOME", sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut stream| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if kept.len() < OUTPUT_LIMIT {
                    kept.extend_from_slice(&buf[..n.min(OUTPUT_LIMIT - kept.len())]);
                }
            }
            kept
        })
    })
    .collect();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            timed_out = true;
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut output = String::new();
    for r in readers {
        output.push_str(&String::from_utf8_lossy(&r.join().unwrap_or_default()));
    }
    Ok(CommandOutcome {
        exit_code: status.code(),
        timed_out,
        output,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// `vouch __sandbox-exec DIR -- PROGRAM ARGS…`: confine writes to DIR, then become PROGRAM.
pub fn sandbox_exec(dir: &Path, argv: &[std::ffi::OsString]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        errln!("vouch: __sandbox-exec needs a program to run");
        return 2;
    };
    let confinement = confine_writes(&[dir]);
    if confinement != Confinement::Enforced {
        errln!("vouch: {confinement}");
    }
    let err = Command::new(program).args(args).exec();
    errln!("vouch: cannot run {}: {err}", program.to_string_lossy());
    127
}
