//! The README's main job on embedded defaults.

use crate::support::Env;

#[test]
fn the_demo_runs_to_completion_and_verifies_its_restore() {
    let env = Env::new();
    let dir = env.path("demo");
    let out = env.run(&["demo", "--dir", dir.to_str().unwrap()]).expect(0);
    assert!(out.stdout.contains("files identical"), "{}", out.stdout);
    assert!(out.stdout.contains("no damage"), "{}", out.stdout);
    assert!(dir.join("repository/config").exists());
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
