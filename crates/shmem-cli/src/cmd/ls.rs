//! `shmem ls`: one line per segment, with its attach count.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use shmem::admin::{self, State};

use crate::cli::LsArgs;
use crate::error::Result;

/// One segment (or, with `--all`, a foreign file).
#[derive(Serialize)]
struct Row {
    name: String,
    /// `live`, `idle` (a persistent segment nobody holds), `stale` (a transient name its
    /// users left without detaching: `shmem gc` removes it), `removed` (the name was removed
    /// while processes hold it), `corrupt`, `unreadable` or (with `--all`) `foreign`.
    state: &'static str,
    /// The file's size in bytes.
    size: u64,
    /// What it holds: a value's largest value, a map's room for records, a raw segment's
    /// data bytes; `None` otherwise.
    capacity: Option<u64>,
    lifetime: Option<&'static str>,
    kind: Option<&'static str>,
    attached: usize,
    pids: Vec<u32>,
    /// Why a foreign file is not a shmem segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    foreign: Option<String>,
    /// Why a segment is corrupt or unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub fn run(dir: &Path, args: &LsArgs) -> Result {
    let mut rows = Vec::new();
    for info in admin::list(dir)? {
        let (foreign, reason) = match &info.state {
            State::Foreign(reason) if args.all => (Some(reason.clone()), None),
            State::Foreign(_) => continue,
            s => (None, s.reason().map(str::to_owned)),
        };
        let persistent = info
            .header
            .is_some_and(|h| h.lifetime == shmem::Lifetime::Persistent);
        let state = match info.state {
            State::Stale if persistent => "idle",
            ref s => s.as_str(),
        };
        let capacity = info.capacity().map(|c| c as u64);
        rows.push(Row {
            name: info.name,
            state,
            size: info.size,
            capacity,
            lifetime: info.header.map(|h| h.lifetime.as_str()),
            kind: info.header.map(|h| h.kind.as_str()),
            attached: info.attached,
            pids: info.pids,
            foreign,
            reason,
        });
    }
    if args.all {
        for file in admin::foreign_files(dir)? {
            let size = std::fs::symlink_metadata(dir.join(&file)).map_or(0, |m| m.len());
            rows.push(Row {
                name: file,
                state: "foreign",
                size,
                capacity: None,
                lifetime: None,
                kind: None,
                attached: 0,
                pids: Vec::new(),
                foreign: Some("not a shmem file".into()),
                reason: None,
            });
        }
    }

    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        table(&mut out, &rows)?;
    }
    out.flush()?;
    Ok(())
}

fn table(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    let cap = |r: &Row| r.capacity.map_or("-".to_owned(), |c| c.to_string());
    let size_width = rows.iter().map(|r| cap(r).len()).max().unwrap_or(0).max(8);
    writeln!(
        out,
        "{:<width$}  {:>size_width$}  {:<10}  {:>8}  {:<10}  PIDS",
        "NAME", "CAPACITY", "LIFETIME", "ATTACHED", "STATE"
    )?;
    for r in rows {
        let pids: Vec<String> = r.pids.iter().map(u32::to_string).collect();
        let line = format!(
            "{:<width$}  {:>size_width$}  {:<10}  {:>8}  {:<10}  {}",
            r.name,
            cap(r),
            r.lifetime.unwrap_or("-"),
            r.attached,
            r.state,
            pids.join(",")
        );
        writeln!(out, "{}", line.trim_end())?;
        if let Some(reason) = &r.reason {
            writeln!(out, "  {}: {reason}", r.name)?;
        }
    }
    Ok(())
}
