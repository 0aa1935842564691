//! Named shared memory for Linux with the lifetime of a Windows named file mapping, and a
//! consistent value on top of it.
//!
//! - [`Segment`]: a named segment in `/dev/shm` (or any tmpfs), created or opened by name. The
//!   opener learns whether it created the segment. A *transient* segment (the default) is freed
//!   when the last process that has it open detaches, by drop, exit, `exec` or crash (its
//!   memory is a SysV segment the kernel frees with its last attachment; in a hugetlbfs
//!   directory, where the memory is the file, a crash leaves the file until the next open or
//!   `shmem gc`); a *persistent* one stays until removed. See `platform/linux/segment.rs` for the protocol and why every race is safe.
//! - [`Value`]: a byte string shared between processes. Readers never see a torn value and
//!   never block; the only word they write is a request that writers hold off, after a read
//!   was disturbed (`seqlock.rs`); a writer that crashes never wedges the others; waiting for a change
//!   sleeps on a futex.
//! - [`Map`]: many keys in one segment, created at run time, with values of any size that
//!   fits. Readers never block and never see a torn entry; writers that crash at any point
//!   leave it consistent; waits on one key (woken only by changes in its key's wait bucket) or
//!   on any key sleep in the kernel.
//! - [`admin`]: list, inspect, remove and collect segments (what the `shmem` tool shows).
//!
//! On Windows the same API sits on named page-file sections (`Local\\shmem.NAME`, or
//! `Global\\` with `Namespace::Global`) and named events, whose lifetime the kernel already
//! counts; persistent segments are files in `dir` (`%LOCALAPPDATA%\\shmem` by default), the
//! mode is a DACL, and `admin` is Linux-only (see `platform/windows/`).
//!
//! ```
//! use shmem::Value;
//!
//! let name = format!("doc-example-{}", std::process::id());
//! let v = Value::open(&name, 4096)?; // transient: freed when the last user lets go
//! assert!(v.created());
//! v.set_str("This is a test string")?;
//! assert_eq!(v.get_string()?.0, "This is a test string");
//! # Ok::<(), shmem::Error>(())
//! ```
#![warn(missing_docs)]
// Code the compiler cannot check lives in `platform/` only (its `mod` below allows it).
#![deny(unsafe_code)]

#[cfg(not(any(target_os = "linux", windows)))]
compile_error!(
    "shmem supports Linux (OFD locks, futexes, /proc) and Windows (named file mappings and \
     events) only; see the project's README"
);

#[cfg(target_os = "linux")]
pub mod admin;
#[cfg(feature = "tokio")]
mod changed;
mod error;
mod header;
mod map;
mod name;
#[allow(unsafe_code)]
mod platform;
mod retry;
// Code the compiler cannot check lives in the platform backends only (`platform/mod.rs`).
// `crate::segment` is each platform's `Segment` (as it always was on Windows).
#[cfg(target_os = "linux")]
use platform::linux::segment;
#[cfg(windows)]
use platform::windows::segment;
mod seqlock;
#[cfg(feature = "serde")]
mod serialized;
mod sync;
mod typed;
pub(crate) mod value;
mod wlock;
mod writer;

/// The value protocol and the writers' lock, for the loom model checks only
/// (`tests/loom_value.rs`): the same code the library runs, compiled against loom's atomics.
#[cfg(loom)]
#[doc(hidden)]
pub mod model {
    pub use crate::seqlock::*;
    pub use crate::sync::{AtomicU32, AtomicU64, Ordering};
    pub use crate::wlock::{
        lock, Guard, Holder, LockError, Park, Taken, HANDED_OFF, SLEEPERS, STARVING, TOKEN_MASK,
    };

    /// The map's copy-selection and catch-up protocol (`src/map/protocol.rs`).
    pub mod map {
        pub use crate::map::protocol::*;
    }
}

pub use error::{Error, Result};
pub use header::{Header, Kind, Lifetime, Storage, WakePolicy, HEADER_LEN, LAYOUT_VERSION};
pub use map::{Delete, Entry, Map, MapBuilder, Snapshot, Usage, MAX_KEY_LEN};
pub use name::{name_of_file, validate_name, DEFAULT_DIR, FILE_PREFIX, MAX_NAME_LEN};
#[cfg(target_os = "linux")]
pub use segment::Access;
#[cfg(windows)]
pub use segment::{
    canonical_sddl, collect_persistent, default_dir, list_persistent, sddl_for_mode, user_sid,
    Collected, Listed, Namespace, Securable,
};
pub use segment::{Builder, Segment, MAX_SEGMENT_SIZE};
#[cfg(feature = "serde")]
pub use serialized::Serde;
pub use typed::Typed;
pub use value::{SoleWriter, Value, ValueBuilder};
#[doc(hidden)]
pub use writer::wait_wakeups;

/// Re-exported so that `#[derive(bytemuck::Pod)]` types for [`Typed`] need no extra dependency.
pub use bytemuck;

/// The crate README's examples, compiled and run as doctests (the project README's are run by
/// `shmem-testkit`, since a published crate cannot include files outside itself).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
