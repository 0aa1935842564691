//! `shmem watch NAME`: print each new value as it changes.

use std::io::{self, Write};
use std::path::Path;

use super::Waited;
use crate::cli::WatchArgs;
use crate::error::Result;
use crate::interrupt::Interrupt;

pub fn run(dir: &Path, args: &WatchArgs) -> Result {
    let interrupt = Interrupt::install()?;
    let value = std::sync::Arc::new(super::open_existing(dir, &args.name)?);
    let deadline = super::deadline(args.timeout);
    let mut since = args.since.unwrap_or_else(|| value.version());
    let mut out = io::stdout().lock();
    let mut printed = 0u64;
    while args.count.map_or(true, |count| printed < count) {
        if let Waited::Interrupted = super::wait_change(&value, since, deadline, &interrupt)? {
            break; // Ctrl-C is how a watch normally ends
        }
        let (bytes, version) = value.get_vec()?;
        writeln!(out, "{version} {}", String::from_utf8_lossy(&bytes))?;
        out.flush()?;
        since = version;
        printed += 1;
    }
    Ok(())
}
