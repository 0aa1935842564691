//! `shmem get NAME`: print a value, optionally after waiting for it to change.

use std::path::Path;

use super::Waited;
use crate::cli::GetArgs;
use crate::error::{Failure, Result};
use crate::interrupt::Interrupt;

pub fn run(dir: &Path, args: &GetArgs) -> Result {
    // The handler goes in before attaching, so that a signal never kills us while attached.
    let interrupt = if args.wait {
        Some(Interrupt::install()?)
    } else {
        None
    };
    let value = std::sync::Arc::new(super::open_existing(dir, &args.name, super::Need::Read)?);
    if let Some(interrupt) = interrupt {
        let since = args.since.unwrap_or_else(|| value.version());
        let deadline = super::deadline(args.timeout);
        if let Waited::Interrupted = super::wait_change(&value, since, deadline, &interrupt)? {
            return Err(Failure::interrupted("get --wait"));
        }
    }
    let (bytes, version) = value.get_vec()?;
    drop(value);

    let json = args
        .json
        .then(|| crate::render::Json::new(&args.name, version, &bytes));
    super::print_value(&bytes, args.text, json.as_ref())
}
