//! `shmem-bench`: measures shmem against the machine's limits and against what users would use
//! instead, side by side in one run, and computes the ratios the project aims for.
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
pub mod limits;
pub mod map;
pub mod measure;
pub mod ours;
pub mod peer;
pub mod peers;
pub mod stats;
pub mod sys;

use measure::{Depth, Plan};
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

/// A group of measurements, selectable with `--only`.
type Group = fn(&Ctx, &mut Results) -> io::Result<()>;

/// The groups, in the order they run: limits, ours, peers, the syscall check.
pub fn groups() -> Vec<(&'static str, Group)> {
    vec![
        ("memcpy", limits::memcpy),
        ("spin", |cx, r| {
            if cx.peer_cpu.is_none() {
                r.skip("busy polling", "needs two CPUs");
                return Ok(());
            }
            limits::spin_pingpong(cx, r)
        }),
        ("get-set", ours::get_set),
        ("contended", ours::contended),
        ("map", map::map),
        ("reader-tail", |cx, r| {
            if cx.peer_cpu.is_none() {
                r.skip("reader tail", "needs two CPUs");
                return Ok(());
            }
            ours::reader_tail(cx, r)
        }),
        ("wake", |cx, r| ours::blocking_pair(cx, r, MSG)),
        ("poll", |cx, r| {
            if cx.peer_cpu.is_none() {
                r.skip("shmem busy polling", "needs two CPUs");
                return Ok(());
            }
            ours::poll_pingpong(cx, r, MSG)
        }),
        ("lifecycle", |cx, r| {
            ours::lifecycle_pair(cx, r, ATTACH_CAPACITY)
        }),
        ("pipe", |cx, r| peers::pipe_and_socket(cx, r, MSG)),
        ("redis", |cx, r| peers::redis(cx, r, MSG)),
        ("shared-memory", shared_memory_group),
        ("python", |cx, r| peers::python(cx, r, ATTACH_CAPACITY)),
        ("iceoryx2", |_, r| {
            r.skip(
                "iceoryx2",
                "not built: its 0.10 release pulls ~120 crates and runs bindgen, which needs \
                 libclang (not installed here); see docs/BENCHMARKS.md",
            );
            Ok(())
        }),
        ("syscalls", check::syscalls),
    ]
}

#[cfg(feature = "shared-memory-crate")]
fn shared_memory_group(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    peers::shared_memory_crate(cx, r)
}

#[cfg(not(feature = "shared-memory-crate"))]
fn shared_memory_group(_: &Ctx, r: &mut Results) -> io::Result<()> {
    r.skip(
        "shared_memory crate",
        "built without the `shared-memory-crate` feature",
    );
    Ok(())
}

/// The comparisons of a run; the first ones carry the marks.
pub fn ratio_specs(sizes: &[usize]) -> Vec<RatioSpec> {
    fn spec(ours: Key, against: Option<Key>, scale: f64, mark: Mark) -> RatioSpec {
        RatioSpec {
            ours,
            against,
            against_scale: scale,
            mark,
        }
    }
    let at_most = |factor, plus_ns| Mark::AtMost { factor, plus_ns };
    let mut v = vec![
        spec(
            Key("get", "shmem", 64),
            Some(Key("copy", "memcpy", 64)),
            1.0,
            at_most(3.0, 10.0),
        ),
        spec(
            Key("get", "shmem", 1 << 20),
            Some(Key("copy", "memcpy", 1 << 20)),
            1.0,
            Mark::Bandwidth(0.8),
        ),
        spec(
            Key("set", "shmem", 4096),
            Some(Key("copy", "memcpy", 4096)),
            1.0,
            at_most(2.0, 30.0),
        ),
        spec(
            Key("wake ping-pong", "shmem", MSG),
            Some(Key("wake ping-pong", "futex", 4)),
            1.0,
            at_most(1.5, 0.0),
        ),
        spec(
            Key("syscalls per set, no waiter", "shmem", MSG),
            None,
            1.0,
            Mark::Zero,
        ),
        spec(
            Key("attach+detach", "shmem", ATTACH_CAPACITY),
            Some(Key("attach+detach", "shm_open+mmap", ATTACH_CAPACITY)),
            1.0,
            at_most(3.0, 0.0),
        ),
        spec(
            Key("get", "shmem", MSG),
            Some(Key("get", "redis", MSG)),
            1.0,
            Mark::FasterBy(100.0),
        ),
        spec(
            Key("get", "shmem", MSG),
            Some(Key("round trip", "pipe", MSG)),
            1.0,
            Mark::FasterBy(20.0),
        ),
    ];
    let info = |ours, against, scale| spec(ours, Some(against), scale, Mark::None);
    for &s in sizes {
        if s != 64 && s != 1 << 20 {
            v.push(info(Key("get", "shmem", s), Key("copy", "memcpy", s), 1.0));
        }
        if s != 4096 {
            v.push(info(Key("set", "shmem", s), Key("copy", "memcpy", s), 1.0));
        }
    }
    for &s in sizes {
        for op in ["get", "set"] {
            v.push(info(
                Key(op, "shmem", s),
                Key(op, "shared_memory+raw_sync", s),
                1.0,
            ));
        }
        v.push(info(
            Key("get", "shmem", s),
            Key("get", "python shared_memory", s),
            1.0,
        ));
    }
    for s in ours::CONTENDED_SIZES {
        for op in ["get, writer running", "set, writer running"] {
            v.push(info(
                Key(op, "shmem", s),
                Key(op, "shared_memory+raw_sync", s),
                1.0,
            ));
        }
    }
    v.extend([
        info(
            Key("wake ping-pong", "shmem", MSG),
            Key("round trip", "pipe", MSG),
            0.5,
        ),
        info(
            Key("wake ping-pong", "shmem", MSG),
            Key("round trip", "unix socket", MSG),
            0.5,
        ),
        info(
            Key("poll ping-pong", "shmem", MSG),
            Key("poll ping-pong", "cache line", 4),
            1.0,
        ),
        info(
            Key("get", "shmem", MSG),
            Key("round trip", "unix socket", MSG),
            1.0,
        ),
        info(Key("set", "shmem", MSG), Key("set", "redis", MSG), 1.0),
        info(
            Key("create+destroy", "shmem", ATTACH_CAPACITY),
            Key("create+destroy", "shm_open+mmap", ATTACH_CAPACITY),
            1.0,
        ),
        info(
            Key("attach+detach", "shmem", ATTACH_CAPACITY),
            Key("attach+detach", "shared_memory+raw_sync", ATTACH_CAPACITY),
            1.0,
        ),
        info(
            Key("attach+detach", "shmem", ATTACH_CAPACITY),
            Key("attach+detach", "python shared_memory", ATTACH_CAPACITY),
            1.0,
        ),
    ]);
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
    for round in 1..=cx.plan.rounds {
        let mut this = Results::default();
        for (name, group) in groups() {
            if let Some(only) = &o.only {
                if !only.iter().any(|g| g == name) {
                    continue;
                }
            }
            let t = Instant::now();
            eprint!("shmem-bench: round {round}/{}: {name} ...", cx.plan.rounds);
            match group(&cx, &mut this) {
                Ok(()) => eprintln!(" {:.1} s", t.elapsed().as_secs_f64()),
                Err(e) => {
                    eprintln!(" FAILED: {e}");
                    this.skip(name, format!("failed: {e}"));
                    failed.push(name);
                }
            }
        }
        results.merge(this);
    }
    let elapsed = t0.elapsed();
    let ratios = stats::compute_ratios(&results, &ratio_specs(&cx.sizes));
    let machine = serde_json::json!({
        "cpu": first_line_of("/proc/cpuinfo", "model name"),
        "cpus": cpus.len(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "pinned": peer_cpu.map(|c| format!("parent on CPU {}, peers on CPU {c}", cpus[0])),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "depth": format!("{depth:?}"),
        "rounds": cx.plan.rounds,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "seconds": elapsed.as_secs_f64(),
    });
    let mut md = format!(
        "CPU: {} ({} CPUs), kernel {}, {}; load average before {}, after {}; {:?} run \
         ({} rounds pooled), {:.0} s\n",
        machine["cpu"].as_str().unwrap_or(""),
        cpus.len(),
        machine["kernel"].as_str().unwrap_or(""),
        machine["pinned"].as_str().unwrap_or("not pinned"),
        load_before,
        machine["loadavg_after"].as_str().unwrap_or(""),
        depth,
        cx.plan.rounds,
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
        // The marked comparisons are the first eight specs; each must refer to a (name, impl)
        // pair that some group produces, or the mark would silently vanish from the report.
        let produced = [
            ("copy", "memcpy"),
            ("get", "shmem"),
            ("set", "shmem"),
            ("wake ping-pong", "shmem"),
            ("wake ping-pong", "futex"),
            ("syscalls per set, no waiter", "shmem"),
            ("attach+detach", "shmem"),
            ("attach+detach", "shm_open+mmap"),
            ("get", "redis"),
            ("round trip", "pipe"),
        ];
        let specs = ratio_specs(&SIZES);
        let marked: Vec<_> = specs.iter().filter(|s| s.mark != Mark::None).collect();
        assert_eq!(marked.len(), 8);
        for s in marked {
            assert!(produced.contains(&(s.ours.0, s.ours.1)), "{}", s.ours);
            if let Some(a) = &s.against {
                assert!(produced.contains(&(a.0, a.1)), "{a}");
            }
        }
        let names: Vec<_> = groups().iter().map(|g| g.0).collect();
        assert!(names.contains(&"syscalls") && names.contains(&"redis"));
    }
}
