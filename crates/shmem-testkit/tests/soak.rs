//! A short soak in every test run (the long one is `shmem-soak --seconds N`).

use std::time::Duration;

use shmem_testkit::Proc;

#[test]
fn a_short_soak_finds_no_error() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shmem-soak"));
    // At least 4 s and at least 20 kills, however busy the machine is.
    cmd.args(["--seconds", "4", "--seed", "42", "--min-kills", "20"]);
    let (status, out) = Proc::spawn_cmd(&mut cmd).wait_output(Duration::from_secs(300));
    let text = out.join("\n");
    println!("{text}");
    assert!(status.success(), "{text}");
    assert!(text.contains("errors found: 0"), "{text}");
    let kills: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("kills: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a kills line");
    assert!(kills >= 20, "--min-kills 20 was not honoured: {kills}");
}
