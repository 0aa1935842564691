//! Read-only handles (`Access::ReadOnly`) across real processes: they read, never write (the
//! kernel maps them read-only, every write is a permission error), hold a transient segment
//! alive like any handle, and wait without announcing themselves on values whose every
//! publish wakes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use shmem::{admin, Access, Error, Lifetime, Segment, Value, WakePolicy};
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
    // One cancel (flag, then one wake_waiters) at a different moment of the waiter's loop each
    // round; a lost wake-up would leave the waiter asleep until the receive times out.
    for round in 0..200u32 {
        let cancel = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                tid_tx
                    .send(rustix::thread::gettid().as_raw_nonzero().get())
                    .unwrap();
                let r = ro.wait_changed_unless(0, Some(T), || cancel.load(Ordering::SeqCst));
                tx.send(r.map_err(|e| e.to_string())).unwrap();
            });
            let tid = tid_rx.recv().unwrap();
            if round % 4 == 0 {
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
            ro.wake_waiters();
            let r = rx.recv_timeout(T).expect("the cancelled waiter returns");
            assert_eq!(r, Ok(None), "round {round}: cancelled, not changed");
        });
    }
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
fn only_values_pay_for_read_only_waiters() {
    // A 0644 value wakes at every publish (its read-only handles can wait); a 0644 map, which
    // has no read-only handle, and a raw segment keep waking announced waiters only.
    let dir = TestDir::new("ro");
    let d = dir.path().to_str().unwrap();
    let value = shared_value(d, &unique_name("ro-policy-value"));
    assert_eq!(value.segment().header().wake, WakePolicy::EveryPublish);
    let map = shmem::Map::builder(&unique_name("ro-policy-map"))
        .dir(d)
        .capacity(1024)
        .mode(0o644)
        .open()
        .unwrap();
    assert_eq!(map.segment().header().wake, WakePolicy::Announced);
    let raw = Segment::builder(&unique_name("ro-policy-raw"))
        .dir(d)
        .size(64)
        .mode(0o644)
        .open()
        .unwrap();
    assert_eq!(raw.header().wake, WakePolicy::Announced);
    drop((value, map, raw));
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}
