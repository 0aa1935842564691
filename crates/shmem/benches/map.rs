//! Micro-benchmarks (divan) of `Map`: `get` of a 64-byte value among 10,000 keys (cycling
//! through them, so the lookups touch the whole table), `get_into` the same, `set` of 64 bytes
//! over existing keys, and `Value::get` of 64 bytes for the same-run comparison.
//! `cargo bench -p named-shm --bench map`. shmem-bench's `map` group measures the same
//! (docs/BENCHMARKS.md).

#[cfg(target_os = "linux")]
fn main() {
    divan::main();
}

/// The benchmarks run on Linux only (as the rest of the project's benchmarks).
#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the map benchmarks run on Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::hint::black_box;

    use divan::Bencher;
    use shmem::{Map, Value};

    const KEYS: usize = 10_000;

    fn name(tag: &str) -> String {
        format!("bench-divan-map-{}-{tag}", std::process::id())
    }

    fn keys() -> Vec<String> {
        (0..KEYS).map(|i| format!("key-{i:05}")).collect()
    }

    /// A transient map (gone at drop) of 10,000 keys with 64-byte values.
    fn filled(tag: &str) -> (Map, Vec<String>) {
        let m = Map::open(&name(tag), 1 << 20).unwrap();
        let keys = keys();
        for k in &keys {
            m.set(k, &[0x5a; 64]).unwrap();
        }
        (m, keys)
    }

    #[divan::bench]
    fn get_64_among_10000(b: Bencher) {
        let (m, keys) = filled("get");
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            black_box(m.get(black_box(&keys[i])).unwrap())
        });
    }

    /// The same key every time: the lookup's own cost, with the table's lines in cache.
    #[divan::bench]
    fn get_into_64_one_hot_key(b: Bencher) {
        let (m, keys) = filled("hot");
        let mut buf = [0u8; 64];
        b.bench_local(|| black_box(m.get_into(black_box(&keys[77]), &mut buf).unwrap()));
    }

    #[divan::bench]
    fn get_into_64_among_10000(b: Bencher) {
        let (m, keys) = filled("get-into");
        let mut buf = [0u8; 64];
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            black_box(m.get_into(black_box(&keys[i]), &mut buf).unwrap())
        });
    }

    #[divan::bench]
    fn set_64_among_10000(b: Bencher) {
        let (m, keys) = filled("set");
        let data = [0x3c; 64];
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            black_box(m.set(black_box(&keys[i]), &data).unwrap())
        });
    }

    #[divan::bench]
    fn value_get_64(b: Bencher) {
        let v = Value::open(&name("value"), 64).unwrap();
        v.set(&[0x5a; 64]).unwrap();
        let mut buf = [0u8; 64];
        b.bench_local(|| v.get(black_box(&mut buf)).unwrap());
    }
}
