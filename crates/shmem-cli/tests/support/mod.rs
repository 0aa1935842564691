//! Test support: a private segment directory, the `shmem` binary, and processes that are
//! killed when a test ends, however it ends. Nothing here sleeps: every wait is on an event
//! (a line of output, a process exit) with a deadline.

#![allow(dead_code)] // each test file uses part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

/// How long any one step may take before the test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A directory of its own under `/dev/shm` (a tmpfs), removed when the test ends.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/dev/shm/shmem-cli-test-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create the test directory");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the files in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .expect("read the test directory")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// `shmem --dir <this directory>`, ready for arguments.
    pub fn shmem(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shmem"));
        cmd.env_remove("SHMEM_DIR").arg("--dir").arg(&self.path);
        cmd
    }

    /// Runs `shmem ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        run(self.shmem().args(args), None)
    }

    /// Runs `shmem ARGS` with `input` on its standard input.
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        run(self.shmem().args(args), Some(input))
    }

    /// Runs `shmem ARGS` and checks that it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(out.code, 0, "shmem {args:?} failed: {out:?}");
        out
    }

    /// Runs `shmem ARGS --json` and parses its output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.ok(&args);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("shmem {args:?} printed invalid JSON ({e}): {out:?}"))
    }

    /// Starts `shmem hold NAME` and waits until it holds the segment.
    pub fn hold(&self, name: &str) -> Proc {
        let holder = Proc::spawn(self.shmem().args(["hold", name]));
        let line = holder.next_line();
        assert_eq!(line, format!("holding {name} (pid {})", holder.pid()));
        holder
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

impl Output {
    /// Checks the failure contract: exit `code`, and one line on stderr that names `name`.
    pub fn assert_fails(&self, code: i32, name: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one line on stderr: {self:?}"
        );
        assert!(self.stderr.starts_with("shmem: "), "{self:?}");
        assert!(
            self.stderr.contains(name),
            "stderr names {name:?}: {self:?}"
        );
    }
}

/// Runs `cmd` to completion, killing it if it outlives [`DEADLINE`].
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmem");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.expect("wait for shmem"),
        Err(_) => {
            signal(pid, Signal::KILL);
            panic!("{desc} did not finish within {DEADLINE:?}");
        }
    };
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stdout_bytes: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a positive pid");
    let _ = kill_process(pid, sig);
}

/// A process that runs alongside the test, its stdout read line by line. Killed (SIGKILL) and
/// reaped when dropped, unless it was waited for.
pub struct Proc {
    child: Option<Child>,
    pid: u32,
    lines: Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shmem");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Proc {
            pid: child.id(),
            child: Some(child),
            lines,
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next line of its stdout; fails the test after [`DEADLINE`] or at end of output.
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no line from pid {} ({e})", self.pid))
    }

    /// Sends `sig` (it has not been reaped, so the pid is still its own).
    pub fn signal(&self, sig: Signal) {
        signal(self.pid, sig);
    }

    /// `kill -9` and reap: when this returns, the kernel has dropped its locks.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// Waits for it to exit; returns its status, remaining stdout and stderr.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let mut child = self.child.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(DEADLINE) {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                signal(self.pid, Signal::KILL);
                panic!("pid {} did not exit within {DEADLINE:?}", self.pid);
            }
        };
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("the output of pid {} did not end ({e})", self.pid),
            }
        }
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, rest, stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
