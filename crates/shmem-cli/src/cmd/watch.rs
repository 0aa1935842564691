//! `shmem watch NAME`: print each new value as it changes.
//!
//! A watch holds the generation it attached to. If the name is removed (`shmem rm --force`)
//! or a new generation takes it, no new value will ever reach this one: the watch notices
//! within `CHECK_EVERY` (and after every change) and exits with a message saying so (exit
//! code 3, as for a missing segment), rather than following the new generation silently.

use super::Waited;
use crate::cli::WatchArgs;
use crate::error::Result;
use crate::interrupt::Interrupt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

pub fn run(dir: &Path, args: &WatchArgs) -> Result {
    let interrupt = Interrupt::install()?;
    let value = Arc::new(super::open_existing(dir, &args.name, super::Need::Read)?);
    let deadline = super::deadline(args.follow.timeout);
    let mut since = args.follow.since.unwrap_or_else(|| value.version());
    let mut out = io::stdout().lock();
    let mut printed = 0u64;
    while args.follow.count.map_or(true, |count| printed < count) {
        let waited = super::wait_watching_removal(value.segment(), deadline, |slice| {
            super::wait_change(&value, since, slice, &interrupt)
        })?;
        if let Waited::Interrupted = waited {
            break; // Ctrl-C is how a watch normally ends
        }
        let (bytes, version) = value.get_vec()?;
        if args.follow.json {
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
