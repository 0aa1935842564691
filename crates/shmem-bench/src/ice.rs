//! iceoryx2 0.10 (feature `iceoryx2`), beside shmem's equivalent of each figure:
//!
//! | iceoryx2 | shmem |
//! | --- | --- |
//! | pub-sub busy-poll ping-pong 64 B / 4 KiB, payload copied in and out (`write_from_slice`, copy out of the sample) | poll ping-pong (`set` + poll `version()` + `get`) |
//! | pub-sub 64 B / 4 KiB zero-copy: the sample filled in place (`loan_slice_uninit` + `write_from_fn`), read in place (one byte) | `set_with` (filled in place) + poll + `get` (a copy: a seqlock reader must copy to validate) |
//! | event ping-pong (`Notifier::notify` / `Listener::timed_wait`, no payload) | wake ping-pong (`set` / `wait_changed` + `get`, 64 B) |
//! | blackboard read / write of a `[u8; 64]` (one lock-free writer) | `get` / `set, sole writer` 64 B |
//!
//! Ping-pongs use two services (a2b, b2a) as iceoryx2's own publish-subscribe benchmark does
//! (history 0, buffer 1, safe overflow); the other side is a `__peer ice-pong` process on the
//! other CPU, which parks on its gate while other entries are timed. `own_method` repeats that
//! benchmark as it is written (two threads of one process, zero-copy, total time /
//! (2 x iterations)) to set its README's figure beside what it measures here.

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::reader::Reader;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::writer::Writer;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::{blackboard, event, publish_subscribe};

use crate::measure::{Entry, Timing};
use crate::peer::{Ctl, Peer};
use crate::stats::{Kind, Results};
use crate::Ctx;

/// The implementation name in the tables.
pub const IMP: &str = "iceoryx2";
/// Blackboard entries are fixed-size types.
type Board = [u8; 64];

fn err(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("iceoryx2: {e:?}"))
}

type Pub = Publisher<ipc::Service, [u8], ()>;
type Sub = Subscriber<ipc::Service, [u8], ()>;

fn node() -> io::Result<Node<ipc::Service>> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new().create::<ipc::Service>().map_err(err)
}

fn pubsub(
    node: &Node<ipc::Service>,
    name: &str,
    create: bool,
) -> io::Result<publish_subscribe::PortFactory<ipc::Service, [u8], ()>> {
    let b = node
        .service_builder(&ServiceName::new(name).map_err(err)?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(1)
        .enable_safe_overflow(true);
    if create {
        b.create().map_err(err)
    } else {
        b.open().map_err(err)
    }
}

fn events(node: &Node<ipc::Service>, name: &str) -> io::Result<event::PortFactory<ipc::Service>> {
    node.service_builder(&ServiceName::new(name).map_err(err)?)
        .event()
        .open_or_create()
        .map_err(err)
}

/// A publisher on `a2b` and a subscriber on `b2a` (or the other way round for the peer).
fn ports(
    node: &Node<ipc::Service>,
    prefix: &str,
    size: usize,
    parent: bool,
) -> io::Result<(Pub, Sub)> {
    let a2b = pubsub(node, &format!("{prefix}/a2b"), parent)?;
    let b2a = pubsub(node, &format!("{prefix}/b2a"), parent)?;
    let (out, inp) = if parent { (a2b, b2a) } else { (b2a, a2b) };
    let p = out
        .publisher_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(err)?;
    Ok((p, inp.subscriber_builder().create().map_err(err)?))
}

/// Sends `size` bytes: copied from `data`, or (zero-copy) filled in place.
fn send(p: &Pub, size: usize, data: &[u8], zero_copy: bool) -> io::Result<()> {
    let s = p.loan_slice_uninit(size).map_err(err)?;
    let s = if zero_copy {
        s.write_from_fn(|_| 0x5a)
    } else {
        s.write_from_slice(data)
    };
    s.send().map_err(err)?;
    Ok(())
}

/// Takes a sample if one is there: copies it into `buf`, or (zero-copy) reads one byte.
fn take(s: &Sub, buf: &mut [u8], zero_copy: bool) -> io::Result<bool> {
    match s.receive().map_err(err)? {
        Some(x) if zero_copy => {
            black_box(x.payload().first());
            Ok(true)
        }
        Some(x) => {
            let n = x.payload().len().min(buf.len());
            buf[..n].copy_from_slice(&x.payload()[..n]);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A ping-pong to a `__peer ice-pong` process.
struct PingPong {
    size: usize,
    zero_copy: bool,
    p: Pub,
    s: Sub,
    peer: Peer,
}

/// The iceoryx2 scenario: its node, ports and peers.
pub struct Ice {
    _node: Node<ipc::Service>,
    pingpongs: Vec<PingPong>,
    notifier: Notifier<ipc::Service>,
    listener: Listener<ipc::Service>,
    event_peer: Peer,
    _board: blackboard::PortFactory<ipc::Service, u64>,
    reader: Reader<ipc::Service, u64>,
    writer: Writer<ipc::Service, u64>,
}

impl std::fmt::Debug for Ice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ice")
    }
}

/// Repeats `attempt` (each waits up to 10 ms for an answer) until one succeeds, for 5 s at
/// most: a message sent before the other side's port was connected is not delivered.
fn handshake(mut attempt: impl FnMut() -> io::Result<bool>) -> io::Result<()> {
    let t0 = Instant::now();
    while !attempt()? {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(io::Error::other("iceoryx2 peer did not answer in 5 s"));
        }
    }
    // Let any late answer arrive, then the caller drains it.
    std::thread::sleep(Duration::from_millis(20));
    Ok(())
}

fn wait_for(mut got: impl FnMut() -> io::Result<bool>, limit: Duration) -> io::Result<bool> {
    let t0 = Instant::now();
    let mut spins = 0u32;
    loop {
        if got()? {
            return Ok(true);
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 1024 == 0 && t0.elapsed() > limit {
            return Ok(false);
        }
    }
}

impl Ice {
    /// Creates the services and starts the peers.
    pub fn new(cx: &Ctx) -> io::Result<Ice> {
        let node = node()?;
        let base = format!("shmem-bench/{}", cx.pid);
        let mut pingpongs = Vec::new();
        for (size, zero_copy) in [(64, false), (64, true), (4096, false), (4096, true)] {
            let prefix = format!("{base}/ps-{size}-{zero_copy}");
            let (p, s) = ports(&node, &prefix, size, true)?;
            let args = [
                ("prefix", prefix),
                ("size", size.to_string()),
                ("zc", u8::from(zero_copy).to_string()),
            ];
            let mut peer = Peer::spawn("ice-pong", &args, vec![], cx.peer_cpu)?;
            peer.wait_ready()?;
            let mut buf = vec![0u8; size];
            let data = vec![0x11u8; size];
            crate::peer::set_gate(peer.page(), true);
            handshake(|| {
                send(&p, size, &data, zero_copy)?;
                wait_for(|| take(&s, &mut buf, zero_copy), Duration::from_millis(10))
            })?;
            while take(&s, &mut buf, zero_copy)? {}
            crate::peer::set_gate(peer.page(), false);
            pingpongs.push(PingPong {
                size,
                zero_copy,
                p,
                s,
                peer,
            });
        }
        let prefix = format!("{base}/ev");
        let notifier = events(&node, &format!("{prefix}/a2b"))?
            .notifier_builder()
            .create()
            .map_err(err)?;
        let listener = events(&node, &format!("{prefix}/b2a"))?
            .listener_builder()
            .create()
            .map_err(err)?;
        let mut event_peer =
            Peer::spawn("ice-event-pong", &[("prefix", prefix)], vec![], cx.peer_cpu)?;
        event_peer.wait_ready()?;
        handshake(|| {
            notifier.notify().map_err(err)?;
            Ok(listener
                .timed_wait(|_| {}, Duration::from_millis(10))
                .map_err(err)?
                > 0)
        })?;
        while listener.try_wait(|_| {}).map_err(err)? > 0 {}
        let board = node
            .service_builder(&ServiceName::new(&format!("{base}/bb")).map_err(err)?)
            .blackboard_creator::<u64>()
            .add::<Board>(0, [0; 64])
            .create()
            .map_err(err)?;
        let reader = board.reader_builder().create().map_err(err)?;
        let writer = board.writer_builder().create().map_err(err)?;
        Ok(Ice {
            _node: node,
            pingpongs,
            notifier,
            listener,
            event_peer,
            _board: board,
            reader,
            writer,
        })
    }
}

impl crate::Scenario for Ice {
    fn entries(&self) -> io::Result<Vec<Entry<'_>>> {
        let mut v = Vec::new();
        for pp in &self.pingpongs {
            let name = if pp.zero_copy {
                "poll ping-pong, zero-copy"
            } else {
                "poll ping-pong"
            };
            let data = vec![0x11u8; pp.size];
            let mut buf = vec![0u8; pp.size];
            v.push(
                Entry::half(name, IMP, pp.size, Kind::BusyPoll, move || {
                    send(&pp.p, pp.size, &data, pp.zero_copy)?;
                    if wait_for(
                        || take(&pp.s, &mut buf, pp.zero_copy),
                        Duration::from_secs(5),
                    )? {
                        Ok(())
                    } else {
                        Err(io::Error::other("iceoryx2 peer did not answer in 5 s"))
                    }
                })
                .gated(pp.peer.page()),
            );
        }
        v.push(Entry::half(
            "wake ping-pong",
            IMP,
            0,
            Kind::Blocking,
            || {
                self.notifier.notify().map_err(err)?;
                match self
                    .listener
                    .timed_wait(|_| {}, Duration::from_secs(5))
                    .map_err(err)?
                {
                    0 => Err(io::Error::other(
                        "iceoryx2 event peer did not answer in 5 s",
                    )),
                    _ => Ok(()),
                }
            },
        ));
        // One handle per entry and port (a second one is refused), shared by both timings.
        let read = std::rc::Rc::new(self.reader.entry::<Board>(&0).map_err(err)?);
        let write = std::rc::Rc::new(self.writer.entry::<Board>(&0).map_err(err)?);
        for timing in [Timing::Batch, Timing::Call(1.0)] {
            let suffix = if timing == Timing::Batch {
                ""
            } else {
                ", one call"
            };
            let read = read.clone();
            v.push(Entry::new(
                format!("get{suffix}"),
                IMP,
                64,
                Kind::Op,
                timing,
                move || {
                    black_box(*read.get());
                    Ok(())
                },
            ));
            let write = write.clone();
            let mut n = 0u8;
            v.push(Entry::new(
                format!("set{suffix}"),
                IMP,
                64,
                Kind::Op,
                timing,
                move || {
                    n = n.wrapping_add(1);
                    write.update_with_copy(black_box([n; 64]));
                    Ok(())
                },
            ));
        }
        Ok(v)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        let Ice {
            pingpongs,
            event_peer,
            notifier,
            ..
        } = *self;
        for pp in pingpongs {
            pp.peer.finish()?;
        }
        event_peer.request_stop();
        let _ = notifier.notify();
        event_peer.finish()
    }
}

/// The peer side of the pub-sub ping-pong: answers every sample.
fn pong(c: &Ctl, a: &crate::peer::Args) -> io::Result<()> {
    let node = node()?;
    let (size, zero_copy) = (a.num("size")?, a.num("zc")? == 1);
    let (p, s) = ports(&node, a.get("prefix")?, size, false)?;
    let data = vec![0x22u8; size];
    let mut buf = vec![0u8; size];
    c.ready();
    let mut spins = 0u32;
    loop {
        if take(&s, &mut buf, zero_copy)? {
            send(&p, size, &data, zero_copy)?;
        } else {
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 && !c.park() {
                return Ok(());
            }
            std::hint::spin_loop();
        }
    }
}

/// The peer side of the event ping-pong.
fn event_pong(c: &Ctl, a: &crate::peer::Args) -> io::Result<()> {
    let node = node()?;
    let prefix = a.get("prefix")?;
    let listener = events(&node, &format!("{prefix}/a2b"))?
        .listener_builder()
        .create()
        .map_err(err)?;
    let notifier = events(&node, &format!("{prefix}/b2a"))?
        .notifier_builder()
        .create()
        .map_err(err)?;
    c.ready();
    while !c.stop() {
        if listener
            .timed_wait(|_| {}, Duration::from_secs(1))
            .map_err(err)?
            > 0
        {
            notifier.notify().map_err(err)?;
        }
    }
    Ok(())
}

/// The peer roles of this module, if `role` is one.
pub fn child(role: &str, c: &Ctl, a: &crate::peer::Args) -> Option<io::Result<()>> {
    match role {
        "ice-pong" => Some(pong(c, a)),
        "ice-event-pong" => Some(event_pong(c, a)),
        _ => None,
    }
}

/// iceoryx2's publish-subscribe benchmark as it is written (two threads of this process
/// pinned to the two CPUs, 4096 B samples loaned and sent without being written, total time /
/// (2 x iterations)), so that its README's figure can be set beside what its method measures
/// here.
pub fn own_method(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    let iterations = match cx.plan.depth {
        crate::measure::Depth::Smoke => 1_000,
        crate::measure::Depth::Quick => 200_000,
        crate::measure::Depth::Full => 1_000_000,
    };
    // The parent runs pinned to one CPU, the peers to `peer_cpu`.
    let (Some(&c1), Some(c2)) = (crate::sys::cpus().first(), cx.peer_cpu) else {
        r.skip("iceoryx2 own method", "needs two CPUs");
        return Ok(());
    };
    let node = node()?;
    let prefix = format!("shmem-bench/{}/own", cx.pid);
    let a2b = pubsub(&node, &format!("{prefix}/a2b"), true)?;
    let b2a = pubsub(&node, &format!("{prefix}/b2a"), true)?;
    let size = 4096;
    let barrier = std::sync::Barrier::new(3);
    let side = |out: &publish_subscribe::PortFactory<ipc::Service, [u8], ()>,
                inp: &publish_subscribe::PortFactory<ipc::Service, [u8], ()>,
                cpu: usize,
                first: bool|
     -> io::Result<()> {
        crate::sys::pin(cpu);
        let p = out
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()
            .map_err(err)?;
        let s = inp.subscriber_builder().create().map_err(err)?;
        barrier.wait();
        barrier.wait();
        let t0 = Instant::now();
        for _ in 0..iterations {
            if first {
                p.loan_slice_uninit(size)
                    .map_err(err)?
                    .write_from_fn(|_| 0)
                    .send()
                    .map_err(err)?;
            }
            while s.receive().map_err(err)?.is_none() {
                if t0.elapsed() > Duration::from_secs(60) {
                    return Err(io::Error::other("iceoryx2 own method: no answer"));
                }
            }
            if !first {
                p.loan_slice_uninit(size)
                    .map_err(err)?
                    .write_from_fn(|_| 0)
                    .send()
                    .map_err(err)?;
            }
        }
        Ok(())
    };
    let ns = std::thread::scope(|sc| {
        let t1 = sc.spawn(|| side(&a2b, &b2a, c1, true));
        let t2 = sc.spawn(|| side(&b2a, &a2b, c2, false));
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        let a = t1.join();
        let b = t2.join();
        let ns = t0.elapsed().as_nanos() as f64 / (2.0 * iterations as f64);
        match (a, b) {
            (Ok(Ok(())), Ok(Ok(()))) => Ok(ns),
            (Ok(Err(e)), _) | (_, Ok(Err(e))) => Err(e),
            _ => Err(io::Error::other("iceoryx2 own method: a thread panicked")),
        }
    });
    // The parent thread is pinned to the first CPU again (the threads pinned themselves).
    crate::sys::pin(c1);
    let ns = ns?;
    r.push(crate::measure::measurement(
        "own benchmark, threads, zero-copy (mean)",
        IMP,
        size,
        "ns (rt/2)",
        Kind::BusyPoll,
        vec![ns],
        iterations,
    ));
    Ok(())
}

/// A blackboard of `n` fixed keys (`0..n`, `u64`) with `[u8; 64]` values, for the `map` group:
/// its figures beside `Map`'s. A blackboard's keys are all declared when it is created, and a
/// port reaches a value through an entry handle (one per key and port) made by a key lookup.
pub struct KeyBoard {
    n: usize,
    _node: Node<ipc::Service>,
    _board: blackboard::PortFactory<ipc::Service, u64>,
    _ports: (Reader<ipc::Service, u64>, Writer<ipc::Service, u64>),
    /// A reader port of its own for the lookup per call (its handles live one call each).
    lookup: Reader<ipc::Service, u64>,
    /// Handles made beforehand, one per key (on a reader and a writer port).
    reads: Vec<iceoryx2::port::reader::EntryHandle<ipc::Service, u64, Board>>,
    writes: Vec<iceoryx2::port::writer::EntryHandleMut<ipc::Service, u64, Board>>,
}

impl std::fmt::Debug for KeyBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyBoard({} keys)", self.n)
    }
}

impl KeyBoard {
    /// Creates the blackboard with keys `0..n` and a handle per key on one reader and one
    /// writer port.
    pub fn new(cx: &Ctx, n: usize) -> io::Result<KeyBoard> {
        let node = node()?;
        let name = format!("shmem-bench/{}/map-bb-{n}", cx.pid);
        let mut creator = node
            .service_builder(&ServiceName::new(&name).map_err(err)?)
            .blackboard_creator::<u64>();
        for k in 0..n as u64 {
            creator = creator.add::<Board>(k, [0x5a; 64]);
        }
        let board = creator.create().map_err(err)?;
        let reader = board.reader_builder().create().map_err(err)?;
        let lookup = board.reader_builder().create().map_err(err)?;
        let writer = board.writer_builder().create().map_err(err)?;
        let mut reads = Vec::with_capacity(n);
        let mut writes = Vec::with_capacity(n);
        for k in 0..n as u64 {
            reads.push(reader.entry::<Board>(&k).map_err(err)?);
            writes.push(writer.entry::<Board>(&k).map_err(err)?);
        }
        Ok(KeyBoard {
            n,
            _node: node,
            _board: board,
            _ports: (reader, writer),
            lookup,
            reads,
            writes,
        })
    }

    /// Its figures: get and set through the handles made beforehand (cycling through the
    /// keys), and, for the big board, `entry(key)` + `get` per call (a lookup by key).
    pub fn entries(&self) -> io::Result<Vec<Entry<'_>>> {
        let label = if self.n >= 1000 {
            format!("{}k keys", self.n / 1000)
        } else {
            format!("{} keys", self.n)
        };
        let n = self.n;
        let step = |mut i: usize| {
            move || {
                i = (i + 1) % n;
                i
            }
        };
        let (mut a, mut b, mut c) = (step(0), step(0), step(0));
        let mut v = vec![
            Entry::op(format!("map get, {label}"), IMP, 64, move || {
                black_box(*self.reads[a()].get());
                Ok(())
            }),
            Entry::op(format!("map set, {label}"), IMP, 64, move || {
                let i = b();
                self.writes[i].update_with_copy(black_box([i as u8; 64]));
                Ok(())
            }),
        ];
        if n >= 1000 {
            v.push(Entry::op(
                format!("map get, {label}, entry() per call"),
                IMP,
                64,
                move || {
                    let k = c() as u64;
                    let h = self.lookup.entry::<Board>(black_box(&k)).map_err(err)?;
                    black_box(*h.get());
                    Ok(())
                },
            ));
        }
        Ok(v)
    }
}
