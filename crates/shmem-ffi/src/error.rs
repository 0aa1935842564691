//! Error codes: every fallible function returns one of these `int`s.
//!
//! The mapping from the Rust library's [`shmem_core::Error`] is in [`code_of`]; the C header
//! documents it on each constant.

use std::ffi::{c_char, c_int, CStr};

use crate::panic;

/// The result of a libshmem call: 0 for success, a negative code for each kind of failure.
/// Functions return these as `int`.
#[repr(C)]
#[allow(non_camel_case_types)] // the C names
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum shmem_result {
    /// Success.
    SHMEM_OK = 0,
    /// A required pointer was NULL, a name is not valid (1 to 200 bytes of `[A-Za-z0-9._-]`, not
    /// starting with a dot), a map key is empty or longer than 255 bytes, a string is not
    /// UTF-8, flags are unknown or contradictory, or a capacity is 0 when creating, too large,
    /// or larger than an existing segment's.
    SHMEM_ERR_INVALID_ARGUMENT = -1,
    /// No live segment has this name (opening without `SHMEM_CREATE`, or `shmem_unlink`). Also
    /// what the compatibility functions report once the library has been unloaded, and what
    /// `shmem_map_get`/`shmem_map_delete` report for a key that is not in the map.
    SHMEM_ERR_NOT_FOUND = -2,
    /// A live segment has this name (`SHMEM_CREATE | SHMEM_EXCLUSIVE`).
    SHMEM_ERR_EXISTS = -3,
    /// The file mode or owner of the segment forbids this process to use it.
    SHMEM_ERR_PERMISSION = -4,
    /// No room for the segment: memory, the SysV limits (`kernel.shmmni`, `shmall`, `shmmax`)
    /// or the memory cgroup for a transient segment, the directory's tmpfs (space or inodes)
    /// for a persistent one; the message names which. Or a map has no room for the entry
    /// (`shmem_map_set`; nothing changed).
    SHMEM_ERR_NO_SPACE = -5,
    /// `shmem_set` was given more bytes than the segment's capacity; nothing was stored.
    SHMEM_ERR_TOO_LARGE = -6,
    /// `shmem_get`'s buffer is smaller than the value; nothing was copied and `*out_len` is the
    /// size needed.
    SHMEM_ERR_BUFFER_TOO_SMALL = -7,
    /// The file under the name is not a usable shmem value: its header or state is inconsistent,
    /// it is not a shmem segment at all (say a directory or a symbolic link), or it is a segment
    /// of another layout version or kind.
    SHMEM_ERR_CORRUPT = -8,
    /// `shmem_wait` saw no change before its timeout, `shmem_set` waited 5 seconds for another
    /// live writer, or `shmem_open` waited 10 seconds for a process holding the segment's
    /// exclusive lock (an initialiser or a detacher).
    SHMEM_ERR_TIMEOUT = -9,
    /// Any other system error, including a segment directory that does not exist.
    SHMEM_ERR_IO = -10,
    /// A bug in libshmem: a Rust panic was caught at the library boundary. Nothing was returned.
    SHMEM_ERR_INTERNAL = -11,
    /// `shmem_wait` was ended by `shmem_wake` on its handle before the value changed.
    SHMEM_ERR_CANCELLED = -12,
    /// The handle has been closed by `shmem_close` (in this thread or another, before or during
    /// this call). Nothing was done.
    SHMEM_ERR_CLOSED = -13,
}

pub(crate) use shmem_result::*;

/// Every code, for `shmem_strerror`.
const ALL: [shmem_result; 14] = [
    SHMEM_OK,
    SHMEM_ERR_INVALID_ARGUMENT,
    SHMEM_ERR_NOT_FOUND,
    SHMEM_ERR_EXISTS,
    SHMEM_ERR_PERMISSION,
    SHMEM_ERR_NO_SPACE,
    SHMEM_ERR_TOO_LARGE,
    SHMEM_ERR_BUFFER_TOO_SMALL,
    SHMEM_ERR_CORRUPT,
    SHMEM_ERR_TIMEOUT,
    SHMEM_ERR_IO,
    SHMEM_ERR_INTERNAL,
    SHMEM_ERR_CANCELLED,
    SHMEM_ERR_CLOSED,
];

impl From<shmem_result> for c_int {
    fn from(r: shmem_result) -> c_int {
        r as c_int
    }
}

/// The code for an error of the Rust library.
pub(crate) fn code_of(e: &shmem_core::Error) -> shmem_result {
    use shmem_core::Error as E;
    match e {
        // `Unsupported`: `shmem_unlink` of a transient segment on Windows.
        E::InvalidName { .. }
        | E::InvalidSize { .. }
        | E::InvalidKey { .. }
        | E::Unsupported { .. } => SHMEM_ERR_INVALID_ARGUMENT,
        E::NotFound { .. } => SHMEM_ERR_NOT_FOUND,
        E::Exists { .. } => SHMEM_ERR_EXISTS,
        E::PermissionDenied { .. } => SHMEM_ERR_PERMISSION,
        E::NoSpace { .. } | E::MapFull { .. } => SHMEM_ERR_NO_SPACE,
        E::TooLarge { .. } => SHMEM_ERR_TOO_LARGE,
        E::BufferTooSmall { .. } => SHMEM_ERR_BUFFER_TOO_SMALL,
        E::Corrupt { .. } | E::Foreign { .. } | E::Incompatible { .. } => SHMEM_ERR_CORRUPT,
        E::Timeout { .. } => SHMEM_ERR_TIMEOUT,
        // `Busy` comes only from an unforced removal, which this library never asks for.
        E::Busy { .. } | E::Io { .. } => SHMEM_ERR_IO,
        _ => SHMEM_ERR_IO, // variants added to the Rust library later
    }
}

/// A static, NUL-terminated English description of an error code; never NULL. The string must
/// not be freed or modified. Unknown codes give "unknown error code".
#[no_mangle]
pub extern "C" fn shmem_strerror(code: c_int) -> *const c_char {
    panic::guard_or(c"unknown error code".as_ptr(), || message(code).as_ptr())
}

fn message(code: c_int) -> &'static CStr {
    let Some(&code) = ALL.iter().find(|&&r| c_int::from(r) == code) else {
        return c"unknown error code";
    };
    match code {
        SHMEM_OK => c"success",
        SHMEM_ERR_INVALID_ARGUMENT => c"invalid argument",
        SHMEM_ERR_NOT_FOUND => c"no such segment or map key",
        SHMEM_ERR_EXISTS => c"segment already exists",
        SHMEM_ERR_PERMISSION => c"permission denied",
        SHMEM_ERR_NO_SPACE => c"no space left for the segment",
        SHMEM_ERR_TOO_LARGE => c"value larger than the segment's capacity",
        SHMEM_ERR_BUFFER_TOO_SMALL => c"buffer too small for the value",
        SHMEM_ERR_CORRUPT => c"segment is corrupt or not a shmem value",
        SHMEM_ERR_TIMEOUT => c"timed out",
        SHMEM_ERR_IO => c"system error",
        SHMEM_ERR_INTERNAL => c"internal error in libshmem",
        SHMEM_ERR_CANCELLED => c"wait cancelled by shmem_wake",
        SHMEM_ERR_CLOSED => c"handle closed by shmem_close",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_message() {
        let codes = ALL;
        let mut seen: Vec<&CStr> = codes.iter().map(|&c| message(c.into())).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), codes.len());
        assert!(!seen.contains(&message(1)));
        assert_eq!(message(1), message(-14));
    }

    #[test]
    fn errors_map_to_their_codes() {
        let name = String::from("n");
        let dir = std::path::PathBuf::from("/d");
        let cases = [
            (
                shmem_core::Error::NotFound {
                    name: name.clone(),
                    dir: dir.clone(),
                },
                SHMEM_ERR_NOT_FOUND,
            ),
            (
                shmem_core::Error::Exists {
                    name: name.clone(),
                    dir,
                },
                SHMEM_ERR_EXISTS,
            ),
            (
                shmem_core::Error::TooLarge {
                    name: name.clone(),
                    len: 2,
                    capacity: 1,
                },
                SHMEM_ERR_TOO_LARGE,
            ),
            (
                shmem_core::Error::Foreign {
                    name: name.clone(),
                    reason: String::new(),
                },
                SHMEM_ERR_CORRUPT,
            ),
            (
                shmem_core::Error::MapFull {
                    name: name.clone(),
                    reason: String::new(),
                },
                SHMEM_ERR_NO_SPACE,
            ),
            (
                shmem_core::Error::InvalidKey {
                    name: name.clone(),
                    len: 0,
                    reason: "empty",
                },
                SHMEM_ERR_INVALID_ARGUMENT,
            ),
            (
                shmem_core::Error::InvalidName {
                    name,
                    reason: "bad",
                },
                SHMEM_ERR_INVALID_ARGUMENT,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(code_of(&e), code, "{e}");
        }
    }
}
