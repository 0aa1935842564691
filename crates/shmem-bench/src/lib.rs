//! `shmem-bench`: measures shmem against the machine's limits and against what users would use
//! instead, side by side in one run, and computes the ratios the project aims for.
//!
//! Each group (`--only`) sets up a [`Scenario`] (values, peers, sockets) whose [`Entry`]s are
//! the figures; the entries of all selected groups are then timed together in alternating
//! blocks by the one measuring core, [`Plan::run`] (`measure.rs`), so that both sides of every
//! ratio see the same machine load. Groups that another program times (Python) or that count
//! rather than time (the syscall check) run alone afterwards.
//!
//! The other process of a two-process measurement is this same binary, re-executed as
//! `shmem-bench __peer ROLE ...` (see `peer.rs`); the syscall check re-executes it as
//! `shmem-bench __sets ...` under `strace`. The parent runs on the first CPU, the peers on the
//! second, when two are available.
//!
//! Nothing is left in /dev/shm: values are transient (freed at their last drop), raw objects
//! are unlinked by guards, and a final sweep removes anything named for this run that a
//! failure left behind.

use std::io;
use std::time::Instant;

pub mod check;
#[cfg(feature = "iceoryx2")]
pub mod ice;
pub mod limits;
pub mod map;
pub mod measure;
pub mod ours;
pub mod peer;
pub mod peers;
pub mod stats;
pub mod sys;

use measure::{Depth, Entry, Plan};
use stats::{Key, Mark, RatioSpec, Results};

/// Value sizes measured.
pub const SIZES: [usize; 5] = [8, 64, 4096, 64 << 10, 1 << 20];
/// The capacity of the value used for attach and create figures.
pub const ATTACH_CAPACITY: usize = 4096;
/// The size of the value carried by ping-pongs and round trips.
pub const MSG: usize = 64;

/// What a run shares with every measurement.
#[derive(Debug)]
pub struct Ctx {
    /// Iteration counts.
    pub plan: Plan,
    /// Value sizes.
    pub sizes: Vec<usize>,
    /// This process's id, part of every name this run creates.
    pub pid: u32,
    /// The CPU for peer processes (the parent is pinned to another), if two are available.
    pub peer_cpu: Option<usize>,
}

impl Ctx {
    /// The shmem name for `tag` in this run.
    pub fn name(&self, tag: &str) -> String {
        format!("bench-{}-{tag}", self.pid)
    }
}

/// The set-up of some figures: what their entries borrow (values, peers, sockets), kept until
/// all entries of the run have been timed together.
pub trait Scenario: std::fmt::Debug {
    /// The operations to time.
    fn entries(&self) -> io::Result<Vec<Entry<'_>>>;
    /// Stops the peers, failing if one failed.
    fn finish(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

type Build = fn(&Ctx, &mut Results) -> io::Result<Option<Box<dyn Scenario>>>;

/// A selectable group (`--only`).
#[derive(Clone, Copy, Debug)]
pub enum Group {
    /// Entries timed together with every other selected group's, in alternating blocks.
    Together(Build),
    /// Measured on its own afterwards (another program times it, or it counts, not times).
    Alone(fn(&Ctx, &mut Results) -> io::Result<()>),
}

fn boxed<S: Scenario + 'static>(s: S) -> Option<Box<dyn Scenario>> {
    Some(Box::new(s))
}

/// The groups, in order.
pub fn groups() -> Vec<(&'static str, Group)> {
    use Group::{Alone, Together};
    vec![
        (
            "limits",
            Together(|cx, r| Ok(boxed(limits::Limits::new(cx, r)?))),
        ),
        (
            "shmem",
            Together(|cx, r| Ok(boxed(ours::Ours::new(cx, r)?))),
        ),
        (
            "pipe",
            Together(|cx, r| Ok(boxed(peers::PipeSocket::new(cx, r)?))),
        ),
        (
            "redis",
            Together(|cx, r| Ok(peers::RedisPeer::new(cx, r)?.and_then(boxed))),
        ),
        (
            "map",
            Together(|cx, r| Ok(boxed(map::MapGroup::new(cx, r)?))),
        ),
        ("shared-memory", Together(shared_memory_group)),
        ("iceoryx2", Together(iceoryx2_group)),
        ("iceoryx2-own", Alone(iceoryx2_own)),
        (
            "python",
            Alone(|cx, r| peers::python(cx, r, ATTACH_CAPACITY)),
        ),
        ("syscalls", Alone(check::syscalls)),
    ]
}

fn shared_memory_group(cx: &Ctx, r: &mut Results) -> io::Result<Option<Box<dyn Scenario>>> {
    #[cfg(feature = "shared-memory-crate")]
    return Ok(boxed(peers::SharedMemory::new(cx, r)?));
    #[cfg(not(feature = "shared-memory-crate"))]
    {
        let _ = cx;
        r.skip(
            "shared_memory crate",
            "built without the `shared-memory-crate` feature",
        );
        Ok(None)
    }
}

pub(crate) const NO_ICEORYX2: &str =
    "not built in: install libclang-dev (its bindgen needs it: `apt-get \
                           install libclang-dev`), then build with `--features iceoryx2`";

fn iceoryx2_group(cx: &Ctx, r: &mut Results) -> io::Result<Option<Box<dyn Scenario>>> {
    #[cfg(feature = "iceoryx2")]
    if cx.peer_cpu.is_some() {
        return Ok(boxed(ice::Ice::new(cx)?));
    }
    let _ = cx;
    r.skip(
        "iceoryx2",
        if cfg!(feature = "iceoryx2") {
            "needs two CPUs"
        } else {
            NO_ICEORYX2
        },
    );
    Ok(None)
}

fn iceoryx2_own(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    #[cfg(feature = "iceoryx2")]
    return ice::own_method(cx, r);
    #[cfg(not(feature = "iceoryx2"))]
    {
        let _ = (cx, r);
        Ok(())
    }
}

/// The comparisons of a run, one a line: `ours ; other ; goal ; pair`, a figure being
/// `name|impl|size` (`*0.5`: the other figure halved, a round trip against a round trip / 2),
/// a goal `<=Fx+N` (ours at most F times the other plus N ns), `>=Fx` (at least F times
/// faster), `bw>=F` (share of the other's bandwidth), `=0`, `p99<=N` (our p99, in ns) or empty
/// (informative), and `pair` saying whether both do the same work. The goals are issue 7's,
/// then issue 16's. `{S}` rows repeat for each size of the run.
const RATIOS: &str = "
get|shmem|64 ; copy|memcpy|64 ; <=3x+10 ; like-for-like: a checked copy of the same bytes
get|shmem|1048576 ; copy|memcpy|1048576 ; bw>=0.8 ; like-for-like: a checked copy of the same bytes
set|shmem|4096 ; copy|memcpy|4096 ; <=2x+30 ; like-for-like: a locked copy of the same bytes
wake ping-pong|shmem|64 ; wake ping-pong|futex|4 ; <=1.5x ; like-for-like hand-off through the kernel (ours also carries 64 B)
syscalls per set, no waiter|shmem|64 ; ; =0 ; a count
attach+detach|shmem|4096 ; attach+detach|shm_open+mmap|4096 ; <=3x ; the floor of any named mapping
get|shmem|64 ; get|redis|64 ; >=100x ; not like-for-like: a local read against a request answered by another process (the like-for-like pair is wake vs pipe)
get|shmem|64 ; round trip|pipe|64 ; >=20x ; not like-for-like: a local read against a request answered by another process (the like-for-like pair is wake vs pipe)
wake ping-pong|shmem|64 ; poll ping-pong|cache line|4 ; <=3x ; the goal's pair: a blocking hand-off (spin, then sleep) against the busy-spin floor
set, sole writer|shmem|64 ; set|iceoryx2|64 ; <=1x ; like-for-like: one writer, no lock, 64 B copied in (blackboard write)
poll ping-pong, set_with|shmem|4096 ; poll ping-pong, zero-copy|iceoryx2|4096 ; <=1.2x ; both writers fill 4 KiB in place; our reader copies it out (a seqlock must), theirs reads one byte in place
attach+detach|shmem C API|4096 ; attach+detach|shm_open+mmap|4096 ; <=3x ; shmem_open + shmem_close of a live value against the raw cycle
get one call, writer flat out|shmem|4096 ; ; p99<=20000 ; single calls while another process publishes flat out
map get_into, 10k keys|shmem|64 ; get, beside the map|shmem|64 ; <=2x ; one key of 10,000 against a one-value segment, same bytes out
map get_into, 10k keys|shmem|64 ; map get, 10k keys|redis|64 ; >=100x ; not like-for-like: a local lookup against HGET answered by a server over a Unix socket
get|shmem|{S} ; copy|memcpy|{S} ; ; like-for-like: a checked copy of the same bytes
set|shmem|{S} ; copy|memcpy|{S} ; ; like-for-like: a locked copy of the same bytes
get|shmem|{S} ; get|shared_memory+raw_sync|{S} ; ; like-for-like (theirs: a pthread mutex)
set|shmem|{S} ; set|shared_memory+raw_sync|{S} ; ; like-for-like (theirs: a pthread mutex)
set, sole writer|shmem|{S} ; set|shmem|{S} ; ; what the writers' lock costs
get, writer running|shmem|64 ; get, writer running|shared_memory+raw_sync|64 ; ; like-for-like
set, writer running|shmem|64 ; set, writer running|shared_memory+raw_sync|64 ; ; like-for-like
get, writer running|shmem|4096 ; get, writer running|shared_memory+raw_sync|4096 ; ; like-for-like
set, writer running|shmem|4096 ; set, writer running|shared_memory+raw_sync|4096 ; ; like-for-like
get|shmem|64 ; get|iceoryx2|64 ; ; like-for-like: 64 B copied out (blackboard read)
get, one call|shmem|64 ; get, one call|iceoryx2|64 ; ; like-for-like, each call timed alone
set, sole writer, one call|shmem|64 ; set, one call|iceoryx2|64 ; ; like-for-like, each call timed alone
poll ping-pong|shmem|64 ; poll ping-pong|iceoryx2|64 ; ; like-for-like: both copy in and out
poll ping-pong|shmem|4096 ; poll ping-pong|iceoryx2|4096 ; ; like-for-like: both copy in and out
poll ping-pong, set_with|shmem|64 ; poll ping-pong, zero-copy|iceoryx2|64 ; ; both fill in place; our reader copies 64 B out, theirs reads one byte in place
poll ping-pong, set_with|shmem|{S} ; poll ping-pong|shmem|{S} ; ; what filling in place saves
wake ping-pong|shmem|64 ; wake ping-pong|iceoryx2|0 ; ; ours carries 64 B, an event none
wake ping-pong, no spin|shmem|64 ; wake ping-pong|futex|4 ; ; like-for-like
wake ping-pong|shmem|64 ; round trip|pipe|64*0.5 ; ; like-for-like notification
wake ping-pong|shmem|64 ; round trip|unix socket|64*0.5 ; ; like-for-like notification
poll ping-pong|shmem|64 ; poll ping-pong|cache line|4 ; ; the busy-spin floor
set|shmem|64 ; set|redis|64 ; ; not like-for-like: a local write against a request to a server
create+destroy|shmem|4096 ; create+destroy|shm_open+mmap|4096 ; ; the floor
attach+detach|shmem|4096 ; attach+detach|shared_memory+raw_sync|4096 ; ; like-for-like
attach+detach|shmem C API|4096 ; attach+detach|shmem|4096 ; ; what the C handle costs
map get_into, one hot key|shmem|64 ; get, beside the map|shmem|64 ; ; the lookup with its lines in cache
map get_into, 100 keys|shmem|64 ; get, beside the map|shmem|64 ; ; one key of 100
map get, 10k keys|shmem|64 ; map get_into, 10k keys|shmem|64 ; ; what returning a Vec costs
map set, 10k keys|shmem|64 ; map set, 10k keys|redis|64 ; ; not like-for-like: a local locked write (each op applied to both copies) against HSET to a server
map get_into, 100 keys|shmem|64 ; map get, 100 keys|redis|64 ; ; not like-for-like: as above, 100 keys
map set, 100 keys|shmem|64 ; map set, 100 keys|redis|64 ; ; not like-for-like: as above, 100 keys
map get_into, 10k keys|shmem|64 ; map get, 10k keys, entry() per call|iceoryx2|64 ; ; like-for-like: a lookup by key and a 64 B copy out, each call (blackboard: entry() + get)
map get_into, 10k keys|shmem|64 ; map get, 10k keys|iceoryx2|64 ; ; not like-for-like: our lookup by key against their read through a handle made beforehand
map set, 10k keys|shmem|64 ; map set, 10k keys|iceoryx2|64 ; ; not like-for-like: our locked two-copy write by key against their one writer's handle made beforehand
map get_into, 100 keys|shmem|64 ; map get, 100 keys|iceoryx2|64 ; ; not like-for-like: as above, 100 keys
map set, 100 keys|shmem|64 ; map set, 100 keys|iceoryx2|64 ; ; not like-for-like: as above, 100 keys
";

/// A figure `name|impl|size[*scale]` of [`RATIOS`]; `{S}` is `size`.
fn figure(s: &'static str, size: usize) -> Option<(Key, f64)> {
    let mut it = s.trim().split('|');
    let (name, imp, n) = (it.next()?, it.next()?, it.next()?);
    let (n, scale) = n.split_once('*').unwrap_or((n, "1"));
    let n = if n == "{S}" { size } else { n.parse().ok()? };
    Some((Key(name, imp, n), scale.parse().ok()?))
}

/// A goal of [`RATIOS`].
fn goal(s: &str) -> Option<Mark> {
    let num = |x: &str| x.parse::<f64>().ok();
    let g = s.trim();
    Some(if g.is_empty() {
        Mark::None
    } else if g == "=0" {
        Mark::Zero
    } else if let Some(f) = g.strip_prefix("bw>=") {
        Mark::Bandwidth(num(f)?)
    } else if let Some(n) = g.strip_prefix("p99<=") {
        Mark::P99Below(num(n)?)
    } else if let Some(f) = g.strip_prefix(">=") {
        Mark::FasterBy(num(f.strip_suffix('x')?)?)
    } else {
        let (f, plus) = g.strip_prefix("<=")?.split_once('x')?;
        let plus = plus.strip_prefix('+').unwrap_or("0");
        Mark::AtMost {
            factor: num(f)?,
            plus_ns: num(plus)?,
        }
    })
}

/// The comparisons of a run with these value sizes (see [`RATIOS`]).
///
/// # Panics
/// On a malformed line of [`RATIOS`] (a unit test parses them all).
pub fn ratio_specs(sizes: &[usize]) -> Vec<RatioSpec> {
    let mut v: Vec<RatioSpec> = Vec::new();
    for line in RATIOS.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || panic!("bad line in RATIOS: {line}");
        let p: Vec<&'static str> = line.splitn(4, ';').collect();
        let [ours, other, mark, pair] = p[..] else {
            bad()
        };
        let each = if line.contains("{S}") {
            sizes
        } else {
            &[0][..]
        };
        for &size in each {
            let ours = figure(ours, size).unwrap_or_else(|| bad()).0;
            let against =
                (!other.trim().is_empty()).then(|| figure(other, size).unwrap_or_else(|| bad()));
            let spec = RatioSpec {
                ours,
                against: against.as_ref().map(|a| a.0.clone()),
                against_scale: against.map_or(1.0, |a| a.1),
                mark: goal(mark).unwrap_or_else(|| bad()),
                pair: pair.trim(),
            };
            // A per-size row that repeats a goal's pair is left to the goal.
            if !v
                .iter()
                .any(|o| o.ours == spec.ours && o.against == spec.against)
            {
                v.push(spec);
            }
        }
    }
    v
}

/// Removes files in /dev/shm that this run (`pid`) created and a failure left behind;
/// returns their names.
pub fn sweep(pid: u32) -> Vec<String> {
    let ours = format!("shmem.bench-{pid}-");
    let raw_end = format!("-{pid}");
    let raw_mid = format!("-{pid}-");
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(shmem::DEFAULT_DIR) else {
        return removed;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let raw = name.starts_with("shmem-bench-")
            && (name.ends_with(&raw_end) || name.contains(&raw_mid));
        if (name.starts_with(&ours) || raw) && std::fs::remove_file(e.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// Sweeps on drop, so that a panic also cleans up.
struct SweepGuard(u32);

impl Drop for SweepGuard {
    fn drop(&mut self) {
        for name in sweep(self.0) {
            eprintln!("shmem-bench: removed leftover /dev/shm/{name}");
        }
    }
}

fn first_line_of(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A file under /sys, trimmed; empty if unreadable.
fn sysfs(path: &str) -> String {
    std::fs::read_to_string(format!("/sys/{path}"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// "CPU 0: package 0 core 0 (threads 0)", for each CPU we may run on.
fn topology(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| {
            let t = |f: &str| sysfs(&format!("devices/system/cpu/cpu{c}/topology/{f}"));
            format!(
                "CPU {c}: package {} core {} (SMT siblings {})",
                t("physical_package_id"),
                t("core_id"),
                t("thread_siblings_list")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "L1d 32K, L1i 32K, L2 512K, L3 32768K" of CPU 0.
fn caches() -> String {
    (0..8)
        .map_while(|i| {
            let f = |n: &str| sysfs(&format!("devices/system/cpu/cpu0/cache/index{i}/{n}"));
            let level = f("level");
            (!level.is_empty()).then(|| {
                let kind = match f("type").as_str() {
                    "Data" => "d",
                    "Instruction" => "i",
                    _ => "",
                };
                format!(
                    "L{level}{kind} {} (shared by CPUs {})",
                    f("size"),
                    f("shared_cpu_list")
                )
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

const USAGE: &str = "usage: shmem-bench [--quick | --smoke] [--json FILE] [--markdown FILE] \
                     [--only GROUP,...] [--list]";

/// Parsed command line.
#[derive(Debug, Default)]
struct Options {
    depth: Option<Depth>,
    json: Option<String>,
    markdown: Option<String>,
    only: Option<Vec<String>>,
    list: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs {what}"))
        };
        match a.as_str() {
            "--quick" => o.depth = Some(Depth::Quick),
            "--smoke" => o.depth = Some(Depth::Smoke),
            "--full" => o.depth = Some(Depth::Full),
            "--json" => o.json = Some(value("a file")?),
            "--markdown" => o.markdown = Some(value("a file")?),
            "--only" => {
                o.only = Some(
                    value("a list of groups")?
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "--list" => o.list = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// The program; returns the exit code.
pub fn main_with_args(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("__peer") => return child_exit(peer::child_main(&args[1..])),
        Some("__sets") => return child_exit(check::child_main(&args[1..])),
        _ => {}
    }
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("shmem-bench: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() { 0 } else { 2 };
        }
    };
    if o.list {
        for (name, _) in groups() {
            println!("{name}");
        }
        return 0;
    }
    if let Some(bad) = o
        .only
        .iter()
        .flatten()
        .find(|g| !groups().iter().any(|(n, _)| n == g))
    {
        eprintln!("shmem-bench: no group {bad} (see --list)");
        return 2;
    }
    let depth = o.depth.unwrap_or(Depth::Full);
    let pid = std::process::id();
    let _guard = SweepGuard(pid);
    let cpus = sys::cpus();
    let peer_cpu = if cpus.len() >= 2 && sys::pin(cpus[0]) {
        Some(cpus[1])
    } else {
        None
    };
    let cx = Ctx {
        plan: Plan::new(depth),
        sizes: if depth == Depth::Smoke {
            vec![64]
        } else {
            SIZES.to_vec()
        },
        pid,
        peer_cpu,
    };
    let load_before = loadavg();
    let t0 = Instant::now();
    let mut results = Results::default();
    let mut failed = Vec::new();
    let selected: Vec<_> = groups()
        .into_iter()
        .filter(|(name, _)| {
            o.only
                .as_ref()
                .map_or(true, |only| only.iter().any(|g| g == name))
        })
        .collect();
    let mut scenarios = Vec::new();
    for (name, group) in &selected {
        if let Group::Together(build) = group {
            eprintln!("shmem-bench: setting up {name}");
            match build(&cx, &mut results) {
                Ok(s) => scenarios.extend(s.map(|s| (*name, s))),
                Err(e) => {
                    eprintln!("shmem-bench: {name}: FAILED: {e}");
                    results.skip(name, format!("failed: {e}"));
                    failed.push(*name);
                }
            }
        }
    }
    let mut entries = Vec::new();
    for (name, s) in &scenarios {
        match s.entries() {
            Ok(e) => entries.extend(e),
            Err(e) => {
                results.skip(name, format!("failed: {e}"));
                failed.push(*name);
            }
        }
    }
    eprintln!(
        "shmem-bench: timing {} figures in {} alternating blocks",
        entries.len(),
        cx.plan.blocks
    );
    let failures = results.skipped.len();
    cx.plan.run(&mut entries, &mut results);
    if results.skipped.len() > failures {
        failed.push("an operation");
    }
    drop(entries);
    for (name, s) in scenarios {
        if let Err(e) = s.finish() {
            results.skip(name, format!("failed at the end: {e}"));
            failed.push(name);
        }
    }
    for (name, group) in &selected {
        if let Group::Alone(f) = group {
            let t = Instant::now();
            eprint!("shmem-bench: {name} ...");
            match f(&cx, &mut results) {
                Ok(()) => eprintln!(" {:.1} s", t.elapsed().as_secs_f64()),
                Err(e) => {
                    eprintln!(" FAILED: {e}");
                    results.skip(name, format!("failed: {e}"));
                    failed.push(name);
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    let ratios = stats::compute_ratios(&results, &ratio_specs(&cx.sizes));
    let cpu_id = ["cpu family", "model", "stepping", "microcode"]
        .map(|k| format!("{k} {}", first_line_of("/proc/cpuinfo", k)))
        .join(", ");
    let machine = serde_json::json!({
        "cpu": first_line_of("/proc/cpuinfo", "model name"),
        "cpu_id": cpu_id,
        "virtualised": first_line_of("/proc/cpuinfo", "flags").split(' ').any(|f| f == "hypervisor"),
        "cpus": cpus.len(),
        "topology": topology(&cpus),
        "caches": caches(),
        "clocksource": sysfs("devices/system/clocksource/clocksource0/current_clocksource"),
        "clock": "Instant::now = clock_gettime(CLOCK_MONOTONIC) via the vDSO; its cost is the \
                  `clock read` figure, and nothing is subtracted",
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "pinned": peer_cpu.map(|c| format!("parent on CPU {}, peers on CPU {c}", cpus[0])),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "depth": format!("{depth:?}"),
        "blocks": cx.plan.blocks,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "seconds": elapsed.as_secs_f64(),
    });
    let text = |k: &str| machine[k].as_str().unwrap_or("").to_owned();
    let mut md = format!(
        "CPU: {} ({}; {}virtualised), {} CPUs: {}; caches {}; clock source {}; kernel {}; {}; \
         load average before {}, after {}; {:?} run, {} alternating blocks, {:.0} s\n",
        text("cpu"),
        text("cpu_id"),
        if machine["virtualised"] == true {
            ""
        } else {
            "not "
        },
        cpus.len(),
        text("topology"),
        text("caches"),
        text("clocksource"),
        text("kernel"),
        machine["pinned"].as_str().unwrap_or("not pinned"),
        load_before,
        text("loadavg_after"),
        depth,
        cx.plan.blocks,
        elapsed.as_secs_f64()
    );
    md.push_str(&stats::to_markdown(&results, &ratios));
    println!("{md}");
    let mut code = i32::from(!failed.is_empty());
    if let Some(path) = &o.json {
        let json = stats::to_json(&results, &ratios, machine);
        if let Err(e) = std::fs::write(path, format!("{json:#}\n")) {
            eprintln!("shmem-bench: cannot write {path}: {e}");
            code = 1;
        }
    }
    if let Some(path) = &o.markdown {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("shmem-bench: cannot write {path}: {e}");
            code = 1;
        }
    }
    code
}

fn child_exit(r: io::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shmem-bench peer: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let args = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let o = parse(&args(&[
            "--quick",
            "--json",
            "x.json",
            "--only",
            "memcpy,futex",
        ]))
        .unwrap();
        assert_eq!(o.depth, Some(Depth::Quick));
        assert_eq!(o.json.as_deref(), Some("x.json"));
        assert_eq!(o.only.unwrap(), ["memcpy", "futex"]);
        assert!(parse(&args(&["--json"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn every_mark_names_measurements_the_run_makes() {
        // Each goal must refer to a (name, impl) pair that some scenario produces, or the
        // goal would silently vanish from the report.
        let produced = [
            ("copy", "memcpy"),
            ("get", "shmem"),
            ("set", "shmem"),
            ("set, sole writer", "shmem"),
            ("wake ping-pong", "shmem"),
            ("wake ping-pong", "futex"),
            ("poll ping-pong", "cache line"),
            ("poll ping-pong, set_with", "shmem"),
            ("poll ping-pong, zero-copy", "iceoryx2"),
            ("set", "iceoryx2"),
            ("syscalls per set, no waiter", "shmem"),
            ("attach+detach", "shmem"),
            ("attach+detach", "shmem C API"),
            ("attach+detach", "shm_open+mmap"),
            ("get one call, writer flat out", "shmem"),
            ("map get_into, 10k keys", "shmem"),
            ("get, beside the map", "shmem"),
            ("map get, 10k keys", "redis"),
            ("get", "redis"),
            ("round trip", "pipe"),
        ];
        let specs = ratio_specs(&SIZES);
        let marked: Vec<_> = specs.iter().filter(|s| s.mark != Mark::None).collect();
        assert_eq!(marked.len(), 15);
        let m = |i: usize| specs[i].mark;
        assert_eq!(
            m(0),
            Mark::AtMost {
                factor: 3.0,
                plus_ns: 10.0
            }
        );
        assert_eq!(
            (m(1), m(4), m(6)),
            (Mark::Bandwidth(0.8), Mark::Zero, Mark::FasterBy(100.0))
        );
        assert_eq!(m(12), Mark::P99Below(20_000.0));
        assert!(specs.iter().any(|s| s.against_scale == 0.5));
        assert_eq!(
            goal("<=1.2x"),
            Some(Mark::AtMost {
                factor: 1.2,
                plus_ns: 0.0
            })
        );
        assert_eq!(goal("<=x"), None);
        for s in marked {
            assert!(produced.contains(&(s.ours.0, s.ours.1)), "{}", s.ours);
            assert!(!s.pair.is_empty() || s.against.is_none(), "{}", s.ours);
            if let Some(a) = &s.against {
                assert!(produced.contains(&(a.0, a.1)), "{a}");
            }
        }
        let names: Vec<_> = groups().iter().map(|g| g.0).collect();
        assert!(names.contains(&"syscalls") && names.contains(&"iceoryx2"));
        assert!(names.contains(&"map"));
    }
}
