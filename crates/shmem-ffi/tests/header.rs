//! The committed C header is exactly what the pinned cbindgen generates from the sources.
//!
//! Run with `SHMEM_BLESS=1` to rewrite `include/shmem.h` after changing the exported API.

use std::path::Path;

#[test]
fn committed_header_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("generate the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = crate_dir.join("include/shmem.h");
    if std::env::var_os("SHMEM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("include/")).expect("create include/");
        std::fs::write(&path, &generated).expect("write include/shmem.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date; regenerate it with `SHMEM_BLESS=1 cargo test -p shmem-ffi --test \
         header` and commit it.\n--- generated ---\n{generated}",
        path.display()
    );
}

#[test]
fn the_header_documents_every_exported_function() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/shmem.h"))
            .expect("read include/shmem.h");
    for f in [
        "SetSharedMem",
        "GetSharedMem",
        "shmem_compat_status",
        "shmem_open",
        "shmem_created",
        "shmem_set",
        "shmem_get",
        "shmem_wait",
        "shmem_close",
        "shmem_unlink",
        "shmem_strerror",
    ] {
        let at = header
            .find(&format!("{f}("))
            .unwrap_or_else(|| panic!("{f} is not declared"));
        let before = header[..at].trim_end();
        let decl_start = before.rfind('\n').map_or(0, |i| i + 1);
        assert!(
            header[..decl_start].trim_end().ends_with("*/"),
            "{f} has no doc comment in the header"
        );
    }
    assert!(header.contains("wchar_t is 32-bit on Linux"));
}
