//! What a school's share holds beyond bytes, through the real binary: Windows ACLs as Samba
//! keeps them (`security.NTACL`), DOS attributes (`user.DOSATTRIB`), POSIX ACLs, hard links
//! across folders, sparse files, FIFOs, devices and sockets. A restore brings all of it back
//! (sockets are named, not made), and what it cannot apply is named file by file.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    Env, Run, assert_same_metadata, assert_same_tree, is_root, noise, text, write,
};

fn set(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
}

fn setfacl(args: &[&str], path: &Path) {
    let ok = Command::new("setfacl")
        .args(args)
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success(), "setfacl {args:?} {}", path.display());
}

/// A Windows ACL as Samba stores it is kilobytes of NDR; its exact bytes are what matter.
fn ntacl(seed: u64) -> Vec<u8> {
    noise(2048, seed)
}

struct Share {
    env: Env,
    repo: String,
    share: PathBuf,
    _socket: std::os::unix::net::UnixListener,
}

/// An HR folder readable only by one group, with a default ACL its files inherit; DOS
/// attributes and NTACLs on every file; a hard link across folders; a 1 GiB sparse disk
/// image with holes at the start, middle and end; a FIFO, a device and a socket.
fn school_share() -> Share {
    assert!(
        is_root(),
        "these tests set security.* attributes and make devices, as a NAS's root does: run them as root"
    );
    let env = Env::new();
    let repo = env.path("repo").display().to_string();
    env.run(&["init", "--repo", &repo]).expect(0);
    let share = env.path("share");
    let hr = share.join("Staff/HR");
    write(&hr.join("review.docx"), &noise(200_000, 1));
    write(&hr.join("salaries.xlsx"), &text(50_000, 2));
    write(&share.join("Staff/timetable.txt"), &text(10_000, 3));
    write(&share.join("Admin/mis.sql"), &text(300_000, 4));
    std::fs::hard_link(
        share.join("Staff/timetable.txt"),
        share.join("Admin/timetable-copy.txt"),
    )
    .unwrap();
    setfacl(&["-m", "u::rwx,g::---,o::---,g:65534:r-x"], &hr);
    setfacl(&["-d", "-m", "g:65534:r--"], &hr);
    setfacl(&["-m", "u:65534:r--"], &hr.join("review.docx"));
    set(&hr, "security.NTACL", &ntacl(10));
    for (i, f) in [
        "Staff/HR/review.docx",
        "Staff/HR/salaries.xlsx",
        "Staff/timetable.txt",
        "Admin/mis.sql",
    ]
    .iter()
    .enumerate()
    {
        let p = share.join(f);
        set(&p, "user.DOSATTRIB", format!("0x{:x}", 0x20 + i).as_bytes());
        // The two HR files share one ACL, as files that inherit from a folder do.
        set(
            &p,
            "security.NTACL",
            &ntacl(if i < 2 { 11 } else { 20 + i as u64 }),
        );
    }
    set(&share.join("Admin/mis.sql"), "trusted.vouch.test", b"kept");
    let disk = share.join("Admin/vm.img");
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::File::create(&disk).unwrap();
        f.seek(std::io::SeekFrom::Start(300 << 20)).unwrap();
        f.write_all(&noise(1 << 20, 5)).unwrap();
        f.seek(std::io::SeekFrom::Start(700 << 20)).unwrap();
        f.write_all(&noise(1 << 20, 6)).unwrap();
        f.set_len(1 << 30).unwrap();
    }
    let mk = |name: &str, ft, dev| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            share.join(name),
            ft,
            rustix::fs::Mode::from_raw_mode(0o620),
            dev,
        )
        .unwrap();
    };
    mk("Admin/mis.pipe", rustix::fs::FileType::Fifo, 0);
    mk(
        "Admin/null",
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    let socket = std::os::unix::net::UnixListener::bind(share.join("Admin/app.sock")).unwrap();
    Share {
        env,
        repo,
        share,
        _socket: socket,
    }
}

impl Share {
    fn run(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["--repo", &self.repo]);
        self.env.run(&all)
    }

    fn backup(&self) -> Run {
        self.run(&["backup", self.share.to_str().unwrap()])
            .expect(0)
    }
}

#[test]
fn a_share_restores_with_its_acls_attributes_links_holes_and_special_files() {
    let s = school_share();
    let out = s.backup();
    assert!(
        out.stdout.contains("recorded 3 special file(s)"),
        "{}",
        out.stdout
    );
    // The image's holes are not read: 2 MiB of data, not 1 GiB.
    let snaps = s.run(&["snapshots", "--json"]).expect(0);
    let snaps: serde_json::Value = serde_json::from_str(&snaps.stdout).unwrap();
    let read = snaps[0]["summary"]["bytes_read"].as_u64().unwrap();
    assert!(read < 10 << 20, "{read} bytes read");

    let target = s.env.path("restore");
    let out = s
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert!(
        out.stderr.contains("not recreated") && out.stderr.contains("app.sock"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert_same_tree(&s.share, &target);
    assert_same_metadata(&s.share, &target);
    let inside = target.join(s.share.strip_prefix("/").unwrap());
    // One file under two names, as in the share.
    let a = std::fs::metadata(inside.join("Staff/timetable.txt")).unwrap();
    let b = std::fs::metadata(inside.join("Admin/timetable-copy.txt")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    // The 1 GiB image takes its 2 MiB on disk, not 1 GiB.
    let img = std::fs::metadata(inside.join("Admin/vm.img")).unwrap();
    assert_eq!(img.size(), 1 << 30);
    assert!(img.blocks() * 512 <= 3 << 20, "{} blocks", img.blocks());
    let dev = std::fs::symlink_metadata(inside.join("Admin/null")).unwrap();
    assert_eq!(
        (rustix::fs::major(dev.rdev()), rustix::fs::minor(dev.rdev())),
        (1, 3)
    );

    // `ls --long` shows the ACL and the links; `--json` the attributes by name.
    let hr = format!("{}/Staff/HR", s.share.display());
    let long = s.run(&["ls", "latest", &hr, "--long"]).expect(0);
    let review = long
        .stdout
        .lines()
        .find(|l| l.ends_with("review.docx"))
        .unwrap_or_else(|| panic!("{}", long.stdout));
    assert!(
        review.starts_with("-0640+") || review.contains("+ "),
        "{review}"
    );
    let copy = format!("{}/Admin/timetable-copy.txt", s.share.display());
    let json = s.run(&["ls", "latest", &copy, "--json"]).expect(0);
    let entry: serde_json::Value =
        serde_json::from_str(json.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(entry["links"], 2);
    assert_eq!(entry["user"], "root");
    let names: Vec<&str> = entry["xattrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["security.NTACL", "user.DOSATTRIB"]);
}

#[test]
fn an_acl_or_attribute_change_alone_is_recorded_by_the_next_backup() {
    let s = school_share();
    s.backup();
    let file = s.share.join("Staff/timetable.txt");
    // Only the metadata changes: content and mtime stay, the change time moves.
    setfacl(&["-m", "u:65534:rw-"], &file);
    set(&s.share.join("Admin/mis.sql"), "user.DOSATTRIB", b"0x21");
    // Noticed by the change time, as a content change is (the file and its hard link, and
    // mis.sql): they are read again, since a change time that moved may hide a write.
    let out = s.backup();
    assert!(out.stdout.contains("3 changed"), "{}", out.stdout);
    let target = s.env.path("restore");
    s.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same_metadata(&s.share, &target);
    let inside = target.join(s.share.strip_prefix("/").unwrap());
    let acl = Command::new("getfacl")
        .args(["-n", "--omit-header"])
        .arg(inside.join("Staff/timetable.txt"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&acl.stdout).contains("user:65534:rw-"),
        "{}",
        String::from_utf8_lossy(&acl.stdout)
    );
    // A backup with nothing changed takes the attributes from the last snapshot without
    // reading a file, and its snapshot restores with all of them.
    let again = s.backup();
    assert!(
        again.stdout.contains("6 unchanged") && again.stdout.contains("read 0 B"),
        "{}",
        again.stdout
    );
    let target = s.env.path("restore-again");
    s.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same_metadata(&s.share, &target);
}

#[test]
fn metadata_a_restore_cannot_apply_is_named_per_file_and_it_exits_3() {
    let s = school_share();
    s.backup();
    // A member of staff restoring for themselves: no root, so no security.* attributes,
    // no owners, no devices.
    let target = s.env.path("mine");
    std::fs::create_dir_all(&target).unwrap();
    for p in [s.env.dir.path().to_path_buf(), target.clone()] {
        let ok = Command::new("chmod")
            .arg("-R")
            .arg("a+rwX")
            .arg(&p)
            .status();
        assert!(ok.unwrap().success());
    }
    let out = Run::of(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_vouch"))
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .args(["--include"])
            .arg(s.share.join("Staff"))
            .args(["--include"])
            .arg(s.share.join("Admin/null"))
            .args(["--repo", &s.repo])
            .env("VOUCH_PASSWORD_FILE", &s.env.pass_file)
            .env("VOUCH_CACHE_DIR", s.env.path("cache-nobody"))
            .env("VOUCH_LOG", "error")
            .output()
            .unwrap(),
    )
    .expect(3);
    assert!(
        out.stderr
            .contains("Staff/HR/review.docx: ACL security.NTACL not set: not permitted"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Admin/null could not be written")
            && out.stderr.contains("only by root"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("metadata warning(s)"), "{}", out.stderr);
    // The content is all there and verified; the POSIX ACLs, which the owner may set, too.
    let inside = target.join(s.share.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(inside.join("Staff/HR/salaries.xlsx")).unwrap(),
        std::fs::read(s.share.join("Staff/HR/salaries.xlsx")).unwrap()
    );
    let acl = Command::new("getfacl")
        .args(["-n", "--omit-header"])
        .arg(inside.join("Staff/HR/review.docx"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&acl.stdout).contains("user:65534:r--"),
        "{}",
        String::from_utf8_lossy(&acl.stdout)
    );
}

#[test]
fn owners_are_restored_by_name_unless_numeric_ids_is_asked_for() {
    let s = school_share();
    // A file owned by `nobody` as it was named on the NAS; the number is what --numeric-ids
    // restores.
    let f = s.share.join("Staff/nobody.txt");
    write(&f, b"mine");
    rustix::fs::chown(
        &f,
        Some(rustix::fs::Uid::from_raw(65534)),
        Some(rustix::fs::Gid::from_raw(65534)),
    )
    .unwrap();
    s.backup();
    for (args, dir) in [(vec![], "by-name"), (vec!["--numeric-ids"], "by-number")] {
        let target = s.env.path(dir);
        let mut all = vec!["restore", "latest", "--target", target.to_str().unwrap()];
        all.extend(args);
        s.run(&all).expect(0);
        let m = std::fs::metadata(target.join(f.strip_prefix("/").unwrap())).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{dir}");
    }
}

/// A btrfs file system mounted without ACL support (`noacl`), as a scratch volume can be:
/// a drill there cannot give the restored files their ACLs.
struct NoAclVolume {
    mount: PathBuf,
}

impl NoAclVolume {
    fn new(env: &Env) -> NoAclVolume {
        let image = env.path("scratch.img");
        let mount = env.path("scratch-noacl");
        std::fs::create_dir_all(&mount).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("truncate").args(["-s", "2G"]).arg(&image));
        run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop,noacl"])
            .arg(&image)
            .arg(&mount));
        NoAclVolume { mount }
    }
}

impl Drop for NoAclVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

#[test]
fn a_drill_verifies_permissions_owners_and_acls_and_fails_naming_what_did_not_restore() {
    let s = school_share();
    s.backup();
    let plan = s.env.path("yearly.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"yearly\"\nrepository = \"{}\"\n[select]\npercent = 100\n[verify]\ncompare_with_source = true\n",
            s.repo
        ),
    )
    .unwrap();
    let drill = |scratch: &Path| {
        s.env.run(&[
            "drill",
            plan.to_str().unwrap(),
            "--scratch",
            scratch.to_str().unwrap(),
        ])
    };
    let good = drill(&s.env.path("scratch")).expect(0);
    assert!(
        good.stdout.contains("PASSED")
            && good.stdout.contains(
                "level 3 (metadata): permissions, owners, ACLs and extended attributes of"
            ),
        "{}",
        good.stdout
    );
    // The same drill on a volume without ACLs: the HR files restore byte for byte, but not
    // as only HR may read them, and the drill says so file by file.
    let volume = NoAclVolume::new(&s.env);
    let bad = drill(&volume.mount).expect(4);
    assert!(bad.stdout.contains("FAILED"), "{}", bad.stdout);
    let all = format!("{}{}", bad.stdout, bad.stderr);
    assert!(
        all.contains("Staff/HR/review.docx")
            && all.contains("restored system.posix_acl_access is not the one recorded"),
        "{all}"
    );
}

/// A share on a file system with no extended attributes at all (ramfs here; FAT-formatted USB
/// disks are another) backs up and restores whole: no attribute is not an error.
#[test]
fn a_share_on_a_file_system_without_extended_attributes_backs_up_whole() {
    assert!(
        is_root(),
        "mounting a file system needs root: run the tests as root"
    );
    let env = Env::new();
    let repo = env.path("repo").display().to_string();
    env.run(&["init", "--repo", &repo]).expect(0);
    let mount = env.path("plain");
    std::fs::create_dir_all(&mount).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "ramfs", "none"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(ok.success(), "mount -t ramfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    write(&mount.join("Exports/census.csv"), &text(30_000, 7));
    write(&mount.join("Exports/photos.zip"), &noise(100_000, 8));
    assert_eq!(
        rustix::fs::lsetxattr(
            mount.join("Exports/census.csv"),
            "user.DOSATTRIB",
            b"0x20",
            rustix::fs::XattrFlags::empty()
        ),
        Err(rustix::io::Errno::NOTSUP),
        "ramfs has no extended attributes"
    );
    let out = env
        .run(&["backup", "--repo", &repo, mount.to_str().unwrap()])
        .expect(0);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let target = env.path("restore");
    env.run(&[
        "restore",
        "latest",
        "--repo",
        &repo,
        "--target",
        target.to_str().unwrap(),
    ])
    .expect(0);
    assert_same_tree(&mount, &target);
}
