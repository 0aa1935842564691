//! Micro-benchmarks (divan): `Value::get`/`set`/`set_with`/sole-writer `set` of 8 B to 1 MiB, `set` of a value
//! whose every publish wakes (mode 0644), attach+drop of an existing
//! value, create+drop of a new one. `cargo bench -p named-shm`. Side-by-side figures against the
//! limits and the alternatives come from `shmem-bench` (docs/BENCHMARKS.md).
//!
//! Every name carries the pid; values are transient, so each vanishes at its last drop, and a
//! guard removes anything a panic left in /dev/shm.

use std::hint::black_box;

use divan::Bencher;
use shmem::Value;

const SIZES: [usize; 5] = [8, 64, 4096, 64 << 10, 1 << 20];

fn main() {
    let _guard = Cleanup;
    divan::main();
}

fn name(tag: &str) -> String {
    format!("bench-divan-{}-{tag}", std::process::id())
}

/// Removes this process's leftovers from /dev/shm (only after a failure: transient values
/// are gone once dropped).
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = format!("{}{}", shmem::FILE_PREFIX, name(""));
        if let Ok(dir) = std::fs::read_dir(shmem::DEFAULT_DIR) {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[divan::bench(args = SIZES)]
fn get(b: Bencher, size: usize) {
    let v = Value::open(&name(&format!("get{size}")), size).unwrap();
    v.set(&vec![0x5a; size]).unwrap();
    let mut buf = vec![0u8; size];
    b.counter(divan::counter::BytesCount::new(size))
        .bench_local(|| v.get(black_box(&mut buf)).unwrap());
}

#[divan::bench(args = SIZES)]
fn set(b: Bencher, size: usize) {
    let v = Value::open(&name(&format!("set{size}")), size).unwrap();
    let data = vec![0x5a; size];
    b.counter(divan::counter::BytesCount::new(size))
        .bench_local(|| v.set(black_box(&data)).unwrap());
}

/// `set_with`: the value written in place into the next slot (no staging copy).
#[divan::bench(args = SIZES)]
fn set_with(b: Bencher, size: usize) {
    let v = Value::open(&name(&format!("with{size}")), size).unwrap();
    b.counter(divan::counter::BytesCount::new(size))
        .bench_local(|| v.set_with(size, |buf| buf.fill(0x5a)).unwrap());
}

/// `SoleWriter::set`: no lock at all.
#[divan::bench(args = SIZES)]
fn set_sole_writer(b: Bencher, size: usize) {
    let v = Value::open(&name(&format!("sole{size}")), size).unwrap();
    let mut w = v.sole_writer().unwrap();
    let data = vec![0x5a; size];
    b.counter(divan::counter::BytesCount::new(size))
        .bench_local(|| w.set(black_box(&data)).unwrap());
}

/// `set` of a value whose mode (0644) lets others read without writing: every publish makes
/// the `FUTEX_WAKE` call (`WakePolicy::EveryPublish`), so that read-only handles may wait.
/// Against `set` of the same size, the cost of that system call.
#[divan::bench(args = [8, 4096])]
fn set_every_publish_wakes(b: Bencher, size: usize) {
    let v = Value::builder(&name(&format!("wake{size}")))
        .capacity(size)
        .mode(0o644)
        .open()
        .unwrap();
    assert_eq!(v.segment().header().wake, shmem::WakePolicy::EveryPublish);
    let data = vec![0x5a; size];
    b.counter(divan::counter::BytesCount::new(size))
        .bench_local(|| v.set(black_box(&data)).unwrap());
}

/// `Value::open` + drop of a value that another handle keeps alive.
#[divan::bench]
fn open_existing_and_drop(b: Bencher) {
    let n = name("open");
    let _holder = Value::open(&n, 4096).unwrap();
    b.bench_local(|| {
        let v = Value::open(&n, 4096).unwrap();
        assert!(!v.created());
    });
}

/// `Value::open` of a new value (created, zero-filled) + drop (the last one: unlinks it).
#[divan::bench]
fn create_and_drop(b: Bencher) {
    let n = name("create");
    b.bench_local(|| {
        let v = Value::open(&n, 4096).unwrap();
        assert!(v.created());
    });
}
