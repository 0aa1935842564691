//! The committed C header is exactly what the pinned cbindgen generates from the sources, and
//! each header declares exactly what its library exports (listed from the built library, so
//! a new export without a declaration, or a declaration of nothing, fails).
//!
//! Run with `SHMEM_BLESS=1` to rewrite `include/shmem.h` after changing the exported API.

mod common;

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

/// The functions a shared library exports, listed by `nm -D --defined-only`.
fn exported_functions(lib: &Path) -> Vec<String> {
    let out = common::run_ok(
        std::process::Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(lib),
    );
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "T", name] => Some(name.to_owned()),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

/// The functions `header` declares: the names followed by `(` at the start of a declaration.
fn declared_functions(header: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in header.match_indices('(') {
        let before = &header[..at];
        let name_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &before[name_start..];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before[line_start..].trim_start();
        // A declaration: `TYPE name(` on its own line, not inside a comment or a macro.
        let is_decl = !name.is_empty()
            && !line.starts_with('*')
            && !line.starts_with("/*")
            && !line.starts_with('#')
            && line.len() > name.len();
        if is_decl {
            names.push(name.to_owned());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Checks that `header` declares exactly what `lib` exports, each with a doc comment.
fn check_exports_match(header_path: &Path, lib: &Path) {
    let header = std::fs::read_to_string(header_path).expect("read the header");
    let exported = exported_functions(lib);
    assert!(!exported.is_empty(), "{} exports nothing", lib.display());
    assert_eq!(
        declared_functions(&header),
        exported,
        "{} and the exports of {} differ",
        header_path.display(),
        lib.display()
    );
    for f in &exported {
        let at = header
            .find(&format!("{f}("))
            .unwrap_or_else(|| panic!("{f} is not declared"));
        let before = header[..at].trim_end();
        let decl_start = before.rfind('\n').map_or(0, |i| i + 1);
        assert!(
            header[..decl_start].trim_end().ends_with("*/"),
            "{f} has no doc comment in {}",
            header_path.display()
        );
    }
}

#[test]
fn each_header_declares_every_exported_function_of_its_library() {
    if !common::have("nm") {
        println!("skipped: nm is not installed");
        return;
    }
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    check_exports_match(&include.join("shmem.h"), &common::lib_so());
    check_exports_match(&include.join("shmem_compat.h"), &common::compat_so());
    let compat = std::fs::read_to_string(include.join("shmem_compat.h")).expect("read");
    assert!(compat.contains("wchar_t is 32-bit on Linux"));
}
