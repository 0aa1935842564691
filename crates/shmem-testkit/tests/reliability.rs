//! Reliability: other users, resources, signals and threads (see docs/RELIABILITY.md).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmem::{Error, Segment, Value};
use shmem_testkit::{
    can_switch_users, checked_value, helper_path, hex, require, unique_name, verify_value, Proc,
    Rng, TestDir,
};

const T: Duration = Duration::from_secs(30);
const NOBODY: &str = "65534";

/// Runs `shmem-helper ARGS` as uid/gid `NOBODY`, with `group` as its only supplementary group.
fn helper_as_nobody(group: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid", NOBODY, "--regid", NOBODY, "--groups", group, "--",
        ])
        .arg(helper_path())
        .args(args)
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn other_users_are_refused_unless_the_group_mode_lets_them_in() {
    if !require("the other-users test", can_switch_users()) {
        return;
    }
    let dir = TestDir::new("users");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = dir.path().to_str().unwrap();

    // Owner-only (the default): another user gets a permission error.
    let private = unique_name("private");
    let seg = Segment::builder(&private).dir(d).size(64).open().unwrap();
    seg.write(0, b"secret").unwrap();
    let (ok, out) = helper_as_nobody(NOBODY, &["read", d, &private, "6"]);
    assert!(!ok);
    assert!(out.contains("permission denied"), "{out}");

    // A group mode: a member of the group can use it (and must ask for a shared mode too).
    // The name file gets the group from the set-group-id directory when it is created, and the
    // generation's SysV memory takes the name file's owner, group and mode then.
    let shared = unique_name("shared");
    std::os::unix::fs::chown(dir.path(), None, Some(4242)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2755)).unwrap();
    let group_seg = Segment::builder(&shared)
        .dir(d)
        .size(64)
        .mode(0o660)
        .open()
        .unwrap();
    group_seg.write(0, b"for the group").unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(group_seg.path()).unwrap()),
        4242
    );
    let (ok, out) = helper_as_nobody("4242", &["read", d, &shared, "13"]);
    assert!(
        !ok,
        "without a shared mode the helper refuses another user's file: {out}"
    );
    assert!(out.contains("owned by uid 0"), "{out}");
    let mut p = Command::new("setpriv")
        .args([
            "--reuid", NOBODY, "--regid", NOBODY, "--groups", "4242", "--",
        ])
        .arg(helper_path())
        .args(["hold", d, &shared, "64", "mode", "660"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(p.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert!(line.starts_with("ready created=false"), "{line}");
    assert!(line.contains(&hex(b"for the group")), "{line}");
    drop(p.stdin.take());
    assert!(p.wait().unwrap().success());
    // Not in the group: refused by the kernel.
    let (ok, out) = helper_as_nobody(NOBODY, &["hold", d, &shared, "64", "mode", "660"]);
    assert!(!ok);
    assert!(out.contains("permission denied"), "{out}");
    drop(seg);
    drop(group_seg);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

fn count(path: &str) -> usize {
    match std::fs::read_to_string(path) {
        Ok(s) => s.lines().count(),
        Err(_) => std::fs::read_dir(path).unwrap().count(),
    }
}

#[test]
fn thousands_of_segments_leak_no_descriptor_and_no_mapping() {
    let dir = TestDir::new("leak");
    // Warm up once so lazily created process state is not counted.
    drop(
        Value::builder("warm")
            .dir(dir.path())
            .capacity(64)
            .open()
            .unwrap(),
    );
    let fds = count("/proc/self/fd");
    let maps = count("/proc/self/maps");
    for i in 0..3000 {
        let name = format!("leak-{i}");
        let v = Value::builder(&name)
            .dir(dir.path())
            .capacity(64)
            .open()
            .unwrap();
        v.set(b"x").unwrap();
        let again = Value::builder(&name)
            .dir(dir.path())
            .open_existing()
            .unwrap();
        assert_eq!(again.get_vec().unwrap().0, b"x");
    }
    // Other tests run threads in this process, so allow a little noise but no growth per
    // segment (3000 segments would add thousands).
    assert!(count("/proc/self/fd") <= fds + 8, "descriptors leaked");
    assert!(count("/proc/self/maps") <= maps + 16, "mappings leaked");
    assert!(dir.files().is_empty());
}

#[test]
fn the_open_files_limit_gives_a_clear_error() {
    let dir = TestDir::new("emfile");
    let (status, out) =
        Proc::spawn(["fd-limit", dir.path().to_str().unwrap(), "fd"]).wait_output(T);
    assert!(status.success(), "{out:?}");
    let line = &out[0];
    assert!(line.contains("Too many open files"), "{line}");
    assert!(
        line.contains("segment 'fd-"),
        "the error names the segment: {line}"
    );
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

extern "C" fn on_signal(_: libc::c_int) {}

#[test]
fn waits_gets_and_sets_survive_signals() {
    // A handler without SA_RESTART, so that blocking system calls return EINTR.
    // SAFETY: installs a handler that does nothing, for a signal nothing else uses.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let dir = TestDir::new("sig");
    let name = unique_name("sig");
    let sut = Arc::new(
        Value::builder(&name)
            .dir(dir.path())
            .capacity(64)
            .open()
            .unwrap(),
    );
    let v0 = sut.set(b"start").unwrap();

    let waiter = {
        let sut = Arc::clone(&sut);
        std::thread::spawn(move || sut.wait_changed(v0, Some(Duration::from_secs(20))))
    };
    // Pelt the waiting thread with signals, then change the value.
    let handle = {
        use std::os::unix::thread::JoinHandleExt;
        waiter.as_pthread_t()
    };
    for _ in 0..200 {
        // SAFETY: `handle` is a live thread of this process (joined below).
        unsafe { libc::pthread_kill(handle, libc::SIGUSR1) };
        std::thread::yield_now();
    }
    let v1 = sut.set(b"changed").unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), v1);

    // A timed wait under signals ends at its deadline, not earlier.
    let timed = {
        let sut = Arc::clone(&sut);
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = sut.wait_changed(v1, Some(Duration::from_millis(300)));
            (r, t0.elapsed())
        })
    };
    let handle = {
        use std::os::unix::thread::JoinHandleExt;
        timed.as_pthread_t()
    };
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        // SAFETY: as above.
        unsafe { libc::pthread_kill(handle, libc::SIGUSR1) };
        std::thread::yield_now();
    }
    let (r, spent) = timed.join().unwrap();
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(spent >= Duration::from_millis(300), "{spent:?}");
}

#[test]
fn one_handle_used_from_many_threads() {
    let dir = TestDir::new("threads");
    let name = unique_name("threads");
    let sut = Value::builder(&name)
        .dir(dir.path())
        .capacity(2048)
        .open()
        .unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3 {
            let sut = &sut;
            let stop = &stop;
            s.spawn(move || {
                let mut rng = Rng::new(t + 1);
                while !stop.load(Ordering::Relaxed) {
                    sut.set(&checked_value(&mut rng, 2048)).unwrap();
                }
            });
        }
        let mut reads = 0;
        let mut last = 0;
        let end = Instant::now() + Duration::from_millis(700);
        while Instant::now() < end {
            let (v, version) = sut.get_vec().unwrap();
            verify_value(&v).unwrap();
            assert!(version >= last);
            last = version;
            reads += 1;
        }
        stop.store(true, Ordering::Relaxed);
        println!("threads: {reads} verified reads while 3 threads wrote");
    });
}

#[test]
fn a_last_detacher_that_does_not_own_the_name_still_frees_the_segment() {
    if !require("the cross-user detach test", can_switch_users()) {
        return;
    }
    // A sticky, world-writable directory like /dev/shm: only a file's owner may unlink it.
    let dir = TestDir::new("crossuser");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let d = dir.path().to_str().unwrap();
    let name = unique_name("cross");
    let mut owner = Proc::spawn_cmd(
        Command::new("setpriv")
            .args([
                "--reuid", NOBODY, "--regid", NOBODY, "--groups", NOBODY, "--",
            ])
            .arg(helper_path())
            .args(["hold", d, &name, "64", "mode", "666", "write", "6f6c64"]),
    );
    let line = owner.expect("ready", T);
    assert!(line.contains("created=true"), "{line}");
    let joined = Segment::builder(&name).dir(d).mode(0o666).open().unwrap();
    assert!(!joined.created());
    let shmid = joined.header().shmid;
    // The owner leaves first; root, who does not own the name file, is the last user.
    assert!(owner.finish().success());
    drop(joined);
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&shmid.to_string())),
        "the memory outlived its last user"
    );
    // The name file (not root's to remove in a sticky directory) may stay, but the next user
    // starts a new generation in it.
    let next = Segment::builder(&name)
        .dir(d)
        .size(64)
        .mode(0o666)
        .open()
        .unwrap();
    assert!(next.created(), "joined the old generation");
    let mut buf = [0xffu8; 3];
    next.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0, 0, 0], "the old data is still there");
}
