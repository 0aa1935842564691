//! shmem itself: `Value` get and set (batched and one call at a time), under a concurrent
//! writer, wake-up and busy-poll ping-pongs, attach and create, and attach through the C
//! handle API.

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use shmem::Value;

use crate::measure::{Entry, Timing};
use crate::peer::Peer;
use crate::stats::{Kind, Results};
use crate::{Ctx, Scenario, ATTACH_CAPACITY, MSG};

fn to_io(e: shmem::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Sizes measured against a concurrent writer (batched figures).
pub const CONTENDED_SIZES: [usize; 2] = [64, 4096];
/// Sizes of the reader-tail figure (single `get`s under a writer running flat out).
pub const TAIL_SIZES: [usize; 3] = [64, 4096, 1 << 20];
/// Sizes of the single-call figures and of the busy-poll ping-pongs.
pub const CALL_SIZES: [usize; 2] = [64, 4096];

/// A value with a peer process working on it.
#[derive(Debug)]
struct WithPeer {
    v: Value,
    size: usize,
    peer: Peer,
}

fn with_peer(
    cx: &Ctx,
    tag: &str,
    size: usize,
    role: &str,
    extra: &[(&str, String)],
) -> io::Result<WithPeer> {
    let mut b = Value::builder(&cx.name(tag)).capacity(size);
    let mut args = vec![("name", cx.name(tag)), ("size", size.to_string())];
    args.extend(extra.iter().cloned());
    if let Some((_, ns)) = extra.iter().find(|(k, _)| *k == "spin_ns") {
        b = b.wait_spin(Duration::from_nanos(ns.parse().map_err(io::Error::other)?));
    }
    let v = b.open().map_err(to_io)?;
    let mut peer = Peer::spawn(role, &args, vec![], cx.peer_cpu)?;
    peer.wait_ready()?;
    Ok(WithPeer { v, size, peer })
}

/// The values, peers and (if found) the C library of shmem's figures.
#[derive(Debug)]
pub struct Ours {
    sizes: Vec<usize>,
    plain: Vec<Value>,
    sole: Vec<Value>,
    writers: Vec<WithPeer>,
    wake: Vec<(&'static str, WithPeer)>,
    poll: Vec<(&'static str, WithPeer)>,
    holder: Value,
    create_name: String,
    clib: Option<crate::sys::CLib>,
}

impl Ours {
    /// Opens the values and starts the peers (the busy ones only with two CPUs).
    pub fn new(cx: &Ctx, r: &mut Results) -> io::Result<Ours> {
        let open = |tag: String, size| Value::open(&cx.name(&tag), size).map_err(to_io);
        let mut o = Ours {
            sizes: cx.sizes.clone(),
            plain: Vec::new(),
            sole: Vec::new(),
            writers: Vec::new(),
            wake: Vec::new(),
            poll: Vec::new(),
            holder: open("attach".into(), ATTACH_CAPACITY)?,
            create_name: cx.name("create"),
            clib: None,
        };
        for &s in &cx.sizes {
            o.plain.push(open(format!("gs{s}"), s)?);
            o.sole.push(open(format!("sole{s}"), s)?);
        }
        for (label, spin) in [
            ("wake ping-pong", None),
            ("wake ping-pong, no spin", Some(0)),
        ] {
            let extra: Vec<_> = spin
                .map(|ns: u64| ("spin_ns", ns.to_string()))
                .into_iter()
                .collect();
            let tag = format!("wake{}", spin.map_or("", |_| "0"));
            o.wake
                .push((label, with_peer(cx, &tag, MSG, "value-pong", &extra)?));
        }
        if cx.peer_cpu.is_none() {
            r.skip("shmem busy polling and writer figures", "need two CPUs");
        } else {
            for s in TAIL_SIZES {
                o.writers
                    .push(with_peer(cx, &format!("cw{s}"), s, "value-writer", &[])?);
            }
            for s in CALL_SIZES {
                o.poll.push((
                    "poll ping-pong",
                    with_peer(cx, &format!("poll{s}"), s, "value-poll-pong", &[])?,
                ));
            }
            let fill = [("fill", "1".to_owned())];
            for s in CALL_SIZES {
                let p = with_peer(cx, &format!("pollw{s}"), s, "value-poll-pong", &fill)?;
                o.poll.push(("poll ping-pong, set_with", p));
            }
        }
        match crate::sys::libshmem() {
            Ok(path) => o.clib = Some(crate::sys::CLib::load(&path)?),
            Err(why) => r.skip("shmem C API attach", why),
        }
        Ok(o)
    }
}

/// One round trip through a value with a `value-pong` or `value-poll-pong` peer: `set` (or
/// `set_with`), wait for the peer's `set` (in `wait_changed`, or polling `version()`), `get`.
fn round_trip<'a>(
    v: &'a Value,
    size: usize,
    poll: bool,
    fill: bool,
) -> impl FnMut() -> io::Result<()> + 'a {
    let data = vec![0x11u8; size];
    let mut buf = vec![0u8; size];
    move || {
        let mine = if fill {
            v.set_with(size, |b| b.fill(0x11))
        } else {
            v.set(&data)
        }
        .map_err(to_io)?;
        if poll {
            let t0 = Instant::now();
            let mut spins = 0u32;
            while v.version() == mine {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins == 0 && t0.elapsed() > Duration::from_secs(5) {
                    return Err(io::Error::other("polling peer did not answer in 5 s"));
                }
            }
        } else {
            v.wait_changed(mine, Some(Duration::from_secs(5)))
                .map_err(to_io)?;
        }
        v.get(&mut buf).map_err(to_io)?;
        Ok(())
    }
}

fn get_op(v: &Value, size: usize) -> impl FnMut() -> io::Result<()> + '_ {
    let mut buf = vec![0u8; size];
    move || {
        black_box(v.get(black_box(&mut buf[..])).map_err(to_io)?);
        Ok(())
    }
}

fn set_op(v: &Value, size: usize) -> impl FnMut() -> io::Result<()> + '_ {
    let data = vec![0x5au8; size];
    move || {
        black_box(v.set(black_box(&data[..])).map_err(to_io)?);
        Ok(())
    }
}

impl Scenario for Ours {
    fn entries(&self) -> io::Result<Vec<Entry<'_>>> {
        const IMP: &str = "shmem";
        let mut e = Vec::new();
        for ((&size, v), sv) in self.sizes.iter().zip(&self.plain).zip(&self.sole) {
            v.set(&vec![0x5a; size]).map_err(to_io)?;
            let mut timings = vec![(Timing::Batch, "")];
            if CALL_SIZES.contains(&size) {
                timings.push((Timing::Call(1.0), ", one call"));
            }
            // One sole writer per value, shared by its batched and single-call entries.
            let sole = std::rc::Rc::new(std::cell::RefCell::new(sv.sole_writer().map_err(to_io)?));
            for (t, suffix) in timings {
                e.push(Entry::new(
                    format!("get{suffix}"),
                    IMP,
                    size,
                    Kind::Op,
                    t,
                    get_op(v, size),
                ));
                e.push(Entry::new(
                    format!("set{suffix}"),
                    IMP,
                    size,
                    Kind::Op,
                    t,
                    set_op(v, size),
                ));
                let w = sole.clone();
                let data = vec![0x5au8; size];
                let name = format!("set, sole writer{suffix}");
                e.push(Entry::new(name, IMP, size, Kind::Op, t, move || {
                    black_box(w.borrow_mut().set(black_box(&data[..])).map_err(to_io)?);
                    Ok(())
                }));
            }
        }
        for w in &self.writers {
            let page = w.peer.page();
            if CONTENDED_SIZES.contains(&w.size) {
                e.push(
                    Entry::op("get, writer running", IMP, w.size, get_op(&w.v, w.size)).gated(page),
                );
                e.push(
                    Entry::op("set, writer running", IMP, w.size, set_op(&w.v, w.size)).gated(page),
                );
            }
            let name = "get one call, writer flat out";
            e.push(Entry::call(name, IMP, w.size, Kind::Op, get_op(&w.v, w.size)).gated(page));
        }
        for (label, p) in &self.wake {
            e.push(Entry::half(
                *label,
                IMP,
                p.size,
                Kind::Blocking,
                round_trip(&p.v, p.size, false, false),
            ));
        }
        for (label, p) in &self.poll {
            let fill = label.ends_with("set_with");
            let op = round_trip(&p.v, p.size, true, fill);
            e.push(Entry::half(*label, IMP, p.size, Kind::BusyPoll, op).gated(p.peer.page()));
        }
        let (name, cap) = (self.holder.name().to_owned(), ATTACH_CAPACITY);
        let l = Kind::Lifecycle;
        e.push(Entry::call("attach+detach", IMP, cap, l, move || {
            let v = Value::open(&name, cap).map_err(to_io)?;
            if v.created() {
                return Err(io::Error::other("the holder's value was not found"));
            }
            black_box(v.capacity());
            Ok(())
        }));
        if let Some(lib) = &self.clib {
            let cname = std::ffi::CString::new(self.holder.name()).map_err(io::Error::other)?;
            let op = move || lib.attach_detach(&cname, cap);
            e.push(Entry::call("attach+detach", "shmem C API", cap, l, op));
        }
        let name = self.create_name.clone();
        e.push(Entry::call("create+destroy", IMP, cap, l, move || {
            let v = Value::open(&name, cap).map_err(to_io)?;
            if !v.created() {
                return Err(io::Error::other("a transient value survived its last drop"));
            }
            v.set(b"x").map_err(to_io)?;
            Ok(())
        }));
        Ok(e)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        let o = *self;
        for p in o.writers {
            p.peer.finish()?;
        }
        for (_, p) in o.wake.into_iter().chain(o.poll) {
            p.peer.request_stop();
            p.v.set(b"stop").map_err(to_io)?;
            p.peer.finish()?;
        }
        Ok(())
    }
}
