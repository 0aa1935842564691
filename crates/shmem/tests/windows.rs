//! The Windows backend across real processes (run under Wine by `.ci/windows.sh`).
//!
//! The "other process" is this test binary run again: the parent spawns
//! `current_exe() helper --exact --ignored` with `SHMEM_HELPER=<role> <name>`, and the
//! `helper` test (ignored in a normal run) plays that role. Children report on stdout line by line;
//! every wait has a deadline, and no assertion is about a duration.
#![cfg(windows)]

mod common;

use std::time::{Duration, Instant};

use common::{block, say, unique, wait_freed, Helper, DEADLINE};
use shmem::{Error, Lifetime, Segment, Value};

#[test]
#[ignore = "the other process of the tests here, which spawn it with --ignored"]
fn helper() {
    let spec = std::env::var("SHMEM_HELPER").expect("SHMEM_HELPER=<role> <name>");
    let (role, name) = spec.split_once(' ').expect("role and name");
    match role {
        // Opens the existing raw segment, checks the parent's bytes, writes its answer.
        "join" => {
            let seg = Segment::builder(name).open_existing().unwrap();
            assert!(!seg.created());
            let mut buf = [0u8; 5];
            seg.read(0, &mut buf).unwrap();
            assert_eq!(&buf, b"hello");
            seg.write(5, b"child").unwrap();
            say("joined");
        }
        // Creates a segment and holds it until killed.
        "hold" => {
            let seg = Segment::open(name, 4096).unwrap();
            assert!(seg.created());
            seg.write(0, b"held").unwrap();
            say("holding");
            block();
        }
        // Dies inside `set_with`, holding the writers' lock.
        "die-in-set" => {
            let v = Value::open(name, 64).unwrap();
            v.set_with(7, |buf| {
                buf.copy_from_slice(b"partial");
                say("locked");
                block();
            })
            .unwrap();
        }
        // Waits for 20 changes, sleeping at once each time, and reports each.
        "wait" => {
            let v = Value::builder(name)
                .capacity(64)
                .wait_spin(Duration::ZERO)
                .open_existing()
                .unwrap();
            let mut since = v.version();
            for _ in 0..20 {
                say(format!("waiting {since}"));
                since = v.wait_changed(since, Some(DEADLINE)).unwrap();
                say(format!("woke {since} {}", v.get_string().unwrap().0));
            }
        }
        // Publishes uniform values of varying lengths as fast as it can.
        "write" => {
            let v = Value::builder(name).capacity(4096).open_existing().unwrap();
            say("writing");
            for i in 0..3000u32 {
                let len = 64 + (i as usize * 37) % 4000;
                v.set_with(len, |buf| buf.fill(i as u8)).unwrap();
            }
            say("done");
        }
        other => panic!("unknown helper role {other}"),
    }
}

#[test]
fn created_flags_and_freed_at_last_close() {
    let name = unique("last-close");
    let seg = Segment::open(&name, 4096).unwrap();
    assert!(seg.created());
    assert!(seg.object_name().starts_with("Local\\shmem.shmtest-"));
    seg.write(0, b"hello").unwrap();
    let again = Segment::open(&name, 4096).unwrap();
    assert!(
        !again.created(),
        "the second opener must see ERROR_ALREADY_EXISTS"
    );
    assert!(matches!(
        Segment::builder(&name).size(4096).create_new(),
        Err(Error::Exists { .. })
    ));
    drop(again);
    let mut h = Helper::spawn("join", &name);
    h.expect("joined");
    h.finish();
    let mut buf = [0u8; 5];
    seg.read(5, &mut buf).unwrap();
    assert_eq!(&buf, b"child");
    drop(seg);
    wait_freed(&name);
    // A new generation starts zero-filled.
    let seg = Segment::open(&name, 4096).unwrap();
    assert!(seg.created());
    seg.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 5]);
}

#[test]
fn freed_after_terminate_process() {
    let name = unique("terminate");
    let mut h = Helper::spawn("hold", &name);
    h.expect("holding");
    let seg = Segment::builder(&name).open_existing().unwrap();
    assert!(!seg.created());
    let mut buf = [0u8; 4];
    seg.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"held");
    drop(seg);
    h.kill();
    wait_freed(&name);
}

#[test]
fn bad_requests_are_named_errors() {
    let name = unique("errors");
    assert!(matches!(
        Segment::builder(&name).open_existing(),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Segment::builder(&name)
            .size(64)
            .lifetime(Lifetime::Persistent)
            .open(),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        Segment::builder(&name).open(),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        Segment::open("bad/name", 64),
        Err(Error::InvalidName { .. })
    ));
    let seg = Segment::open(&name, 100).unwrap();
    assert!(matches!(
        Value::builder(&name).capacity(64).open(),
        Err(Error::Incompatible { .. })
    ));
    assert!(matches!(
        Segment::builder(&name).size(1 << 20).open(),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        seg.write(99, b"xy"),
        Err(Error::InvalidSize { .. })
    ));
}

#[test]
fn a_writer_killed_holding_the_lock_is_taken_over() {
    let name = unique("killed-writer");
    let v = Value::builder(&name)
        .capacity(64)
        .lock_timeout(Duration::from_millis(50))
        .open()
        .unwrap();
    v.set_str("before").unwrap();
    let mut h = Helper::spawn("die-in-set", &name);
    h.expect("locked");
    // Alive: its witness event exists, so we time out rather than take over.
    assert!(matches!(v.set_str("too early"), Err(Error::Timeout { .. })));
    assert_eq!(v.get_string().unwrap().0, "before");
    h.kill();
    // Gone: the kernel destroyed its witness; the lock is ours at once, whatever the timeout.
    let v = Value::builder(&name)
        .lock_timeout(Duration::from_secs(30))
        .open_existing()
        .unwrap();
    let version = v.set_str("after").unwrap();
    assert_eq!(v.get_string().unwrap(), ("after".to_owned(), version));
}

#[test]
fn a_waiter_in_another_process_is_woken_by_set() {
    let name = unique("waiter");
    let v = Value::open(&name, 64).unwrap();
    let mut h = Helper::spawn("wait", &name);
    for i in 0..20 {
        let since: u64 = h.line().strip_prefix("waiting ").unwrap().parse().unwrap();
        let version = v.set_str(&format!("round {i}")).unwrap();
        assert!(version > since);
        assert_eq!(h.line(), format!("woke {version} round {i}"));
    }
    h.finish();
}

#[test]
fn values_are_never_torn_between_two_processes() {
    let name = unique("torn");
    let v = Value::open(&name, 4096).unwrap();
    let mut h = Helper::spawn("write", &name);
    h.expect("writing");
    let mut buf = vec![0u8; 4096];
    let mut reads = 0u64;
    let mut last = 0;
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "the writer never reached version 3000"
        );
        let (len, version) = v.get(&mut buf).unwrap();
        assert!(version >= last);
        last = version;
        if version > 0 {
            let i = (version - 1) as u32;
            assert_eq!(len, 64 + (i as usize * 37) % 4000, "version {version}");
            assert!(
                buf[..len].iter().all(|&b| b == i as u8),
                "torn value at version {version}"
            );
            reads += 1;
        }
        if version == 3000 {
            break;
        }
    }
    h.expect("done");
    h.finish();
    assert!(reads > 0);
}
