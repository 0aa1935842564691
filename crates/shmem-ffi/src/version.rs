//! The library's version, for programs that check at run time which libshmem they got.

use std::ffi::c_char;

/// This library's name and version, as `"libshmem/MAJOR.MINOR.PATCH"` (say `"libshmem/0.1.0"`):
/// the version of the library loaded at run time, which may be newer than the header a program
/// was compiled with. A static, NUL-terminated string; never NULL; must not be freed.
#[no_mangle]
pub extern "C" fn shmem_version() -> *const c_char {
    VERSION.as_ptr()
}

const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
    concat!("libshmem/", env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
) {
    Ok(v) => v,
    Err(_) => panic!("the version has no NUL inside"),
};

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_the_crates() {
        let v = super::VERSION.to_str().expect("ASCII");
        assert_eq!(v, format!("libshmem/{}", env!("CARGO_PKG_VERSION")));
    }
}
