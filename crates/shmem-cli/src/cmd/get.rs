//! `shmem get NAME`: print a value, optionally after waiting for it to change.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use super::Waited;
use crate::cli::GetArgs;
use crate::error::{Failure, Result};
use crate::interrupt::Interrupt;

/// `get --json`.
#[derive(Serialize)]
struct Output<'a> {
    name: &'a str,
    version: u64,
    length: usize,
    /// The value as text, or `null` if it is not UTF-8.
    value: Option<&'a str>,
    /// The value in hexadecimal, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
}

pub fn run(dir: &Path, args: &GetArgs) -> Result {
    // The handler goes in before attaching, so that a signal never kills us while attached.
    let interrupt = if args.wait {
        Some(Interrupt::install()?)
    } else {
        None
    };
    let value = std::sync::Arc::new(super::open_existing(dir, &args.name)?);
    if let Some(interrupt) = interrupt {
        let since = args.since.unwrap_or_else(|| value.version());
        let deadline = super::deadline(args.timeout);
        if let Waited::Interrupted = super::wait_change(&value, since, deadline, &interrupt)? {
            return Err(Failure::interrupted("get --wait"));
        }
    }
    let (bytes, version) = value.get_vec()?;
    drop(value);

    let mut out = io::stdout().lock();
    if args.json {
        let text = std::str::from_utf8(&bytes).ok();
        let output = Output {
            name: &args.name,
            version,
            length: bytes.len(),
            value: text,
            value_hex: text
                .is_none()
                .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect()),
        };
        serde_json::to_writer_pretty(&mut out, &output).map_err(io::Error::from)?;
        writeln!(out)?;
    } else if args.text {
        writeln!(out, "{}", String::from_utf8_lossy(&bytes))?;
    } else {
        out.write_all(&bytes)?;
    }
    out.flush()?;
    Ok(())
}
