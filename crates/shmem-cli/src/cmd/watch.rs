//! `shmem watch NAME`: print each new value as it changes.
//!
//! A watch holds the generation it attached to. If the name is removed (`shmem rm --force`)
//! or a new generation takes it, no new value will ever reach this one: the watch notices
//! within [`CHECK_EVERY`] (and after every change) and exits with a message saying so (exit
//! code 3, as for a missing segment), rather than following the new generation silently.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmem::Value;

use super::Waited;
use crate::cli::WatchArgs;
use crate::error::{Failure, Result, EXIT_NOT_FOUND};
use crate::interrupt::Interrupt;

/// How often a sleeping watch checks that its name still leads to its generation.
const CHECK_EVERY: Duration = Duration::from_millis(250);

pub fn run(dir: &Path, args: &WatchArgs) -> Result {
    let interrupt = Interrupt::install()?;
    let value = Arc::new(super::open_existing(dir, &args.name, super::Need::Read)?);
    let deadline = super::deadline(args.timeout);
    let mut since = args.since.unwrap_or_else(|| value.version());
    let mut out = io::stdout().lock();
    let mut printed = 0u64;
    while args.count.map_or(true, |count| printed < count) {
        if let Waited::Interrupted = wait_or_notice_removal(&value, since, deadline, &interrupt)? {
            break; // Ctrl-C is how a watch normally ends
        }
        let (bytes, version) = value.get_vec()?;
        if args.json {
            let line = crate::render::Json::new(&args.name, version, &bytes);
            serde_json::to_writer(&mut out, &line).map_err(io::Error::from)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{version} {}", crate::render::one_line(&bytes))?;
        }
        out.flush()?;
        since = version;
        printed += 1;
    }
    Ok(())
}

/// Waits for a change like `super::wait_change`, in slices of [`CHECK_EVERY`], failing as soon
/// as the value's name no longer leads to the generation this watch holds.
fn wait_or_notice_removal(
    value: &Arc<Value>,
    since: u64,
    timeout: Option<(Duration, Instant)>,
    interrupt: &Interrupt,
) -> Result<Waited> {
    loop {
        let now = Instant::now();
        let slice_end = now + CHECK_EVERY;
        let last = timeout.is_some_and(|(_, deadline)| deadline <= slice_end);
        let slice = match timeout {
            Some((t, deadline)) if last => Some((t, deadline)),
            _ => Some((CHECK_EVERY, slice_end)),
        };
        match super::wait_change(value, since, slice, interrupt) {
            Err(e) if !last && e.is_timeout() => {}
            r => {
                if let Ok(Waited::Changed) = r {
                    check_current(value)?;
                }
                return r;
            }
        }
        check_current(value)?;
    }
}

fn check_current(value: &Value) -> Result {
    if value.segment().is_current() {
        return Ok(());
    }
    Err(Failure::new(
        EXIT_NOT_FOUND,
        format!(
            "segment '{}' was removed while being watched (`shmem rm --force`, or a new \
             generation took its name): this watch holds the old generation, which no new value \
             will reach; stopping",
            value.name()
        ),
    ))
}
