//! `shmem create NAME --size N`: create a value segment.

use std::io::{self, Write};
use std::path::Path;

use shmem::{Lifetime, Value};

use crate::cli::CreateArgs;
use crate::error::Result;

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
    let capacity = value.capacity();
    let path = value.segment().path().to_owned();
    drop(value);

    let mut out = io::stdout().lock();
    writeln!(
        out,
        "created {} value '{name}' with a capacity of {capacity} bytes ({})",
        lifetime.as_str(),
        path.display()
    )?;
    if args.persistent {
        writeln!(out, "it stays until `shmem rm {name}`")?;
    } else if std::fs::symlink_metadata(&path).is_ok() {
        writeln!(out, "it lives while the processes that hold it do")?;
    } else {
        writeln!(
            out,
            "note: it was freed again as this command let go, because nobody else held it: a \
             transient segment lives only while a process holds it. Keep one with \
             `shmem hold {name} --size {}`, or use --persistent",
            args.size
        )?;
    }
    Ok(())
}
