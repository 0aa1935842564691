//! `ls`, `info` and `gc` on Windows, where the kernel keeps the facts the Linux commands read
//! from `/dev/shm` and `/proc` to itself.
//!
//! - Transient segments are named sections (`Local\shmem.NAME`), and Windows has no call that
//!   lists named sections nor one that counts a section's holders: `ls` lists the persistent
//!   segments of the directory and says on stderr that transient ones cannot be listed;
//!   `info NAME` attaches by name without creating (`OpenFileMappingW`) and shows the header
//!   and version, never the holders.
//! - Nothing transient is ever stale: the kernel frees a section with its last handle, crash
//!   included, and leaves no name behind, so `gc` has nothing to collect there; `gc
//!   --persistent` removes the persistent segments nobody holds, which the kernel proves by
//!   letting an unshared open of the file succeed (`shmem::collect_persistent`).

use std::io::{self, Write};
use std::path::Path;

use serde_json::json;
use shmem::{Kind, Value};

use crate::error::Result;

/// What `ls` prints on stderr, and `gc` explains.
const NO_LISTING: &str = "transient segments are not listed: Windows has no call that \
                          enumerates named sections (Local\\shmem.NAME), nor one that counts \
                          their holders; `shmem info NAME` shows one by name";

/// A value's capacity and version, from joining it (never creating).
fn peek(dir: &Path, name: &str) -> Option<(usize, u64)> {
    let v = Value::builder(name).dir(dir).open_existing().ok()?;
    Some((v.capacity(), v.version()))
}

pub mod ls {
    use super::*;
    use crate::cli::LsArgs;

    pub fn run(dir: &Path, args: &LsArgs) -> Result {
        let listed = match shmem::list_persistent(dir) {
            Ok(l) => l,
            // No directory yet: no persistent segment was ever created here.
            Err(shmem::Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let mut rows = Vec::new();
        for l in &listed {
            let row = match &l.header {
                Ok(h) => {
                    let peeked = (h.kind == Kind::Value)
                        .then(|| peek(dir, &l.name))
                        .flatten();
                    json!({
                        "name": l.name,
                        "state": "idle-or-live",
                        "size": h.size,
                        "capacity": match h.kind {
                            Kind::Value => peeked.map(|p| p.0 as u64),
                            _ => Some(h.size - shmem::HEADER_LEN as u64),
                        },
                        "lifetime": h.lifetime.as_str(),
                        "kind": h.kind.as_str(),
                        "version": peeked.map(|p| p.1),
                        "path": l.path.display().to_string(),
                    })
                }
                Err(e) => json!({
                    "name": l.name,
                    "state": match e {
                        shmem::Error::Foreign { .. } => "foreign",
                        shmem::Error::Corrupt { .. } => "corrupt",
                        _ => "unreadable",
                    },
                    "reason": e.to_string(),
                    "path": l.path.display().to_string(),
                }),
            };
            if row["state"] == "foreign" && !args.all {
                continue;
            }
            rows.push(row);
        }
        let mut out = io::stdout().lock();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &rows).map_err(io::Error::from)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{:<24} {:<10} {:>10} {:>10} {:<10} {:<6}",
                "NAME", "STATE", "SIZE", "CAPACITY", "LIFETIME", "KIND"
            )?;
            for r in &rows {
                let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
                let n = |k: &str| r[k].as_u64().map_or("-".into(), |v| v.to_string());
                writeln!(
                    out,
                    "{:<24} {:<10} {:>10} {:>10} {:<10} {:<6}",
                    s("name"),
                    s("state"),
                    n("size"),
                    n("capacity"),
                    s("lifetime"),
                    s("kind")
                )?;
            }
        }
        out.flush()?;
        eprintln!("shmem: ls: {NO_LISTING}");
        Ok(())
    }
}

pub mod info {
    use super::*;
    use crate::cli::InfoArgs;

    /// The header, file, object name and DACL of an attached segment.
    fn facts(seg: &shmem::Segment) -> (shmem::Header, Option<String>, String, Option<String>) {
        (
            *seg.header(),
            seg.path().map(|p| p.display().to_string()),
            seg.object_name().to_owned(),
            seg.dacl().ok(),
        )
    }

    pub fn run(dir: &Path, args: &InfoArgs) -> Result {
        // A value (the CLI's kind), else a raw segment: joined, never created.
        let (seg_facts, peeked) = match Value::builder(&args.name).dir(dir).open_existing() {
            Ok(v) => (facts(v.segment()), Some((v.capacity(), v.version()))),
            Err(shmem::Error::Incompatible { .. }) => (
                facts(
                    &shmem::Segment::builder(&args.name)
                        .dir(dir)
                        .open_existing()?,
                ),
                None,
            ),
            Err(e) => return Err(e.into()),
        };
        let (h, path, object, dacl) = seg_facts;
        let created = h
            .created
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let output = json!({
            "name": args.name,
            "kind": h.kind.as_str(),
            "lifetime": h.lifetime.as_str(),
            "size": h.size,
            "capacity": peeked.map(|p| p.0),
            "version": peeked.map(|p| p.1),
            "created_unix": created,
            "creator_pid": h.creator_pid,
            "path": path,
            "object": if path.is_none() { Some(object) } else { None },
            "dacl": dacl,
            "attached": null,
            "attached_unavailable": "Windows cannot count a section's or a file's holders",
        });
        let mut out = io::stdout().lock();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &output).map_err(io::Error::from)?;
            writeln!(out)?;
        } else {
            let o = output.as_object().expect("an object");
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                writeln!(out, "{k:<21} {text}")?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

pub mod gc {
    use super::*;
    use crate::cli::GcArgs;

    pub fn run(dir: &Path, args: &GcArgs) -> Result {
        let done = if args.persistent {
            match shmem::collect_persistent(dir, args.dry_run) {
                Ok(done) => done,
                // No directory: no persistent segment was ever created there.
                Err(shmem::Error::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    shmem::Collected::default()
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            shmem::Collected::default()
        };
        let mut out = io::stdout().lock();
        if args.json {
            let skipped: Vec<_> = done
                .skipped
                .iter()
                .map(|(name, reason)| json!({ "name": name, "reason": reason }))
                .collect();
            let o = json!({
                "dry_run": args.dry_run,
                "removed": done.removed,
                "held": done.held,
                "skipped": skipped,
            });
            serde_json::to_writer_pretty(&mut out, &o).map_err(io::Error::from)?;
            writeln!(out)?;
        } else {
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            for name in &done.removed {
                writeln!(out, "{verb} {name}")?;
            }
            for (name, reason) in &done.skipped {
                writeln!(out, "skipped {name}: {reason}")?;
            }
            if !args.persistent {
                writeln!(
                    out,
                    "nothing transient to collect: Windows frees a transient segment with its \
                     last handle, crash included, and leaves no name behind (persistent \
                     segments nobody holds: --persistent)"
                )?;
            }
        }
        out.flush()?;
        Ok(())
    }
}
