//! The command line: clap definitions, passphrase sources, progress bars and exit codes.
//! Exit codes are a contract (README): 0 ok, 1 could not run, 2 usage, 3 backup finished but
//! some files were unreadable, 4 verification found damage.

mod demo;
mod doctor;
mod evidence;
mod maintain;
mod progress;
pub(crate) mod service;
pub(crate) mod show;
mod show_drill;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::repo::ids::KeyId;
use crate::{
    BackupOptions, CheckOptions, InitOptions, ReadData, RepoUrl, Repository, RestoreOptions,
    S3Options, Secret, Store,
};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_PARTIAL: i32 = 3;
pub const EXIT_DAMAGE: i32 = 4;
/// A backup paused at the end of its window: not a failure, its next run continues it.
pub const EXIT_PAUSED: i32 = 5;
/// Restic's codes for the three errors a script most wants to tell apart.
pub const EXIT_NO_REPOSITORY: i32 = 10;
pub const EXIT_LOCKED: i32 = 11;
pub const EXIT_WRONG_PASSWORD: i32 = 12;

#[derive(Parser, Debug)]
#[command(
    name = "vouch",
    version,
    about = "Backups for school file servers that prove they restore",
    long_about = "vouch backs up file shares to an encrypted off-site repository (a local path or S3), \
                  checks and test-restores them, and records the evidence.\n\n\
                  Exit codes: 0 ok, 1 could not run, 2 usage error, 3 finished but some files \
                  could not be read or written, 4 verification found damage, 10 no repository \
                  there, 11 the repository is locked, 12 wrong passphrase."
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct GlobalArgs {
    /// vouch.toml (default: $VOUCH_CONFIG, else /etc/vouch/vouch.toml)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Repository: a local path, file:///path or s3://bucket/prefix
    #[arg(long, short = 'r', global = true, env = "VOUCH_REPOSITORY")]
    repo: Option<String>,
    /// File holding the repository passphrase (first line)
    #[arg(long, global = true, env = "VOUCH_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS)
    #[arg(long, global = true)]
    s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)
    #[arg(long, global = true)]
    s3_region: Option<String>,
    /// Use path-style S3 requests (default when --s3-endpoint is given)
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    s3_path_style: Option<bool>,
    /// No progress bars
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    /// Read without taking a lock (restore, check): for a write-protected disk or read-only
    /// credentials (vouch does this by itself when the storage refuses the lock, and says so)
    #[arg(long, global = true)]
    no_lock: bool,
    /// Read index files, snapshots and trees from the repository every time, keeping no
    /// local copies (`check` never uses the cache)
    #[arg(long, global = true)]
    no_cache: bool,
    /// Where local copies of repository metadata are kept (default: $VOUCH_CACHE_DIR, else
    /// $XDG_CACHE_HOME/vouch, else ~/.cache/vouch)
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Cap this process's uploads to S3, like 20Mbit/s or 2MiB/s (a schedule's own limits
    /// apply to its backups)
    #[arg(long, global = true, env = "VOUCH_LIMIT_UPLOAD", value_name = "RATE", value_parser = crate::storage::Rate::parse)]
    limit_upload: Option<crate::storage::Rate>,
    /// Cap this process's downloads from S3, like 50Mbit/s
    #[arg(long, global = true, env = "VOUCH_LIMIT_DOWNLOAD", value_name = "RATE", value_parser = crate::storage::Rate::parse)]
    limit_download: Option<crate::storage::Rate>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository
    Init {
        /// Write every object retained by S3 Object Lock for DAYS (the bucket must have Object
        /// Lock enabled); prune extends what is still needed
        #[arg(long, value_name = "DAYS")]
        object_lock: Option<u32>,
        /// governance (users with s3:BypassGovernanceRetention can still delete) or
        /// compliance (nobody can, not even the account's root user)
        #[arg(long, value_name = "MODE", requires = "object_lock")]
        object_lock_mode: Option<String>,
        /// Create the repository's folder even inside an empty folder that is not a mounted
        /// disk (by default refused: that is what an unmounted disk's mount point looks like)
        #[arg(long)]
        create_parents: bool,
        /// Pack size in MiB, 1 to 128 (default 8): smaller packs lose less when an upload
        /// over a slow link is cut off, larger ones mean fewer objects
        #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u32).range(1..=128))]
        pack_size: Option<u32>,
        /// The repository's id, where it is, and its Object Lock retention, as JSON
        #[arg(long)]
        json: bool,
    },
    /// Check that each repository is reachable and protected (S3 versioning, Object Lock
    /// proven with a canary, retention, whether the credentials can delete) and that mail can
    /// go out
    Doctor {
        /// Also send a test email to vouch.toml's [alerts] recipients
        #[arg(long)]
        test_email: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Back up paths into the repository
    Backup {
        /// Files and directories to back up
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// What this backup is ("Staff and admin shares"); stored in the snapshot
        #[arg(long)]
        label: Option<String>,
        /// A tag for the snapshot (repeatable)
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Leave out matching files: a name pattern (Thumbs.db, ~$*) or an absolute path pattern
        #[arg(long = "exclude")]
        excludes: Vec<String>,
        /// Host name recorded in the snapshot
        #[arg(long)]
        host: Option<String>,
        /// Read every file, even those unchanged since the last snapshot
        #[arg(long)]
        force: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// List snapshots
    Snapshots {
        #[arg(long)]
        json: bool,
    },
    /// List the files of a snapshot
    Ls {
        /// Snapshot id (or a unique prefix), or `latest`
        snapshot: String,
        /// Only this path and what is under it
        path: Option<String>,
        /// Show type, permissions, size and modification time
        #[arg(long, short = 'l')]
        long: bool,
        /// One JSON object a line: the snapshot first, then each entry with its type, mode,
        /// owner, size, modification time and symlink target
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot, or parts of it, into a directory
    Restore {
        /// Snapshot id (or a unique prefix), or `latest`
        snapshot: String,
        /// Directory to restore into
        #[arg(long)]
        target: PathBuf,
        /// Restore only this path of the snapshot (repeatable)
        #[arg(long = "include")]
        include: Vec<std::ffi::OsString>,
        /// Replace files that exist in the target
        #[arg(long)]
        overwrite: bool,
        /// Set owners by the numbers recorded at backup, not by user and group names
        #[arg(long)]
        numeric_ids: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check the repository: structure, and with --read-data the stored bytes
    Check {
        /// Re-read and verify every pack
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Re-read and verify this percentage of the packs (e.g. 10 or 10%)
        #[arg(long, value_name = "PCT")]
        read_data_subset: Option<String>,
        /// Seed for choosing the subset (recorded in the report)
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Run a test restore (a drill) from a restore-test plan
    Drill {
        /// A plan file, or the name of one in restore-tests/ here or beside vouch.toml
        plan: String,
        /// Where the sandbox is made (default: the plan's scratch_dir, else the temporary directory)
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// Seed for choosing the snapshot and the sample (default: the plan's, else random; recorded)
        #[arg(long)]
        seed: Option<u64>,
        /// Who ran it, for the record (default: the system user)
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// How much of the stored data was read back and verified within a window
    Coverage {
        /// The window, like 13w (a term), 30d or 1y
        #[arg(long, default_value = "13w")]
        window: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove the snapshots a retention policy does not keep (restic's rules)
    Forget {
        #[command(flatten)]
        keep: maintain::KeepArgs,
        /// Only snapshots with this tag (repeatable: all of them)
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Only snapshots of this schedule
        #[arg(long)]
        schedule: Option<String>,
        /// Show what would be kept and why; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Prune afterwards
        #[arg(long)]
        prune: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove the data no snapshot needs, repacking packs that are mostly unused
    Prune {
        /// Unused space that may stay in kept packs, as a percentage of the used data
        #[arg(long, default_value = "5", value_name = "PCT")]
        max_unused: String,
        /// Show what would be removed; change nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Manage the passphrases that open the repository
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Repair the repository
    Repair {
        #[command(subcommand)]
        what: RepairWhat,
    },
    /// The local metadata cache: where it is and what it holds for each repository
    Cache {
        /// Remove it; what is needed is fetched again from the repositories
        #[arg(long)]
        clear: bool,
        /// The same as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove stale locks (or all locks with --all)
    Unlock {
        #[arg(long)]
        all: bool,
        /// How many locks were removed, as JSON
        #[arg(long)]
        json: bool,
    },
    /// Check vouch.toml, the schedules and the restore-test plans
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run one schedule or restore-test plan now (or check-freshness), journal it, send what
    /// is due, and exit: for a NAS whose own scheduler calls vouch
    Run {
        /// A schedule or plan name from the configuration, or check-freshness
        job: String,
        /// Who ran it, for the journal (default: the system user)
        #[arg(long)]
        operator: Option<String>,
        /// Started by a timer or cron, not a person: journalled as `schedule`, as the daemon's
        /// runs are (the evidence pack reports who started what)
        #[arg(long)]
        scheduled: bool,
        /// The journalled run (its number and record) and the mail sent, as JSON
        #[arg(long)]
        json: bool,
    },
    /// Every schedule and plan: last run, outcome, next run, freshness against the RPO
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The journal of runs: list, show, verify, annotate
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// Say that a possible-ransomware alert was expected or dealt with: releases the
    /// snapshot's hold, resumes retention, resolves the alert
    Acknowledge {
        /// The journal run of the backup the alert names
        run: crate::journal::RowId,
        /// What it was, for the journal ("term-start clear-out of Year 6 folders")
        #[arg(long)]
        note: String,
        #[arg(long)]
        operator: Option<String>,
    },
    /// Emails waiting to be delivered
    Outbox {
        /// Delivered ones too
        #[arg(long)]
        all: bool,
        /// Try to deliver what is due now
        #[arg(long)]
        flush: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run the service: schedules, drills, monitoring, email
    Daemon,
    /// Make an evidence signing key pair (minisign format)
    Keygen {
        /// Folder for evidence.key (the secret, mode 0600) and evidence.pub (for the auditor)
        #[arg(long)]
        out: PathBuf,
        /// Protect the secret key with the passphrase in this file
        #[arg(long, conflicts_with = "unencrypted")]
        key_password_file: Option<PathBuf>,
        /// Store the secret key unencrypted (protected by its 0600 permissions only)
        #[arg(long)]
        unencrypted: bool,
    },
    /// The signed evidence pack for auditors: build, verify, send, proof
    Evidence {
        #[command(subcommand)]
        action: EvidenceAction,
    },
    /// Run a self-contained demonstration in a folder
    Demo {
        /// Folder for the sample data, repository and restore (default ./vouch-demo)
        #[arg(long, default_value = "vouch-demo")]
        dir: PathBuf,
    },
    /// Shell completion for bash, zsh or fish, on standard output
    /// (`vouch completions bash > /etc/bash_completion.d/vouch`)
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write the manual pages (vouch.1, and vouch-COMMAND.1 for each command) into a folder
    Man {
        /// Folder for the pages (for example /usr/share/man/man1)
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug, Clone, Default)]
struct SigningArgs {
    /// The evidence signing key (default: [evidence] signing_key in vouch.toml)
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// File holding the signing key's passphrase, if it has one
    #[arg(long)]
    signing_key_password_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum EvidenceAction {
    /// Build and sign the pack for a period (default: the last school year, 1 September to 31 August)
    Build {
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: Option<String>,
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: Option<String>,
        #[arg(long)]
        out: PathBuf,
        /// With --repo: the school's name (the repository does not record it)
        #[arg(long)]
        school: Option<String>,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Check a pack: signatures, agreement, the journal it carries, and with --repo completeness
    Verify {
        dir: PathBuf,
        /// The school's public key (evidence.pub)
        #[arg(long)]
        pubkey: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build the last school year's pack and email it to the evidence recipients
    Send {
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: Option<String>,
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: Option<String>,
        /// Where to keep the pack (default: the state directory)
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        operator: Option<String>,
    },
    /// A signed proof of one test restore (a journal run)
    Proof {
        run: crate::journal::RowId,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        signing: SigningArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Validate everything and report each mistake with its file, line and fix
    Check {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum JournalAction {
    /// Runs, newest last
    List {
        #[arg(long)]
        json: bool,
    },
    /// One run (or annotation) in full, with the notes on it
    Show {
        run: crate::journal::RowId,
        /// The row and its notes as one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain, and against the copy in each repository
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Record what was done about a run (the "resulting actions")
    Annotate {
        run: crate::journal::RowId,
        text: String,
        #[arg(long)]
        operator: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum RepairWhat {
    /// Rebuild index entries from pack headers for packs that no index lists
    Index,
}

#[derive(Subcommand, Debug)]
enum KeyAction {
    /// Add a passphrase
    Add {
        /// File holding the new passphrase (else prompted for on a terminal)
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// List the keys
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a key by id (or unique prefix)
    Remove { id: String },
}

/// Parse the command line, run, and return the exit code.
pub fn main() -> i32 {
    // Internal entry points of drills, not for people: they confine themselves before any
    // thread starts, so they run before the runtime and the argument parser.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("__drill-worker") => return crate::verify::drill::worker::main(),
        Some("__sandbox-exec") => {
            let dir = PathBuf::from(args.get(2).cloned().unwrap_or_default());
            let rest = args.get(4..).unwrap_or_default();
            return crate::verify::drill::sandbox_exec(&dir, rest);
        }
        _ => {}
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("vouch: error: cannot start: {e}");
            return EXIT_FAILED;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            errln!("vouch: error: {}", show::error_text(&e));
            exit_code_of(&e)
        }
    };
    // The work is done; if its report could not be written, the caller must know.
    match crate::sys::output_error() {
        Some(e) => {
            errln!("vouch: error: the output could not be written: {e}");
            code.max(EXIT_FAILED)
        }
        None => code,
    }
}

/// The exit code a job ends `vouch run` with, from what it recorded.
/// The manual pages, rendered from the command definitions: `vouch.1`, then a page for each
/// command and sub-command (`vouch-backup.1`, `vouch-journal-verify.1`). Returns how many.
fn man_pages(dir: &std::path::Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let top = <Cli as clap::CommandFactory>::command();
    let mut pages = 0;
    let mut stack = vec![(top.get_name().to_string(), top)];
    while let Some((name, cmd)) = stack.pop() {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let sub_name = format!("{name}-{}", sub.get_name());
            let page = sub
                .clone()
                .name(sub_name.clone())
                .version(env!("CARGO_PKG_VERSION"));
            stack.push((sub_name, page));
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .with_context(|| format!("cannot render the page of {name}"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        pages += 1;
    }
    Ok(pages)
}

pub(crate) fn exit_for(outcome: crate::journal::Outcome) -> i32 {
    use crate::journal::Outcome;
    match outcome {
        Outcome::Success => EXIT_OK,
        Outcome::Partial => EXIT_PARTIAL,
        Outcome::Damage => EXIT_DAMAGE,
        Outcome::Paused => EXIT_PAUSED,
        Outcome::Failed | Outcome::Interrupted => EXIT_FAILED,
    }
}

/// The exit code for a command that could not run: 1, or the distinct codes for a
/// repository that is not there, one that is locked, and a passphrase that opens nothing.
fn exit_code_of(e: &anyhow::Error) -> i32 {
    use crate::repo::RepoError;
    use crate::storage::StorageError;
    fn of_repo(e: &RepoError) -> Option<i32> {
        match e {
            RepoError::NotFound { .. } | RepoError::Storage(StorageError::Missing { .. }) => {
                Some(EXIT_NO_REPOSITORY)
            }
            RepoError::Locked { .. } => Some(EXIT_LOCKED),
            RepoError::WrongPassword { .. } => Some(EXIT_WRONG_PASSWORD),
            _ => None,
        }
    }
    let found = e.chain().find_map(|cause| {
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            return of_repo(r);
        }
        if let Some(StorageError::Missing { .. }) = cause.downcast_ref::<StorageError>() {
            return Some(EXIT_NO_REPOSITORY);
        }
        if let Some(crate::BackupError::Repo(r)) = cause.downcast_ref::<crate::BackupError>() {
            return of_repo(r);
        }
        if let Some(crate::RestoreError::Repo(r)) = cause.downcast_ref::<crate::RestoreError>() {
            return of_repo(r);
        }
        None
    });
    found.unwrap_or(EXIT_FAILED)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOUCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

impl GlobalArgs {
    fn url(&self) -> Result<RepoUrl> {
        let text = self
            .repo
            .as_deref()
            .context("no repository given: use --repo URL (or set VOUCH_REPOSITORY)")?;
        Ok(RepoUrl::parse(text)?)
    }

    fn s3(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            ..Default::default()
        }
    }

    fn store(&self) -> Result<Store> {
        Ok(Store::open(&self.url()?, &self.s3())?)
    }

    /// The metadata cache's folder (whether or not `--no-cache` is given).
    fn cache_root(&self) -> Option<PathBuf> {
        self.cache_dir
            .clone()
            .or_else(crate::storage::default_cache_root)
    }

    /// The passphrase: --password-file / VOUCH_PASSWORD_FILE, then VOUCH_PASSWORD, then a
    /// prompt when there is a terminal.
    fn password(&self, confirm: bool) -> Result<Secret> {
        if let Some(path) = &self.password_file {
            return read_password_file(path);
        }
        if let Ok(p) = std::env::var("VOUCH_PASSWORD") {
            if p.is_empty() {
                bail!("VOUCH_PASSWORD is set but empty");
            }
            return Ok(Secret::new(p));
        }
        prompt_password("Repository passphrase: ", confirm)
    }

    async fn open(&self) -> Result<Arc<Repository>> {
        self.open_cached(!self.no_cache).await
    }

    /// Open the repository, its metadata read through the cache or not.
    async fn open_cached(&self, cache: bool) -> Result<Arc<Repository>> {
        let store = match self.cache_root().filter(|_| cache) {
            Some(root) => self.store()?.with_cache_root(root),
            None => self.store()?,
        };
        let password = self.password(false)?;
        let repo = Repository::open(store, &password).await?;
        Ok(Arc::new(if self.no_lock {
            repo.without_locks()
        } else {
            repo
        }))
    }
}

/// `--object-lock DAYS --object-lock-mode MODE`: the mode must be chosen, since COMPLIANCE
/// cannot be undone by anyone until the days have passed.
fn object_lock_retention(days: u32, mode: Option<&str>) -> Result<crate::storage::Retention> {
    use crate::storage::{Retention, RetentionMode};
    if !(1..=Retention::MAX_DAYS).contains(&days) {
        bail!(
            "--object-lock {days}: the retention must be between 1 and {} days (30 is common: longer than an attack could go unnoticed)",
            Retention::MAX_DAYS
        );
    }
    let mode = match mode {
        None => bail!(
            "--object-lock needs --object-lock-mode: compliance (nobody, not even the account's root user, can delete an object before its {days} days are up) or governance (users with s3:BypassGovernanceRetention can)"
        ),
        Some(m) => RetentionMode::parse(m)
            .with_context(|| format!("--object-lock-mode {m:?}: use governance or compliance"))?,
    };
    Ok(Retention { mode, days })
}

fn read_password_file(path: &std::path::Path) -> Result<Secret> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the password file {}: check the path and its permissions",
            path.display()
        )
    })?;
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if line.is_empty() {
        bail!(
            "the password file {} is empty: put the passphrase on its first line",
            path.display()
        );
    }
    Ok(Secret::new(line))
}

fn prompt_password(prompt: &str, confirm: bool) -> Result<Secret> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no passphrase given: use --password-file FILE, or set VOUCH_PASSWORD_FILE or VOUCH_PASSWORD"
        );
    }
    let first = rpassword::prompt_password(prompt).context("cannot read the passphrase")?;
    if first.is_empty() {
        bail!("an empty passphrase is not allowed");
    }
    if confirm {
        let again =
            rpassword::prompt_password("Enter it again: ").context("cannot read the passphrase")?;
        if again != first {
            bail!("the two passphrases differ; nothing was changed");
        }
    }
    Ok(Secret::new(first))
}

async fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    let bars = !g.quiet && std::io::stderr().is_terminal();
    crate::storage::upload_limit().set(g.limit_upload);
    crate::storage::download_limit().set(g.limit_download);
    match cli.command {
        Command::Init {
            object_lock,
            object_lock_mode,
            create_parents,
            pack_size,
            json,
        } => {
            let object_lock = match object_lock {
                None => None,
                Some(days) => Some(object_lock_retention(days, object_lock_mode.as_deref())?),
            };
            let store = Store::create(&g.url()?, &g.s3(), create_parents)?;
            let password = g.password(true)?;
            let opts = InitOptions {
                object_lock,
                pack_size: pack_size.map(|mib| mib << 20),
            };
            let repo = Repository::init(store, &password, &opts).await?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "repository": repo.config().id,
                        "url": repo.url(),
                        "object_lock": object_lock,
                    }))?
                );
                return Ok(EXIT_OK);
            }
            outln!(
                "created repository {} at {}",
                repo.config().id.short(),
                repo.url()
            );
            if let Some(r) = object_lock {
                outln!(
                    "every object is retained for {} days in {} mode (S3 Object Lock); run `vouch doctor` to prove the bucket enforces it",
                    r.days,
                    r.mode
                );
            }
            outln!("keep the passphrase safe: without it the backups cannot be read by anyone");
            Ok(EXIT_OK)
        }
        Command::Backup {
            paths,
            label,
            tags,
            excludes,
            host,
            force,
            json,
        } => {
            let repo = g.open().await?;
            let opts = BackupOptions {
                paths,
                label,
                tags,
                excludes,
                host,
                force_read: force,
                ..Default::default()
            };
            let progress = Arc::new(crate::BackupProgress::default());
            let bar = progress::backup_bar(bars, progress.clone());
            let result = crate::backup(repo, opts, progress).await;
            bar.finish();
            let report = result?;
            show::backup(&report, json);
            Ok(if report.is_partial() {
                EXIT_PARTIAL
            } else {
                EXIT_OK
            })
        }
        Command::Snapshots { json } => {
            let repo = g.open().await?;
            let (snapshots, bad) = repo.snapshots().await?;
            show::snapshots(&snapshots, &bad, json);
            Ok(if bad.is_empty() { EXIT_OK } else { EXIT_DAMAGE })
        }
        Command::Ls {
            snapshot,
            path,
            long,
            json,
        } => {
            let repo = g.open().await?;
            let (id, snap) = repo.find_snapshot(&snapshot).await?;
            let style = if json {
                show::Listing::Json
            } else if long {
                show::Listing::Long
            } else {
                show::Listing::Names
            };
            show::ls(&repo, id, &snap, path.as_deref(), style).await
        }
        Command::Restore {
            snapshot,
            target,
            include,
            overwrite,
            numeric_ids,
            json,
        } => {
            let repo = g.open().await?;
            let (id, snap) = repo.find_snapshot(&snapshot).await?;
            let opts = RestoreOptions {
                target,
                include,
                overwrite,
                numeric_ids,
                threads: None,
            };
            let progress = Arc::new(crate::RestoreProgress::default());
            let bar = progress::restore_bar(bars, progress.clone());
            let result = crate::restore(repo, &snap, &opts, progress).await;
            bar.finish();
            let report = result?;
            show::restore(id, &opts, &report, json);
            Ok(if !report.is_clean() {
                EXIT_DAMAGE
            } else if !report.is_complete() || !report.metadata_applied() {
                EXIT_PARTIAL
            } else {
                EXIT_OK
            })
        }
        Command::Check {
            read_data,
            read_data_subset,
            seed,
            json,
        } => {
            let read_data = match (read_data, read_data_subset) {
                (true, _) => ReadData::All,
                (false, Some(p)) => ReadData::Subset(parse_percent(&p)?),
                (false, None) => ReadData::None,
            };
            // check verifies what the repository holds: its own bytes, not local copies.
            let repo = g.open_cached(false).await?;
            let report = crate::check(
                repo,
                &CheckOptions {
                    read_data,
                    seed,
                    threads: None,
                },
            )
            .await?;
            show::check(&report, json);
            Ok(if report.is_damaged() {
                EXIT_DAMAGE
            } else {
                EXIT_OK
            })
        }
        Command::Doctor { json, test_email } => doctor::run(g, json, test_email).await,
        Command::Forget {
            keep,
            tags,
            schedule,
            dry_run,
            prune,
            json,
        } => maintain::forget(g, keep, tags, schedule, dry_run, prune, json).await,
        Command::Prune {
            max_unused,
            dry_run,
            json,
        } => maintain::prune(g, &max_unused, dry_run, json).await,
        Command::Key { action } => {
            let repo = g.open().await?;
            match action {
                KeyAction::Add { new_password_file } => {
                    let new = match new_password_file {
                        Some(p) => read_password_file(&p)?,
                        None => prompt_password("New passphrase: ", true)?,
                    };
                    let id = repo.add_key(&new).await?;
                    outln!("added key {}", id.short());
                }
                KeyAction::List { json } => {
                    let (keys, bad) = repo.list_keys().await?;
                    show::keys(&keys, repo.key_id(), json);
                    for (key, why) in &bad {
                        errln!(
                            "vouch: DAMAGE: {key} cannot be read ({why}); its passphrase no longer opens the repository: remove it with `vouch key remove`, and add a new key if that passphrase is still needed"
                        );
                    }
                    if !bad.is_empty() {
                        return Ok(EXIT_DAMAGE);
                    }
                }
                KeyAction::Remove { id } => {
                    let (keys, bad) = repo.list_keys().await?;
                    let damaged: Vec<&String> = bad
                        .iter()
                        .map(|(k, _)| k)
                        .filter(|k| {
                            k.trim_start_matches("keys/")
                                .starts_with(&id.to_ascii_lowercase())
                        })
                        .collect();
                    if let ([], [one]) = (
                        keys.iter()
                            .filter(|(k, _)| k.to_hex().starts_with(&id.to_ascii_lowercase()))
                            .collect::<Vec<_>>()
                            .as_slice(),
                        damaged.as_slice(),
                    ) {
                        if !id.is_empty() {
                            repo.remove_damaged_key(one).await?;
                            outln!("removed damaged key file {one}");
                            return Ok(EXIT_OK);
                        }
                    }
                    let matches: Vec<KeyId> = keys
                        .iter()
                        .map(|(k, _)| *k)
                        .filter(|k| k.to_hex().starts_with(&id.to_ascii_lowercase()))
                        .collect();
                    let key = match matches.as_slice() {
                        [one] if !id.is_empty() => *one,
                        [] => bail!("no key id starts with {id:?}; `vouch key list` shows them"),
                        _ => bail!("{id:?} matches several keys; give more digits"),
                    };
                    repo.remove_key(&key).await?;
                    outln!("removed key {}", key.short());
                }
            }
            Ok(EXIT_OK)
        }
        Command::Repair {
            what: RepairWhat::Index,
        } => {
            let repo = g.open().await?;
            let r = crate::repo::repair_index(&repo).await?;
            outln!(
                "indexed {} pack(s) holding {} blob(s) that no index listed",
                r.packs_indexed,
                r.blobs_indexed
            );
            for key in &r.indexes_removed {
                outln!("removed unreadable index file {key}");
            }
            for (key, err) in &r.packs_unreadable {
                errln!("vouch: DAMAGE: {key}: {err}");
            }
            Ok(if r.packs_unreadable.is_empty() {
                EXIT_OK
            } else {
                EXIT_DAMAGE
            })
        }
        Command::Cache { clear, json } => {
            let root = g.cache_root().context(
                "there is no cache folder: neither --cache-dir, VOUCH_CACHE_DIR, XDG_CACHE_HOME nor HOME is set",
            )?;
            let usage = crate::storage::cache_usage(&root)
                .with_context(|| format!("cannot read the cache {}", root.display()))?;
            if clear {
                for u in &usage {
                    std::fs::remove_dir_all(&u.path)
                        .with_context(|| format!("cannot remove {}", u.path.display()))?;
                }
            }
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "path": root,
                        "repositories": usage,
                        "cleared": clear,
                    }))?
                );
                return Ok(EXIT_OK);
            }
            outln!("cache: {}", root.display());
            for u in &usage {
                outln!(
                    "  repository {}: {} file(s), {}{}",
                    u.repository,
                    u.files,
                    crate::units::size(u.bytes),
                    if clear { " (removed)" } else { "" }
                );
            }
            if usage.is_empty() {
                outln!("  empty");
            }
            Ok(EXIT_OK)
        }
        Command::Unlock { all, json } => {
            let repo = g.open().await?;
            let n = crate::repo::remove_locks(&repo, all).await?;
            if json {
                outln!("{}", serde_json::json!({ "removed": n }));
            } else {
                outln!("removed {n} lock(s)");
            }
            Ok(EXIT_OK)
        }
        Command::Demo { dir } => demo::run(&dir).await,
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "vouch",
                &mut script,
            );
            use std::io::Write as _;
            if let Err(e) = std::io::stdout().write_all(&script) {
                crate::sys::output_failed(&e);
            }
            Ok(EXIT_OK)
        }
        Command::Man { out } => {
            let pages = man_pages(&out)?;
            outln!("{} manual page(s) in {}", pages, out.display());
            Ok(EXIT_OK)
        }
        Command::Config {
            action: ConfigAction::Check { json },
        } => service::config_check(g.config.as_deref(), json),
        Command::Run {
            job,
            operator,
            scheduled,
            json,
        } => service::run(g.config.as_deref(), &job, operator, scheduled, json).await,
        Command::Acknowledge {
            run,
            note,
            operator,
        } => service::acknowledge(g.config.as_deref(), run, &note, operator).await,
        Command::Status { json } => service::status(g.config.as_deref(), json).await,
        Command::Journal { action } => match action {
            JournalAction::List { json } => service::journal_list(g.config.as_deref(), json),
            JournalAction::Show { run, json } => {
                service::journal_show(g.config.as_deref(), run, json)
            }
            JournalAction::Verify { json } => {
                service::journal_verify(g.config.as_deref(), json).await
            }
            JournalAction::Annotate {
                run,
                text,
                operator,
            } => service::journal_annotate(g.config.as_deref(), run, &text, operator).await,
        },
        Command::Outbox { all, flush, json } => {
            service::outbox(g.config.as_deref(), all, flush, json).await
        }
        Command::Daemon => service::daemon(g.config.as_deref()).await,
        Command::Keygen {
            out,
            key_password_file,
            unencrypted,
        } => evidence::keygen(&out, key_password_file, unencrypted),
        Command::Evidence { action } => match action {
            EvidenceAction::Build {
                from,
                to,
                out,
                school,
                signing,
            } => evidence::build(g, from, to, &out, school, signing).await,
            EvidenceAction::Verify { dir, pubkey, json } => {
                evidence::verify(g, &dir, &pubkey, json).await
            }
            EvidenceAction::Send {
                from,
                to,
                out,
                operator,
            } => evidence::send(g, from, to, out, operator).await,
            EvidenceAction::Proof { run, out, signing } => {
                evidence::proof(g, run, &out, signing).await
            }
        },
        Command::Drill {
            plan,
            scratch,
            seed,
            operator,
            json,
        } => run_drill(g, &plan, scratch, seed, operator, json).await,
        Command::Coverage { window, json } => {
            let window = crate::config::parse_duration(&window)
                .map_err(|e| anyhow::anyhow!("--window: {e}"))?;
            let repo = g.open().await?;
            let (index, _) = repo.load_index().await?;
            let (ledger, bad) = crate::verify::ledger::Ledger::load(&repo).await?;
            let window = jiff::SignedDuration::try_from(window)
                .unwrap_or(jiff::SignedDuration::from_hours(168 * 13));
            let report =
                crate::verify::ledger::coverage(&index, &ledger, repo.clock().now(), window);
            show_drill::coverage(repo.url(), &report, json);
            // What a damaged record proved is lost: coverage may be understated, and the
            // damage itself needs looking at.
            for (key, e) in &bad {
                errln!(
                    "vouch: DAMAGE: the verification ledger record {key} cannot be read ({e}); what it recorded is not counted above (`vouch check` reports it)"
                );
            }
            Ok(if bad.is_empty() { EXIT_OK } else { EXIT_DAMAGE })
        }
    }
}

/// Find a plan: a path, or a name in restore-tests/ here or in /etc/vouch/restore-tests/.
fn find_plan(text: &str, config: Option<&std::path::Path>) -> Result<PathBuf> {
    let direct = PathBuf::from(text);
    if direct.is_file() {
        return Ok(direct);
    }
    let beside_config = crate::config::config_path(config)
        .parent()
        .map(|d| d.join("restore-tests"));
    let dirs = [PathBuf::from("restore-tests")]
        .into_iter()
        .chain(beside_config);
    for dir in dirs {
        let p = dir.join(format!("{text}.toml"));
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no restore-test plan {text:?}: give a plan file, or the name of one in ./restore-tests/ or in restore-tests/ beside vouch.toml"
    )
}

async fn run_drill(
    g: &GlobalArgs,
    plan: &str,
    scratch: Option<PathBuf>,
    seed: Option<u64>,
    operator: Option<String>,
    json: bool,
) -> Result<i32> {
    let plan = crate::config::Plan::load(&find_plan(plan, g.config.as_deref())?)?;
    let mut g = g.clone();
    if g.repo.is_none() {
        let Some(repo) = plan.repository.clone() else {
            bail!(
                "{}: the plan names no repository: add repository = \"s3://…\" to it, or give --repo",
                plan.file.display()
            );
        };
        if repo.contains("://") || repo.starts_with('/') || repo.starts_with('.') {
            g.repo = Some(repo);
        } else {
            // A name: vouch.toml says where it is and how to open it.
            let path = crate::config::config_path(g.config.as_deref());
            let config = crate::config::Config::load(&path).with_context(|| {
                format!(
                    "{}: repository {repo:?} is a name from vouch.toml",
                    plan.file.display()
                )
            })?;
            let rc = config.repositories.get(&repo).with_context(|| {
                format!(
                    "{}: repository {repo:?} is not in {}",
                    plan.file.display(),
                    path.display()
                )
            })?;
            g.repo = Some(rc.url.clone());
            g.s3_endpoint = g.s3_endpoint.or(rc.s3_endpoint.clone());
            g.s3_region = g.s3_region.or(rc.s3_region.clone());
            g.s3_path_style = g.s3_path_style.or(rc.s3_path_style);
            if g.password_file.is_none() {
                g.password_file = Some(rc.password_file.clone());
            }
        }
    }
    if g.password_file.is_none() && std::env::var_os("VOUCH_PASSWORD").is_none() {
        g.password_file = plan.password_file.clone();
    }
    let store = g.store()?;
    let password = g.password(false)?;
    let repo = Arc::new(Repository::open(store, &password).await?);
    let opts = crate::verify::drill::DrillOptions {
        scratch: scratch
            .or_else(|| plan.scratch_dir.clone())
            .unwrap_or_else(std::env::temp_dir),
        plan,
        seed,
        operator: operator.unwrap_or_else(crate::sys::username),
        trigger: "manual".into(),
        url: g.url()?.to_string(),
        s3: S3Options {
            endpoint: g.s3_endpoint.clone(),
            region: g.s3_region.clone(),
            path_style: g.s3_path_style,
            ..Default::default()
        },
        threads: None,
    };
    let outcome = crate::verify::drill::drill(repo, &opts).await?;
    show_drill::drill(&outcome, json);
    Ok(if outcome.report.passed {
        EXIT_OK
    } else {
        EXIT_DAMAGE
    })
}

fn parse_percent(text: &str) -> Result<f64> {
    let n: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|n: &f64| *n > 0.0 && *n <= 100.0)
        .with_context(|| format!("--read-data-subset {text:?}: give a percentage above 0 and at most 100, like 10 or 10%"))?;
    Ok(n)
}
