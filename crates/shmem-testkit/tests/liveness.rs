//! The writers' lock judged by the kernel: a holder is dead when the kernel has released its
//! witness lock (exit, exec, crash), whatever its pid namespace or the ids the kernel reuses;
//! a live holder is never robbed; a killed waiter stops costing `set`s system calls.

use std::process::Command;
use std::time::{Duration, Instant};

use shmem::{Error, Value};
use shmem_testkit::{
    checked_value, field, helper_path, require, unique_name, verify_value, wait_for, Proc, Rng,
    TestDir,
};

const T: Duration = Duration::from_secs(20);

fn value(dir: &TestDir, name: &str, cap: usize) -> Value {
    Value::builder(name)
        .dir(dir.path())
        .capacity(cap)
        .open()
        .unwrap()
}

/// Sets with the default lock timeout, which succeeds only if the lock was taken over; prints
/// how long that took (reported, never asserted: it is the scheduler's business).
fn set_after_death(sut: &Value, what: &str) {
    let t0 = Instant::now();
    let v = sut.set(b"after").unwrap_or_else(|e| panic!("{what}: {e}"));
    println!("{what}: relocked in {:?}", t0.elapsed());
    assert_eq!(sut.get_vec().unwrap(), (b"after".to_vec(), v));
}

#[test]
fn a_live_holder_is_never_robbed_and_a_killed_one_is_taken_over() {
    let dir = TestDir::new("live");
    let name = unique_name("hold");
    let d = dir.path().to_str().unwrap();
    let sut = value(&dir, &name, 256);
    let v0 = sut.set(b"before").unwrap();
    let mut h = Proc::spawn(["hold-lock", d, &name, "256", "wait"]);
    h.expect("holding", T);

    let impatient = Value::builder(&name)
        .dir(d)
        .lock_timeout(Duration::from_millis(300))
        .open_existing()
        .unwrap();
    assert!(matches!(
        impatient.set(b"robbed"),
        Err(Error::Timeout { .. })
    ));
    assert!(matches!(
        Value::builder(&name)
            .dir(d)
            .lock_timeout(Duration::ZERO)
            .open_existing()
            .unwrap()
            .set(b"robbed"),
        Err(Error::Timeout { .. })
    ));
    assert_eq!(sut.get_vec().unwrap(), (b"before".to_vec(), v0));

    h.kill9();
    set_after_death(&sut, "holder killed");
    drop((sut, impatient));
    assert!(dir.files().is_empty());
}

#[test]
fn a_zero_lock_timeout_takes_over_a_dead_holder_at_the_first_set() {
    let dir = TestDir::new("live");
    let name = unique_name("zero");
    let d = dir.path().to_str().unwrap();
    let sut = Value::builder(&name)
        .dir(d)
        .capacity(64)
        .lock_timeout(Duration::ZERO)
        .open()
        .unwrap();
    let mut h = Proc::spawn(["hold-lock", d, &name, "64", "wait"]);
    h.expect("holding", T);
    h.kill9(); // killed and reaped: the kernel has released its witness
    sut.set(b"first").expect("the first set takes over");
}

#[test]
fn exec_from_a_second_thread_releases_the_lock() {
    let dir = TestDir::new("live");
    let name = unique_name("exec");
    let d = dir.path().to_str().unwrap();
    let sut = value(&dir, &name, 1024);
    let mut h = Proc::spawn(["hold-lock", d, &name, "1024", "exec"]);
    h.expect("holding", T);
    h.expect("exec", T);
    // The exec'd `sleep` has the holder's pid and thread id, and nothing of its witness.
    set_after_death(&sut, "holder exec'd /bin/sleep");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", h.pid())).unwrap_or_default();
    println!("holder's pid now runs {comm:?}");
    drop(h); // kills `sleep`
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn lock_words_naming_no_live_writer_are_taken_over_never_an_error() {
    let dir = TestDir::new("live");
    let name = unique_name("words");
    let sut = Value::builder(&name)
        .dir(dir.path())
        .capacity(64)
        .lock_timeout(Duration::ZERO)
        .open()
        .unwrap();
    // A live unrelated process's pid, a kernel thread's id (kthreadd), our own pid, the
    // largest token, a stale sleepers bit: none is a live writer's token.
    let live_unrelated = Command::new("sleep").arg("100").spawn().unwrap();
    let words = [
        live_unrelated.id(),
        2,
        std::process::id(),
        0x7fff_ffff,
        0x8000_0000,
        0x8000_0005,
    ];
    for word in words {
        // The lock word sits at byte 16 of the control line, the first bytes of the data.
        sut.segment().write(16, &word.to_le_bytes()).unwrap();
        let v = sut
            .set(&word.to_le_bytes())
            .unwrap_or_else(|e| panic!("lock word {word:#x}: {e}"));
        assert_eq!(sut.get_vec().unwrap(), (word.to_le_bytes().to_vec(), v));
        let mut after = [0u8; 4];
        sut.segment().read(16, &mut after).unwrap();
        // Free: 0, or handed off to sleepers if the word carried a stale hand-off request.
        let after = u32::from_le_bytes(after);
        assert!(
            after == 0 || after == 0xc000_0000,
            "{after:#x} after {word:#x}"
        );
    }
    let mut live_unrelated = live_unrelated;
    let _ = live_unrelated.kill();
    let _ = live_unrelated.wait();
}

/// Where strace is, if it is installed.
fn strace() -> Option<&'static str> {
    let found = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if found.is_none() {
        require(
            "the system-call count",
            Some("strace is not installed".into()),
        );
    }
    found
}

/// Waits until the helper `w` sleeps in `FUTEX_WAIT` (system call 202 on x86-64, 98 on
/// aarch64), then kills it there.
fn kill_asleep_in_futex_wait(w: Proc) {
    let futex = if cfg!(target_arch = "aarch64") {
        "98 "
    } else {
        "202 "
    };
    let syscall = format!("/proc/{}/syscall", w.pid());
    assert!(wait_for(T, || std::fs::read_to_string(&syscall)
        .is_ok_and(|s| s.starts_with(futex))));
    w.kill9();
}

/// Runs `shmem-helper ARGS` (a role that writes its begin and end markers to /dev/null) under
/// `strace -f` and returns the system calls it made between the markers.
fn syscalls_between_markers(strace: &str, dir: &TestDir, args: &[&str]) -> Vec<String> {
    let trace = dir.path().join("trace");
    let out = Command::new(strace)
        .arg("-f")
        .arg("-qq")
        .arg("-o")
        .arg(&trace)
        .arg(helper_path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
        "{out:?}"
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    std::fs::remove_file(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let begin = lines
        .iter()
        .position(|l| l.contains("shmem-sets-begin"))
        .expect("begin marker");
    let end = lines
        .iter()
        .position(|l| l.contains("shmem-sets-end"))
        .expect("end marker");
    lines[begin + 1..end]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn a_killed_waiter_costs_later_sets_at_most_one_system_call() {
    let Some(strace) = strace() else { return };
    let dir = TestDir::new("live");
    let name = unique_name("waiter");
    let d = dir.path().to_str().unwrap();
    let sut = value(&dir, &name, 64);
    let v0 = sut.set(b"zero").unwrap();
    let mut w = Proc::spawn(["waiter", d, &name, &v0.to_string(), "60000"]);
    w.expect("waiting", T);
    kill_asleep_in_futex_wait(w);
    let between = syscalls_between_markers(strace, &dir, &["sets", d, &name, "100000"]);
    println!("system calls in 100000 sets after a killed waiter: {between:?}");
    assert!(between.len() <= 1, "{between:?}");
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn map_sets_make_no_system_call_even_after_a_killed_waiter() {
    let Some(strace) = strace() else { return };
    let dir = TestDir::new("live");
    let name = unique_name("mapwaiter");
    let d = dir.path().to_str().unwrap();
    let sut = shmem::Map::builder(&name)
        .dir(dir.path())
        .capacity(4096)
        .open()
        .unwrap();
    let v0 = sut.set("a", b"zero").unwrap();
    // Without waiters: no system call at all.
    let between = syscalls_between_markers(strace, &dir, &["map-sets", d, &name, "100000"]);
    println!("system calls in 100000 map sets: {between:?}");
    assert!(between.is_empty(), "{between:?}");
    // A waiter on any key and one on a single key, both killed asleep: at most one wake-up.
    // (The map's version moved with the sets; the key "a" is still at its version.)
    for (key, since) in [("-", sut.version()), ("a", v0)] {
        let mut w = Proc::spawn(["map-waiter", d, &name, key, &since.to_string(), "60000"]);
        w.expect("waiting", T);
        kill_asleep_in_futex_wait(w);
    }
    let between = syscalls_between_markers(strace, &dir, &["map-sets", d, &name, "100000"]);
    println!("system calls in 100000 map sets after two killed waiters: {between:?}");
    assert!(between.len() <= 2, "{between:?}");
    drop(sut);
    assert!(dir.files().is_empty());
}

/// Why writers in two pid namespaces cannot be tested here, if they cannot.
fn no_pid_namespaces() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for unshare --pid".into());
    }
    match Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "true"])
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("unshare --pid failed: {s}")),
        Err(e) => Some(format!("unshare: {e}")),
    }
}

/// `shmem-helper ARGS...` as pid 1 of a new pid namespace (sharing /dev/shm).
fn in_pid_namespace(args: &[&str]) -> Proc {
    Proc::spawn_cmd(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
            .arg(helper_path())
            .args(args),
    )
}

#[test]
fn writers_in_two_pid_namespaces_share_the_lock_and_take_over_from_each_other() {
    if !require("the pid-namespace test", no_pid_namespaces()) {
        return;
    }
    let dir = TestDir::new("live");
    let name = unique_name("pidns");
    let d = dir.path().to_str().unwrap();
    let cap = "4096";
    let sut = value(&dir, &name, 4096);
    let mut reader = Proc::spawn(["reader", d, &name, cap, "3000"]);
    let mut outside = Proc::spawn(["writer", d, &name, cap, "3000", "1"]);
    let mut inside = in_pid_namespace(&["writer", d, &name, cap, "3000", "2"]);
    for p in [&mut reader, &mut outside, &mut inside] {
        p.expect("ready", T);
    }
    for (who, p) in [("outside", outside), ("inside", inside)] {
        let (status, out) = p.wait_output(T);
        assert!(status.success(), "{who} writer: {out:?}");
        let done = out.iter().find(|l| l.starts_with("done")).expect("done");
        let sets: u64 = field(done, "sets").parse().unwrap();
        println!("{who} writer: {sets} sets");
        assert!(sets > 0, "the {who} writer made no progress");
    }
    let (status, out) = reader.wait_output(T);
    assert!(status.success(), "reader: {out:?}");
    assert_eq!(field(out.last().unwrap(), "invalid"), "0");

    let mut holder = in_pid_namespace(&["hold-lock", d, &name, cap, "wait"]);
    holder.expect("holding", T);
    holder.kill9(); // unshare dies; --kill-child kills the holder
    set_after_death(&sut, "holder in another pid namespace killed");
    drop(sut);
    assert!(wait_for(T, || dir.files().is_empty()));
}

#[test]
fn a_sole_writer_excludes_others_until_it_dies_and_readers_see_whole_values() {
    let dir = TestDir::new("live");
    let name = unique_name("sole");
    let d = dir.path().to_str().unwrap();
    let sut = value(&dir, &name, 1024);
    let mut w = Proc::spawn(["sole-writer", d, &name, "1024", "3"]);
    w.expect("sole", T);
    let other = Value::builder(&name)
        .dir(d)
        .lock_timeout(Duration::from_millis(200))
        .open_existing()
        .unwrap();
    assert!(matches!(other.set(b"no"), Err(Error::Timeout { .. })));
    let (mut reads, mut last) = (0u32, 0u64);
    let t0 = Instant::now();
    while reads < 20_000 || t0.elapsed() < Duration::from_millis(100) {
        let (bytes, version) = sut.get_vec().unwrap();
        verify_value(&bytes).unwrap_or_else(|e| panic!("read {reads}: {e}"));
        assert!(version >= last);
        last = version;
        reads += 1;
    }
    assert!(last > 1, "the sole writer made no progress");
    w.kill9();
    set_after_death(&sut, "sole writer killed");
    drop((sut, other));
    assert!(dir.files().is_empty());
}

#[test]
fn set_with_publishes_in_place_and_a_panic_inside_publishes_nothing() {
    let dir = TestDir::new("live");
    let name = unique_name("with");
    let sut = value(&dir, &name, 256);
    let mut rng = Rng::new(9);
    let first = checked_value(&mut rng, 256);
    let v1 = sut
        .set_with(first.len(), |buf| buf.copy_from_slice(&first))
        .unwrap();
    assert_eq!(sut.get_vec().unwrap(), (first.clone(), v1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sut.set_with(100, |buf| {
            buf[..50].fill(0xee);
            panic!("the filler fails half way");
        })
    }));
    assert!(r.is_err());
    assert_eq!(sut.get_vec().unwrap(), (first, v1), "nothing published");
    assert!(matches!(
        sut.set_with(257, |_| unreachable!()),
        Err(Error::TooLarge { .. })
    ));
    let v2 = sut.set(b"next").unwrap(); // the lock was released, the slot repaired
    assert_eq!(v2, v1 + 1);
    assert_eq!(sut.get_vec().unwrap(), (b"next".to_vec(), v2));
}

#[test]
fn waits_spin_within_their_deadline_and_also_work_without_spinning() {
    let dir = TestDir::new("live");
    let name = unique_name("spin");
    for spin in [
        Duration::ZERO,
        Duration::from_micros(20),
        Duration::from_secs(3600),
    ] {
        let sut = Value::builder(&name)
            .dir(dir.path())
            .capacity(64)
            .wait_spin(spin)
            .open()
            .unwrap();
        let v0 = sut.version();
        // The spin window never outlasts the timeout.
        assert!(matches!(
            sut.wait_changed(v0, Some(Duration::from_millis(10))),
            Err(Error::Timeout { .. })
        ));
        let writer = Value::builder(&name)
            .dir(dir.path())
            .open_existing()
            .unwrap();
        std::thread::scope(|s| {
            let w = s.spawn(|| sut.wait_changed(v0, Some(T)).unwrap());
            let v1 = writer.set(b"moved").unwrap();
            assert_eq!(w.join().unwrap(), v1, "spin {spin:?}");
        });
    }
    assert!(dir.files().is_empty());
}
