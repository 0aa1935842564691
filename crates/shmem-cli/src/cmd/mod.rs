//! The commands, one file each, and what they share.

mod create;
mod demo;
#[cfg(target_os = "linux")]
mod gc;
mod get;
mod hold;
#[cfg(target_os = "linux")]
mod info;
#[cfg(target_os = "linux")]
mod ls;
mod rm;
mod set;
mod watch;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows::{gc, info, ls};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmem::Value;

use crate::cli::{Cli, Command};
use crate::error::{Failure, Result, EXIT_NOT_FOUND};
use crate::interrupt::Interrupt;

/// Runs the command line's command.
pub fn run(cli: Cli) -> Result {
    let dir = cli.dir.as_path();
    match &cli.command {
        Command::Demo(args) => demo::run(dir, args),
        Command::DemoChild(args) => demo::child(dir, args),
        Command::Set(args) => set::run(dir, args),
        Command::Get(args) => get::run(dir, args),
        Command::Watch(args) => watch::run(dir, args),
        Command::Create(args) => create::run(dir, args),
        Command::Rm(args) => rm::run(dir, args),
        Command::Hold(args) => hold::run(dir, args),
        Command::Info(args) => info::run(dir, args),
        Command::Ls(args) => ls::run(dir, args),
        Command::Gc(args) => gc::run(dir, args),
    }
}

/// Attaches the value `name` that somebody holds (or a persistent one), never creating it:
/// a transient value created here would vanish as soon as this command exits.
fn open_existing(dir: &Path, name: &str) -> Result<Value> {
    Value::builder(name)
        .dir(dir)
        .open_existing()
        .map_err(|e| match e {
            shmem::Error::NotFound { .. } => Failure::new(
                EXIT_NOT_FOUND,
                format!(
                    "segment '{name}' does not exist in {}{}: a transient segment lives only \
                     while a process holds it; keep one with `shmem hold {name}`, or create a \
                     persistent one with `shmem create {name} --size N --persistent`",
                    dir.display(),
                    did_you_mean(dir, name)
                        .map(|n| format!(" (did you mean '{n}'?)"))
                        .unwrap_or_default()
                ),
            ),
            e => e.into(),
        })
}

/// The name of a segment in `dir` closest to `name`, if one is close enough to be a typo
/// (edit distance at most 2, and less than half the name).
fn did_you_mean(dir: &Path, name: &str) -> Option<String> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|f| f.strip_prefix(shmem::FILE_PREFIX))
                .map(str::to_owned)
        })
        .filter(|n| n != name)
        .map(|n| (strsim::levenshtein(name, &n), n))
        .filter(|(d, n)| *d <= 2 && *d * 2 < name.len().max(n.len()))
        .min()
        .map(|(_, n)| n)
}

/// How a wait for a change ended.
enum Waited {
    /// The version moved.
    Changed,
    /// A signal asked us to stop.
    Interrupted,
}

/// Sleeps until `value`'s version differs from `since`, `deadline` passes (a timeout failure
/// saying `timeout`), or a signal arrives (the handler wakes the sleep; no polling).
fn wait_change(
    value: &Arc<Value>,
    since: u64,
    timeout: Option<(Duration, Instant)>,
    interrupt: &Interrupt,
) -> Result<Waited> {
    interrupt.set_waiting_on(value);
    let left = timeout.map(|(_, deadline)| deadline.saturating_duration_since(Instant::now()));
    match value.wait_changed_unless(since, left, || interrupt.is_raised()) {
        Ok(Some(_)) => Ok(Waited::Changed),
        Ok(None) => Ok(Waited::Interrupted),
        Err(shmem::Error::Timeout { name, what, .. }) => Err(shmem::Error::Timeout {
            name,
            what,
            timeout: timeout.map_or(Duration::ZERO, |(t, _)| t),
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// A `--timeout MS` option as the duration and the deadline it sets from now (none if it is
/// too far away to represent).
fn deadline(timeout_ms: Option<u64>) -> Option<(Duration, Instant)> {
    let timeout = Duration::from_millis(timeout_ms?);
    Some((timeout, Instant::now().checked_add(timeout)?))
}
