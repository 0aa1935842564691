//! `shmem rm NAME`: remove a segment's name.

use std::path::Path;

use crate::cli::RmArgs;
use crate::error::Result;

pub fn run(dir: &Path, args: &RmArgs) -> Result {
    shmem::admin::remove(dir, &args.name, args.force)?;
    Ok(())
}
