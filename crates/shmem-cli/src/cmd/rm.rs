//! `shmem rm NAME`: remove a segment's name.

use std::path::Path;

use crate::cli::RmArgs;
use crate::error::Result;

#[cfg(target_os = "linux")]
pub fn run(dir: &Path, args: &RmArgs) -> Result {
    shmem::admin::remove(dir, &args.name, args.force)?;
    Ok(())
}

/// Windows: removes a persistent segment's file; its holders (which Windows cannot count)
/// keep their bytes until they let go, as `--force` does on Linux. A transient segment
/// cannot be removed (exit code 5): the kernel frees it with its last handle.
#[cfg(windows)]
pub fn run(dir: &Path, args: &RmArgs) -> Result {
    match shmem::Segment::builder(&args.name).dir(dir).remove() {
        Err(e @ shmem::Error::Unsupported { .. }) => Err(crate::error::Failure::new(
            crate::error::EXIT_UNSUPPORTED,
            e.to_string(),
        )),
        r => Ok(r?),
    }
}
