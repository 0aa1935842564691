//! libshmem: the C library of shmem.
//!
//! Built as `libshmem.so` and `libshmem.a`; the C declarations are in `include/shmem.h`,
//! generated from this crate by cbindgen (`tests/header.rs` checks that the committed header is
//! up to date). Two APIs:
//!
//! - [`compat`]: the original DLL's `SetSharedMem` and `GetSharedMem` on a default segment that
//!   is attached when the library is loaded and detached when it is unloaded, like `DllMain`;
//! - [`value`]: handles (`shmem_value`) with error codes, for new code.
//!
//! The boundary follows rustls-ffi: every exported body runs inside [`panic::guard`], every
//! pointer is checked for NULL at run time ([`ffi`]), every fallible function returns a code
//! ([`error`]) and writes its out-parameters only on success.

pub mod compat;
pub mod error;
mod ffi;
mod panic;
pub mod value;
