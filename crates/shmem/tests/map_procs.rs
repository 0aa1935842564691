//! `Map` across real processes, on Linux and on Windows (under Wine by `.ci/windows.sh`): set
//! and get, a writer killed holding the lock inside an operation, `wait_any` and a one-key
//! `wait_changed` woken by another process (and not by sets of a key in another wait bucket),
//! and a full map that refuses a set and changes nothing.
//!
//! The "other process" is this test binary run again (`common/mod.rs`); every wait has a
//! deadline, and no assertion is about a duration.

mod common;

use std::time::{Duration, Instant};

use common::{say, unique, Helper, DEADLINE};
use shmem::{Error, Map};

/// Keys that `map.rs`'s unit test `the_wait_test_keys_lie_in_different_buckets` proves to
/// lie in two different wait buckets.
const KEY_A: &str = "key-a";
const KEY_B: &str = "key-b";

/// Data offsets (from the end of the 64-byte header) of the control line's `sleepers` flag and
/// lock word and of the map's 64 wait buckets (`wake` u32, `sleepers` u32 each): map layout 3
/// (`map.rs`).
const SLEEPERS_AT: usize = 12;
const LOCK_AT: usize = 16;
const BUCKETS_AT: usize = 448 - 64;

fn word_at(m: &Map, off: usize) -> u32 {
    let mut b = [0u8; 4];
    m.segment().read(off, &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// A self-checking value bound to its key: the key, then `len` bytes of `fill`.
fn value_for(key: &str, len: usize, fill: u8) -> Vec<u8> {
    let mut v = key.as_bytes().to_vec();
    v.resize(key.len() + len, fill);
    v
}

fn check_value(key: &[u8], value: &[u8]) {
    assert!(
        value.starts_with(key),
        "a value not bound to its key {key:?}"
    );
    let rest = &value[key.len()..];
    assert!(
        rest.iter().all(|&b| b == rest[0]),
        "torn value of key {:?}",
        String::from_utf8_lossy(key)
    );
}

#[test]
#[ignore = "the other process of the tests here, which spawn it with --ignored"]
fn helper() {
    let spec = std::env::var("SHMEM_HELPER").expect("SHMEM_HELPER=<role> <name>");
    let (role, name) = spec.split_once(' ').expect("role and name");
    let m = Map::builder(name)
        .wait_spin(Duration::ZERO)
        .open_existing()
        .unwrap();
    match role {
        // Reads the parent's key, sets one of its own.
        "join" => {
            assert!(!m.created());
            let (v, _) = m.get("from-parent").unwrap().expect("the parent's key");
            assert_eq!(v, b"hello");
            m.set("from-child", b"world").unwrap();
            say("joined");
        }
        // Rewrites 40 keys with self-checking values of changing sizes (so overwrites, bump
        // allocations and compactions) until it is killed.
        "churn" => {
            say("writing");
            let start = Instant::now();
            for i in 0u64.. {
                let key = format!("k{:02}", i % 40);
                let len = 500 + (i as usize * 397) % 3000;
                m.set(&key, &value_for(&key, len, i as u8)).unwrap();
                assert!(start.elapsed() < DEADLINE, "never killed");
            }
        }
        "wait-any" => {
            let since = m.version();
            say(format!("waiting {since}"));
            let v = m.wait_any(since, Some(DEADLINE)).unwrap();
            say(format!("woke {v}"));
        }
        // Waits for a change of KEY_A; reports the version and how often it woke.
        "wait-key" => {
            let since = m.get(KEY_A).unwrap().map_or(0, |(_, v)| v);
            let before = shmem::wait_wakeups();
            say(format!("waiting {since}"));
            let v = m.wait_changed(KEY_A, since, Some(DEADLINE)).unwrap();
            say(format!("woke {v} {}", shmem::wait_wakeups() - before));
        }
        // A set that cannot fit: must fail with MapFull.
        "overfill" => {
            let before = m.snapshot().unwrap();
            match m.set("big", &vec![7u8; 3000]) {
                Err(Error::MapFull { .. }) => {}
                other => panic!("a set into a full map gave {other:?}"),
            }
            assert_eq!(
                m.snapshot().unwrap(),
                before,
                "a refused set changed the map"
            );
            say("full");
        }
        other => panic!("unknown helper role {other}"),
    }
}

#[test]
fn sets_and_gets_cross_processes() {
    let name = unique("map-join");
    let m = Map::open(&name, 4096).unwrap();
    assert!(m.created());
    let v1 = m.set("from-parent", b"hello").unwrap();
    let mut h = Helper::spawn("join", &name);
    h.expect("joined");
    h.finish();
    let (v, version) = m.get("from-child").unwrap().expect("the child's key");
    assert_eq!(v, b"world");
    assert!(version > v1);
    assert_eq!(m.len().unwrap(), 2);
}

#[test]
fn a_writer_killed_holding_the_lock_mid_operation_is_taken_over() {
    let name = unique("map-killed");
    let m = Map::builder(&name)
        .capacity(256 * 1024)
        .lock_timeout(Duration::from_secs(30))
        .open()
        .unwrap();
    // Kill churning writers until one dies holding the lock (the lock word, which only a
    // holder sets, is still taken after its death), at most 20 times.
    let mut killed_holding = 0;
    for _ in 0..20 {
        let mut h = Helper::spawn("churn", &name);
        h.expect("writing");
        let start = Instant::now();
        while word_at(&m, LOCK_AT) == 0 {
            assert!(start.elapsed() < DEADLINE, "the writer never took the lock");
            std::hint::spin_loop();
        }
        h.kill();
        if word_at(&m, LOCK_AT) != 0 {
            killed_holding += 1;
        }
        // The next writer takes over at once (no live holder) and the map is consistent.
        let v = m.set("after", b"taken over").unwrap();
        let snap = m.snapshot().unwrap();
        assert!(snap.version() >= v);
        assert_eq!(snap.len(), m.len().unwrap());
        for e in &snap {
            if e.key != b"after" {
                check_value(&e.key, &e.value);
                assert_eq!(m.get(&e.key).unwrap(), Some((e.value.clone(), e.version)));
            }
        }
        assert_eq!(m.get("after").unwrap().unwrap().0, b"taken over");
        if killed_holding > 0 {
            break;
        }
    }
    assert!(
        killed_holding > 0,
        "no writer was killed holding the lock in 20 tries"
    );
}

#[test]
fn wait_any_in_another_process_is_woken_by_a_set() {
    let name = unique("map-wait-any");
    let m = Map::open(&name, 4096).unwrap();
    let mut h = Helper::spawn("wait-any", &name);
    let since: u64 = h.line().strip_prefix("waiting ").unwrap().parse().unwrap();
    let v = m.set("anything", b"1").unwrap();
    assert!(v > since);
    assert_eq!(h.line(), format!("woke {v}"));
    h.finish();
}

#[test]
fn a_one_key_waiter_is_woken_by_its_key_and_not_by_1000_sets_of_another() {
    let name = unique("map-wait-key");
    let m = Map::open(&name, 4096).unwrap();
    let mut h = Helper::spawn("wait-key", &name);
    assert_eq!(h.line(), "waiting 0");
    // The waiter is asleep, or about to sleep, while a may-sleep flag is set: the map's own
    // (`wait_any`'s channel) or a wait bucket's. It sets the flag right before its last
    // re-check and the sleep, and a publisher that wakes a channel clears its flag. So before
    // each set of KEY_B, wait until the waiter is announced: a set that woke it makes it
    // announce itself again before the next, and a wake-up per set would be counted.
    let announced = || {
        word_at(&m, SLEEPERS_AT) != 0 || (0..64).any(|b| word_at(&m, BUCKETS_AT + 8 * b + 4) != 0)
    };
    for i in 0..1000u32 {
        let start = Instant::now();
        while !announced() {
            assert!(
                start.elapsed() < DEADLINE,
                "the waiter never announced itself"
            );
            std::thread::yield_now();
        }
        m.set(KEY_B, &i.to_le_bytes()).unwrap();
    }
    let va = m.set(KEY_A, b"now").unwrap();
    let line = h.line();
    let (woke, wakeups) = line
        .strip_prefix("woke ")
        .and_then(|r| r.split_once(' '))
        .expect("woke VERSION WAKEUPS");
    assert_eq!(
        woke.parse::<u64>().unwrap(),
        va,
        "returned for a change of its key only"
    );
    let wakeups: u64 = wakeups.parse().unwrap();
    assert!(
        (1..=2).contains(&wakeups),
        "the waiter woke {wakeups} times for 1000 sets of another key and one of its own"
    );
    h.finish();
}

#[test]
fn a_full_map_refuses_a_set_and_changes_nothing() {
    let name = unique("map-full");
    let m = Map::open(&name, 4096).unwrap();
    let mut i = 0;
    loop {
        match m.set(format!("f{i}"), &[i as u8; 1000]) {
            Ok(_) => i += 1,
            Err(Error::MapFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(i >= 3);
    let before = m.snapshot().unwrap();
    let mut h = Helper::spawn("overfill", &name);
    h.expect("full");
    h.finish();
    assert_eq!(m.snapshot().unwrap(), before);
    assert_eq!(m.version(), before.version());
    // Space comes back when a key goes.
    m.delete("f0").unwrap();
    m.set("big", &[7u8; 900]).unwrap();
}
