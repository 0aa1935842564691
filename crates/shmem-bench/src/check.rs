//! Shows that `set` with nobody waiting (and `get`) make no system call: a child runs N of
//! each under `strace -f`, between marker writes to /dev/null, and the parent counts the
//! system calls traced between the markers.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use crate::measure::measurement;
use crate::stats::{Kind, Results};
use crate::Ctx;

const BEGIN: &str = "shmem-bench-mark-begin";
const SETS_DONE: &str = "shmem-bench-mark-sets-done";
const GETS_DONE: &str = "shmem-bench-mark-gets-done";

/// The child: `__sets name=NAME count=N size=S`.
pub fn child_main(args: &[String]) -> io::Result<()> {
    let get = |k: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .ok_or_else(|| io::Error::other(format!("missing {k}=")))
    };
    let num = |k: &str| -> io::Result<usize> {
        get(k)?
            .parse()
            .map_err(|_| io::Error::other(format!("{k}= is not a number")))
    };
    let (name, count, size) = (get("name")?, num("count")?, num("size")?);
    let v = shmem::Value::open(&name, size).map_err(io::Error::other)?;
    let data = vec![0x5au8; size];
    let mut buf = vec![0u8; size];
    let mut null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // First calls outside the window: they may cache the thread id (one gettid).
    v.set(&data).map_err(io::Error::other)?;
    v.get(&mut buf).map_err(io::Error::other)?;
    null.write_all(BEGIN.as_bytes())?;
    for _ in 0..count {
        v.set(std::hint::black_box(&data))
            .map_err(io::Error::other)?;
    }
    null.write_all(SETS_DONE.as_bytes())?;
    for _ in 0..count {
        v.get(std::hint::black_box(&mut buf))
            .map_err(io::Error::other)?;
    }
    null.write_all(GETS_DONE.as_bytes())?;
    Ok(())
}

/// System calls traced between the markers: (between BEGIN and SETS_DONE, between SETS_DONE
/// and GETS_DONE), each as the list of call names; `None` if a marker is missing.
pub fn count_between_markers(trace: &str) -> Option<(Vec<String>, Vec<String>)> {
    let lines: Vec<&str> = trace.lines().collect();
    let at = |m: &str| lines.iter().position(|l| l.contains(m));
    let (b, s, g) = (at(BEGIN)?, at(SETS_DONE)?, at(GETS_DONE)?);
    if !(b < s && s < g) {
        return None;
    }
    let names = |from: usize, to: usize| {
        lines[from + 1..to]
            .iter()
            .map(|l| {
                // With -f each line may start with a pid.
                let l = l.trim_start();
                let l = l
                    .split_once(' ')
                    .filter(|(p, _)| p.chars().all(|c| c.is_ascii_digit()))
                    .map_or(l, |(_, rest)| rest.trim_start());
                l
            })
            .filter(|l| !l.starts_with("+++") && !l.starts_with("---"))
            .map(|l| l.split('(').next().unwrap_or(l).to_owned())
            .collect::<Vec<_>>()
    };
    Some((names(b, s), names(s, g)))
}

fn which(prog: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Runs the child under strace and records system calls per `set` and per `get`.
pub fn syscalls(cx: &Ctx, r: &mut Results) -> io::Result<()> {
    let Some(strace) = which("strace") else {
        r.skip(
            "syscall count",
            "not measured: strace is not installed (apt-get install strace)",
        );
        return Ok(());
    };
    let count = match cx.plan.depth {
        crate::measure::Depth::Smoke => 1_000,
        crate::measure::Depth::Quick => 100_000,
        crate::measure::Depth::Full => 1_000_000,
    };
    let size = 64;
    let dir = std::env::temp_dir().join(format!("shmem-bench-strace-{}", cx.pid));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("trace");
    let status = Command::new(strace)
        .args(["-f", "-qq", "-s", "64", "-o"])
        .arg(&out)
        .arg(std::env::current_exe()?)
        .arg("__sets")
        .arg(format!("name={}", cx.name("sets")))
        .arg(format!("count={count}"))
        .arg(format!("size={size}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let trace = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if !status.status.success() {
        let why = String::from_utf8_lossy(&status.stderr).trim().to_owned();
        r.skip(
            "syscall count",
            format!("not measured: strace run failed: {why}"),
        );
        return Ok(());
    }
    let Some((sets, gets)) = count_between_markers(&trace) else {
        r.skip(
            "syscall count",
            "not measured: markers not found in the trace",
        );
        return Ok(());
    };
    report(r, "syscalls per set, no waiter", size, count, &sets);
    report(r, "syscalls per get", size, count, &gets);
    Ok(())
}

fn report(r: &mut Results, name: &str, size: usize, count: usize, calls: &[String]) {
    let per = calls.len() as f64 / count as f64;
    if !calls.is_empty() {
        let mut names = calls.to_vec();
        names.sort();
        names.dedup();
        eprintln!(
            "  {name}: {} system calls in {count} operations: {}",
            calls.len(),
            names.join(", ")
        );
    }
    r.push(measurement(
        name,
        "shmem",
        size,
        "syscalls/op",
        Kind::Count,
        vec![per],
        count,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_between_markers() {
        let trace = format!(
            "123 openat(AT_FDCWD, \"/dev/null\", O_WRONLY) = 3\n\
             123 write(3, \"{BEGIN}\", 22) = 22\n\
             123 futex(0x7f, FUTEX_WAKE, 1) = 0\n\
             --- SIGCHLD {{si_signo=SIGCHLD}} ---\n\
             123 write(3, \"{SETS_DONE}\", 26) = 26\n\
             123 write(3, \"{GETS_DONE}\", 26) = 26\n\
             +++ exited with 0 +++\n"
        );
        let (sets, gets) = count_between_markers(&trace).unwrap();
        assert_eq!(sets, vec!["futex".to_owned()]);
        assert!(gets.is_empty());
        assert!(count_between_markers("nothing here").is_none());
        let no_pid = format!("write(1, \"{BEGIN}\")\nmmap(NULL)\nwrite(1, \"{SETS_DONE}\")\nwrite(1, \"{GETS_DONE}\")\n");
        assert_eq!(count_between_markers(&no_pid).unwrap().0, vec!["mmap"]);
    }
}
