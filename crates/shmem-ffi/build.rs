//! Gives `libshmem.so` its SONAME, `libshmem.so.MAJOR`, so that programs linked with it record
//! the major version and the installed `libshmem.so.MAJOR.MINOR.PATCH` (with its symlinks, see
//! the root `Makefile`) is found by the runtime linker. Only the cdylib gets the flag.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
    // A SONAME is an ELF notion; on Windows the cdylib is shmem.dll (+ libshmem.dll.a).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libshmem.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
