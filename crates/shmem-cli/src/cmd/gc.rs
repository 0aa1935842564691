//! `shmem gc`: remove the segments that nobody holds.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::cli::GcArgs;
use crate::error::Result;

/// An entry left alone.
#[derive(Serialize)]
struct Skipped<'a> {
    name: &'a str,
    reason: &'a str,
}

/// `gc --json`.
#[derive(Serialize)]
struct Output<'a> {
    dry_run: bool,
    /// The segments removed (or, with `dry_run`, that would be).
    removed: &'a [String],
    /// Damaged or unreadable entries, left alone.
    skipped: Vec<Skipped<'a>>,
    /// SysV segments of ours whose creator died before marking them, freed.
    orphans: &'a [i32],
}

pub fn run(dir: &Path, args: &GcArgs) -> Result {
    let done = shmem::admin::collect(dir, args.persistent, args.dry_run)?;
    let removed = &done.removed;
    let mut out = io::stdout().lock();
    if args.json {
        let output = Output {
            dry_run: args.dry_run,
            removed,
            skipped: done
                .skipped
                .iter()
                .map(|(name, reason)| Skipped { name, reason })
                .collect(),
            orphans: &done.orphans,
        };
        serde_json::to_writer_pretty(&mut out, &output).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for name in removed {
            writeln!(out, "{verb} {name}")?;
        }
        for id in &done.orphans {
            writeln!(
                out,
                "{verb} SysV segment {id} (its creator died before marking it)"
            )?;
        }
        for (name, reason) in &done.skipped {
            writeln!(out, "skipped {name}: {reason}")?;
        }
    }
    out.flush()?;
    Ok(())
}
