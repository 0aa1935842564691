//! The shared value across real processes: never torn, crash-safe writers, waiting, and a
//! hostile peer.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shmem::{Error, Lifetime, Value};
use shmem_testkit::{checked_value, field, unique_name, verify_value, Proc, Rng, TestDir};

const T: Duration = Duration::from_secs(30);

#[test]
fn torture_two_writers_two_readers_never_see_a_torn_value() {
    let dir = TestDir::new("val");
    let name = unique_name("torture");
    let d = dir.path().to_str().unwrap();
    // Hold the value for the whole run so that it is one generation throughout.
    let sut = Value::builder(&name).dir(d).capacity(8192).open().unwrap();
    let millis = "3000";
    let mut procs: Vec<Proc> = Vec::new();
    for seed in ["11", "22"] {
        procs.push(Proc::spawn(["writer", d, &name, "8192", millis, seed]));
    }
    for _ in 0..2 {
        procs.push(Proc::spawn(["reader", d, &name, "8192", millis]));
    }
    let mut sets = 0u64;
    let mut reads = 0u64;
    for p in procs {
        let (status, out) = p.wait_output(T);
        assert!(status.success(), "{out:?}");
        let last = out.last().unwrap();
        if last.contains("sets=") {
            sets += field(last, "sets").parse::<u64>().unwrap();
        } else {
            assert_eq!(field(last, "invalid"), "0");
            reads += field(last, "reads").parse::<u64>().unwrap();
            assert!(field(last, "changes").parse::<u64>().unwrap() > 0, "{last}");
        }
    }
    assert_eq!(sut.version(), sets, "every set increments the version once");
    verify_value(&sut.get_vec().unwrap().0).unwrap();
    println!("torture: {sets} sets, {reads} verified reads, 0 torn");
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn writers_killed_at_random_moments_never_damage_the_value_nor_wedge_the_lock() {
    let dir = TestDir::new("val");
    let name = unique_name("crash");
    let d = dir.path().to_str().unwrap();
    let cap = 256 * 1024;
    let sut = Value::builder(&name)
        .dir(d)
        .capacity(cap)
        .lock_timeout(Duration::from_secs(1))
        .open()
        .unwrap();
    let mut rng = Rng::new(0x5eed);
    let mut worst = Duration::ZERO;
    let mut last_version = 0;
    let kills = 200;
    for i in 0..kills {
        let mut p = Proc::spawn(["crash-writer", d, &name, &cap.to_string(), &i.to_string()]);
        p.expect("ready", T);
        // Let it write for a random moment (0..2 ms) so the kill lands anywhere in `set`.
        let until = Instant::now() + Duration::from_micros(rng.below(2000));
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        p.kill9();
        let (value, version) = sut.get_vec().unwrap();
        verify_value(&value).unwrap_or_else(|e| panic!("kill {i}: {e}"));
        assert!(version >= last_version, "kill {i}: version went back");
        let t0 = Instant::now();
        let mine = checked_value(&mut rng, 1024);
        last_version = sut.set(&mine).unwrap_or_else(|e| panic!("kill {i}: {e}"));
        worst = worst.max(t0.elapsed());
        assert_eq!(sut.get_vec().unwrap(), (mine, last_version));
    }
    // Every `set` above succeeded within the lock timeout; how long the kernel took to see
    // each death is reported, not asserted (it depends on the scheduler).
    println!("{kills} writers killed; slowest next set: {worst:?}");
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn a_waiter_in_another_process_wakes_on_set_and_times_out_otherwise() {
    let dir = TestDir::new("val");
    let name = unique_name("wait");
    let d = dir.path().to_str().unwrap();
    let sut = Value::builder(&name).dir(d).capacity(64).open().unwrap();
    let v0 = sut.set(b"zero").unwrap();

    let mut w = Proc::spawn(["waiter", d, &name, &v0.to_string(), "30000"]);
    w.expect("waiting", T);
    let v1 = sut.set(b"one").unwrap();
    let (status, out) = w.wait_output(T);
    assert!(status.success());
    assert_eq!(out, [format!("changed {v1} one")]);

    // The helper's own deadline ends its wait (how long that took is not asserted: it is
    // measured across processes, and a busy machine stretches it).
    let w = Proc::spawn(["waiter", d, &name, &v1.to_string(), "200"]);
    let (status, out) = w.wait_output(T);
    assert!(status.success());
    assert_eq!(out, ["waiting", "timeout"]);

    // A change between a get and the wait is not missed.
    let (_, seen) = sut.get_vec().unwrap();
    let helper = Value::builder(&name).dir(d).open_existing().unwrap();
    let v2 = helper.set(b"two").unwrap();
    assert_eq!(
        sut.wait_changed(seen, Some(Duration::from_secs(5)))
            .unwrap(),
        v2
    );
    assert!(matches!(
        sut.wait_changed(v2, Some(Duration::from_millis(20))),
        Err(Error::Timeout { .. })
    ));
}

#[test]
fn oversize_empty_and_small_buffer_are_clear_and_lose_nothing() {
    let dir = TestDir::new("val");
    let name = unique_name("edges");
    let sut = Value::builder(&name)
        .dir(dir.path())
        .capacity(100)
        .open()
        .unwrap();
    assert_eq!(sut.capacity(), 128, "capacity rounds up to 64 bytes");
    assert_eq!(
        sut.get_vec().unwrap(),
        (vec![], 0),
        "a new value is empty at version 0"
    );
    let v = sut.set(b"keep me").unwrap();
    let e = sut.set(&[7u8; 129]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                len: 129,
                capacity: 128,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert_eq!(sut.get_vec().unwrap(), (b"keep me".to_vec(), v));

    let mut small = [0xAAu8; 3];
    let e = sut.get(&mut small).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BufferTooSmall {
                needed: 7,
                capacity: 3,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(small, [0xAA; 3], "nothing copied");

    let v2 = sut.set(b"").unwrap();
    assert_eq!(sut.get(&mut small).unwrap(), (0, v2));
    assert_eq!(sut.get_vec().unwrap(), (vec![], v2));

    let e = Value::builder(&name)
        .dir(dir.path())
        .capacity(4096)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSize { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("at most 128 bytes, less than the 4096"),
        "{e}"
    );
    let e = shmem::Segment::builder(&name)
        .dir(dir.path())
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e}");
}

/// Runs every operation once against whatever is in the segment: each must return (an error
/// is fine). The bound catches a hang, not a slow call: a read under a scribbler may use its
/// whole 2 s deadline (twice here), so the bound is far above the library's own deadlines.
fn exercise(sut: &Value) -> Result<(), String> {
    let t0 = Instant::now();
    let mut buf = vec![0u8; sut.capacity()];
    let _ = sut.get(&mut buf);
    let _ = sut.get_vec();
    let _ = sut.set(b"after the scribbles");
    let _ = sut.wait_changed(sut.version(), Some(Duration::from_millis(1)));
    let _ = sut.wait_changed(u64::MAX, Some(Duration::from_millis(1)));
    let spent = t0.elapsed();
    if spent > Duration::from_secs(30) {
        return Err(format!("operations took {spent:?}"));
    }
    Ok(())
}

#[test]
fn a_hostile_process_scribbling_over_the_segment_causes_errors_not_crashes() {
    let dir = TestDir::new("val");
    let name = unique_name("hostile");
    // Persistent: its memory is the file itself, which the scribbler writes (a transient
    // segment's memory is SysV shared memory, not the 64-byte name file).
    let sut = Value::builder(&name)
        .dir(dir.path())
        .capacity(1024)
        .lifetime(Lifetime::Persistent)
        .lock_timeout(Duration::from_millis(20))
        .open()
        .unwrap();
    let file = dir.file(&name);
    assert!(
        std::fs::metadata(&file).unwrap().len() > 1024,
        "the file holds the memory"
    );
    let mut p = Proc::spawn(["scribble", file.to_str().unwrap(), "99", "200000"]);
    p.expect("ready", T);
    let mut rounds = 0;
    let mut errors = 0;
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        exercise(&sut).unwrap();
        if sut.get_vec().is_err() {
            errors += 1;
        }
        rounds += 1;
    }
    drop(p);
    println!("hostile: {rounds} rounds against a scribbler, {errors} read errors, no crash");
    drop(sut);
    shmem::admin::remove(dir.path(), &name, true).unwrap();
    assert!(dir.files().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_in_the_control_area_give_errors_or_values_never_ub(
        patches in proptest::collection::vec((0u64..448, proptest::collection::vec(any::<u8>(), 1..24)), 1..12)
    ) {
        let dir = TestDir::new("prop");
        let name = unique_name("prop");
        // Persistent, so that the file written below is the value's memory.
        let sut = Value::builder(&name)
            .dir(dir.path())
            .capacity(256)
            .lifetime(Lifetime::Persistent)
            .lock_timeout(Duration::from_millis(20))
            .open()
            .unwrap();
        sut.set(b"a good value").unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(dir.file(&name)).unwrap();
        for (off, bytes) in &patches {
            // The header (first 64 bytes) is only read at attach; scribble from the control
            // block on, where every operation looks.
            f.write_at(bytes, 64 + off).unwrap();
        }
        exercise(&sut).map_err(TestCaseError::fail)?;
        if let Ok((v, _)) = sut.get_vec() {
            prop_assert!(v.len() <= sut.capacity());
        }
    }
}

#[test]
fn a_wait_is_cancelled_from_another_thread() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};

    let dir = TestDir::new("val");
    let name = unique_name("cancel");
    let sut = Arc::new(
        Value::builder(&name)
            .dir(dir.path())
            .capacity(64)
            .open()
            .unwrap(),
    );
    let v = sut.set(b"x").unwrap();
    let cancelled = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    {
        let (sut, cancelled) = (Arc::clone(&sut), Arc::clone(&cancelled));
        std::thread::spawn(move || {
            let r = sut.wait_changed_unless(v, None, || cancelled.load(Ordering::SeqCst));
            let _ = tx.send(r);
        });
    }
    // Nothing changes: the waiter must still be waiting.
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    cancelled.store(true, Ordering::SeqCst);
    sut.wake_waiters();
    let r = rx.recv_timeout(T).expect("the waiter returned");
    assert_eq!(r.unwrap(), None);
    assert_eq!(sut.version(), v, "waking waiters changes no version");
}
