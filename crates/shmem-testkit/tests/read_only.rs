//! Read-only handles (`Access::ReadOnly`) across real processes: they read, never write (the
//! kernel maps them read-only, every write is a permission error), hold a transient segment
//! alive like any handle, and wait without announcing themselves on values and maps whose
//! every publish wakes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use shmem::{admin, Access, Error, Lifetime, Map, Segment, Value, WakePolicy};
use shmem_testkit::{field, unique_name, wait_for, Proc, TestDir};

const T: Duration = Duration::from_secs(30);

/// The permission bits of the mapping that contains `addr` in /proc/self/maps (`r--s`...).
fn mapping_perms(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let range = parts.next().unwrap();
        let perms = parts.next().unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let lo = usize::from_str_radix(lo, 16).unwrap();
        let hi = usize::from_str_radix(hi, 16).unwrap();
        if (lo..hi).contains(&addr) {
            return perms.to_owned();
        }
    }
    panic!("no mapping contains {addr:#x}");
}

fn read_only(dir: &TestDir, name: &str) -> shmem::ValueBuilder {
    Value::builder(name)
        .dir(dir.path())
        .access(Access::ReadOnly)
}

fn assert_refused(r: Result<u64, Error>, name: &str, op: &str) {
    match r {
        Err(e @ Error::PermissionDenied { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(name) && msg.contains(op), "{msg}");
            assert!(msg.contains("read-only"), "{msg}");
        }
        other => panic!("{op} on a read-only handle: {other:?}"),
    }
}

#[test]
fn a_read_only_handle_reads_through_a_read_only_mapping_and_every_write_is_refused() {
    let dir = TestDir::new("ro");
    for lifetime in [Lifetime::Transient, Lifetime::Persistent] {
        let name = unique_name("ro-basic");
        let rw = Value::builder(&name)
            .dir(dir.path())
            .capacity(256)
            .lifetime(lifetime)
            .mode(0o644)
            .open()
            .unwrap();
        rw.set(b"hello").unwrap();
        let ro = read_only(&dir, &name).open_existing().unwrap();
        assert_eq!(ro.segment().access(), Access::ReadOnly);
        assert!(!ro.created());
        // admin counts it as a holder (its read lock, its pid marker, its SysV attachment).
        let info = admin::inspect(dir.path(), &name).unwrap();
        assert_eq!(
            (info.state.clone(), info.attached),
            (admin::State::Live, 2),
            "{lifetime:?}"
        );
        assert_eq!(ro.get_vec().unwrap(), (b"hello".to_vec(), 1));
        // The kernel mapped it without write permission: a write through it could only fault.
        let perms = mapping_perms(ro.segment().as_ptr() as usize);
        assert!(
            perms.starts_with("r-") && perms.ends_with('s'),
            "{lifetime:?}: {perms}"
        );
        let rw_perms = mapping_perms(rw.segment().as_ptr() as usize);
        assert!(rw_perms.starts_with("rw"), "{rw_perms}");

        assert_refused(ro.set(b"no"), &name, "set");
        assert_refused(ro.set_with(2, |b| b.fill(1)), &name, "set_with");
        assert!(matches!(
            ro.sole_writer(),
            Err(Error::PermissionDenied { .. })
        ));
        assert_eq!(
            ro.get_vec().unwrap(),
            (b"hello".to_vec(), 1),
            "nothing changed"
        );
        // The writer goes on, and the reader sees it.
        rw.set(b"world").unwrap();
        assert_eq!(ro.get_vec().unwrap(), (b"world".to_vec(), 2));

        // A read-only raw segment: reads work, writes are refused.
        let raw = unique_name("ro-raw");
        let b = Segment::builder(&raw)
            .dir(dir.path())
            .lifetime(lifetime)
            .mode(0o644);
        let owner = b.clone().size(64).open().unwrap();
        owner.write(0, b"raw bytes").unwrap();
        let seg = b.access(Access::ReadOnly).open().unwrap();
        let mut first = [0u8; 9];
        seg.read(0, &mut first).unwrap();
        assert_eq!(&first, b"raw bytes");
        assert!(matches!(
            seg.write(0, b"x"),
            Err(Error::PermissionDenied { .. })
        ));
        drop((seg, owner));
        drop((ro, rw));
        if lifetime == Lifetime::Persistent {
            admin::remove(dir.path(), &name, false).unwrap();
            admin::remove(dir.path(), &raw, false).unwrap();
        }
    }
    // Never creates: a missing name is NotFound whatever method is called, create_new refused.
    let missing = unique_name("ro-missing");
    let b = read_only(&dir, &missing).capacity(64);
    assert!(matches!(b.open(), Err(Error::NotFound { .. })));
    assert!(matches!(b.open_existing(), Err(Error::NotFound { .. })));
    assert!(matches!(
        b.create_new(),
        Err(Error::PermissionDenied { .. })
    ));
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

/// Opens (creating) a 64-byte transient value `name` in `d` with mode 0644: others may read
/// it without writing, so its writers wake at every publish (`WakePolicy::EveryPublish`).
fn shared_value(d: &str, name: &str) -> Value {
    Value::builder(name)
        .dir(d)
        .capacity(64)
        .mode(0o644)
        .open()
        .unwrap()
}

#[test]
fn a_read_only_holder_keeps_a_transient_segment_alive_and_its_exit_frees_it() {
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("ro-hold");
    let creator = shared_value(d, &name);
    assert!(creator.created());
    creator.set(b"kept").unwrap();
    let mut holder = Proc::spawn(["ro-hold", d, &name]);
    let ready = holder.expect("ready", T);
    assert_eq!(field(&ready, "value"), "kept", "{ready}");
    assert!(field(&ready, "set").starts_with("refused("), "{ready}");
    assert!(
        ready.contains(&name),
        "the refusal names the segment: {ready}"
    );
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert_eq!((info.state.clone(), info.attached), (admin::State::Live, 2));
    assert!(info.pids.contains(&holder.pid()), "{:?}", info.pids);

    // The creator leaves: the read-only holder alone keeps the generation and its value.
    drop(creator);
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert_eq!((info.state.clone(), info.attached), (admin::State::Live, 1));
    let again = read_only(&dir, &name).open_existing().unwrap();
    assert_eq!(again.get_vec().unwrap().0, b"kept");
    drop(again);
    // A writer that opens now joins that generation (it does not start a new one).
    let joiner = Value::builder(&name).dir(d).open_existing().unwrap();
    assert!(!joiner.created());
    assert_eq!(joiner.get_vec().unwrap().0, b"kept");
    drop(joiner);

    // The holder exits: nothing is left, memory nor name.
    holder.close_stdin();
    holder.expect("detached", T);
    let (status, _) = holder.wait_output(T);
    assert!(status.success());
    assert!(matches!(
        Value::builder(&name).dir(d).open_existing(),
        Err(Error::NotFound { .. })
    ));
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn a_killed_read_only_holder_still_lets_the_segment_go() {
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("ro-kill");
    let creator = shared_value(d, &name);
    let mut holder = Proc::spawn(["ro-hold", d, &name]);
    holder.expect("ready", T);
    let info = admin::inspect(dir.path(), &name).unwrap();
    let shmid = info.memory.expect("SysV storage").shmid;
    drop(creator);
    drop(holder); // SIGKILL: no code of ours runs in it
    assert!(
        wait_for(T, || !std::fs::read_to_string("/proc/sysvipc/shm")
            .unwrap()
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(&shmid.to_string()))),
        "the kernel freed the memory"
    );
    // The 64-byte name file is stale: a read-only opener finds no live segment, a writer
    // starts a new generation in it.
    assert!(matches!(
        read_only(&dir, &name).open_existing(),
        Err(Error::NotFound { .. })
    ));
    let fresh = Value::builder(&name).dir(d).capacity(64).open().unwrap();
    assert!(fresh.created());
    assert_eq!(fresh.version(), 0);
    drop(fresh);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

/// The thread of `pid` sleeping in `futex_waitv` (syscall 449 on x86-64 and aarch64).
fn in_futex_waitv(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some("449"))
}

#[test]
fn a_read_only_waiter_in_another_process_is_woken_by_a_set_and_times_out_otherwise() {
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("ro-wait");
    let sut = shared_value(d, &name);
    assert_eq!(sut.segment().header().wake, WakePolicy::EveryPublish);
    let mut waiter = Proc::spawn(["ro-waiter", d, &name, "0", "30000"]);
    waiter.expect("waiting", T);
    // Set only once it sleeps in the kernel, so the wake-up is what ends its wait.
    assert!(
        wait_for(T, || in_futex_waitv(waiter.pid())),
        "the waiter sleeps"
    );
    sut.set(b"woken").unwrap();
    let (status, out) = waiter.wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(out.last().unwrap(), "changed 1 woken");

    let waiter = Proc::spawn(["ro-waiter", d, &name, "1", "50"]);
    let (status, out) = waiter.wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(out.last().unwrap(), "timeout");
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn a_read_only_wait_on_a_value_whose_writers_wake_only_announced_waiters_is_refused() {
    let dir = TestDir::new("ro");
    let name = unique_name("ro-nowait");
    let sut = Value::builder(&name)
        .dir(dir.path())
        .capacity(64)
        .open()
        .unwrap(); // 0600: nobody reads without writing
    assert_eq!(sut.segment().header().wake, WakePolicy::Announced);
    let ro = read_only(&dir, &name)
        .wait_spin(Duration::ZERO)
        .open_existing()
        .unwrap();
    match ro.wait_changed(0, Some(Duration::from_secs(5))) {
        Err(e @ Error::PermissionDenied { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&name) && msg.contains("read-write"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // A change already there is still reported (no sleep needed).
    sut.set(b"x").unwrap();
    assert_eq!(ro.wait_changed(0, Some(Duration::from_secs(5))).unwrap(), 1);
}

#[test]
fn a_read_only_wait_is_cancelled_from_another_thread_without_writing() {
    let dir = TestDir::new("ro");
    let name = unique_name("ro-cancel");
    let sut = Value::builder(&name)
        .dir(dir.path())
        .capacity(64)
        .mode(0o640)
        .open()
        .unwrap();
    let ro = read_only(&dir, &name)
        .wait_spin(Duration::ZERO)
        .open_existing()
        .unwrap();
    cancel_rounds(
        |round| round % 4 == 0,
        |_, cancelled| {
            ro.wait_changed_unless(0, Some(T), cancelled)
                .map_err(|e| e.to_string())
        },
        || ro.wake_waiters(),
    );
    assert_eq!(sut.version(), 0, "nothing was published");
}

#[test]
fn a_forked_child_of_a_read_only_holder_holds_the_segment_with_its_own_lock() {
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("ro-fork");
    let creator = shared_value(d, &name);
    creator.set(b"inherited").unwrap();
    // As another user when we can (root): one who may not open the file for writing, so the
    // fork handler's description must be a read-only one.
    let args = ["fork-hold", d, &name, "readonly"];
    let mut p = if rustix::process::geteuid().is_root() {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(shmem_testkit::helper_path())
            .args(args);
        Proc::spawn_cmd(&mut cmd)
    } else {
        Proc::spawn(args)
    };
    let lines = [p.line(T), p.line(T)];
    let line = lines
        .iter()
        .find(|l| l.starts_with("child="))
        .unwrap()
        .clone();
    assert!(lines.contains(&"forked".to_owned()), "{lines:?}");
    let child: u32 = field(&line, "child").parse().unwrap();
    let parent: u32 = field(&line, "parent").parse().unwrap();
    assert!(wait_for(T, || {
        std::fs::read_to_string(format!("/proc/{parent}/stat")).map_or(true, |s| s.contains(") Z "))
    }));
    drop(creator);
    // Only the child holds it now, through a read-only description of its own (the fork
    // handler reopened it O_RDONLY): its pid marks the lock.
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert_eq!(
        (info.state.clone(), info.attached, info.pids.clone()),
        (admin::State::Live, 1, vec![child]),
        "{info:?}"
    );
    let reader = read_only(&dir, &name).open_existing().unwrap();
    assert_eq!(reader.get_vec().unwrap().0, b"inherited");
    drop(reader);
    p.close_stdin();
    // Its exit frees the memory; a last detacher that does not own the name file leaves it
    // stale (not its to unlink), for `gc` or `rm`.
    assert!(wait_for(T, || admin::inspect(dir.path(), &name).is_ok_and(
        |i| i.state == admin::State::Stale && i.memory.is_none()
    )));
    admin::remove(dir.path(), &name, false).unwrap();
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn values_and_maps_that_others_may_only_read_wake_at_every_publish() {
    // A 0644 value or map wakes at every publish (its read-only handles can wait, and cannot
    // announce themselves); a 0600 one, which no one reads without writing, and a raw
    // segment, which has no waits, keep waking announced waiters only. (Maps used to keep
    // `Announced` whatever their mode, when they had no read-only handles.)
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let value = shared_value(d, &unique_name("ro-policy-value"));
    assert_eq!(value.segment().header().wake, WakePolicy::EveryPublish);
    let map = |mode| {
        Map::builder(&unique_name("ro-policy-map"))
            .dir(d)
            .capacity(1024)
            .mode(mode)
            .open()
            .unwrap()
    };
    let (shared, private) = (map(0o644), map(0o600));
    assert_eq!(shared.segment().header().wake, WakePolicy::EveryPublish);
    assert_eq!(map(0o640).segment().header().wake, WakePolicy::EveryPublish);
    assert_eq!(private.segment().header().wake, WakePolicy::Announced);
    let raw = Segment::builder(&unique_name("ro-policy-raw"))
        .dir(d)
        .size(64)
        .mode(0o644)
        .open()
        .unwrap();
    assert_eq!(raw.header().wake, WakePolicy::Announced);
    drop((value, shared, private, raw));
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

// ---- maps ----

fn read_only_map(dir: &TestDir, name: &str) -> shmem::MapBuilder {
    Map::builder(name).dir(dir.path()).access(Access::ReadOnly)
}

/// Opens (creating) a transient map `name` in `d` with mode 0644: others may read it without
/// writing, so its writers wake at every publish (`WakePolicy::EveryPublish`).
fn shared_map(d: &str, name: &str) -> Map {
    Map::builder(name)
        .dir(d)
        .capacity(64 * 1024)
        .mode(0o644)
        .open()
        .unwrap()
}

fn assert_map_refused<T: std::fmt::Debug>(r: Result<T, Error>, name: &str, op: &str) {
    match r {
        Err(e @ Error::PermissionDenied { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(name) && msg.contains(op), "{msg}");
            assert!(msg.contains("read-only"), "{msg}");
        }
        other => panic!("{op} on a read-only map: {other:?}"),
    }
}

#[test]
fn a_read_only_map_reads_through_a_read_only_mapping_and_every_write_is_refused() {
    let dir = TestDir::new("ro");
    for lifetime in [Lifetime::Transient, Lifetime::Persistent] {
        let name = unique_name("ro-map");
        let rw = Map::builder(&name)
            .dir(dir.path())
            .capacity(64 * 1024)
            .lifetime(lifetime)
            .mode(0o644)
            .open()
            .unwrap();
        rw.set("a", b"alpha").unwrap();
        rw.set("b", b"beta").unwrap();
        let ro = read_only_map(&dir, &name).open_existing().unwrap();
        assert_eq!(ro.segment().access(), Access::ReadOnly);
        assert!(!ro.created());
        let perms = mapping_perms(ro.segment().as_ptr() as usize);
        assert!(
            perms.starts_with("r-") && perms.ends_with('s'),
            "{lifetime:?}: {perms}"
        );
        let before = rw.snapshot().unwrap();
        assert_eq!(ro.get("a").unwrap(), Some((b"alpha".to_vec(), 1)));
        assert_eq!(ro.get("zz").unwrap(), None);
        let mut buf = [0u8; 8];
        assert_eq!(ro.get_into("b", &mut buf).unwrap(), Some((4, 2)));
        assert_eq!(&buf[..4], b"beta");
        assert!(ro.contains_key("a").unwrap());
        assert_eq!((ro.len().unwrap(), ro.version()), (2, 2));
        assert_eq!(ro.snapshot().unwrap(), before);
        let keys: Vec<Vec<u8>> = ro.iter().unwrap().map(|e| e.key).collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);

        // Every write is refused before anything is touched, whatever its arguments.
        assert_map_refused(ro.set("a", b"forged"), &name, "set");
        assert_map_refused(ro.set("new", b"x"), &name, "set");
        assert_map_refused(ro.set("", b"x"), &name, "set");
        assert_map_refused(ro.set("big", &vec![0u8; 1 << 20]), &name, "set");
        assert_map_refused(ro.delete("b"), &name, "delete");
        assert_map_refused(ro.delete("missing"), &name, "delete");
        assert_eq!(ro.snapshot().unwrap(), before, "nothing changed");
        assert_eq!(rw.snapshot().unwrap(), before, "nothing changed");

        // The writer goes on, and the reader sees it.
        rw.set("a", b"again").unwrap();
        rw.delete("b").unwrap();
        assert_eq!(ro.get("a").unwrap(), Some((b"again".to_vec(), 3)));
        assert_eq!((ro.len().unwrap(), ro.version()), (1, 4));
        drop((ro, rw));
        if lifetime == Lifetime::Persistent {
            admin::remove(dir.path(), &name, false).unwrap();
        }
    }
    // Never creates.
    let missing = unique_name("ro-map-missing");
    let b = read_only_map(&dir, &missing).capacity(1024);
    assert!(matches!(b.open(), Err(Error::NotFound { .. })));
    assert!(matches!(
        b.create_new(),
        Err(Error::PermissionDenied { .. })
    ));
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

/// A read-only reader under a writer that republishes flat out: its retries never ask
/// writers to hold off (the mapping is read-only, so a write of `hold_off` would fault: this
/// test dies of SIGSEGV if the reader asks), and every value it reads is whole.
#[test]
fn a_read_only_map_reader_under_a_busy_writer_reads_whole_values_without_writing() {
    const LEN: usize = 32 * 1024;
    const ITERS: u32 = 5_000;
    let dir = TestDir::new("ro");
    let name = unique_name("ro-map-busy");
    let rw = Map::builder(&name)
        .dir(dir.path())
        .capacity(4 * LEN)
        .mode(0o644)
        .open()
        .unwrap();
    rw.set("k", &[0u8; LEN]).unwrap();
    let ro = read_only_map(&dir, &name).open_existing().unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=ITERS {
                rw.set("k", &[i as u8; LEN]).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut reads = 0u64;
        let mut buf = vec![0u8; LEN];
        while !done.load(Ordering::SeqCst) || reads == 0 {
            let (n, _) = ro.get_into("k", &mut buf).unwrap().expect("k is set");
            assert_eq!(n, LEN);
            assert!(buf.iter().all(|&b| b == buf[0]), "a torn value");
            reads += 1;
        }
    });
    assert_eq!(ro.get("k").unwrap().unwrap().0, vec![ITERS as u8; LEN]);
    drop((ro, rw));
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn read_only_map_waiters_in_another_process_are_woken_by_sets_of_their_key_or_any_key() {
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("ro-map-wait");
    let sut = shared_map(d, &name);
    assert_eq!(sut.segment().header().wake, WakePolicy::EveryPublish);

    // One key: a set of another key wakes it too (it sleeps on the control line), and it
    // sleeps again after re-checking its key; the set of its key ends the wait.
    let mut waiter = Proc::spawn(["ro-map-waiter", d, &name, "key-a", "0", "30000"]);
    waiter.expect("waiting", T);
    assert!(
        wait_for(T, || in_futex_waitv(waiter.pid())),
        "the waiter sleeps"
    );
    let wakeups = |pid: u32| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let n = |k: &str| -> u64 {
            s.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().parse().unwrap())
                .unwrap()
        };
        n("voluntary_ctxt_switches:") + n("nonvoluntary_ctxt_switches:")
    };
    let switches = wakeups(waiter.pid());
    sut.set("key-b", b"not this one").unwrap();
    // It was woken (it ran again) and went back to sleep on the same wait.
    assert!(
        wait_for(T, || wakeups(waiter.pid()) > switches
            && in_futex_waitv(waiter.pid())),
        "the waiter woke for another key's set and slept again"
    );
    sut.set("key-a", b"woken").unwrap();
    let (status, out) = waiter.wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(out.last().unwrap(), "changed 2 woken");

    // Any key.
    let since = sut.version().to_string();
    let mut waiter = Proc::spawn(["ro-map-waiter", d, &name, "-", &since, "30000"]);
    waiter.expect("waiting", T);
    assert!(wait_for(T, || in_futex_waitv(waiter.pid())));
    sut.delete("key-b").unwrap();
    let (status, out) = waiter.wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(out.last().unwrap(), "changed 3 -");

    // Nothing changes: both time out.
    for key in ["key-a", "-"] {
        let since = if key == "-" { "3" } else { "2" };
        let waiter = Proc::spawn(["ro-map-waiter", d, &name, key, since, "50"]);
        let (status, out) = waiter.wait_output(T);
        assert!(status.success(), "{out:?}");
        assert_eq!(out.last().unwrap(), "timeout", "{key}");
    }
    drop(sut);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn a_read_only_wait_on_a_map_whose_writers_wake_only_announced_waiters_is_refused() {
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("ro-map-nowait");
    let sut = Map::builder(&name).dir(d).capacity(4096).open().unwrap(); // 0600: nobody reads without writing
    assert_eq!(sut.segment().header().wake, WakePolicy::Announced);
    let ro = read_only_map(&dir, &name)
        .wait_spin(Duration::ZERO)
        .open_existing()
        .unwrap();
    let refused = |r: Result<u64, Error>| match r {
        Err(e @ Error::PermissionDenied { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&name) && msg.contains("read-write"), "{msg}");
        }
        other => panic!("{other:?}"),
    };
    refused(ro.wait_changed("k", 0, Some(Duration::from_secs(5))));
    refused(ro.wait_any(0, Some(Duration::from_secs(5))));
    // And in another process (another handle of the same user).
    let waiter = Proc::spawn(["ro-map-waiter", d, &name, "k", "0", "5000"]);
    let (status, out) = waiter.wait_output(T);
    assert!(status.success(), "{out:?}");
    let last = out.last().unwrap();
    assert!(
        last.starts_with("refused(") && last.contains(&name),
        "{last}"
    );
    // A change already there is still reported (no sleep needed).
    sut.set("k", b"x").unwrap();
    assert_eq!(
        ro.wait_changed("k", 0, Some(Duration::from_secs(5)))
            .unwrap(),
        1
    );
    assert_eq!(ro.wait_any(0, Some(Duration::from_secs(5))).unwrap(), 1);
    refused(ro.wait_changed("k", 1, Some(Duration::from_secs(5))));
    drop((ro, sut));
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn a_read_only_map_wait_is_cancelled_from_another_thread_without_writing() {
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("ro-map-cancel");
    let sut = Map::builder(&name)
        .dir(d)
        .capacity(4096)
        .mode(0o640)
        .open()
        .unwrap();
    let ro = read_only_map(&dir, &name)
        .wait_spin(Duration::ZERO)
        .open_existing()
        .unwrap();
    // On one key's wait and on the whole map's in turn.
    cancel_rounds(
        |round| round % 4 < 2,
        |round, cancelled| {
            let r = if round % 2 == 0 {
                ro.wait_changed_unless("k", 0, Some(T), cancelled)
            } else {
                ro.wait_any_unless(0, Some(T), cancelled)
            };
            r.map_err(|e| e.to_string())
        },
        || ro.wake_waiters(),
    );
    assert_eq!(sut.version(), 0, "nothing was published");
    drop((ro, sut));
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

/// 200 rounds of one cancel (the flag, then one `wake`) at a different moment of a read-only
/// waiter's loop each round: while it sleeps in the kernel (`futex_waitv`, seen in its
/// `/proc` syscall) when `in_kernel(round)`, else after a spin whose length changes with the
/// round. `wait(round, cancelled)` is the wait; a lost wake-up would leave it asleep until
/// the receive times out.
fn cancel_rounds<W>(in_kernel: impl Fn(u32) -> bool, wait: W, wake: impl Fn())
where
    W: Fn(u32, &dyn Fn() -> bool) -> Result<Option<u64>, String> + Sync,
{
    for round in 0..200u32 {
        let cancel = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                tid_tx
                    .send(rustix::thread::gettid().as_raw_nonzero().get())
                    .unwrap();
                let cancelled = || cancel.load(Ordering::SeqCst);
                tx.send(wait(round, &cancelled)).unwrap();
            });
            let tid = tid_rx.recv().unwrap();
            if in_kernel(round) {
                // Once in a while, only when it sleeps in the kernel.
                let path = format!("/proc/self/task/{tid}/syscall");
                assert!(wait_for(T, || std::fs::read_to_string(&path)
                    .is_ok_and(|s| s.starts_with("449 "))));
            } else {
                for _ in 0..(round * 37) % 5000 {
                    std::hint::spin_loop();
                }
            }
            cancel.store(true, Ordering::SeqCst);
            wake();
            let r = rx.recv_timeout(T).expect("the cancelled waiter returns");
            assert_eq!(r, Ok(None), "round {round}: cancelled, not changed");
        });
    }
}
