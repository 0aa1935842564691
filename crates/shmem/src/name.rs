//! Segment names and the files that hold them.
//!
//! A segment `NAME` lives in the file `<dir>/shmem.NAME` (default dir `/dev/shm`, where
//! `shm_open("/shmem.NAME")` would put it too). The prefix lets tools list our objects and skip
//! everyone else's. Names are 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`, do not start with
//! a dot, and never contain `/` or `..`, so a name can never leave its directory.

use crate::error::{Error, Result};

/// The prefix of every segment file.
pub const FILE_PREFIX: &str = "shmem.";

/// The longest name accepted (file names are at most 255 bytes on Linux).
pub const MAX_NAME_LEN: usize = 200;

/// The directory used when none is given.
pub const DEFAULT_DIR: &str = "/dev/shm";

/// Checks that `name` is a valid segment name.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("the name is longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("the name starts with '.'");
    }
    if name.contains("..") {
        return bad("the name contains '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The file name that holds segment `name` (which must be valid).
pub(crate) fn file_name(name: &str) -> String {
    format!("{FILE_PREFIX}{name}")
}

/// The segment name held by file `file`, if it has our prefix and a valid name.
pub fn name_of_file(file: &str) -> Option<&str> {
    let name = file.strip_prefix(FILE_PREFIX)?;
    validate_name(name).ok().map(|()| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["a", "dllmemfilemap", "my-app.v2_cfg", &"x".repeat(200)] {
            validate_name(n).unwrap();
            assert_eq!(name_of_file(&file_name(n)), Some(n));
        }
    }

    #[test]
    fn refuses_bad_names() {
        for n in [
            "",
            ".hidden",
            "a/b",
            "..",
            "a..b",
            "sp ace",
            "é",
            "nul\0",
            &"x".repeat(201),
        ] {
            let e = validate_name(n).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{n:?}: {e}");
        }
        assert_eq!(name_of_file("other.thing"), None);
        assert_eq!(name_of_file("shmem."), None);
    }
}
