//! What users would use instead: a pipe, a Unix socket, Redis, the `shared_memory` crate with a
//! `raw_sync` mutex, Python's `multiprocessing.shared_memory`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::measure::{measurement, Entry};
use crate::peer::{pin_command, Peer};
use crate::stats::{Kind, Results};
use crate::{Ctx, Scenario, MSG};

/// A 64 B message to another process and back, through two pipes and through a Unix socket
/// pair; each peer echoes what it reads.
#[derive(Debug)]
pub struct PipeSocket {
    pipe: (std::fs::File, std::fs::File, Peer),
    sock: (UnixStream, Peer),
}

impl PipeSocket {
    /// Starts the two echo peers.
    pub fn new(cx: &Ctx, _: &mut Results) -> io::Result<PipeSocket> {
        let (to_r, to_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (from_r, from_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let args = [
            ("rfd", crate::sys::raw(&to_r)),
            ("wfd", crate::sys::raw(&from_w)),
            ("size", MSG.to_string()),
        ];
        let mut pipe = Peer::spawn("pipe-pong", &args, vec![to_r, from_w], cx.peer_cpu)?;
        pipe.wait_ready()?;
        let (mine, theirs) = UnixStream::pair()?;
        let args = [("sfd", crate::sys::raw(&theirs)), ("size", MSG.to_string())];
        let mut sock = Peer::spawn("sock-pong", &args, vec![theirs.into()], cx.peer_cpu)?;
        sock.wait_ready()?;
        Ok(PipeSocket {
            pipe: (to_w.into(), from_r.into(), pipe),
            sock: (mine, sock),
        })
    }
}

fn echo<'a>(mut w: impl Write + 'a, mut rd: impl Read + 'a) -> impl FnMut() -> io::Result<()> + 'a {
    let msg = vec![0x42u8; MSG];
    let mut buf = vec![0u8; MSG];
    move || {
        w.write_all(&msg)?;
        rd.read_exact(&mut buf)
    }
}

impl Scenario for PipeSocket {
    fn entries(&self) -> io::Result<Vec<Entry<'_>>> {
        let (w, rd, _) = &self.pipe;
        let s = &self.sock.0;
        Ok(vec![
            Entry::call("round trip", "pipe", MSG, Kind::RoundTrip, echo(w, rd)),
            Entry::call(
                "round trip",
                "unix socket",
                MSG,
                Kind::RoundTrip,
                echo(s, s),
            ),
        ])
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        let PipeSocket { pipe, sock } = *self;
        let (w, rd, p) = pipe;
        drop((w, rd)); // EOF for the children
        let (s, q) = sock;
        drop(s);
        p.finish()?;
        q.finish()
    }
}

/// A `redis-server` on a private Unix socket in a temporary directory; killed and its
/// directory removed on drop.
#[derive(Debug)]
pub struct Redis {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Redis {
    /// Another connection to the server.
    pub fn connect(&self) -> io::Result<UnixStream> {
        UnixStream::connect(&self.sock)
    }

    /// The server's private directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `redis-server` can be run.
pub fn redis_installed() -> bool {
    Path::new("/usr/bin/redis-server").exists() || in_path("redis-server")
}

/// Starts a private `redis-server` (no persistence, Unix socket only) in a temporary directory
/// named for this run and `tag`, pinned to the peers' CPU; returns it with a connection that
/// has answered `PING`.
pub fn start_redis(cx: &Ctx, tag: &str) -> io::Result<(Redis, UnixStream)> {
    let dir = std::env::temp_dir().join(format!("shmem-bench-redis-{}-{tag}", cx.pid));
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("redis.sock");
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        "0",
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--loglevel", "warning", "--unixsocket"])
    .arg(&sock)
    .arg("--dir")
    .arg(&dir)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    pin_command(&mut cmd, cx.peer_cpu);
    let child = cmd.spawn();
    let mut redis = Redis {
        child: match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        },
        dir,
        sock: sock.clone(),
    };
    let t0 = Instant::now();
    loop {
        if let Ok(mut s) = UnixStream::connect(&sock) {
            s.write_all(b"*1\r\n$4\r\nPING\r\n")?;
            let mut b = [0u8; 7];
            s.read_exact(&mut b)?;
            if &b == b"+PONG\r\n" {
                return Ok((redis, s));
            }
        }
        if let Some(st) = redis.child.try_wait()? {
            return Err(io::Error::other(format!("redis-server exited ({st})")));
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(io::Error::other("redis-server did not answer in 10 s"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One RESP command.
pub fn resp(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        v.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        v.extend_from_slice(p);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Redis `SET` and `GET` of a 64 B value over a Unix socket, each a full round trip.
#[derive(Debug)]
pub struct RedisPeer {
    _server: Redis,
    sock: UnixStream,
}

impl RedisPeer {
    /// Starts `redis-server`; `None` (skipped) if it is not installed.
    pub fn new(cx: &Ctx, r: &mut Results) -> io::Result<Option<RedisPeer>> {
        if !redis_installed() {
            r.skip(
                "redis",
                "redis-server is not installed (apt-get install redis-server)",
            );
            return Ok(None);
        }
        let (server, sock) = start_redis(cx, "kv")?;
        Ok(Some(RedisPeer {
            _server: server,
            sock,
        }))
    }
}

impl Scenario for RedisPeer {
    fn entries(&self) -> io::Result<Vec<Entry<'_>>> {
        let value = vec![b'v'; MSG];
        let set = resp(&[b"SET", b"k", &value]);
        let get = resp(&[b"GET", b"k"]);
        let mut want = format!("${MSG}\r\n").into_bytes();
        want.extend_from_slice(&value);
        want.extend_from_slice(b"\r\n");
        let mut buf = vec![0u8; want.len()];
        let (mut s1, mut s2) = (&self.sock, &self.sock);
        (&self.sock).write_all(&set)?;
        (&self.sock).read_exact(&mut [0u8; 5])?;
        Ok(vec![
            Entry::call("set", "redis", MSG, Kind::RoundTrip, move || {
                s1.write_all(&set)?;
                let mut ok = [0u8; 5];
                s1.read_exact(&mut ok)?;
                if &ok != b"+OK\r\n" {
                    return Err(io::Error::other("unexpected reply to SET"));
                }
                Ok(())
            }),
            Entry::call("get", "redis", MSG, Kind::RoundTrip, move || {
                s2.write_all(&get)?;
                s2.read_exact(&mut buf)?;
                if buf != want {
                    return Err(io::Error::other("unexpected reply to GET"));
                }
                Ok(())
            }),
        ])
    }
}

fn in_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

const PYTHON: &str = r#"
import json, sys, time
from multiprocessing import shared_memory
name, sizes = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
batches, calls, batch_ns, warm_ns = (int(x) for x in sys.argv[3:7])
pc = time.perf_counter_ns
big = max(sizes)
shm = shared_memory.SharedMemory(name=name, create=True, size=big)
out = {"read": {}, "attach": [], "attach_read": []}
try:
    shm.buf[:big] = b"\x5a" * big
    for n in sizes:
        buf = shm.buf
        t0, k = pc(), 0
        while k < 3 or pc() - t0 < warm_ns:
            bytes(buf[:n]); k += 1
        per = max(1, int(batch_ns / ((pc() - t0) / k)))
        samples = []
        for _ in range(batches):
            t = pc()
            for _ in range(per):
                bytes(buf[:n])
            samples.append((pc() - t) / per)
        out["read"][str(n)] = {"samples": samples, "per": per}
        del buf
    for key, read in (("attach", False), ("attach_read", True)):
        for i in range(calls // 10 + calls):
            t = pc()
            s = shared_memory.SharedMemory(name=name)
            if read:
                b = s.buf
                bytes(b[:64])
                del b
            s.close()
            dt = pc() - t
            if i >= calls // 10:
                out[key].append(dt)
finally:
    shm.close()
    shm.unlink()
print(json.dumps(out))
"#;

/// Python's `multiprocessing.shared_memory`: read of each size, attach+close, and attach +
/// 64 B read + close, timed inside Python with `time.perf_counter_ns`.
pub fn python(cx: &Ctx, r: &mut Results, attach_size: usize) -> io::Result<()> {
    let name = format!("shmem-bench-py-{}", cx.pid);
    let sizes: Vec<String> = cx.sizes.iter().map(|s| s.to_string()).collect();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(PYTHON)
        .arg(&name)
        .arg(sizes.join(","))
        .arg(cx.plan.samples().to_string())
        .arg(cx.plan.samples().to_string())
        .arg(cx.plan.batch_time.as_nanos().to_string())
        .arg(cx.plan.warmup.as_nanos().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    pin_command(&mut cmd, cx.peer_cpu);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            r.skip("python", "python3 is not installed");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if !out.status.success() {
        let _ = rustix::shm::unlink(format!("/{name}"));
        r.skip(
            "python",
            format!(
                "python3 failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return Ok(());
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| io::Error::other(format!("python output: {e}")))?;
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    for &size in &cx.sizes {
        let entry = &json["read"][size.to_string()];
        let samples = floats(&entry["samples"]);
        let per = entry["per"].as_u64().unwrap_or(1) as usize;
        r.push(measurement(
            "get",
            "python shared_memory",
            size,
            "ns",
            Kind::Op,
            samples,
            per,
        ));
    }
    for (key, name) in [
        ("attach", "attach+detach"),
        ("attach_read", "attach+read 64 B+detach"),
    ] {
        let samples = floats(&json[key]);
        r.push(measurement(
            name,
            "python shared_memory",
            attach_size,
            "ns",
            Kind::Lifecycle,
            samples,
            1,
        ));
    }
    Ok(())
}

#[cfg(feature = "shared-memory-crate")]
mod sm {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};

    use raw_sync::locks::{LockImpl, LockInit, Mutex};
    use shared_memory::{Shmem, ShmemConf};

    /// Where the length and the bytes live, after the mutex.
    const LEN_AT: usize = 64;
    const DATA_AT: usize = 128;

    pub(super) fn err(e: impl std::fmt::Display) -> io::Error {
        io::Error::other(e.to_string())
    }

    /// A segment of the `shared_memory` crate with a `raw_sync` (process-shared pthread)
    /// mutex at its start guarding a length and the bytes: the usual way to share a value
    /// with these two crates.
    pub(super) struct Locked {
        // Field order: the mutex handle is dropped before the mapping it points into.
        mutex: Box<dyn LockImpl>,
        shm: Shmem,
        cap: usize,
    }

    impl std::fmt::Debug for Locked {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Locked({} B)", self.cap)
        }
    }

    impl Locked {
        pub(super) fn create(id: &str, cap: usize) -> io::Result<Locked> {
            let shm = ShmemConf::new()
                .os_id(id)
                .size(DATA_AT + cap)
                .create()
                .map_err(err)?;
            let base = shm.as_ptr();
            // SAFETY: `base` points to a fresh mapping of DATA_AT + cap bytes that outlives the
            // mutex handle (field order); the mutex (40 B) fits before LEN_AT.
            let (mutex, _) = unsafe { Mutex::new(base, base.add(DATA_AT)) }.map_err(err)?;
            Ok(Locked { mutex, shm, cap })
        }

        pub(super) fn open(id: &str) -> io::Result<Locked> {
            let shm = ShmemConf::new().os_id(id).open().map_err(err)?;
            let cap = shm.len().saturating_sub(DATA_AT);
            let base = shm.as_ptr();
            // SAFETY: the creator initialised the mutex at `base`; the mapping outlives it.
            let (mutex, _) =
                unsafe { Mutex::from_existing(base, base.add(DATA_AT)) }.map_err(err)?;
            Ok(Locked { mutex, shm, cap })
        }

        fn len_word(&self) -> &AtomicU64 {
            // SAFETY: LEN_AT + 8 <= DATA_AT is inside the mapping, 8-aligned (page-aligned
            // base), and only accessed atomically.
            unsafe { &*self.shm.as_ptr().add(LEN_AT).cast::<AtomicU64>() }
        }

        pub(super) fn set(&self, data: &[u8]) -> io::Result<()> {
            assert!(data.len() <= self.cap);
            let guard = self.mutex.lock().map_err(err)?;
            self.len_word().store(data.len() as u64, Ordering::Relaxed);
            // SAFETY: we hold the mutex, so nobody else touches the data area; it has `cap`
            // bytes and `data.len() <= cap`.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), *guard, data.len()) };
            drop(guard);
            Ok(())
        }

        pub(super) fn get(&self, buf: &mut [u8]) -> io::Result<usize> {
            let guard = self.mutex.lock().map_err(err)?;
            let len = (self.len_word().load(Ordering::Relaxed) as usize).min(self.cap);
            if len > buf.len() {
                return Err(io::Error::other("buffer too small"));
            }
            // SAFETY: we hold the mutex; `len <= cap` bytes lie in the data area and fit `buf`.
            unsafe { std::ptr::copy_nonoverlapping(*guard as *const u8, buf.as_mut_ptr(), len) };
            drop(guard);
            Ok(len)
        }
    }
}

/// The child that writes in a loop through the `shared_memory` crate and its mutex, while its
/// gate is open.
#[cfg(feature = "shared-memory-crate")]
pub fn sm_writer(c: &crate::peer::Ctl, id: &str, size: usize) -> io::Result<()> {
    let v = sm::Locked::open(id)?;
    let data = vec![0x77u8; size];
    c.ready();
    while c.park() {
        v.set(&data)?;
    }
    Ok(())
}

/// The `shared_memory` crate with a `raw_sync` mutex: get and set of each size, both under a
/// concurrent writer process, and open+drop of an existing segment.
#[cfg(feature = "shared-memory-crate")]
#[derive(Debug)]
pub struct SharedMemory {
    segments: Vec<(usize, String, sm::Locked)>,
    writers: Vec<(usize, Peer)>,
}

#[cfg(feature = "shared-memory-crate")]
impl SharedMemory {
    /// Creates a segment per size and starts the writers.
    pub fn new(cx: &Ctx, _: &mut Results) -> io::Result<SharedMemory> {
        let mut o = SharedMemory {
            segments: Vec::new(),
            writers: Vec::new(),
        };
        for &size in &cx.sizes {
            let id = format!("/shmem-bench-sm-{}-{size}", cx.pid);
            let v = sm::Locked::create(&id, size)?;
            v.set(&vec![0x5au8; size])?;
            if cx.peer_cpu.is_some() && crate::ours::CONTENDED_SIZES.contains(&size) {
                let args = [("id", id.clone()), ("size", size.to_string())];
                let mut peer = Peer::spawn("sm-writer", &args, vec![], cx.peer_cpu)?;
                peer.wait_ready()?;
                o.writers.push((size, peer));
            }
            o.segments.push((size, id, v));
        }
        Ok(o)
    }
}

#[cfg(feature = "shared-memory-crate")]
impl Scenario for SharedMemory {
    fn entries(&self) -> io::Result<Vec<Entry<'_>>> {
        use std::hint::black_box;
        const IMP: &str = "shared_memory+raw_sync";
        let mut e = Vec::new();
        for (size, id, v) in &self.segments {
            let size = *size;
            fn get(v: &sm::Locked, size: usize) -> impl FnMut() -> io::Result<()> + '_ {
                let mut buf = vec![0u8; size];
                move || v.get(black_box(&mut buf[..])).map(drop)
            }
            fn set(v: &sm::Locked, size: usize) -> impl FnMut() -> io::Result<()> + '_ {
                let data = vec![0x5au8; size];
                move || v.set(black_box(&data[..]))
            }
            e.push(Entry::op("get", IMP, size, get(v, size)));
            e.push(Entry::op("set", IMP, size, set(v, size)));
            if let Some((_, peer)) = self.writers.iter().find(|w| w.0 == size) {
                let page = peer.page();
                e.push(Entry::op("get, writer running", IMP, size, get(v, size)).gated(page));
                e.push(Entry::op("set, writer running", IMP, size, set(v, size)).gated(page));
            }
            if size == crate::ATTACH_CAPACITY {
                e.push(Entry::call(
                    "attach+detach",
                    IMP,
                    size,
                    Kind::Lifecycle,
                    move || {
                        black_box(sm::Locked::open(id)?);
                        Ok(())
                    },
                ));
            }
        }
        Ok(e)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        for (_, p) in self.writers {
            p.finish()?;
        }
        Ok(())
    }
}
