//! The README's main job on embedded defaults.

use crate::support::Env;

#[test]
fn the_demo_runs_to_completion_and_verifies_its_restore() {
    let env = Env::new();
    let dir = env.path("demo");
    let out = env.run(&["demo", "--dir", dir.to_str().unwrap()]).expect(0);
    assert!(out.stdout.contains("files identical"), "{}", out.stdout);
    assert!(out.stdout.contains("no damage"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("at 01:00 GMT the schedule staff-nightly fired")
            || out
                .stdout
                .contains("at 01:00 BST the schedule staff-nightly fired"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("an alert email landed in the mail folder"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("resolved: backup staff-nightly failed"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("chain intact"), "{}", out.stdout);
    assert!(dir.join("repository/config").exists());
    let mails = std::fs::read_dir(dir.join("mail")).unwrap().count();
    assert_eq!(mails, 2, "one alert and one resolved email");
    // The configuration it wrote checks, and status shows the schedule.
    let config = dir.join("etc/vouch.toml");
    let check = env
        .run(&["config", "check", "--config", config.to_str().unwrap()])
        .expect(0);
    assert!(
        check.stdout.contains("schedule staff-nightly"),
        "{}",
        check.stdout
    );
    let status = env
        .run(&["status", "--config", config.to_str().unwrap()])
        .expect(0);
    assert!(
        status.stdout.contains("staff-nightly") && status.stdout.contains("no open incidents"),
        "{}",
        status.stdout
    );
    // It ends with a signed evidence pack that an auditor's two commands accept.
    assert!(
        out.stdout.contains("16. verified it as an auditor would"),
        "{}",
        out.stdout
    );
    let pack = dir.join("evidence");
    let pubkey = dir.join("etc/keys/evidence.pub");
    let verified = env
        .run(&[
            "evidence",
            "verify",
            pack.to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
        ])
        .expect(0);
    assert!(
        verified.stdout.contains("Demo Primary School") && verified.stdout.contains("VERIFIED"),
        "{}",
        verified.stdout
    );
    let minisign = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(pack.join("evidence.html"))
        .arg("-p")
        .arg(&pubkey)
        .output()
        .expect("minisign must be installed (scripts/test installs it)");
    assert!(minisign.status.success(), "{minisign:?}");
    // Run again in the same folder: it starts afresh.
    env.run(&["demo", "--dir", dir.to_str().unwrap()]).expect(0);
    // It refuses a folder that is not its own.
    let other = env.path("precious");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("thesis.docx"), b"x").unwrap();
    let refused = env
        .run(&["demo", "--dir", other.to_str().unwrap()])
        .expect(1);
    assert!(
        refused.stderr.contains("not a vouch demo folder"),
        "{}",
        refused.stderr
    );
    assert!(other.join("thesis.docx").exists());
}
