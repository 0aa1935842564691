//! The map across real processes: a model check, writers killed at random instants, a full
//! map, space reuse under churn, key limits, waits, and a hostile peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use shmem::{Delete, Error, Lifetime, Map};
use shmem_testkit::{
    field, hex, keyed_value, unique_name, verify_keyed, wait_for, Proc, Rng, TestDir,
};

const T: Duration = Duration::from_secs(30);

fn open(dir: &TestDir, name: &str, cap: usize) -> Map {
    Map::builder(name)
        .dir(dir.path())
        .capacity(cap)
        .open()
        .unwrap()
}

/// One operation of the model check; `remote` ones are run by the helper process.
#[derive(Clone, Debug)]
enum Op {
    Set { key: u8, len: usize, remote: bool },
    Delete { key: u8, remote: bool },
    Get { key: u8, remote: bool },
}

fn op() -> impl Strategy<Value = Op> {
    // Few keys, so that sets overwrite, deletes hit and probe chains form and shift.
    let key = 0u8..12;
    prop_oneof![
        4 => (key.clone(), 0usize..300, any::<bool>())
            .prop_map(|(key, len, remote)| Op::Set { key, len, remote }),
        2 => (key.clone(), any::<bool>()).prop_map(|(key, remote)| Op::Delete { key, remote }),
        2 => (key, any::<bool>()).prop_map(|(key, remote)| Op::Get { key, remote }),
    ]
}

fn key_name(k: u8) -> String {
    // Varied lengths, up to the 255-byte limit.
    let mut s = format!("key-{k}-");
    s.extend(std::iter::repeat('x').take(usize::from(k) * 20));
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random set/delete/get sequences, some run by a second process through its own handle,
    /// checked after every step against a `HashMap` (values, versions, len), and at the end
    /// against a snapshot. The heap is small, so compaction runs too.
    #[test]
    fn the_map_behaves_like_a_hashmap_across_two_processes(ops in prop::collection::vec(op(), 1..120)) {
        let dir = TestDir::new("map");
        let name = unique_name("model");
        let d = dir.path().to_str().unwrap();
        let sut = open(&dir, &name, 8192);
        let mut peer = Proc::spawn(["map-serve", d, &name, "8192"]);
        peer.expect("ready", T);
        let mut model: HashMap<u8, (Vec<u8>, u64)> = HashMap::new();
        let mut version = 0u64;
        let mut rng = Rng::new(ops.len() as u64);
        for op in &ops {
            match *op {
                Op::Set { key, len, remote } => {
                    let value: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                    let k = key_name(key);
                    let v = if remote {
                        let vh = if value.is_empty() { "-".to_owned() } else { hex(&value) };
                        peer.send(&format!("set {} {vh}", hex(k.as_bytes())));
                        let l = peer.line(T);
                        prop_assert!(l.starts_with("ok "), "{l}");
                        l[3..].parse::<u64>().unwrap()
                    } else {
                        sut.set(&k, &value).unwrap()
                    };
                    version += 1;
                    prop_assert_eq!(v, version);
                    model.insert(key, (value, v));
                }
                Op::Delete { key, remote } => {
                    let k = key_name(key);
                    let got = if remote {
                        peer.send(&format!("del {}", hex(k.as_bytes())));
                        let l = peer.line(T);
                        match l.strip_prefix("removed ") {
                            Some(v) => Delete::Removed { version: v.parse().unwrap() },
                            None => { prop_assert_eq!(&l, "notfound"); Delete::NotFound }
                        }
                    } else {
                        sut.delete(&k).unwrap()
                    };
                    let expected = if model.remove(&key).is_some() {
                        version += 1;
                        Delete::Removed { version }
                    } else {
                        Delete::NotFound
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::Get { key, remote } => {
                    let k = key_name(key);
                    let got = if remote {
                        peer.send(&format!("get {}", hex(k.as_bytes())));
                        let l = peer.line(T);
                        if l == "absent" {
                            None
                        } else {
                            let w: Vec<&str> = l.split(' ').collect();
                            prop_assert_eq!(w[0], "found");
                            let bytes = if w.len() > 2 { shmem_testkit_unhex(w[2]) } else { Vec::new() };
                            Some((bytes, w[1].parse::<u64>().unwrap()))
                        }
                    } else {
                        sut.get(&k).unwrap()
                    };
                    prop_assert_eq!(got, model.get(&key).cloned());
                }
            }
            prop_assert_eq!(sut.version(), version);
            prop_assert_eq!(sut.len().unwrap(), model.len());
        }
        peer.send("len");
        prop_assert_eq!(peer.line(T), format!("len {}", model.len()));
        let snap = sut.snapshot().unwrap();
        prop_assert_eq!(snap.version(), version);
        prop_assert_eq!(snap.len(), model.len());
        for (k, (v, ver)) in &model {
            let e = snap.get(key_name(*k)).unwrap();
            prop_assert_eq!(&e.value, v);
            prop_assert_eq!(e.version, *ver);
        }
        prop_assert!(peer.finish().success());
        drop(sut);
        prop_assert!(dir.files().is_empty());
    }
}

fn shmem_testkit_unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn writers_killed_at_random_instants_never_tear_an_entry_nor_wedge_the_next() {
    let dir = TestDir::new("map");
    let name = unique_name("crash");
    let d = dir.path().to_str().unwrap();
    let cap = 64 * 1024;
    let sut = Map::builder(&name)
        .dir(d)
        .capacity(cap)
        .lock_timeout(Duration::from_secs(5))
        .open()
        .unwrap();
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let snapshots = AtomicU64::new(0);
    let mut rng = Rng::new(0x5eed);
    let rounds = 40;
    std::thread::scope(|s| {
        // The reader: every get and every snapshot must verify under its key.
        let reader = s.spawn(|| {
            let mut r = Rng::new(77);
            let mut last_snapshot = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = shmem_testkit::roles::crash_writer_key(&mut r);
                if let Some((v, _)) = sut.get(&key).unwrap() {
                    verify_keyed(key.as_bytes(), &v).unwrap_or_else(|e| panic!("get: {e}"));
                }
                reads.fetch_add(1, Ordering::Relaxed);
                if r.below(64) == 0 {
                    let snap = sut.snapshot().unwrap();
                    assert!(snap.version() >= last_snapshot, "snapshot went back");
                    last_snapshot = snap.version();
                    for e in &snap {
                        verify_keyed(&e.key, &e.value)
                            .unwrap_or_else(|err| panic!("snapshot: {err}"));
                        assert!(e.version <= snap.version());
                    }
                    snapshots.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Two writers at all times; each round the older is killed after a random number of
        // operations (counted by the map's version, not by a clock), and a new one started.
        let spawn = |seed: u64| {
            let mut p = Proc::spawn([
                "map-crash-writer",
                d,
                &name,
                &cap.to_string(),
                &seed.to_string(),
            ]);
            p.expect("ready", T);
            p
        };
        let mut writers = std::collections::VecDeque::from([spawn(1), spawn(2)]);
        for round in 0..rounds {
            let target = sut.version() + 1 + rng.below(400);
            assert!(
                wait_for(T, || sut.version() >= target),
                "writers made no progress in round {round} (wedged?)"
            );
            writers.pop_front().unwrap().kill9();
            writers.push_back(spawn(100 + round));
        }
        for w in writers {
            w.kill9();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    });
    // Quiescent: len equals what iteration sees, every entry verifies, and the next writer
    // is never wedged (the lock of a killed holder is taken over).
    let snap = sut.snapshot().unwrap();
    assert_eq!(sut.len().unwrap(), snap.len());
    for e in &snap {
        verify_keyed(&e.key, &e.value).unwrap();
    }
    let v = sut
        .set("hot-0", &keyed_value(&mut rng, b"hot-0", 64))
        .unwrap();
    assert_eq!(v, snap.version() + 1);
    assert_eq!(sut.snapshot().unwrap().len(), sut.len().unwrap());
    println!(
        "crash: {rounds} writers killed, {} ops, {} verified gets, {} verified snapshots, 0 torn",
        sut.version(),
        reads.load(Ordering::Relaxed),
        snapshots.load(Ordering::Relaxed)
    );
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn a_full_map_refuses_and_changes_nothing_and_deletes_make_room() {
    let dir = TestDir::new("map");
    let name = unique_name("full");
    let sut = open(&dir, &name, 4096);
    let mut i = 0;
    let err = loop {
        match sut.set(format!("k{i}"), &[i as u8; 100]) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::MapFull { .. }), "{err}");
    assert!(
        err.to_string().contains(&name) && err.to_string().contains("heap"),
        "{err}"
    );
    let before = sut.snapshot().unwrap();
    let usage = sut.usage().unwrap();
    assert_eq!((usage.keys, usage.heap_bytes), (i, 4096));
    // Each record is 16 + its 2 or 3 key bytes zero-padded to 8 + 100, rounded to 8: 128 bytes;
    // the next does not fit.
    assert_eq!(usage.live_bytes, 128 * i);
    assert!(usage.live_bytes + 128 > usage.heap_bytes);
    // A new key, and a grown existing one: both refused, nothing changes.
    assert!(matches!(
        sut.set("new", &[1; 100]),
        Err(Error::MapFull { .. })
    ));
    assert!(matches!(
        sut.set("k0", &[1; 400]),
        Err(Error::MapFull { .. })
    ));
    assert_eq!(sut.snapshot().unwrap(), before);
    assert_eq!(sut.version(), before.version());
    // Another process sees the same, and is refused too.
    let d = dir.path().to_str().unwrap();
    let mut peer = Proc::spawn(["map-serve", d, &name, "4096"]);
    peer.expect("ready", T);
    peer.send(&format!("set {} {}", hex(b"new2"), hex(&[2; 100])));
    let l = peer.line(T);
    assert!(l.starts_with("err ") && l.contains("full"), "{l}");
    // A delete frees room: the next set fits (after a compaction).
    assert!(matches!(sut.delete("k0").unwrap(), Delete::Removed { .. }));
    peer.send(&format!("set {} {}", hex(b"new2"), hex(&[2; 100])));
    assert!(peer.line(T).starts_with("ok "));
    assert_eq!(sut.get("new2").unwrap().unwrap().0, vec![2; 100]);
    assert!(peer.finish().success());
    drop(sut);

    // The key limit: tiny values, many keys.
    let name = unique_name("keys");
    let sut = open(&dir, &name, 4096);
    let max = sut.max_keys();
    for i in 0..max {
        sut.set(format!("{i}"), b"").unwrap();
    }
    let err = sut.set("one-more", b"").unwrap_err();
    assert!(
        matches!(err, Error::MapFull { .. }) && err.to_string().contains("keys"),
        "{err}"
    );
    assert_eq!(sut.len().unwrap(), max);
    // A record larger than the whole heap is TooLarge, not MapFull.
    let err = sut.set("big", &vec![0; 5000]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn churn_with_changing_sizes_never_runs_out_while_live_data_fits() {
    let dir = TestDir::new("map");
    let name = unique_name("churn");
    let d = dir.path().to_str().unwrap();
    // Live data at most 2 x 24 keys x (16 + 8 + 300) bytes, about 15.6 KiB of a 24 KiB heap;
    // 2 x 20,000 rewrites would need ~6 MiB without reuse.
    let sut = open(&dir, &name, 24 * 1024);
    let peer = Proc::spawn(["map-churn", d, &name, "peer", "24", "300", "20000", "5"]);
    let mut rng = Rng::new(6);
    let mut model = HashMap::new();
    for _ in 0..20_000 {
        let key = format!("mine-{}", rng.below(24));
        if rng.below(16) == 0 {
            sut.delete(&key).unwrap();
            model.remove(&key);
        } else {
            let v = keyed_value(&mut rng, key.as_bytes(), 300);
            sut.set(&key, &v).unwrap();
            model.insert(key, v);
        }
    }
    let (status, out) = peer.wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(field(out.last().unwrap(), "sets"), "20000");
    let snap = sut.snapshot().unwrap();
    for (k, v) in &model {
        assert_eq!(&snap.get(k).unwrap().value, v);
    }
    assert_eq!(snap.len(), sut.len().unwrap());
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn keys_of_255_bytes_work_across_processes_and_longer_or_empty_ones_are_refused() {
    let dir = TestDir::new("map");
    let name = unique_name("keys");
    let d = dir.path().to_str().unwrap();
    let sut = open(&dir, &name, 4096);
    let long = vec![b'k'; 255];
    sut.set(&long, b"long").unwrap();
    let mut peer = Proc::spawn(["map-serve", d, &name, "0"]);
    peer.expect("ready", T);
    peer.send(&format!("get {}", hex(&long)));
    assert_eq!(peer.line(T), format!("found 1 {}", hex(b"long")));
    assert!(peer.finish().success());
    for bad in [vec![b'k'; 256], Vec::new()] {
        let err = sut.set(&bad, b"x").unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
        assert!(err.to_string().contains(&name), "{err}");
        assert!(matches!(sut.get(&bad), Err(Error::InvalidKey { .. })));
        assert!(matches!(sut.delete(&bad), Err(Error::InvalidKey { .. })));
    }
    // A value under the map's name is not a map.
    let other = unique_name("kind");
    let value = shmem::Value::builder(&other)
        .dir(d)
        .capacity(64)
        .open()
        .unwrap();
    let err = Map::builder(&other).dir(d).capacity(64).open().unwrap_err();
    assert!(err.to_string().contains("map"), "{err}");
    drop(value);
    // Non-UTF-8 keys are bytes like any other.
    sut.set([0xff, 0x00, 0xfe], b"bin").unwrap();
    assert_eq!(sut.get([0xff, 0x00, 0xfe]).unwrap().unwrap().0, b"bin");
    let mut small = [0u8; 2];
    let err = sut.get_into(&long, &mut small).unwrap_err();
    assert!(
        matches!(err, Error::BufferTooSmall { needed: 4, .. }),
        "{err}"
    );
    let mut buf = [0u8; 8];
    assert_eq!(sut.get_into(&long, &mut buf).unwrap(), Some((4, 1)));
    assert_eq!(sut.get_into("absent", &mut buf).unwrap(), None);
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn waits_on_one_key_and_on_any_key_are_woken_by_another_process() {
    let dir = TestDir::new("map");
    let name = unique_name("wait");
    let d = dir.path().to_str().unwrap();
    let sut = open(&dir, &name, 4096);
    // A waiter on key "a" is not satisfied by changes of other keys.
    let mut on_a = Proc::spawn(["map-waiter", d, &name, "a", "0", "30000"]);
    let mut any = Proc::spawn(["map-waiter", d, &name, "-", "0", "30000"]);
    on_a.expect("waiting", T);
    any.expect("waiting", T);
    let v1 = sut.set("b", b"1").unwrap();
    assert_eq!(any.wait_output(T).1, vec![format!("changed {v1}")]);
    sut.delete("b").unwrap();
    let va = sut.set("a", b"2").unwrap();
    assert_eq!(va, 3);
    assert_eq!(on_a.wait_output(T).1, vec![format!("changed {va}")]);
    // A key's version back to 0 (deleted) is a change too; here woken by another process.
    let mut gone = Proc::spawn(["map-waiter", d, &name, "a", &va.to_string(), "30000"]);
    gone.expect("waiting", T);
    let mut peer = Proc::spawn(["map-serve", d, &name, "0"]);
    peer.expect("ready", T);
    peer.send(&format!("del {}", hex(b"a")));
    assert!(peer.line(T).starts_with("removed "));
    assert_eq!(gone.wait_output(T).1, vec!["changed 0".to_owned()]);
    // In-process waits that are already satisfied return at once.
    assert_eq!(
        sut.wait_any(0, Some(Duration::ZERO)).unwrap(),
        sut.version()
    );
    assert_eq!(sut.wait_changed("a", 7, Some(Duration::ZERO)).unwrap(), 0);
    assert!(peer.finish().success());
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn waits_time_out_when_nothing_changes() {
    let dir = TestDir::new("map");
    let name = unique_name("timeout");
    let d = dir.path().to_str().unwrap();
    let sut = open(&dir, &name, 4096);
    sut.set("other", b"x").unwrap();
    let v = sut.version();
    let err = sut
        .wait_any(v, Some(Duration::from_millis(20)))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let err = sut
        .wait_changed("k", 0, Some(Duration::from_millis(20)))
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. }) && err.to_string().contains(&name),
        "{err}"
    );
    let w = Proc::spawn(["map-waiter", d, &name, "k", "0", "50"]);
    assert_eq!(w.wait_output(T).1, vec!["waiting", "timeout"]);
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn a_hostile_process_scribbling_over_the_whole_map_causes_errors_not_crashes_or_hangs() {
    let dir = TestDir::new("map");
    let name = unique_name("hostile");
    let d = dir.path().to_str().unwrap();
    // Persistent: its memory is the file the scribbler writes (a transient map's memory is
    // SysV shared memory, not its 64-byte name file).
    let sut = Map::builder(&name)
        .dir(d)
        .capacity(16 * 1024)
        .lifetime(Lifetime::Persistent)
        .lock_timeout(Duration::from_millis(200))
        .open()
        .unwrap();
    let mut rng = Rng::new(3);
    for i in 0..60 {
        let k = format!("k{i}");
        sut.set(&k, &keyed_value(&mut rng, k.as_bytes(), 100))
            .unwrap();
    }
    let file = dir.file(&name);
    let evil = Proc::spawn(["scribble-all", file.to_str().unwrap(), "99", "200000"]);
    // The calls run on a thread, so that a hang fails the test instead of stalling the run.
    let (done_tx, done) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let (ok, errors) = hostile_rounds(&sut, &mut rng);
        let _ = done_tx.send(());
        (sut, ok, errors)
    });
    // Far above what 600 calls may take with their own deadlines (reads 2 s, the lock 200 ms).
    done.recv_timeout(Duration::from_secs(600))
        .expect("a call on the scribbled map hung");
    let (sut, ok, errors) = worker.join().unwrap();
    let (status, out) = evil.wait_output(T);
    assert!(status.success(), "{out:?}");
    println!("hostile: {ok} calls ok, {errors} errors, no crash, no hang");
    drop(sut);
    shmem::admin::remove(dir.path(), &name, true).unwrap();
    assert!(dir.files().is_empty());
}

/// 100 rounds of every map operation against whatever a scribbler left; returns how many calls
/// succeeded and how many gave an expected error (any other error fails the test).
fn hostile_rounds(sut: &Map, rng: &mut Rng) -> (u64, u64) {
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut count = |r: Result<(), Error>| match r {
        Ok(()) => ok += 1,
        Err(Error::Corrupt { .. } | Error::Timeout { .. } | Error::MapFull { .. }) => errors += 1,
        Err(e) => panic!("unexpected error kind: {e}"),
    };
    for round in 0..100u64 {
        let k = format!("k{}", round % 80);
        count(sut.get(&k).map(drop));
        count(sut.set(&k, &keyed_value(rng, k.as_bytes(), 100)).map(drop));
        count(sut.delete(format!("k{}", round % 7)).map(drop));
        count(sut.snapshot().map(drop));
        count(sut.len().map(drop));
        count(
            sut.wait_any(u64::MAX, Some(Duration::from_millis(1)))
                .map(drop)
                .or_else(|e| match e {
                    Error::Timeout { .. } => Ok(()),
                    e => Err(e),
                }),
        );
    }
    (ok, errors)
}

#[test]
fn garbage_in_every_byte_of_the_map_area_gives_errors_or_values_never_ub() {
    use std::os::unix::fs::FileExt;
    let dir = TestDir::new("map");
    let name = unique_name("garbage");
    // Persistent, so that the file written below is the map's memory.
    let sut = Map::builder(&name)
        .dir(dir.path())
        .capacity(2048)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap();
    for i in 0..20 {
        sut.set(format!("k{i}"), &[i; 30]).unwrap();
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.file(&name))
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut rng = Rng::new(4);
    for pass in 0..30 {
        // Each pass: random bytes over everything past the header and the lock word (a live
        // lock word named by garbage only delays writers by the lock timeout).
        let junk: Vec<u8> = (0..len - 128).map(|_| rng.next_u64() as u8).collect();
        f.write_at(&junk, 128).unwrap();
        f.write_at(&rng.next_u64().to_le_bytes()[..], 64).unwrap(); // the map version
        if pass % 3 == 0 {
            // Plausible garbage: small numbers everywhere.
            let small: Vec<u8> = (0..len - 128).map(|_| (rng.below(4)) as u8).collect();
            f.write_at(&small, 128).unwrap();
        }
        let _ = sut.get("k1");
        let _ = sut.snapshot();
        let _ = sut.len();
        let _ = sut.set("k2", b"v");
        let _ = sut.delete("k3");
        let _ = sut.get_into("k4", &mut [0u8; 8]);
    }
    drop(sut);
    shmem::admin::remove(dir.path(), &name, true).unwrap();
    assert!(dir.files().is_empty());
}

#[test]
fn a_persistent_map_keeps_its_entries_with_nobody_attached_and_bad_capacities_are_refused() {
    let dir = TestDir::new("map");
    let name = unique_name("persist");
    let d = dir.path().to_str().unwrap();
    let b = Map::builder(&name)
        .dir(d)
        .capacity(4096)
        .lifetime(shmem::Lifetime::Persistent);
    let m = b.create_new().unwrap();
    m.set("k", b"kept").unwrap();
    assert!(matches!(b.create_new(), Err(Error::Exists { .. })));
    drop(m);
    let m = Map::builder(&name).dir(d).open_existing().unwrap();
    assert!(!m.created());
    assert_eq!(m.get("k").unwrap(), Some((b"kept".to_vec(), 1)));
    let entries: Vec<_> = m.iter().unwrap().map(|e| e.key).collect();
    assert_eq!(entries, vec![b"k".to_vec()]);
    let err = Map::builder(&name)
        .dir(d)
        .capacity(1 << 20)
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSize { .. }), "{err}");
    drop(m);
    shmem::admin::remove(dir.path(), &name, false).unwrap();
    let missing = unique_name("missing");
    assert!(matches!(
        Map::builder(&missing).dir(d).open_existing(),
        Err(Error::NotFound { .. })
    ));
    let err = Map::builder(&missing)
        .dir(d)
        .capacity(usize::MAX)
        .open()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSize { .. }) && err.to_string().contains(&missing),
        "{err}"
    );
    let err = Map::builder(&missing).dir(d).open().unwrap_err();
    assert!(
        matches!(err, Error::InvalidSize { .. }) && err.to_string().contains("does not exist"),
        "{err}"
    );
    assert!(dir.files().is_empty());
}
