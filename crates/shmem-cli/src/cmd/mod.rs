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
mod map;
mod rm;
mod set;
mod watch;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows::{gc, info, ls};

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmem::{Kind, Segment, Value};

use crate::cli::{Cli, Command};
use crate::error::{Failure, Result, EXIT_NOT_FOUND};
use crate::interrupt::{Interrupt, Wake};

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
        Command::Map(args) => map::run(dir, args),
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
/// a transient value created here would vanish as soon as this command exits ([`attach`]).
fn open_existing(dir: &Path, name: &str, need: Need) -> Result<Value> {
    attach(Value::builder(name).dir(dir), dir, name, Kind::Value, need)
}

/// The builder of what a command attaches, a value or a map: what [`attach`] needs of it.
trait Attach {
    type Handle;
    /// The builder with `mode` (what lets it accept another user's segment).
    #[cfg(target_os = "linux")]
    fn with_mode(self, mode: u32) -> Self;
    /// The builder for a read-only handle.
    #[cfg(target_os = "linux")]
    fn read_only(self) -> Self;
    fn attach_existing(&self) -> shmem::Result<Self::Handle>;
}

/// The same forwarding impl for each builder.
macro_rules! impl_attach {
    ($builder:ty => $handle:ty) => {
        impl Attach for $builder {
            type Handle = $handle;
            #[cfg(target_os = "linux")]
            fn with_mode(self, mode: u32) -> Self {
                self.mode(mode)
            }
            #[cfg(target_os = "linux")]
            fn read_only(self) -> Self {
                self.access(shmem::Access::ReadOnly)
            }
            fn attach_existing(&self) -> shmem::Result<$handle> {
                self.open_existing()
            }
        }
    };
}

impl_attach!(shmem::ValueBuilder => Value);
impl_attach!(shmem::MapBuilder => shmem::Map);

/// Attaches the existing `kind` named `name` that `builder` describes, for `need`; a missing
/// one is reported by [`not_found`].
///
/// Another user's segment is opened when its mode lets this user in: these commands create
/// nothing, the user names the segment, and `shmem info` shows its owner (the library's
/// owner-only rule protects programs that create their segment from a name planted before
/// them; `hold` keeps it unless `--mode` shares). Readers open read-write when they may,
/// since a read-write reader can ask writers to hold off and wait on any value or key, and
/// fall back to read-only when the mode refuses writing (a 0644 segment of another user);
/// writers open read-write only, so that a refusal is a clear permission error.
fn attach<B: Attach>(
    builder: B,
    dir: &Path,
    name: &str,
    kind: Kind,
    need: Need,
) -> Result<B::Handle> {
    // A group/other mode is the library's way to accept another user's name file; nothing
    // is created here, so it sets no file's mode. (On Windows the mode is the DACL of the
    // events a joiner creates: the owner-only default stays there.)
    #[cfg(target_os = "linux")]
    let builder = builder.with_mode(0o666);
    let opened = match builder.attach_existing() {
        #[cfg(target_os = "linux")]
        Err(shmem::Error::PermissionDenied { .. }) if need == Need::Read => {
            builder.read_only().attach_existing()
        }
        r => r,
    };
    #[cfg(not(target_os = "linux"))]
    let _ = need;
    opened.map_err(|e| not_found(dir, name, kind, e))
}

/// `e`, or for [`shmem::Error::NotFound`] a message that says how to make `name` (a value or
/// a map) exist, and which existing name it may be a typo of.
fn not_found(dir: &Path, name: &str, kind: Kind, e: shmem::Error) -> Failure {
    let cmd = if kind == Kind::Map {
        "shmem map"
    } else {
        "shmem"
    };
    match e {
        shmem::Error::NotFound { .. } => Failure::new(
            EXIT_NOT_FOUND,
            format!(
                "segment '{name}' does not exist in {}{}: a transient segment lives only \
                 while a process holds it; keep one with `{cmd} hold {name}`, or create a \
                 persistent one with `{cmd} create {name} --size N --persistent`",
                dir.display(),
                did_you_mean(dir, name)
                    .map(|n| format!(" (did you mean '{n}'?)"))
                    .unwrap_or_default()
            ),
        ),
        e => e.into(),
    }
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
    wait_with(value, timeout, interrupt, |value, left, cancelled| {
        value.wait_changed_unless(since, left, cancelled)
    })
}

/// Runs `wait(target, time left, cancelled)`, a library wait that returns `Ok(None)` once
/// `cancelled()` is true, with a signal waking it: `Interrupted` then, `Changed` when it
/// returned a version, a timeout failure saying `timeout` when `deadline` passed first.
fn wait_with<T: Wake + 'static>(
    target: &Arc<T>,
    timeout: Option<(Duration, Instant)>,
    interrupt: &Interrupt,
    wait: impl FnOnce(&T, Option<Duration>, &dyn Fn() -> bool) -> shmem::Result<Option<u64>>,
) -> Result<Waited> {
    interrupt.set_waiting_on(target);
    let left = timeout.map(|(_, deadline)| deadline.saturating_duration_since(Instant::now()));
    match wait(target, left, &|| interrupt.is_raised()) {
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

/// How often a sleeping watch checks that its name still leads to its generation.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Runs `wait(slice)` (a wait like [`wait_change`] with that timeout) in slices of
/// [`CHECK_EVERY`] until it returns or `timeout` passes, failing as soon as the name of `seg`
/// no longer leads to the generation it holds: a watch on it would wait forever.
fn wait_watching_removal(
    seg: &Segment,
    timeout: Option<(Duration, Instant)>,
    mut wait: impl FnMut(Option<(Duration, Instant)>) -> Result<Waited>,
) -> Result<Waited> {
    loop {
        let now = Instant::now();
        let slice_end = now + CHECK_EVERY;
        let last = timeout.is_some_and(|(_, deadline)| deadline <= slice_end);
        let slice = match timeout {
            Some((t, deadline)) if last => Some((t, deadline)),
            _ => Some((CHECK_EVERY, slice_end)),
        };
        match wait(slice) {
            Err(e) if !last && e.is_timeout() => {}
            r => {
                if let Ok(Waited::Changed) = r {
                    check_current(seg)?;
                }
                return r;
            }
        }
        check_current(seg)?;
    }
}

fn check_current(seg: &Segment) -> Result {
    if seg.is_current() {
        return Ok(());
    }
    Err(Failure::new(
        EXIT_NOT_FOUND,
        format!(
            "segment '{}' was removed while being watched (`shmem rm --force`, or a new \
             generation took its name): this watch holds the old generation, which no new value \
             will reach; stopping",
            seg.name()
        ),
    ))
}

/// Prints a value as `get` does: `json` (pretty) if given; else with `text` as a line of UTF-8
/// (escaped on a terminal, so a value cannot drive it); else the raw bytes.
fn print_value(bytes: &[u8], text: bool, json: Option<&impl serde::Serialize>) -> Result {
    let mut out = io::stdout().lock();
    if let Some(json) = json {
        serde_json::to_writer_pretty(&mut out, json).map_err(io::Error::from)?;
        writeln!(out)?;
    } else if text && io::stdout().is_terminal() {
        writeln!(out, "{}", crate::render::one_line(bytes))?;
    } else if text {
        writeln!(out, "{}", String::from_utf8_lossy(bytes))?;
    } else {
        out.write_all(bytes)?;
    }
    out.flush()?;
    Ok(())
}

/// Says `holding NAME (pid P)`, then keeps `handle` (an attached value or map) until a signal
/// arrives, and detaches.
fn hold_until_signalled<T>(name: &str, interrupt: &Interrupt, handle: T) -> Result {
    let mut out = io::stdout().lock();
    writeln!(out, "holding {name} (pid {})", std::process::id())?;
    out.flush()?;
    drop(out);
    interrupt.wait();
    drop(handle);
    Ok(())
}

/// The file of persistent segment `seg` (every persistent segment has one; on Windows a
/// transient one has none, and `dir` stands for it).
fn file_of(seg: &Segment, dir: &Path) -> std::path::PathBuf {
    #[cfg(not(windows))]
    let _ = dir;
    #[cfg(not(windows))]
    let path = seg.path();
    #[cfg(windows)]
    let path = seg.path().unwrap_or(dir);
    path.to_owned()
}

/// A `--timeout MS` option as the duration and the deadline it sets from now (none if it is
/// too far away to represent).
fn deadline(timeout_ms: Option<u64>) -> Option<(Duration, Instant)> {
    let timeout = Duration::from_millis(timeout_ms?);
    Some((timeout, Instant::now().checked_add(timeout)?))
}
