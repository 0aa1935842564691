//! The other process: the harness re-executes itself as `shmem-bench __peer ROLE key=value...`.
//!
//! Parent and child share a control page (a memfd passed by descriptor): the child sets
//! `READY` once set up, the parent sets `STOP` and nudges the child when done. Parent-side
//! loops wait with timeouts and check that the child is still alive, so a dead peer is an
//! error, never a hang.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use rustix::thread::futex;

use crate::sys::{self, ctl, SharedPage};

/// A running child process with its control page.
#[derive(Debug)]
pub struct Peer {
    child: Option<Child>,
    page: SharedPage,
    role: String,
}

impl Peer {
    /// Starts `shmem-bench __peer role args...` pinned to `cpu`, passing `fds` (the child's
    /// ends, closed here once the child has them).
    pub fn spawn(
        role: &str,
        args: &[(&str, String)],
        fds: Vec<OwnedFd>,
        cpu: Option<usize>,
    ) -> io::Result<Peer> {
        let page = SharedPage::new()?;
        sys::inherit(page.fd())?;
        for fd in &fds {
            sys::inherit(fd.as_fd())?;
        }
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("__peer")
            .arg(role)
            .arg(format!("ctl={}", sys::raw(&page.fd())));
        for (k, v) in args {
            cmd.arg(format!("{k}={v}"));
        }
        pin_command(&mut cmd, cpu);
        let child = cmd.spawn();
        rustix::io::fcntl_setfd(page.fd(), rustix::io::FdFlags::CLOEXEC)?;
        drop(fds);
        Ok(Peer {
            child: Some(child?),
            page,
            role: role.to_owned(),
        })
    }

    /// The shared control page.
    pub fn page(&self) -> &SharedPage {
        &self.page
    }

    /// Waits (10 s at most) until the child says it is ready.
    pub fn wait_ready(&mut self) -> io::Result<()> {
        let t0 = Instant::now();
        while self.page.word(ctl::READY).load(Acquire) == 0 {
            self.check_alive()?;
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(self.error("did not get ready in 10 s"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// An error if the child has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Err(self.error(&format!("exited early ({status})")));
            }
        }
        Ok(())
    }

    /// Sets `STOP`, opens the gate, and changes and wakes the ping-pong words so a sleeping
    /// child sees it.
    pub fn request_stop(&self) {
        self.page.word(ctl::STOP).store(1, Release);
        self.page.word(ctl::GATE).store(1, Release);
        for off in [ctl::FUTEX, ctl::SPIN, ctl::GATE] {
            let w = self.page.word(off);
            w.fetch_xor(0x8000_0000, Release);
            let _ = futex::wake(w, futex::Flags::empty(), u32::MAX);
        }
    }

    /// Asks the child to stop (if not done yet) and waits for it (5 s, then kills it).
    pub fn finish(mut self) -> io::Result<()> {
        self.request_stop();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(self.error(&format!("failed ({status})")))
                };
            }
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.error("did not stop within 5 s; killed"));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn error(&self, what: &str) -> io::Error {
        io::Error::other(format!("peer process `{}` {what}", self.role))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes `cmd`'s process start pinned to `cpu`.
pub fn pin_command(cmd: &mut Command, cpu: Option<usize>) {
    use std::os::unix::process::CommandExt;
    if let Some(cpu) = cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        // SAFETY: the closure runs in the forked child before `exec`, where only
        // async-signal-safe work is allowed: it makes one system call on a set built above
        // (no allocation, no lock).
        unsafe {
            cmd.pre_exec(move || {
                let _ = rustix::thread::sched_setaffinity(None, &set);
                Ok(())
            });
        }
    }
}

/// Waits on futex `word` while it holds `cur`, for at most 1 s (a timeout is not an error:
/// the caller checks its peer and loops).
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, cur: u32) {
    let ts = futex::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    let _ = futex::wait(word, futex::Flags::empty(), cur, Some(&ts));
}

/// Opens (the peer runs) or closes (it parks at its next check) the gate of `page`.
pub fn set_gate(page: &SharedPage, open: bool) {
    let w = page.word(ctl::GATE);
    w.store(u32::from(open), Release);
    if open {
        let _ = futex::wake(w, futex::Flags::empty(), u32::MAX);
    }
}

/// The child's view of its control page.
#[derive(Debug)]
pub struct Ctl {
    page: SharedPage,
}

impl Ctl {
    /// Tells the parent we are set up.
    pub fn ready(&self) {
        self.page.word(ctl::READY).store(1, Release);
    }

    /// Whether the parent asked us to stop.
    pub fn stop(&self) -> bool {
        self.page.word(ctl::STOP).load(Relaxed) != 0
    }

    /// Sleeps while the gate is closed (the parent is timing another entry); false once the
    /// parent asked us to stop.
    pub fn park(&self) -> bool {
        let g = self.page.word(ctl::GATE);
        while g.load(Acquire) == 0 && !self.stop() {
            futex_wait(g, 0);
        }
        !self.stop()
    }
}

/// Arguments `key=value` of a child.
#[derive(Debug)]
pub struct Args(HashMap<String, String>);

impl Args {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> io::Result<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| io::Error::other(format!("missing argument {key}=")))
    }

    /// The value of `key`, a number.
    pub fn num(&self, key: &str) -> io::Result<usize> {
        self.get(key)?
            .parse()
            .map_err(|_| io::Error::other(format!("{key}= is not a number")))
    }

    fn fd(&self, key: &str) -> io::Result<OwnedFd> {
        sys::take_fd(self.num(key)? as i32)
    }
}

fn to_io(e: shmem::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Spins while `idle()` says nothing arrived, parking on the gate every 1024 spins; returns
/// false once asked to stop.
fn spin_wait(c: &Ctl, mut arrived: impl FnMut() -> io::Result<bool>) -> io::Result<bool> {
    let mut spins = 0u32;
    while !arrived()? {
        spins = spins.wrapping_add(1);
        if spins % 1024 == 0 && !c.park() {
            return Ok(false);
        }
        std::hint::spin_loop();
    }
    Ok(true)
}

/// The child's side: `args` = `ROLE key=value...`.
pub fn child_main(args: &[String]) -> io::Result<()> {
    let (role, rest) = args
        .split_first()
        .ok_or_else(|| io::Error::other("__peer needs a role"))?;
    let a = Args(
        rest.iter()
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    );
    let c = Ctl {
        page: SharedPage::map(a.fd("ctl")?)?,
    };
    #[cfg(feature = "iceoryx2")]
    if let Some(r) = crate::ice::child(role, &c, &a) {
        return r;
    }
    match role.as_str() {
        "futex-pong" => {
            let w = c.page.word(ctl::FUTEX);
            c.ready();
            let mut expect = 1u32;
            while !c.stop() {
                let cur = w.load(Acquire);
                if cur == expect {
                    w.store(cur.wrapping_add(1), Release);
                    let _ = futex::wake(w, futex::Flags::empty(), 1);
                    expect = expect.wrapping_add(2);
                } else {
                    futex_wait(w, cur);
                }
            }
        }
        "spin-pong" => {
            let w = c.page.word(ctl::SPIN);
            c.ready();
            let mut expect = 1u32;
            while spin_wait(&c, || Ok(w.load(Acquire) == expect))? {
                w.store(expect.wrapping_add(1), Release);
                expect = expect.wrapping_add(2);
            }
        }
        "value-pong" | "value-poll-pong" | "value-writer" => {
            let size = a.num("size")?;
            let spin = match a.get("spin_ns") {
                Ok(ns) => Duration::from_nanos(ns.parse().map_err(io::Error::other)?),
                Err(_) => Duration::from_micros(20),
            };
            let v = shmem::Value::builder(a.get("name")?)
                .capacity(size)
                .wait_spin(spin)
                .open_existing()
                .map_err(to_io)?;
            let data = vec![0xa5u8; size];
            let mut buf = vec![0u8; size];
            let mut since = v.version();
            c.ready();
            match role.as_str() {
                "value-pong" => loop {
                    match v.wait_changed(since, Some(Duration::from_secs(1))) {
                        Ok(_) => {}
                        Err(shmem::Error::Timeout { .. }) if !c.stop() => continue,
                        Err(shmem::Error::Timeout { .. }) => break,
                        Err(e) => return Err(to_io(e)),
                    }
                    if c.stop() {
                        break;
                    }
                    v.get(&mut buf).map_err(to_io)?;
                    since = v.set(&data).map_err(to_io)?;
                },
                "value-poll-pong" => {
                    let fill = a.get("fill").is_ok();
                    while spin_wait(&c, || Ok(v.version() != since))? {
                        v.get(&mut buf).map_err(to_io)?;
                        since = if fill {
                            v.set_with(size, |b| b.fill(0xa5))
                        } else {
                            v.set(&data)
                        }
                        .map_err(to_io)?;
                    }
                }
                _ => {
                    while c.park() {
                        v.set(&data).map_err(to_io)?;
                    }
                }
            }
        }
        "pipe-pong" | "sock-pong" => {
            let size = a.num("size")?;
            let (mut r, mut w): (std::fs::File, std::fs::File) = if role == "pipe-pong" {
                (a.fd("rfd")?.into(), a.fd("wfd")?.into())
            } else {
                let s: std::fs::File = a.fd("sfd")?.into();
                (s.try_clone()?, s)
            };
            c.ready();
            let mut buf = vec![0u8; size];
            loop {
                match r.read_exact(&mut buf) {
                    Ok(()) => w.write_all(&buf)?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
        }
        #[cfg(feature = "shared-memory-crate")]
        "sm-writer" => crate::peers::sm_writer(&c, a.get("id")?, a.num("size")?)?,
        other => return Err(io::Error::other(format!("unknown peer role {other}"))),
    }
    Ok(())
}
