//! What the multi-process tests of this crate share: the "other process" is the test binary
//! run again (`current_exe() helper --exact --ignored` with `SHMEM_HELPER=<role> <name>`), and
//! its `helper` test (ignored in a normal run) plays that role. Children report on stdout line
//! by line; every wait has a deadline, and no assertion is about a duration.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmem::{Error, Segment};

pub const DEADLINE: Duration = Duration::from_secs(60);
/// What starts a helper's report on its stdout.
pub const MARK: &str = "@@shmem:";

pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shmtest-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts `cmd`. Wine now and then fails a `CreateProcess` with `ERROR_INTERNAL_ERROR`
/// (1359) that a second attempt does not repeat; that error alone is retried, a few times,
/// and any other fails at once. (Linux never returns it: `raw_os_error` there is an errno.)
fn spawn_retrying(cmd: &mut Command) -> Child {
    const ERROR_INTERNAL_ERROR: i32 = 1359;
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if cfg!(windows) && e.raw_os_error() == Some(ERROR_INTERNAL_ERROR) => {
                attempts += 1;
                assert!(attempts < 5, "spawn the helper: {e} ({attempts} attempts)");
                eprintln!("spawn the helper: {e}; trying again");
            }
            Err(e) => panic!("spawn the helper: {e}"),
        }
    }
}

/// A helper process, killed (`TerminateProcess`) if the test ends without waiting for it.
pub struct Helper {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Helper {
    pub fn spawn(role: &str, name: &str) -> Helper {
        Helper::spawn_in(role, name, None)
    }

    /// A helper whose persistent segments live in `dir` (`SHMEM_HELPER_DIR`).
    pub fn spawn_in(role: &str, name: &str, dir: Option<&std::path::Path>) -> Helper {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        if let Some(d) = dir {
            cmd.env("SHMEM_HELPER_DIR", d);
        }
        cmd.args([
            "helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHMEM_HELPER", format!("{role} {name}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        let mut child = spawn_retrying(&mut cmd);
        let out = BufReader::new(child.stdout.take().unwrap());
        Helper { child, out }
    }

    /// The next report of the helper (the harness prints lines of its own).
    pub fn line(&mut self) -> String {
        loop {
            let mut l = String::new();
            let n = self.out.read_line(&mut l).unwrap();
            assert!(n > 0, "the helper ended before reporting");
            // The harness may print `test helper ... ` on the same line first.
            match l.trim_end().split_once(MARK) {
                Some((_, msg)) => return msg.to_owned(),
                None => eprint!("helper: {l}"), // the harness's lines, and any panic
            }
        }
    }

    /// Writes `line` to its stdin (its roles read commands there).
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("the helper's stdin");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// `TerminateProcess`, then reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for a successful exit, at most [`DEADLINE`].
    pub fn finish(mut self) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "helper failed: {st}");
                return;
            }
            assert!(start.elapsed() < DEADLINE, "the helper did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `name` has no live section (its last holder is gone), at most [`DEADLINE`].
pub fn wait_freed(name: &str) {
    let start = Instant::now();
    loop {
        match Segment::builder(name).open_existing() {
            Err(Error::NotFound { .. }) => return,
            Ok(_) => assert!(start.elapsed() < DEADLINE, "segment {name} was never freed"),
            Err(e) => panic!("open_existing({name}): {e}"),
        }
        std::thread::yield_now();
    }
}

pub fn say(msg: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{msg}").unwrap();
    out.flush().unwrap();
}

/// Blocks until the parent closes our stdin or kills us.
pub fn block() {
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
