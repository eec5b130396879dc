//! Facts about the machine and process that vouch records: host name, user, process ids.

use std::os::unix::fs::MetadataExt;

/// The host name, as recorded in snapshots and locks.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The user running vouch: `$USER`, else the numeric uid.
pub fn username() -> String {
    std::env::var("USER")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::metadata("/proc/self")
                .ok()
                .map(|m| format!("uid {}", m.uid()))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Whether a process with this pid exists on this machine.
pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The effective uid of this process (0 when root).
pub fn euid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Where a test may stop a long job to kill it or to run another beside it: when the
/// environment variable `var` names `phase`, this prints `WHAT: paused before PHASE` to
/// standard error and waits, for ever, or until the file named by `VOUCH_TEST_RESUME` exists.
/// Nothing else reads these variables.
pub(crate) fn test_pause(var: &str, phase: &str) {
    if std::env::var(var).is_ok_and(|p| p == phase) {
        let what = var
            .trim_start_matches("VOUCH_TEST_")
            .trim_end_matches("_PAUSE")
            .to_lowercase();
        errln!("{what}: paused before {phase}");
        let resume = std::env::var_os("VOUCH_TEST_RESUME").map(std::path::PathBuf::from);
        loop {
            if resume.as_ref().is_some_and(|f| f.exists()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// A folder only its owner can enter.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Write a new file readable by its owner only.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

static OUTPUT_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Remember that standard output could not be written (a closed pipe aside).
pub(crate) fn output_failed(e: &std::io::Error) {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = OUTPUT_ERROR.set(e.to_string());
    }
}

/// The first error writing standard output met, other than a closed pipe.
pub fn output_error() -> Option<&'static str> {
    OUTPUT_ERROR.get().map(String::as_str)
}

/// Sets its flag when dropped: stops helper threads whatever way the work that started them
/// ends (an error returned early included).
pub struct StopOnDrop(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
