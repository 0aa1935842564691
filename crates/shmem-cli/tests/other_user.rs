//! The command as another user (through `setpriv`): a 0644 segment, value or map, is read
//! and watched read-only and its `set` (a map's `set` and `del`) is refused with a permission
//! error naming it; 0666 and 0660 segments are written. Root only: skipped with a message otherwise, failed under CI.
//! Every process started here (the other user's too) is killed when its `Proc` is dropped,
//! and the test directory is removed, whether the test passes or fails.
#![cfg(target_os = "linux")]

mod support;

use std::process::Command;

use rustix::process::Signal;
use std::time::{Duration, Instant};

use support::{run, Proc, TestDir, DEADLINE};

/// `nobody` on Debian: a user with no rights on our files beyond their mode.
const NOBODY: u32 = 65534;

/// Whether the other-user tests can run here: as root, with `setpriv`. Otherwise they are
/// skipped with a message, or fail when `CI` is set.
fn can_switch_users() -> bool {
    let why = if !rustix::process::geteuid().is_root() {
        Some("they need root to switch users")
    } else if Command::new("setpriv").arg("--version").output().is_err() {
        Some("setpriv (util-linux) is not installed")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("other-user tests: {why}"),
        Some(why) => {
            eprintln!("skipped: the other-user tests cannot run: {why}");
            false
        }
    }
}

/// `setpriv --reuid UID --regid GID --clear-groups shmem --dir DIR ARGS...`.
fn shmem_as(dir: &TestDir, uid: u32, gid: u32, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_shmem"))
        .arg("--dir")
        .arg(dir.path())
        .args(args)
        .env_remove("SHMEM_DIR");
    cmd
}

/// Starts `shmem hold --mode MODE NAME` as `uid`/`gid` and waits until it holds the value.
fn hold_as(dir: &TestDir, uid: u32, gid: u32, mode: &str, name: &str) -> Proc {
    hold_cmd_as(dir, uid, gid, &["hold"], mode, name)
}

/// As [`hold_as`], with the hold command `hold` (`["hold"]` for a value, `["map", "hold"]`
/// for a map).
fn hold_cmd_as(dir: &TestDir, uid: u32, gid: u32, hold: &[&str], mode: &str, name: &str) -> Proc {
    let mut args = hold.to_vec();
    args.extend_from_slice(&["--mode", mode, name]);
    let holder = Proc::spawn(&mut shmem_as(dir, uid, gid, &args));
    let line = holder.next_line();
    assert_eq!(line, format!("holding {name} (pid {})", holder.pid()));
    holder
}

/// Waits until `cond` holds, checking every millisecond, at most `timeout`.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Whether some thread of `pid` sleeps in `futex_waitv` (syscall 449 on x86-64 and aarch64):
/// how a read-only waiter sleeps.
fn sleeps_in_futex_waitv(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some("449"))
    })
}

#[test]
fn another_user_reads_and_watches_a_0644_segment_but_cannot_set_it() {
    if !can_switch_users() {
        return;
    }
    let dir = TestDir::new();
    let name = "ro-shared";
    let holder = hold_as(&dir, 0, 0, "0644", name);
    dir.ok(&["set", name, "first"]);

    let got = run(
        &mut shmem_as(&dir, NOBODY, NOBODY, &["get", "--text", name]),
        None,
    );
    assert_eq!((got.code, got.stdout.as_str()), (0, "first\n"), "{got:?}");
    // `info` peeks read-only: the other user sees the version and how waiters are woken.
    let info = run(&mut shmem_as(&dir, NOBODY, NOBODY, &["info", name]), None);
    assert_eq!(info.code, 0, "{info:?}");
    assert!(info.stdout.contains("version:    1\n"), "{info:?}");
    assert!(info.stdout.contains("woken at every set"), "{info:?}");

    // A watch by the other user sleeps read-only and is woken by the owner's set.
    let watch = Proc::spawn(&mut shmem_as(
        &dir,
        NOBODY,
        NOBODY,
        &["watch", "-c", "1", "--timeout", "30000", name],
    ));
    assert!(
        wait_for(DEADLINE, || sleeps_in_futex_waitv(watch.pid())),
        "the watch sleeps in futex_waitv"
    );
    dir.ok(&["set", name, "second"]);
    let (status, lines, stderr) = watch.finish();
    assert!(status.success(), "{lines:?} {stderr}");
    assert_eq!(lines, ["2 second"], "{stderr}");

    // Writing is refused with a permission error that names the segment; nothing changes.
    let set = run(
        &mut shmem_as(&dir, NOBODY, NOBODY, &["set", name, "forged"]),
        None,
    );
    set.assert_fails(1, name);
    assert!(set.stderr.contains("permission denied"), "{set:?}");
    assert!(set.stderr.contains("mode 644"), "{set:?}");
    let hold = run(
        &mut shmem_as(&dir, NOBODY, NOBODY, &["hold", "--mode", "0644", name]),
        None,
    );
    hold.assert_fails(1, name);
    assert!(hold.stderr.contains("permission denied"), "{hold:?}");
    assert_eq!(dir.ok(&["get", name]).stdout, "second");

    holder.signal(Signal::TERM);
    let (status, _, _) = holder.finish();
    assert!(status.success());
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn another_user_gets_lists_and_watches_a_0644_map_but_cannot_set_it() {
    if !can_switch_users() {
        return;
    }
    let dir = TestDir::new();
    let name = "ro-map";
    let holder = hold_cmd_as(&dir, 0, 0, &["map", "hold"], "0644", name);
    dir.ok(&["map", "set", name, "k", "first"]);
    let as_nobody = |args: &[&str]| {
        let mut all = vec!["map"];
        all.extend_from_slice(args);
        shmem_as(&dir, NOBODY, NOBODY, &all)
    };

    let got = run(&mut as_nobody(&["get", "--text", name, "k"]), None);
    assert_eq!((got.code, got.stdout.as_str()), (0, "first\n"), "{got:?}");
    let ls = run(&mut as_nobody(&["ls", name]), None);
    assert_eq!(ls.code, 0, "{ls:?}");
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with("k ") && l.ends_with("first")),
        "{ls:?}"
    );
    let info = run(&mut shmem_as(&dir, NOBODY, NOBODY, &["info", name]), None);
    assert!(info.stdout.contains("woken at every set"), "{info:?}");

    // Watches by the other user, of one key and of the whole map, sleep read-only (on the
    // map's control line) and are woken by the owner's sets.
    let key_watch = Proc::spawn(&mut as_nobody(&[
        "watch",
        "-c",
        "1",
        "--timeout",
        "30000",
        name,
        "k",
    ]));
    assert!(
        wait_for(DEADLINE, || sleeps_in_futex_waitv(key_watch.pid())),
        "the key's watch sleeps in futex_waitv"
    );
    // Another key's set wakes it too; it re-checks its key and prints nothing for it.
    dir.ok(&["map", "set", name, "other", "x"]);
    dir.ok(&["map", "set", name, "k", "second"]);
    let (status, lines, stderr) = key_watch.finish();
    assert!(status.success(), "{lines:?} {stderr}");
    assert_eq!(lines, ["3 set k second"], "{stderr}");

    let all_watch = Proc::spawn(&mut as_nobody(&[
        "watch",
        "-c",
        "1",
        "--timeout",
        "30000",
        name,
    ]));
    assert!(
        wait_for(DEADLINE, || sleeps_in_futex_waitv(all_watch.pid())),
        "the map's watch sleeps in futex_waitv"
    );
    dir.ok(&["map", "del", name, "other"]);
    let (status, lines, stderr) = all_watch.finish();
    assert!(status.success(), "{lines:?} {stderr}");
    assert_eq!(lines, ["4 del other"], "{stderr}");

    // Writing is refused with a permission error that names the map; nothing changes.
    for args in [&["set", name, "k", "forged"][..], &["del", name, "k"]] {
        let w = run(&mut as_nobody(args), None);
        w.assert_fails(1, name);
        assert!(w.stderr.contains("permission denied"), "{w:?}");
        assert!(w.stderr.contains("mode 644"), "{w:?}");
    }
    assert_eq!(dir.ok(&["map", "get", name, "k"]).stdout, "second");
    assert_eq!(
        dir.json(&["map", "ls", name])["version"],
        serde_json::json!(4)
    );

    holder.signal(Signal::TERM);
    let (status, _, _) = holder.finish();
    assert!(status.success());
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn another_user_writes_a_0666_segment_and_a_0660_one_of_its_group() {
    if !can_switch_users() {
        return;
    }
    let dir = TestDir::new();
    // 0666: anyone writes.
    let open = "rw-all";
    let holder = hold_as(&dir, 0, 0, "0666", open);
    let set = run(
        &mut shmem_as(&dir, NOBODY, NOBODY, &["set", open, "from nobody"]),
        None,
    );
    assert_eq!(set.code, 0, "{set:?}");
    assert_eq!(dir.ok(&["get", open]).stdout, "from nobody");

    // 0660 owned by root and group nogroup: nobody writes as a member of the group, a user
    // of another group may not even read.
    let group = "rw-group";
    let group_holder = hold_as(&dir, 0, NOBODY, "0660", group);
    let set = run(
        &mut shmem_as(&dir, NOBODY, NOBODY, &["set", group, "from the group"]),
        None,
    );
    assert_eq!(set.code, 0, "{set:?}");
    assert_eq!(dir.ok(&["get", group]).stdout, "from the group");
    let outsider = run(&mut shmem_as(&dir, 65533, 65533, &["get", group]), None);
    outsider.assert_fails(1, group);
    assert!(
        outsider.stderr.contains("permission denied"),
        "{outsider:?}"
    );

    for h in [holder, group_holder] {
        h.signal(Signal::TERM);
        let (status, _, _) = h.finish();
        assert!(status.success());
    }
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}
