//! The roles a helper process plays in shmem's multi-process tests and in the soak: the
//! "other process". `shmem-helper ROLE ARGS...` and `shmem-soak role ROLE ARGS...` both run
//! [`run`].
//!
//! Each role takes positional arguments, reports on stdout one line per event (tests read
//! them with a deadline), and exits 0 on success, 1 when it saw a violation of an invariant
//! (the line starting with `VIOLATION` says which), 2 on bad usage.

use std::io::BufRead;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{checked_value, hex, keyed_value, verify_value, Rng};
use shmem::{Delete, Lifetime, Map, Segment, Value};

type Res = Result<(), Box<dyn std::error::Error>>;

/// Runs the role named by `args[0]` and exits the process with its status.
pub fn run(args: &[String]) -> ! {
    // Die with the test or soak that started us, even if it is killed or panics.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match a.as_slice() {
        ["hold", dir, name, size, rest @ ..] => hold(dir, name, size.parse().unwrap_or(0), rest),
        ["read", dir, name, len] => read(dir, name, len.parse().unwrap_or(0)),
        ["churn", dir, name, iters, seed] => churn(dir, name, num(iters), num(seed)),
        ["fork", dir, name, order] => fork(dir, name, order),
        ["fork-no-spare", dir, name] => fork_no_spare(dir, name),
        ["writer", dir, name, cap, millis, seed] => {
            writer(dir, name, num(cap) as usize, num(millis), num(seed))
        }
        ["reader", dir, name, cap, millis] => reader(dir, name, num(cap) as usize, num(millis)),
        ["crash-writer", dir, name, cap, seed] => {
            crash_writer(dir, name, num(cap) as usize, num(seed))
        }
        ["waiter", dir, name, since, timeout_ms] => waiter(dir, name, num(since), num(timeout_ms)),
        ["scribble", file, seed, iters] => scribble(file, num(seed), num(iters)),
        ["fd-limit", dir, name] => fd_limit(dir, name),
        ["hold-lock", dir, name, cap, then] => hold_lock(dir, name, num(cap) as usize, then),
        ["sets", dir, name, n] => sets(dir, name, num(n)),
        ["map-sets", dir, name, n] => map_sets(dir, name, num(n)),
        ["sole-writer", dir, name, cap, seed] => {
            sole_writer(dir, name, num(cap) as usize, num(seed))
        }

        ["exit-attached", dir, name, how] => exit_attached(dir, name, how),
        ["fork-leave", dir, name, how] => fork_leave(dir, name, how),
        ["raw-clone", dir, name] => raw_clone(dir, name),
        ["fill", dir, name, size] => fill(dir, name, num(size) as usize),
        ["hold-many", dir, prefix, count, rest @ ..] => hold_many(dir, prefix, num(count), rest),
        ["open-until-full", dir, prefix] => open_until_full(dir, prefix),
        ["fork-hold", dir, name, rest @ ..] => fork_hold(dir, name, rest),
        ["noop"] => Ok(()),
        ["orphan", what] => orphan(what),
        ["map-serve", dir, name, cap] => map_serve(dir, name, num(cap) as usize),
        ["map-crash-writer", dir, name, cap, seed] => {
            map_crash_writer(dir, name, num(cap) as usize, num(seed))
        }
        ["map-churn", dir, name, prefix, keys, max_len, iters, seed] => map_churn(
            dir,
            name,
            prefix,
            num(keys),
            num(max_len) as usize,
            num(iters),
            num(seed),
        ),
        ["map-waiter", dir, name, key, since, timeout_ms] => {
            map_waiter(dir, name, key, num(since), num(timeout_ms))
        }
        ["scribble-all", file, seed, iters] => scribble_all(file, num(seed), num(iters)),
        ["ro-hold", dir, name] => ro_hold(dir, name),
        ["serde-set", dir, name, n] => serde_set(dir, name, num(n) as u32),
        ["serde-get", dir, name] => serde_get(dir, name),
        ["ro-waiter", dir, name, since, timeout_ms] => {
            ro_waiter(dir, name, num(since), num(timeout_ms))
        }
        ["ro-map-waiter", dir, name, key, since, timeout_ms] => {
            ro_map_waiter(dir, name, key, num(since), num(timeout_ms))
        }
        _ => {
            eprintln!("shmem-helper: bad arguments {args:?}");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        println!("ERROR {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| {
        eprintln!("shmem-helper: not a number: {s}");
        std::process::exit(2)
    })
}

fn violation(what: String) -> ! {
    println!("VIOLATION {what}");
    std::process::exit(1);
}

/// Blocks until stdin reaches end of file (the test closes it, or dies).
fn wait_stdin_eof() {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
    }
}

/// `hold DIR NAME SIZE [persistent] [write HEX] [mode OCTAL]`: attach, report, hold until
/// stdin closes.
fn hold(dir: &str, name: &str, size: usize, rest: &[&str]) -> Res {
    let mut b = Segment::builder(name).dir(dir).size(size);
    let mut write = None;
    let mut it = rest.iter();
    while let Some(&opt) = it.next() {
        match opt {
            "persistent" => b = b.lifetime(Lifetime::Persistent),
            "write" => write = it.next().copied(),
            "mode" => b = b.mode(u32::from_str_radix(it.next().unwrap_or(&"600"), 8)?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let seg = b.open()?;
    if let Some(h) = write {
        let bytes: Vec<u8> = (0..h.len() / 2)
            .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()?;
        seg.write(0, &bytes)?;
    }
    let mut first = [0u8; 16];
    let n = first.len().min(seg.data_len());
    seg.read(0, &mut first[..n])?;
    println!(
        "ready created={} pid={} ino={} data={}",
        seg.created(),
        std::process::id(),
        seg.file_id().1,
        hex(&first[..n])
    );
    wait_stdin_eof();
    drop(seg);
    println!("detached");
    Ok(())
}

/// `read DIR NAME LEN`: open an existing segment and print its first LEN bytes.
fn read(dir: &str, name: &str, len: usize) -> Res {
    let seg = Segment::builder(name).dir(dir).open_existing()?;
    let mut buf = vec![0u8; len];
    seg.read(0, &mut buf)?;
    println!("created={} data={}", seg.created(), hex(&buf));
    Ok(())
}

/// `churn DIR NAME ITERS SEED`: attach and detach ITERS times at random moments, checking the
/// lifetime invariants through three counters in the segment:
/// `[0]` token of the generation (set by its creator), `[8]` number of holders.
fn churn(dir: &str, name: &str, iters: u64, seed: u64) -> Res {
    let mut rng = Rng::new(seed);
    let mut creations = 0u64;
    for i in 0..iters {
        let seg = Segment::builder(name).dir(dir).size(64).open()?;
        let (_, ino) = seg.file_id();
        // SAFETY: the data area is 64 bytes, page aligned + 64, so offsets 0 and 8 hold aligned
        // u64s; other processes only access them through atomics too.
        let token = unsafe { &*seg.as_ptr().cast::<AtomicU64>() };
        // SAFETY: as above, offset 8.
        let holders = unsafe { &*seg.as_ptr().add(8).cast::<AtomicU64>() };
        let mine = (u64::from(std::process::id()) << 32) | (i + 1);
        let seen = if seg.created() {
            creations += 1;
            // Joiners may already have counted themselves in `holders` (offset 8); nobody but
            // the creator writes the token (0..8), and nobody writes 16..64.
            let mut all = [0u8; 64];
            seg.read(0, &mut all)?;
            if all[..8].iter().chain(&all[16..]).any(|&b| b != 0) {
                violation(format!(
                    "created a segment that is not zero-filled: {}",
                    hex(&all)
                ));
            }
            holders.fetch_add(1, Ordering::SeqCst);
            if token
                .compare_exchange(0, mine, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                violation("two initialisations of one generation".into());
            }
            mine
        } else {
            holders.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let t = token.load(Ordering::SeqCst);
                if t != 0 {
                    break t;
                }
                if Instant::now() > deadline {
                    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
                    let named = std::fs::metadata(seg.path()).map(|m| m.ino());
                    violation(format!(
                        "attached to a generation whose creator never wrote: ino {ino} \
                         (name -> {named:?}) header {:?} locks {:?}",
                        seg.header(),
                        locks
                            .lines()
                            .filter(|l| l.contains(&format!(":{ino} ")))
                            .collect::<Vec<_>>()
                    ));
                }
                std::thread::yield_now();
            }
        };
        for _ in 0..rng.below(2000) {
            std::hint::spin_loop();
        }
        if rng.below(4) == 0 {
            std::thread::yield_now();
        }
        let now_ino = std::fs::metadata(seg.path()).map(|m| m.ino());
        if now_ino.as_ref().ok() != Some(&ino) {
            violation(format!(
                "the name left our generation while attached: {now_ino:?}"
            ));
        }
        if token.load(Ordering::SeqCst) != seen {
            violation("the generation was re-initialised while attached".into());
        }
        holders.fetch_sub(1, Ordering::SeqCst);
        drop(seg);
    }
    println!("done attaches={iters} creations={creations}");
    Ok(())
}

/// `fork DIR NAME parent-first|child-first`: a forked child inherits the handle; whichever
/// drops first, the segment must survive until the other drops too.
fn fork(dir: &str, name: &str, order: &str) -> Res {
    let v = Value::builder(name).dir(dir).capacity(64).open()?;
    v.set(b"before fork")?;
    let path = v.segment().path().to_owned();
    let (r, w) = rustix::pipe::pipe()?;
    // SAFETY: this helper is single-threaded here, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        // Child: write through the inherited handle (its writer lock uses the child's tid).
        drop(w);
        v.set(b"from child")?;
        if order == "parent-first" {
            let mut b = [0u8; 1];
            let _ = rustix::io::read(&r, &mut b); // parent says "dropped"
        }
        drop(v);
        std::process::exit(0);
    }
    drop(r);
    let exists = |p: &PathBuf| p.exists();
    let mut status = 0;
    if order == "parent-first" {
        drop(v);
        println!("after-first-drop exists={}", exists(&path));
        rustix::io::write(&w, b"x")?;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    } else {
        // SAFETY: as above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let (text, _) = v.get_string()?;
        println!("child-wrote={text}");
        println!("after-first-drop exists={}", exists(&path));
        drop(v);
    }
    println!("child-status={status}");
    println!("after-second-drop exists={}", exists(&path));
    Ok(())
}

fn open_value(dir: &str, name: &str, cap: usize) -> Result<Value, shmem::Error> {
    Value::builder(name).dir(dir).capacity(cap).open()
}

/// `writer DIR NAME CAP MILLIS SEED`: sets self-checking values of random lengths.
fn writer(dir: &str, name: &str, cap: usize, millis: u64, seed: u64) -> Res {
    let v = open_value(dir, name, cap)?;
    println!("ready");
    let mut rng = Rng::new(seed);
    let end = Instant::now() + Duration::from_millis(millis);
    let mut sets = 0u64;
    while Instant::now() < end {
        v.set(&checked_value(&mut rng, cap))?;
        sets += 1;
    }
    println!("done sets={sets}");
    Ok(())
}

/// `reader DIR NAME CAP MILLIS`: verifies every read and that versions never go backwards.
fn reader(dir: &str, name: &str, cap: usize, millis: u64) -> Res {
    let v = open_value(dir, name, cap)?;
    println!("ready");
    let end = Instant::now() + Duration::from_millis(millis);
    let mut buf = vec![0u8; v.capacity()];
    let (mut reads, mut last, mut changes) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        let (n, version) = v.get(&mut buf)?;
        if let Err(e) = verify_value(&buf[..n]) {
            violation(format!("torn or invalid read at version {version}: {e}"));
        }
        if version < last {
            violation(format!("version went back from {last} to {version}"));
        }
        changes += u64::from(version != last);
        last = version;
        reads += 1;
    }
    println!("done reads={reads} changes={changes} invalid=0 last={last}");
    Ok(())
}

/// `crash-writer DIR NAME CAP SEED`: writes until killed.
fn crash_writer(dir: &str, name: &str, cap: usize, seed: u64) -> Res {
    let v = open_value(dir, name, cap)?;
    let mut rng = Rng::new(seed);
    let values: Vec<Vec<u8>> = (0..16).map(|_| checked_value(&mut rng, cap)).collect();
    v.set(&values[0])?;
    println!("ready");
    for i in 1.. {
        v.set(&values[i % values.len()])?;
    }
    Ok(())
}

/// `waiter DIR NAME SINCE TIMEOUT_MS`: waits for the version to move past SINCE.
fn waiter(dir: &str, name: &str, since: u64, timeout_ms: u64) -> Res {
    let v = Value::builder(name).dir(dir).open_existing()?;
    println!("waiting");
    match v.wait_changed(since, Some(Duration::from_millis(timeout_ms))) {
        Ok(version) => println!("changed {version} {}", v.get_string()?.0),
        Err(shmem::Error::Timeout { .. }) => println!("timeout"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// `scribble FILE SEED ITERS`: writes random bytes over the first 512 bytes (header, control,
/// slot metadata) and random spots of the file, without changing its size.
fn scribble(file: &str, seed: u64, iters: u64) -> Res {
    let f = std::fs::OpenOptions::new().write(true).open(file)?;
    let len = f.metadata()?.len();
    let mut rng = Rng::new(seed);
    println!("ready");
    for _ in 0..iters {
        let hot = rng.below(4) != 0;
        let off = if hot {
            rng.below(512.min(len))
        } else {
            rng.below(len)
        };
        let n = (1 + rng.below(16)).min(len - off) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        f.write_at(&bytes, off)?;
    }
    println!("done");
    Ok(())
}

/// `fd-limit DIR NAME`: lowers the open-files limit a little above what is open, then opens
/// segments `NAME-0`, `NAME-1`, ... until one fails, and prints that error.
fn fd_limit(dir: &str, name: &str) -> Res {
    let open_now = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    let limit = rustix::process::Rlimit {
        current: Some(open_now + 4),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
    let mut held = Vec::new();
    for i in 0..64 {
        match Segment::builder(&format!("{name}-{i}"))
            .dir(dir)
            .size(64)
            .open()
        {
            Ok(seg) => held.push(seg),
            Err(e) => {
                println!("opened={} error={e}", held.len());
                drop(held);
                return Ok(());
            }
        }
    }
    Err("the open-files limit was never reached".into())
}

/// `fork-no-spare DIR NAME`: forks while no descriptor can be opened (so the child gets no
/// description of its own); the child detaches and exits; the parent must still hold the
/// segment.
fn fork_no_spare(dir: &str, name: &str) -> Res {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let v = Value::builder(name).dir(dir).capacity(64).open()?;
    v.set(b"parent")?;
    let saved = getrlimit(Resource::Nofile);
    // No new descriptor at all (the limit bounds descriptor numbers, and there may be gaps).
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(0),
            maximum: saved.maximum,
        },
    )?;
    // SAFETY: this helper is single-threaded here, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        drop(v);
        std::process::exit(0);
    }
    setrlimit(Resource::Nofile, saved)?;
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let again = Value::builder(name).dir(dir).open_existing()?;
    println!(
        "child-status={status} created={} value={}",
        again.created(),
        again.get_string()?.0
    );
    Ok(())
}

/// `hold-lock DIR NAME CAP THEN`: publishes a self-checking value with `set_with` and, inside
/// the fill (holding the writers' lock, the slot half written), prints `holding`, then:
/// `wait` blocks until stdin closes (or the process is killed); `exec` has a second thread
/// print `exec` and `execv("/bin/sleep", "1000")` while this thread still holds the lock (the
/// kernel then hands this process's id to `sleep`).
fn hold_lock(dir: &str, name: &str, cap: usize, then: &str) -> Res {
    let v = open_value(dir, name, cap)?;
    let value = checked_value(&mut Rng::new(u64::from(std::process::id())), cap);
    v.set_with(value.len(), |buf| {
        let half = buf.len() / 2;
        buf[..half].copy_from_slice(&value[..half]);
        println!("holding");
        match then {
            "exec" => {
                std::thread::spawn(|| {
                    println!("exec");
                    let e = std::os::unix::process::CommandExt::exec(
                        std::process::Command::new("/bin/sleep").arg("1000"),
                    );
                    println!("ERROR exec: {e}");
                    std::process::exit(1);
                });
                loop {
                    std::thread::park();
                }
            }
            _ => wait_stdin_eof(),
        }
        buf[half..].copy_from_slice(&value[half..]);
    })?;
    println!("released");
    Ok(())
}

/// `sets DIR NAME N`: opens the existing value, sets it once (claiming this handle's token),
/// then sets it `N` times between two marker writes to /dev/null (`shmem-sets-begin`,
/// `shmem-sets-end`), for a tracer to count the system calls in between.
fn sets(dir: &str, name: &str, n: u64) -> Res {
    use std::io::Write;
    let v = Value::builder(name).dir(dir).open_existing()?;
    v.set(b"warm-up")?;
    let mut null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    null.write_all(b"shmem-sets-begin")?;
    for i in 0..n {
        v.set(&i.to_le_bytes())?;
    }
    null.write_all(b"shmem-sets-end")?;
    println!("done");
    Ok(())
}

/// `map-sets DIR NAME N`: like `sets`, for a map: one warm-up `set`, then `N` sets of 100 keys
/// in turn (8-byte values, so the heap fills and is compacted along the way) between the same
/// two markers.
fn map_sets(dir: &str, name: &str, n: u64) -> Res {
    use std::io::Write;
    let m = Map::builder(name).dir(dir).open_existing()?;
    let keys: Vec<String> = (0..50).map(|i| format!("key-{i}")).collect();
    m.set("warm-up", b"x")?;
    let mut null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    null.write_all(b"shmem-sets-begin")?;
    for i in 0..n {
        m.set(&keys[(i % 50) as usize], &i.to_le_bytes())?;
    }
    null.write_all(b"shmem-sets-end")?;
    println!("done");
    Ok(())
}

/// `sole-writer DIR NAME CAP SEED`: becomes the value's sole writer, prints `sole`, then
/// publishes self-checking values (alternately with `set` and `set_with`) until killed.
fn sole_writer(dir: &str, name: &str, cap: usize, seed: u64) -> Res {
    let v = open_value(dir, name, cap)?;
    let mut w = v.sole_writer()?;
    let mut rng = Rng::new(seed);
    let values: Vec<Vec<u8>> = (0..16).map(|_| checked_value(&mut rng, cap)).collect();
    w.set(&values[0])?;
    println!("sole");
    for i in 1usize.. {
        let value = &values[i % values.len()];
        if i % 2 == 0 {
            w.set(value)?;
        } else {
            w.set_with(value.len(), |buf| buf.copy_from_slice(value))?;
        }
    }
    Ok(())
}

/// A line telling a test which SysV segment (if any) holds `seg`'s memory.
fn describe(seg: &Segment) -> String {
    format!(
        "created={} pid={} storage={} shmid={}",
        seg.created(),
        std::process::id(),
        seg.storage().as_str(),
        seg.header().shmid
    )
}

/// `exit-attached DIR NAME exit|return|exec`: attaches a value, writes it, then leaves without
/// dropping it: `std::process::exit`, a return from the role with the handle leaked (the process
/// then exits through `exit` too), or an `exec` of this helper (`noop`).
fn exit_attached(dir: &str, name: &str, how: &str) -> Res {
    let v = Value::builder(name).dir(dir).capacity(64).open()?;
    v.set(b"left without closing")?;
    println!("ready {}", describe(v.segment()));
    wait_stdin_eof();
    match how {
        "exit" => std::process::exit(0),
        "return" => {
            std::mem::forget(v);
            Ok(())
        }
        "exec" => {
            use std::os::unix::process::CommandExt;
            let e = std::process::Command::new(std::env::current_exe()?)
                .arg("noop")
                .exec();
            Err(e.into())
        }
        other => Err(format!("unknown way out {other}").into()),
    }
}

/// `fork-leave DIR NAME exit|_exit|exec`: the launcher pattern. Attaches, forks (with the
/// fork handlers), the parent drops its handle and says so, then the child leaves with
/// `exit`, `_exit` or `exec` of this helper, still attached. The parent waits for it.
fn fork_leave(dir: &str, name: &str, how: &str) -> Res {
    let v = Value::builder(name).dir(dir).capacity(64).open()?;
    v.set(b"parent")?;
    println!("ready {}", describe(v.segment()));
    let (r, w) = rustix::pipe::pipe()?;
    // SAFETY: this helper is single-threaded here, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        drop(w);
        let mut b = [0u8; 1];
        let _ = rustix::io::read(&r, &mut b); // the parent has dropped its handle
        let _ = v.set(b"child");
        match how {
            "exit" => std::process::exit(0),
            // SAFETY: `_exit` ends the process at once; nothing runs after it.
            "_exit" => unsafe { libc::_exit(0) },
            _ => {
                use std::os::unix::process::CommandExt;
                let _ = std::process::Command::new(std::env::current_exe()?)
                    .arg("noop")
                    .exec();
                // SAFETY: as above.
                unsafe { libc::_exit(3) }
            }
        }
    }
    drop(r);
    drop(v);
    rustix::io::write(&w, b"x")?;
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    println!("child-status={status}");
    Ok(())
}

/// `raw-clone DIR NAME`: a child made by the raw `clone` system call, which runs no fork
/// handlers (as `_Fork()` and some runtimes do), shares its parent's descriptions. The parent
/// drops its handle; the child then writes, says `child-wrote`, and holds until stdin closes.
fn raw_clone(dir: &str, name: &str) -> Res {
    let v = Value::builder(name).dir(dir).capacity(64).open()?;
    v.set(b"parent")?;
    let (r, w) = rustix::pipe::pipe()?;
    // SAFETY: `clone(SIGCHLD)` without CLONE_VM is `fork` without the fork handlers; this
    // helper is single-threaded, so the child may run arbitrary code.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        drop(w);
        let mut b = [0u8; 1];
        let _ = rustix::io::read(&r, &mut b);
        v.set(b"from the raw child")?;
        println!("child-wrote pid={}", std::process::id());
        wait_stdin_eof();
        drop(v);
        println!("child-detached");
        // SAFETY: ends the child at once, without the parent's exit handlers.
        unsafe { libc::_exit(0) }
    }
    drop(r);
    drop(v);
    println!("parent-dropped");
    rustix::io::write(&w, b"x")?;
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    println!("child-status={status}");
    Ok(())
}

/// `fill DIR NAME SIZE`: creates a raw segment of SIZE bytes, writes every byte, holds it until
/// killed or stdin closes.
fn fill(dir: &str, name: &str, size: usize) -> Res {
    let seg = Segment::builder(name).dir(dir).size(size).open()?;
    let chunk = vec![0xABu8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = chunk.len().min(size - off);
        seg.write(off, &chunk[..n])?;
        off += n;
    }
    println!("ready {}", describe(&seg));
    wait_stdin_eof();
    Ok(())
}

/// `hold-many DIR PREFIX COUNT [persistent]`: holds segments PREFIX-0 .. PREFIX-(COUNT-1).
fn hold_many(dir: &str, prefix: &str, count: u64, rest: &[&str]) -> Res {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    )?;
    let lifetime = if rest.contains(&"persistent") {
        Lifetime::Persistent
    } else {
        Lifetime::Transient
    };
    let mut held = Vec::new();
    for i in 0..count {
        held.push(
            Segment::builder(&format!("{prefix}-{i}"))
                .dir(dir)
                .size(64)
                .lifetime(lifetime)
                .open()?,
        );
    }
    println!("ready count={}", held.len());
    wait_stdin_eof();
    Ok(())
}

/// `open-until-full DIR PREFIX`: opens transient values `PREFIX-0`, `PREFIX-1`, ... until an
/// open fails, then checks that every value made before still works (set and get its own
/// number) and that the failed name left no file. Prints `full made=N kind=KIND error=MESSAGE`,
/// then `intact`.
fn open_until_full(dir: &str, prefix: &str) -> Res {
    let mut held = Vec::new();
    let error = loop {
        let name = format!("{prefix}-{}", held.len());
        match Value::builder(&name).dir(dir).capacity(64).open() {
            Ok(v) => held.push(v),
            Err(e) => break e,
        }
        if held.len() > 100_000 {
            violation("100,000 transient segments and no limit reached".into());
        }
    };
    let kind = match error {
        shmem::Error::NoSpace { .. } => "NoSpace",
        _ => "other",
    };
    println!("full made={} kind={kind} error={error}", held.len());
    let failed =
        std::path::Path::new(dir).join(format!("{}{prefix}-{}", shmem::FILE_PREFIX, held.len()));
    if failed.exists() {
        violation(format!("the failed open left {}", failed.display()));
    }
    for (i, v) in held.iter().enumerate() {
        v.set(i.to_string().as_bytes())?;
        let (got, _) = v.get_vec()?;
        if got != i.to_string().as_bytes() {
            violation(format!("value {i} reads {}", hex(&got)));
        }
    }
    println!("intact");
    Ok(())
}

/// `fork-hold DIR NAME [persistent] [kill]`: attaches, forks a child that holds the handle
/// until stdin closes, then the parent detaches and exits (or, with `kill`, SIGKILLs itself
/// while attached). Prints `child=PID parent=PID`, and the child prints `forked` once its
/// fork handler has run (the two lines in either order).
fn fork_hold(dir: &str, name: &str, rest: &[&str]) -> Res {
    let lifetime = if rest.contains(&"persistent") {
        Lifetime::Persistent
    } else {
        Lifetime::Transient
    };
    let b = Value::builder(name)
        .dir(dir)
        .capacity(64)
        .lifetime(lifetime);
    let v = if rest.contains(&"readonly") {
        // A sharing mode is how a handle accepts another user's segment (nothing is created).
        b.access(shmem::Access::ReadOnly)
            .mode(0o644)
            .open_existing()?
    } else {
        b.open()?
    };
    // SAFETY: this helper is single-threaded here, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        // The fork handlers have run: the handle uses the child's own description now.
        println!("forked");
        wait_stdin_eof();
        drop(v);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) }
    }
    println!("child={pid} parent={}", std::process::id());
    if rest.contains(&"kill") {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    drop(v);
    Ok(())
}

/// `orphan ours|zeros`: plays a creator killed between `shmget` and `IPC_RMID`: makes a
/// private SysV segment of 4096 bytes, writes our header into it (`ours`: this library's layout, SysV
/// storage, its own id) or leaves it zero-filled (`zeros`: one that died before its `shmat`,
/// or another program's), prints `shmid=N`, and exits without marking it.
fn orphan(what: &str) -> Res {
    // SAFETY: plain system call with integer arguments.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if what == "ours" {
        // SAFETY: attaches at an address the kernel picks; nothing else uses it.
        let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if p as isize == -1 {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut h = [0u8; 64];
        h[0..8].copy_from_slice(b"SHMEMSEG");
        h[8..12].copy_from_slice(&shmem::LAYOUT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&1u32.to_le_bytes()); // raw
        h[16..20].copy_from_slice(&1u32.to_le_bytes()); // transient
        h[24..32].copy_from_slice(&4096u64.to_le_bytes());
        h[40..44].copy_from_slice(&2u32.to_le_bytes()); // SysV storage
        h[44..48].copy_from_slice(&(id as u32).to_le_bytes());
        h[48..56].copy_from_slice(&0x1234_5678u64.to_le_bytes());
        // SAFETY: the segment has 4096 bytes; only this process knows its id yet.
        unsafe {
            std::ptr::copy_nonoverlapping(h.as_ptr(), p.cast::<u8>(), 64);
            libc::shmdt(p);
        }
    }
    println!("shmid={id}");
    Ok(())
}

fn unhex(h: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    if h == "-" {
        return Ok(Vec::new());
    }
    Ok((0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()?)
}

/// `map-serve DIR NAME CAP`: opens the map, prints `ready`, then runs one command per stdin
/// line and answers one line each (keys and values in hex, `-` for empty):
/// `set K V` -> `ok VERSION` | `err MESSAGE`; `del K` -> `removed VERSION` | `notfound`;
/// `get K` -> `found VERSION HEX` | `absent`; `len` -> `len N`.
fn map_serve(dir: &str, name: &str, cap: usize) -> Res {
    let m = Map::builder(name).dir(dir).capacity(cap).open()?;
    println!("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["set", k, v] => match m.set(unhex(k)?, &unhex(v)?) {
                Ok(version) => println!("ok {version}"),
                Err(e) => println!("err {e}"),
            },
            ["del", k] => match m.delete(unhex(k)?)? {
                Delete::Removed { version } => println!("removed {version}"),
                Delete::NotFound => println!("notfound"),
            },
            ["get", k] => match m.get(unhex(k)?)? {
                Some((v, version)) => println!("found {version} {}", hex(&v)),
                None => println!("absent"),
            },
            ["len"] => println!("len {}", m.len()?),
            _ => return Err(format!("bad command {line:?}").into()),
        }
    }
    Ok(())
}

/// The keys `map-crash-writer` writes: 4 hot ones (3 ops in 4) and 200 cold ones.
pub fn crash_writer_key(rng: &mut Rng) -> String {
    if rng.below(4) != 0 {
        format!("hot-{}", rng.below(4))
    } else {
        format!("cold-{}", rng.below(200))
    }
}

/// `map-crash-writer DIR NAME CAP SEED`: sets self-checking values bound to their keys (and
/// deletes one op in ten) until killed; prints `ready` after its first op.
fn map_crash_writer(dir: &str, name: &str, cap: usize, seed: u64) -> Res {
    let m = Map::builder(name).dir(dir).capacity(cap).open()?;
    let mut rng = Rng::new(seed);
    for i in 0u64.. {
        let key = crash_writer_key(&mut rng);
        if rng.below(10) == 0 {
            m.delete(&key)?;
        } else {
            let max = if rng.below(8) == 0 { 600 } else { 64 };
            m.set(&key, &keyed_value(&mut rng, key.as_bytes(), max))?;
        }
        if i == 0 {
            println!("ready");
        }
    }
    Ok(())
}

/// `map-churn DIR NAME PREFIX KEYS MAX_LEN ITERS SEED`: rewrites KEYS keys named PREFIX-i
/// ITERS times with values of changing sizes (and some deletes), checking its own keys
/// against a local model at the end; prints `done sets=N`. Any error (a full map) fails.
fn map_churn(
    dir: &str,
    name: &str,
    prefix: &str,
    keys: u64,
    max_len: usize,
    iters: u64,
    seed: u64,
) -> Res {
    let m = Map::builder(name).dir(dir).open_existing()?;
    let mut rng = Rng::new(seed);
    let mut model = std::collections::HashMap::new();
    println!("ready");
    for _ in 0..iters {
        let key = format!("{prefix}-{}", rng.below(keys));
        if rng.below(16) == 0 {
            m.delete(&key)?;
            model.remove(&key);
        } else {
            let v = keyed_value(&mut rng, key.as_bytes(), max_len);
            m.set(&key, &v)?;
            model.insert(key, v);
        }
    }
    for i in 0..keys {
        let key = format!("{prefix}-{i}");
        let got = m.get(&key)?.map(|(v, _)| v);
        if got.as_ref() != model.get(&key) {
            violation(format!("key {key}: map and model differ"));
        }
    }
    println!("done sets={iters}");
    Ok(())
}

/// `map-waiter DIR NAME KEY SINCE TIMEOUT_MS`: waits for KEY's version (KEY `-`: the map's)
/// to move past SINCE; prints `waiting`, then `changed VERSION` or `timeout`.
fn map_waiter(dir: &str, name: &str, key: &str, since: u64, timeout_ms: u64) -> Res {
    let m = Map::builder(name).dir(dir).open_existing()?;
    println!("waiting");
    match wait_key_or_any(&m, key, since, timeout_ms) {
        Ok(version) => println!("changed {version}"),
        Err(shmem::Error::Timeout { .. }) => println!("timeout"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The map roles' wait: on KEY's version, or with KEY `-` on the map's, to move past `since`.
fn wait_key_or_any(m: &Map, key: &str, since: u64, timeout_ms: u64) -> shmem::Result<u64> {
    let t = Some(Duration::from_millis(timeout_ms));
    if key == "-" {
        m.wait_any(since, t)
    } else {
        m.wait_changed(key, since, t)
    }
}

/// `scribble-all FILE SEED ITERS`: writes 1 to 64 random bytes at uniformly random offsets
/// past the 64-byte header, without changing the file's size.
fn scribble_all(file: &str, seed: u64, iters: u64) -> Res {
    let f = std::fs::OpenOptions::new().write(true).open(file)?;
    let len = f.metadata()?.len();
    let mut rng = Rng::new(seed);
    println!("ready");
    for _ in 0..iters {
        let off = 64 + rng.below(len - 64);
        let n = (1 + rng.below(64)).min(len - off) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        f.write_at(&bytes, off)?;
    }
    println!("done");
    Ok(())
}

/// A read-only handle on value `name` (`Access::ReadOnly`).
fn open_read_only(dir: &str, name: &str) -> Result<Value, shmem::Error> {
    Value::builder(name)
        .dir(dir)
        .access(shmem::Access::ReadOnly)
        .open_existing()
}

/// `ro-hold DIR NAME`: open value NAME read-only, report its value and what a `set` gets,
/// hold it until stdin closes.
fn ro_hold(dir: &str, name: &str) -> Res {
    let v = open_read_only(dir, name)?;
    let (s, version) = v.get_string()?;
    let set = match v.set(b"x") {
        Ok(_) => "accepted".to_owned(),
        Err(e @ shmem::Error::PermissionDenied { .. }) => format!("refused({e})"),
        Err(e) => return Err(e.into()),
    };
    println!("ready version={version} value={s} set={set}");
    wait_stdin_eof();
    drop(v);
    println!("detached");
    Ok(())
}

/// `ro-waiter DIR NAME SINCE TIMEOUT_MS`: waits on a read-only handle for the version to move
/// past SINCE.
fn ro_waiter(dir: &str, name: &str, since: u64, timeout_ms: u64) -> Res {
    let v = open_read_only(dir, name)?;
    println!("waiting");
    match v.wait_changed(since, Some(Duration::from_millis(timeout_ms))) {
        Ok(version) => println!("changed {version} {}", v.get_string()?.0),
        Err(shmem::Error::Timeout { .. }) => println!("timeout"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// `ro-map-waiter DIR NAME KEY SINCE TIMEOUT_MS`: on a read-only handle of map NAME, waits
/// for KEY's version (`-`: the map version) to move past SINCE; prints `changed V VALUE`
/// (the key's value, or `-` for a whole-map wait), `timeout`, or `refused(ERROR)` for a
/// permission error.
fn ro_map_waiter(dir: &str, name: &str, key: &str, since: u64, timeout_ms: u64) -> Res {
    let m = Map::builder(name)
        .dir(dir)
        .access(shmem::Access::ReadOnly)
        .open_existing()?;
    println!("waiting");
    match wait_key_or_any(&m, key, since, timeout_ms) {
        Ok(version) if key == "-" => println!("changed {version} -"),
        Ok(version) => {
            let value = m.get(key)?.map(|(v, _)| v).unwrap_or_default();
            println!("changed {version} {}", String::from_utf8_lossy(&value));
        }
        Err(shmem::Error::Timeout { .. }) => println!("timeout"),
        Err(e @ shmem::Error::PermissionDenied { .. }) => println!("refused({e})"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// `serde-set DIR NAME N`: stores `Reading::nth(1..=N)` in the live value NAME as
/// `Serde<Reading>`.
fn serde_set(dir: &str, name: &str, n: u32) -> Res {
    let v =
        shmem::Serde::<crate::Reading>::with(Value::builder(name).dir(dir), |b| b.open_existing())?;
    let mut last = 0;
    for i in 1..=n {
        last = v.set(&crate::Reading::nth(i))?;
    }
    println!("stored {last}");
    Ok(())
}

/// `serde-get DIR NAME`: reads the live value NAME as `Serde<Reading>` and prints
/// `value VERSION DEBUG`, `unset`, or `codec-error MESSAGE`.
fn serde_get(dir: &str, name: &str) -> Res {
    let v =
        shmem::Serde::<crate::Reading>::with(Value::builder(name).dir(dir), |b| b.open_existing())?;
    match v.get() {
        Ok(Some((r, version))) => println!("value {version} {r:?}"),
        Ok(None) => println!("unset"),
        Err(e @ shmem::Error::Codec { .. }) => println!("codec-error {e}"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
