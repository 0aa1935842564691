//! `shmem set NAME VALUE`: store a value in a segment that exists.

use std::io::Read;
use std::path::Path;

use crate::cli::SetArgs;
use crate::error::{Failure, Result};

pub fn run(dir: &Path, args: &SetArgs) -> Result {
    // Read the input before attaching: reading a terminal can take as long as the user likes.
    let data = input(args)?;
    let value = super::open_existing(dir, &args.name, super::Need::Write)?;
    value.set(&data)?;
    Ok(())
}

fn input(args: &SetArgs) -> Result<Vec<u8>> {
    if let Some(file) = &args.file {
        return std::fs::read(file)
            .map_err(|e| Failure::error(format!("cannot read {}: {e}", file.display())));
    }
    match args.value.as_deref() {
        Some("-") => {
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .map_err(|e| Failure::error(format!("cannot read standard input: {e}")))?;
            Ok(data)
        }
        Some(text) => Ok(text.as_bytes().to_vec()),
        // clap requires VALUE unless --file is given.
        None => Ok(Vec::new()),
    }
}
