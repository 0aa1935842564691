//! `shmem hold NAME`: keep a value attached until told to stop.

use std::path::Path;

use shmem::Value;

use crate::cli::HoldArgs;
use crate::error::Result;
use crate::interrupt::Interrupt;

/// The capacity of a value that `hold` creates when no `--size` is given.
const DEFAULT_CAPACITY: usize = 4096;

pub fn run(dir: &Path, args: &HoldArgs) -> Result {
    // Installed before attaching, so that a signal at any time ends in a clean detach.
    let interrupt = Interrupt::install()?;
    let builder = Value::builder(&args.name).dir(dir).mode(args.mode);
    let value = match args.size {
        Some(size) => builder.capacity(size).open()?,
        // Join a value of any capacity; create one of the default capacity if there is none.
        None => match builder.open_existing() {
            Ok(value) => value,
            Err(shmem::Error::NotFound { .. }) => builder.capacity(DEFAULT_CAPACITY).open()?,
            Err(e) => return Err(e.into()),
        },
    };
    super::hold_until_signalled(&args.name, &interrupt, value)
}
