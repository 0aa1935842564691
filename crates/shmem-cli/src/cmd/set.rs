//! `shmem set NAME VALUE`: store a value in a segment that exists.

use std::io::Read;
use std::path::Path;

use crate::cli::{Input, SetArgs};
use crate::error::{Failure, Result};

pub fn run(dir: &Path, args: &SetArgs) -> Result {
    // Read the input before attaching: reading a terminal can take as long as the user likes.
    let data = input(&args.input)?;
    let value = super::open_existing(dir, &args.name, super::Need::Write)?;
    value.set(&data)?;
    Ok(())
}

/// The value to store: the contents of `--file`, standard input for `-`, or the value itself.
pub(super) fn input(input: &Input) -> Result<Vec<u8>> {
    if let Some(file) = &input.file {
        return std::fs::read(file)
            .map_err(|e| Failure::error(format!("cannot read {}: {e}", file.display())));
    }
    match input.value.as_deref() {
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
