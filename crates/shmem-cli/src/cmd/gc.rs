//! `shmem gc`: remove the segments that nobody holds.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::cli::GcArgs;
use crate::error::Result;

/// `gc --json`.
#[derive(Serialize)]
struct Output<'a> {
    dry_run: bool,
    /// The segments removed (or, with `dry_run`, that would be).
    removed: &'a [String],
}

pub fn run(dir: &Path, args: &GcArgs) -> Result {
    let removed = shmem::admin::collect(dir, args.persistent, args.dry_run)?;
    let mut out = io::stdout().lock();
    if args.json {
        let output = Output {
            dry_run: args.dry_run,
            removed: &removed,
        };
        serde_json::to_writer_pretty(&mut out, &output).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for name in &removed {
            writeln!(out, "{verb} {name}")?;
        }
    }
    out.flush()?;
    Ok(())
}
