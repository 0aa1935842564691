//! libshmem: the C library of shmem.
//!
//! Built as `libshmem.so` and `libshmem.a`; the C declarations are in `include/shmem.h`,
//! generated from this crate by cbindgen (`tests/header.rs` checks that the committed header is
//! up to date). The API is handles (`shmem_value`, [`value`]; `shmem_map`, [`map`]) with error codes ([`error`]), and
//! [`version`]. The library has no constructor: a program that links it attaches nothing it
//! does not open. The original DLL's `SetSharedMem`/`GetSharedMem`, attached at load time, are
//! the separate `libshmem_compat` (`compat/shmem_compat.c`), a C layer over this API.
//!
//! The boundary follows rustls-ffi: every exported body runs inside [`panic::guard`], every
//! pointer is checked for NULL at run time ([`ffi`]), every fallible function returns a code
//! ([`error`]) and writes its out-parameters only on success.

#[cfg(windows)]
mod dll;
pub mod error;
mod ffi;
pub mod map;
mod panic;
pub mod value;
pub mod version;
