//! `shmem create NAME --size N`: create a value segment.

use std::io::{self, Write};
use std::path::Path;

use shmem::{Lifetime, Value};

use crate::cli::CreateArgs;
use crate::error::{Failure, Result, EXIT_USAGE};

pub fn run(dir: &Path, args: &CreateArgs) -> Result {
    let name = args.name.as_str();
    let lifetime = if args.persistent {
        Lifetime::Persistent
    } else {
        Lifetime::Transient
    };
    let value = Value::builder(name)
        .dir(dir)
        .capacity(args.size)
        .lifetime(lifetime)
        .mode(args.mode)
        .create_new()?;
    if !args.persistent {
        // Created by us and held by nobody else: it goes as we let go. Refuse rather than
        // report a segment that is already gone.
        drop(value);
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "a transient segment lives only while a process holds it, and nobody holds \
                 '{name}', so it would be freed as this command exits: keep one alive with \
                 `shmem hold {name} --size {}`, or create it with --persistent",
                args.size
            ),
        ));
    }
    let capacity = value.capacity();
    let path = super::file_of(value.segment(), dir);
    drop(value);

    let mut out = io::stdout().lock();
    writeln!(
        out,
        "created {} value '{name}' with a capacity of {capacity} bytes ({})",
        lifetime.as_str(),
        path.display()
    )?;
    writeln!(out, "it stays until `shmem rm {name}`")?;
    Ok(())
}
