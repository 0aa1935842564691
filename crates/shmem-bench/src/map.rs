//! `Map`: `get` of a 64-byte value among 10,000 keys (cycling through them, and one hot key:
//! the lookup's own cost with its lines in cache) and `set` of 64 bytes over them, with a
//! `Value` get of 64 bytes measured in the same group so that the two sit side by side.

use std::hint::black_box;
use std::io;

use shmem::{Map, Value};

use crate::measure::Entry;
use crate::stats::Results;
use crate::Ctx;

/// Keys in the map; each lookup takes the next one, so the whole table is touched.
pub const KEYS: usize = 10_000;
/// The value size.
pub const SIZE: usize = 64;

fn to_io(e: shmem::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The `map` group: the map's figures and a `Value` get, timed in alternating blocks.
pub fn map(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    let m = Map::open(&cx.name("map"), 1 << 20).map_err(to_io)?;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i:05}")).collect();
    for k in &keys {
        m.set(k, &[0x5a; SIZE]).map_err(to_io)?;
    }
    let v = Value::open(&cx.name("mapv"), SIZE).map_err(to_io)?;
    v.set(&[0x5a; SIZE]).map_err(to_io)?;
    let cycle = |step: usize| {
        let mut i = 0;
        move || {
            i = (i + step) % KEYS;
            i
        }
    };
    let (mut a, mut b, mut c) = (cycle(1), cycle(1), cycle(1));
    let (mut buf, mut vbuf, mut hot) = ([0u8; SIZE], [0u8; SIZE], [0u8; SIZE]);
    let data = [0x3c; SIZE];
    let mut entries = vec![
        Entry::op("map get, 10k keys", "shmem", SIZE, || {
            black_box(m.get(black_box(&keys[a()])).map_err(to_io)?);
            Ok(())
        }),
        Entry::op("map get_into, 10k keys", "shmem", SIZE, || {
            black_box(m.get_into(black_box(&keys[b()]), &mut buf).map_err(to_io)?);
            Ok(())
        }),
        Entry::op("map get_into, one hot key", "shmem", SIZE, || {
            black_box(m.get_into(black_box(&keys[77]), &mut hot).map_err(to_io)?);
            Ok(())
        }),
        Entry::op("map set, 10k keys", "shmem", SIZE, || {
            black_box(m.set(black_box(&keys[c()]), &data).map_err(to_io)?);
            Ok(())
        }),
        Entry::op("get, beside the map", "shmem", SIZE, || {
            black_box(v.get(black_box(&mut vbuf)).map_err(to_io)?);
            Ok(())
        }),
    ];
    cx.plan.run(&mut entries, r);
    Ok(())
}
