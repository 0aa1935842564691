//! `shmem demo`: the Windows DLL scenario of the seed, end to end.
//!
//! In the original, a DLL's entry point calls `CreateFileMapping` for "dllmemfilemap" in every
//! process that loads it; the parent stores a string and starts a child, which reads and prints
//! it. Here the parent and the child (this same binary, run as `shmem demo-child`) both open the
//! value by name. The child reports back on its piped stdout whether it created the segment
//! (it should not: the parent holds it), and the parent checks after detaching that the last
//! user freed it.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

#[cfg(target_os = "linux")]
use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
use shmem::Value;

use crate::cli::{DemoArgs, DemoChildArgs};
use crate::error::{Failure, Result};
use crate::interrupt::Interrupt;

/// The size of the original's file mapping.
const CAPACITY: usize = 4096;
/// What the parent stores.
const MESSAGE: &str = "This is a test string";
/// The line on which the child reports `created`; the parent does not echo it.
const CREATED_TAG: &str = "demo-child: created = ";

/// The parent.
pub fn run(dir: &Path, args: &DemoArgs) -> Result {
    let interrupt = Interrupt::install()?;
    let name = args.name.as_str();
    let value = Value::builder(name).dir(dir).capacity(CAPACITY).open()?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "parent: attached '{name}' (created = {})",
        value.created()
    )?;
    value.set_str(MESSAGE)?;
    writeln!(
        out,
        "parent: stored \"{MESSAGE}\", starting a child process"
    )?;
    out.flush()?;

    let mut child = Running::spawn(dir, args, &interrupt)?;
    let child_created = child.forward_output(&mut out)?;
    let status = child.wait()?;
    if interrupt.is_raised() {
        return Err(Failure::interrupted("demo"));
    }
    if !status.success() {
        return Err(Failure::error(format!(
            "demo: the child process failed ({status})"
        )));
    }
    let Some(child_created) = child_created else {
        return Err(Failure::error(
            "demo: the child process did not report back",
        ));
    };
    writeln!(
        out,
        "parent: the child attached the same segment with created = {child_created}"
    )?;

    let (what, fate) = detach(dir, value);
    writeln!(out, "parent: detached; {what} {fate}")?;
    Ok(())
}

/// Detaches; says what named the segment and whether it is gone.
#[cfg(target_os = "linux")]
fn detach(_dir: &Path, value: Value) -> (String, &'static str) {
    let path = value.segment().path().to_owned();
    drop(value);
    let fate = if std::fs::symlink_metadata(&path).is_ok() {
        "still exists: other processes hold it"
    } else {
        "is gone: the last user freed it"
    };
    (path.display().to_string(), fate)
}

/// Detaches; says what named the segment and whether it is gone (an open of the name that
/// finds no section: the kernel destroyed it with the last handle).
#[cfg(windows)]
fn detach(dir: &Path, value: Value) -> (String, &'static str) {
    let seg = value.segment();
    let what = match seg.path() {
        Some(p) => p.display().to_string(),
        None => seg.object_name().to_owned(),
    };
    let name = value.name().to_owned();
    drop(value);
    let fate = match shmem::Segment::builder(&name).dir(dir).open_existing() {
        Err(shmem::Error::NotFound { .. }) => "is gone: the last user freed it",
        _ => "still exists: other processes hold it",
    };
    (what, fate)
}

/// The child: opens the value as every process that loads the DLL does, prints it.
pub fn child(dir: &Path, args: &DemoChildArgs) -> Result {
    // Installed first, so that a signal while attached ends in a clean detach.
    let interrupt = Interrupt::install()?;
    let value = Value::builder(&args.name)
        .dir(dir)
        .capacity(CAPACITY)
        .open()?;
    let (text, _) = value.get_string()?;
    let mut out = io::stdout().lock();
    writeln!(out, "{CREATED_TAG}{}", value.created())?;
    writeln!(out, "Child process read from shared memory: {text}")?;
    out.flush()?;
    if args.pause {
        interrupt.wait();
    }
    Ok(())
}

/// The child process, stopped (SIGTERM) if a signal arrives, killed and reaped if the parent
/// leaves early.
struct Running<'a> {
    child: Child,
    #[cfg(target_os = "linux")]
    pid: Pid,
    interrupt: &'a Interrupt,
}

impl<'a> Running<'a> {
    fn spawn(dir: &Path, args: &DemoArgs, interrupt: &'a Interrupt) -> Result<Running<'a>> {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::error(format!("demo: cannot find this program: {e}")))?;
        let mut command = Command::new(exe);
        command
            .arg("--dir")
            .arg(dir)
            .args(["demo-child", &args.name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if args.pause_child {
            command.arg("--pause");
        }
        let child = command
            .spawn()
            .map_err(|e| Failure::error(format!("demo: cannot start the child process: {e}")))?;
        #[cfg(target_os = "linux")]
        let pid = Pid::from_child(&child);
        #[cfg(target_os = "linux")]
        interrupt.set_child(Some(pid));
        Ok(Running {
            child,
            #[cfg(target_os = "linux")]
            pid,
            interrupt,
        })
    }

    /// Echoes the child's output until it closes it; returns what it reported as `created`.
    fn forward_output(&mut self, out: &mut impl Write) -> Result<Option<bool>> {
        let mut created = None;
        // `Running::spawn` pipes stdout; this is the only place that takes it.
        let Some(stdout) = self.child.stdout.take() else {
            return Ok(None);
        };
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| Failure::error(format!("demo: reading the child: {e}")))?;
            match line.strip_prefix(CREATED_TAG) {
                Some(flag) => created = flag.parse().ok(),
                None => {
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
            }
        }
        Ok(created)
    }

    /// Waits for the child to exit. It is unregistered from the signal handler before it is
    /// reaped, so the handler never signals a pid that the system has given to someone else.
    fn wait(mut self) -> Result<ExitStatus> {
        let failed = |e: io::Error| Failure::error(format!("demo: waiting for the child: {e}"));
        #[cfg(target_os = "linux")]
        loop {
            match waitid(
                WaitId::Pid(self.pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(failed(e.into())),
            }
        }
        self.interrupt.set_child(None);
        self.child.wait().map_err(failed)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // After `wait` this does nothing: the child is reaped, and `Child::kill` knows it.
        self.interrupt.set_child(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
