//! shmem itself: `Value` get and set, under a concurrent writer, wake-up latency, attach.

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use shmem::Value;

use crate::measure::measurement;
use crate::peer::Peer;
use crate::stats::{Kind, Results};
use crate::Ctx;

fn to_io(e: shmem::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Sizes measured against a concurrent writer.
pub const CONTENDED_SIZES: [usize; 2] = [64, 4096];

/// `get` and `set` of each size, uncontended.
pub fn get_set(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    for &size in &cx.sizes {
        let v = Value::open(&cx.name(&format!("gs{size}")), size).map_err(to_io)?;
        let data = vec![0x5au8; size];
        let mut buf = vec![0u8; size];
        v.set(&data).map_err(to_io)?;
        let (s, k) = cx.plan.per_op(|| {
            black_box(v.get(black_box(&mut buf[..])).map_err(to_io)?);
            Ok::<(), io::Error>(())
        })?;
        r.push(measurement("get", "shmem", size, "ns", Kind::Op, s, k));
        let (s, k) = cx.plan.per_op(|| {
            black_box(v.set(black_box(&data[..])).map_err(to_io)?);
            Ok::<(), io::Error>(())
        })?;
        r.push(measurement("set", "shmem", size, "ns", Kind::Op, s, k));
        let mut w = v.sole_writer().map_err(to_io)?;
        let (s, k) = cx.plan.per_op(|| {
            black_box(w.set(black_box(&data[..])).map_err(to_io)?);
            Ok::<(), io::Error>(())
        })?;
        r.push(measurement(
            "set, sole writer",
            "shmem",
            size,
            "ns",
            Kind::Op,
            s,
            k,
        ));
    }
    Ok(())
}

/// `get` and `set` while another process runs `set` in a loop on the same value.
pub fn contended(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    for size in CONTENDED_SIZES {
        let name = cx.name(&format!("cw{size}"));
        let v = Value::open(&name, size).map_err(to_io)?;
        let mut peer = Peer::spawn(
            "value-writer",
            &[("name", name.clone()), ("size", size.to_string())],
            vec![],
            cx.peer_cpu,
        )?;
        peer.wait_ready()?;
        let data = vec![0x3cu8; size];
        let mut buf = vec![0u8; size];
        let (s, k) = cx.plan.per_op(|| {
            black_box(v.get(black_box(&mut buf[..])).map_err(to_io)?);
            Ok::<(), io::Error>(())
        })?;
        r.push(measurement(
            "get, writer running",
            "shmem",
            size,
            "ns",
            Kind::Op,
            s,
            k,
        ));
        let (s, k) = cx.plan.per_op(|| {
            black_box(v.set(black_box(&data[..])).map_err(to_io)?);
            Ok::<(), io::Error>(())
        })?;
        r.push(measurement(
            "set, writer running",
            "shmem",
            size,
            "ns",
            Kind::Op,
            s,
            k,
        ));
        peer.check_alive()?;
        peer.finish()?;
    }
    Ok(())
}

/// Sizes of the reader-tail measurement.
pub const TAIL_SIZES: [usize; 3] = [64, 4096, 1 << 20];

/// Single-call `get` latencies (p50, p99, max) while another process, on the other CPU, runs
/// `set` of the same size flat out: what bounds a reader that a writer keeps disturbing.
pub fn reader_tail(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    for size in TAIL_SIZES {
        let name = cx.name(&format!("tail{size}"));
        let v = Value::open(&name, size).map_err(to_io)?;
        let mut peer = Peer::spawn(
            "value-writer",
            &[("name", name.clone()), ("size", size.to_string())],
            vec![],
            cx.peer_cpu,
        )?;
        peer.wait_ready()?;
        let mut buf = vec![0u8; size];
        let s = cx.plan.per_call(1.0, || {
            black_box(v.get(black_box(&mut buf[..])).map_err(to_io)?);
            Ok::<(), io::Error>(())
        })?;
        r.push(measurement(
            "get one call, writer flat out",
            "shmem",
            size,
            "ns",
            Kind::Op,
            s,
            1,
        ));
        peer.check_alive()?;
        peer.finish()?;
    }
    Ok(())
}

/// One round trip through one value with a `value-pong` (or `value-poll-pong`) peer: `set`,
/// then wait for the peer's `set` (in `wait_changed`, or polling `version()`), then `get`.
fn value_round_trip<'a>(
    v: &'a Value,
    size: usize,
    poll: bool,
) -> impl FnMut() -> io::Result<()> + 'a {
    let data = vec![0x11u8; size];
    let mut buf = vec![0u8; size];
    move || {
        let mine = v.set(&data).map_err(to_io)?;
        let theirs = if poll {
            let t0 = Instant::now();
            let mut spins = 0u32;
            loop {
                let n = v.version();
                if n != mine {
                    break n;
                }
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins == 0 && t0.elapsed() > Duration::from_secs(5) {
                    return Err(io::Error::other("polling peer did not answer in 5 s"));
                }
            }
        } else {
            v.wait_changed(mine, Some(Duration::from_secs(5)))
                .map_err(to_io)?
        };
        black_box(theirs);
        v.get(&mut buf).map_err(to_io)?;
        Ok(())
    }
}

fn value_peer(cx: &Ctx, name: &str, size: usize, poll: bool) -> io::Result<Peer> {
    let role = if poll {
        "value-poll-pong"
    } else {
        "value-pong"
    };
    let args = [("name", name.to_owned()), ("size", size.to_string())];
    let mut peer = Peer::spawn(role, &args, vec![], cx.peer_cpu)?;
    peer.wait_ready()?;
    Ok(peer)
}

/// Stops a value peer: `STOP`, then a `set` that wakes it to see it.
fn stop_value_peer(peer: Peer, v: &Value) -> io::Result<()> {
    peer.request_stop();
    v.set(b"stop").map_err(to_io)?;
    peer.finish()
}

/// Blocking wake-up, as round trip / 2: the raw futex ping-pong (the limit) and shmem's
/// `set` -> `wait_changed` ping-pong, measured in alternating blocks so that both see the
/// same machine load.
pub fn blocking_pair(cx: &Ctx, r: &mut Results, size: usize) -> io::Result<()> {
    // Both sides with the default spin before sleeping, then both with none (they always
    // sleep): what the spin buys, against the raw futex in the same run.
    for (label, spin) in [
        ("wake ping-pong", None),
        ("wake ping-pong, no spin", Some(Duration::ZERO)),
    ] {
        let mut fpeer = Peer::spawn("futex-pong", &[], vec![], cx.peer_cpu)?;
        fpeer.wait_ready()?;
        let name = cx.name(if spin.is_some() { "wake0" } else { "wake" });
        let mut b = Value::builder(&name).capacity(size);
        let mut args = vec![("name", name.clone()), ("size", size.to_string())];
        if let Some(spin) = spin {
            b = b.wait_spin(spin);
            args.push(("spin_ns", spin.as_nanos().to_string()));
        }
        let v = b.open().map_err(to_io)?;
        let mut vpeer = Peer::spawn("value-pong", &args, vec![], cx.peer_cpu)?;
        vpeer.wait_ready()?;
        let outcome = cx.plan.interleaved(
            0.5,
            crate::limits::futex_round_trip(fpeer.page()),
            value_round_trip(&v, size, false),
        );
        if outcome.is_err() {
            fpeer.check_alive()?;
            vpeer.check_alive()?;
        }
        let (fs, vs) = outcome?;
        fpeer.finish()?;
        stop_value_peer(vpeer, &v)?;
        if spin.is_none() {
            r.push(measurement(
                "wake ping-pong",
                "futex",
                4,
                "ns (rt/2)",
                Kind::Blocking,
                fs,
                1,
            ));
        }
        r.push(measurement(
            label,
            "shmem",
            size,
            "ns (rt/2)",
            Kind::Blocking,
            vs,
            1,
        ));
    }
    Ok(())
}

/// Busy polling, as round trip / 2: `set`, the other process spins on `version()`, `get`s and
/// `set`s back.
pub fn poll_pingpong(cx: &Ctx, r: &mut Results, size: usize) -> io::Result<()> {
    let name = cx.name("poll");
    let v = Value::open(&name, size).map_err(to_io)?;
    let mut peer = value_peer(cx, &name, size, true)?;
    let s = cx.plan.per_call(0.5, value_round_trip(&v, size, true));
    if s.is_err() {
        peer.check_alive()?;
    }
    let s = s?;
    stop_value_peer(peer, &v)?;
    r.push(measurement(
        "poll ping-pong",
        "shmem",
        size,
        "ns (rt/2)",
        Kind::BusyPoll,
        s,
        1,
    ));
    Ok(())
}

/// Attach+detach and create+destroy, each against its raw limit (`limits::RawShm`), in
/// alternating blocks so that both see the same machine load. Attach: `Value::open` + drop of
/// a value that another handle keeps alive. Create: `Value::open` of a new value + a 1-byte
/// `set` + drop (the last one, which unlinks it).
pub fn lifecycle_pair(cx: &Ctx, r: &mut Results, capacity: usize) -> io::Result<()> {
    let raw = crate::limits::RawShm::new(cx, capacity)?;
    let name = cx.name("attach");
    let holder = Value::open(&name, capacity).map_err(to_io)?;
    let (raw_s, ours_s) = cx.plan.interleaved(
        1.0,
        || raw.attach_cycle(),
        || {
            let v = Value::open(&name, capacity).map_err(to_io)?;
            if v.created() {
                return Err(io::Error::other("the holder's value was not found"));
            }
            black_box(v.capacity());
            Ok(())
        },
    )?;
    drop(holder);
    let l = Kind::Lifecycle;
    r.push(measurement(
        "attach+detach",
        "shm_open+mmap",
        capacity,
        "ns",
        l,
        raw_s,
        1,
    ));
    r.push(measurement(
        "attach+detach",
        "shmem",
        capacity,
        "ns",
        l,
        ours_s,
        1,
    ));
    let name = cx.name("create");
    let (raw_s, ours_s) = cx.plan.interleaved(
        1.0,
        || raw.create_cycle(),
        || {
            let v = Value::open(&name, capacity).map_err(to_io)?;
            if !v.created() {
                return Err(io::Error::other("a transient value survived its last drop"));
            }
            v.set(b"x").map_err(to_io)?;
            Ok(())
        },
    )?;
    r.push(measurement(
        "create+destroy",
        "shm_open+mmap",
        capacity,
        "ns",
        l,
        raw_s,
        1,
    ));
    r.push(measurement(
        "create+destroy",
        "shmem",
        capacity,
        "ns",
        l,
        ours_s,
        1,
    ));
    Ok(())
}
