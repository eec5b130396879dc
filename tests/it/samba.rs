//! A real Samba server on 127.0.0.1, as a school's file server is: Windows ACLs set through
//! SMB with `smbcacls` (a folder only one group may read, a file with an explicit deny), DOS
//! attributes set with `smbclient`'s `setmode`; the share's folder is backed up, restored
//! into a second share, and read back through SMB: the same ACLs and attributes.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Env, is_root, noise, text, write};

const PASSWORD: &str = "Staff-Share-1";

/// `smbd` with `vfs objects = acl_xattr` and two shares: the staff share and the folder a
/// restore goes to. smbcacls has no port option, so it listens on 127.0.0.1:445.
struct Samba {
    child: Child,
    conf: PathBuf,
    dir: PathBuf,
}

impl Samba {
    fn start(dir: &Path, share: &Path, restored: &Path) -> Samba {
        for sub in ["state", "private", "lock", "cache", "pid", "ncalrpc"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let conf = dir.join("smb.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "[global]\n\
                 netbios name = VOUCHTEST\n\
                 workgroup = SCHOOL\n\
                 server role = standalone server\n\
                 interfaces = 127.0.0.1\n\
                 bind interfaces only = yes\n\
                 smb ports = 445\n\
                 state directory = {d}/state\n\
                 private dir = {d}/private\n\
                 lock directory = {d}/lock\n\
                 cache directory = {d}/cache\n\
                 pid directory = {d}/pid\n\
                 ncalrpc dir = {d}/ncalrpc\n\
                 log file = {d}/log.%m\n\
                 passdb backend = tdbsam:{d}/private/passdb.tdb\n\
                 load printers = no\n\
                 disable spoolss = yes\n\
                 vfs objects = acl_xattr\n\
                 store dos attributes = yes\n\
                 map acl inherit = yes\n\
                 [staff]\n\
                 path = {}\n\
                 read only = no\n\
                 [restored]\n\
                 path = {}\n\
                 read only = no\n",
                share.display(),
                restored.display()
            ),
        )
        .unwrap();
        // The SMB user is root, in this server's own password database only.
        let mut add = Command::new("smbpasswd")
            .arg("-c")
            .arg(&conf)
            .args(["-s", "-a", "root"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("smbpasswd (samba is installed by scripts/test)");
        use std::io::Write;
        add.stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD}\n{PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(add.wait().unwrap().success(), "smbpasswd");
        let child = Command::new("smbd")
            .args(["--foreground", "--no-process-group", "-s"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smbd (samba is installed by scripts/test)");
        let started = Instant::now();
        while TcpStream::connect("127.0.0.1:445").is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "smbd did not listen on 127.0.0.1:445; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Samba {
            child,
            conf,
            dir: dir.to_path_buf(),
        }
    }

    fn auth(&self) -> String {
        format!("root%{PASSWORD}")
    }

    fn tool(&self, program: &str, share: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .arg(format!("//127.0.0.1/{share}"))
            .arg("-s")
            .arg(&self.conf)
            .args(["-U", &self.auth()])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{program} {share} {args:?}: {text}{}\n(logs in {})",
            String::from_utf8_lossy(&out.stderr),
            self.dir.display()
        );
        text
    }

    fn smbclient(&self, share: &str, command: &str) -> String {
        self.tool("smbclient", share, &["-c", command])
    }

    fn cacls(&self, share: &str, path: &str, args: &[&str]) -> String {
        let mut all = vec![path];
        all.extend_from_slice(args);
        self.tool("smbcacls", share, &all)
    }

    /// What SMB says of a file: its ACL (owner, group, every entry) and DOS attributes.
    fn describe(&self, share: &str, path: &str) -> String {
        let acl = self.cacls(share, path, &[]);
        let info = self.smbclient(share, &format!("allinfo \"{path}\""));
        let attributes: Vec<&str> = info
            .lines()
            .filter(|l| l.starts_with("attributes:"))
            .collect();
        format!("{acl}{attributes:?}")
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn windows_acls_and_dos_attributes_set_through_smb_come_back_through_smb() {
    assert!(
        is_root(),
        "smbd serves the shares as root, as on a school's file server: run the tests as root"
    );
    let env = Env::new();
    let repo = env.path("repo").display().to_string();
    env.run(&["init", "--repo", &repo]).expect(0);
    let share = env.path("staff");
    std::fs::create_dir_all(&share).unwrap();
    let target = env.path("restore");
    let restored = target.join(share.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&restored).unwrap();
    let samba = Samba::start(&env.path("samba"), &share, &restored);

    // Files put through SMB, so that Samba gives them their NTACLs.
    let local = env.path("upload");
    write(&local.join("review.docx"), &noise(120_000, 1));
    write(&local.join("timetable.xlsx"), &text(40_000, 2));
    write(&local.join("notes.txt"), &text(5_000, 3));
    let l = local.display();
    samba.smbclient(
        "staff",
        &format!(
            "mkdir HR; put {l}/review.docx HR\\review.docx; put {l}/timetable.xlsx timetable.xlsx; put {l}/notes.txt notes.txt"
        ),
    );
    // HR: readable by one group only (and its owner), inherited by what is inside it.
    samba.cacls(
        "staff",
        "HR",
        &[
            "--set",
            "ACL:S-1-22-1-0:ALLOWED/OI|CI/FULL,ACL:S-1-22-2-65534:ALLOWED/OI|CI/READ",
        ],
    );
    // The timetable: an explicit deny for one user, before the allows.
    samba.cacls(
        "staff",
        "timetable.xlsx",
        &["--add", "ACL:S-1-22-1-65534:DENIED/0x0/CHANGE"],
    );
    samba.smbclient("staff", "setmode notes.txt +rh");
    samba.smbclient("staff", "setmode timetable.xlsx +a");
    let paths = ["HR", "HR/review.docx", "timetable.xlsx", "notes.txt"];
    let before: Vec<String> = paths.iter().map(|p| samba.describe("staff", p)).collect();
    assert!(
        before[0].contains("S-1-22-2-65534") || before[0].contains("nogroup"),
        "{}",
        before[0]
    );
    assert!(before[2].contains("DENIED"), "{}", before[2]);
    assert!(
        before[3].contains('R') && before[3].contains('H'),
        "{}",
        before[3]
    );
    let xattrs = Command::new("getfattr")
        .args(["-d", "-m", "-"])
        .arg(share.join("notes.txt"))
        .output()
        .unwrap();
    let xattrs = String::from_utf8_lossy(&xattrs.stdout);
    assert!(
        xattrs.contains("security.NTACL") && xattrs.contains("user.DOSATTRIB"),
        "{xattrs}"
    );

    env.run(&["backup", "--repo", &repo, share.to_str().unwrap()])
        .expect(0);
    env.run(&[
        "restore",
        "latest",
        "--repo",
        &repo,
        "--target",
        target.to_str().unwrap(),
    ])
    .expect(0);
    let after: Vec<String> = paths
        .iter()
        .map(|p| samba.describe("restored", p))
        .collect();
    for ((p, b), a) in paths.iter().zip(&before).zip(&after) {
        assert_eq!(
            b, a,
            "{p}: through SMB before the backup, then after the restore"
        );
    }
}
