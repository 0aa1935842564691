//! `Map`: `get` of a 64-byte value among 10,000 keys (cycling through them, and one hot key:
//! the lookup's own cost with its lines in cache) and `set` of 64 bytes over them, with a
//! `Value` get of 64 bytes measured in the same group so that the two sit side by side.

use std::hint::black_box;
use std::io;

use shmem::{Map, Value};

use crate::measure::measurement;
use crate::stats::{Kind, Results};
use crate::Ctx;

/// Keys in the map; each lookup takes the next one, so the whole table is touched.
pub const KEYS: usize = 10_000;
/// The value size.
pub const SIZE: usize = 64;

fn to_io(e: shmem::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The `map` group.
pub fn map(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    let m = Map::open(&cx.name("map"), 1 << 20).map_err(to_io)?;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i:05}")).collect();
    for k in &keys {
        m.set(k, &[0x5a; SIZE]).map_err(to_io)?;
    }
    let mut i = 0;
    let (s, k) = cx.plan.per_op(|| {
        i = (i + 1) % KEYS;
        black_box(m.get(black_box(&keys[i])).map_err(to_io)?);
        Ok::<(), io::Error>(())
    })?;
    r.push(measurement(
        "map get, 10k keys",
        "shmem",
        SIZE,
        "ns",
        Kind::Op,
        s,
        k,
    ));
    let mut buf = [0u8; SIZE];
    let (s, k) = cx.plan.per_op(|| {
        i = (i + 1) % KEYS;
        black_box(m.get_into(black_box(&keys[i]), &mut buf).map_err(to_io)?);
        Ok::<(), io::Error>(())
    })?;
    r.push(measurement(
        "map get_into, 10k keys",
        "shmem",
        SIZE,
        "ns",
        Kind::Op,
        s,
        k,
    ));
    let (s, k) = cx.plan.per_op(|| {
        black_box(m.get_into(black_box(&keys[77]), &mut buf).map_err(to_io)?);
        Ok::<(), io::Error>(())
    })?;
    r.push(measurement(
        "map get_into, one hot key",
        "shmem",
        SIZE,
        "ns",
        Kind::Op,
        s,
        k,
    ));
    let data = [0x3c; SIZE];
    let (s, k) = cx.plan.per_op(|| {
        i = (i + 1) % KEYS;
        black_box(m.set(black_box(&keys[i]), &data).map_err(to_io)?);
        Ok::<(), io::Error>(())
    })?;
    r.push(measurement(
        "map set, 10k keys",
        "shmem",
        SIZE,
        "ns",
        Kind::Op,
        s,
        k,
    ));
    let v = Value::open(&cx.name("map-value"), SIZE).map_err(to_io)?;
    v.set(&[0x5a; SIZE]).map_err(to_io)?;
    let (s, k) = cx.plan.per_op(|| {
        black_box(v.get(black_box(&mut buf[..])).map_err(to_io)?);
        Ok::<(), io::Error>(())
    })?;
    r.push(measurement(
        "value get (map group)",
        "shmem",
        SIZE,
        "ns",
        Kind::Op,
        s,
        k,
    ));
    Ok(())
}
