//! The commands, one file each, and what they share.

mod create;
mod demo;
mod gc;
mod get;
mod hold;
mod info;
mod ls;
mod rm;
mod set;
mod watch;

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

/// What a command needs of the value it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// To read it (and wait on it): read-write when the mode allows it, else read-only.
    Read,
    /// To write it: read-write only.
    Write,
}

/// Attaches the value `name` that somebody holds (or a persistent one), never creating it:
/// a transient value created here would vanish as soon as this command exits.
///
/// Another user's segment is opened when its mode lets this user in: these commands create
/// nothing, the user names the segment, and `shmem info` shows its owner (the library's
/// owner-only rule protects programs that create their segment from a name planted before
/// them; `hold` keeps it unless `--mode` shares). Readers open read-write when they may,
/// since a read-write reader can ask writers to hold off and wait on any value, and fall back
/// to read-only when the mode refuses writing (a 0644 segment of another user).
fn open_existing(dir: &Path, name: &str, need: Need) -> Result<Value> {
    // A group/other mode is the library's way to accept another user's name file; nothing
    // is created here, so it sets no file's mode.
    let builder = Value::builder(name).dir(dir).mode(0o666);
    let opened = match builder.open_existing() {
        Err(shmem::Error::PermissionDenied { .. }) if need == Need::Read => {
            builder.access(shmem::Access::ReadOnly).open_existing()
        }
        r => r,
    };
    opened.map_err(|e| match e {
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
