//! The root `Makefile` as a user runs it: `make install` into a temporary prefix (and with
//! `DESTDIR` and each directory variable), programs built with `pkg-config` against the
//! installed library, dynamic and static, and run; the runtime linker's view of the installed
//! files; `make uninstall`; the examples' Makefile against the build and the installed
//! library; and `CARGO_TARGET_DIR`. Every program runs in a private segment directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{have, lib_dir, run, run_ok, target_and_profile, Fixture, CHILD_LINE};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether the tools these tests drive are there (under CI a missing one fails).
fn have_tools() -> bool {
    let ok = have("make") && have("pkg-config");
    if !ok {
        println!("skipped: make or pkg-config is not installed");
    }
    ok
}

/// `make -C <root> ARGS` as a user runs it: the target directory comes from
/// `CARGO_TARGET_DIR`, which the Makefile resolves through cargo, and the test's profile is
/// used so that nothing is built twice.
fn make(fx: &Fixture, args: &[String]) -> String {
    lib_dir(); // the libraries are built (with this profile) before anything is installed
    let (target, profile) = target_and_profile();
    let mut cmd = common::make_command();
    cmd.env("CARGO_TARGET_DIR", &target)
        .env("SHMEM_DIR", &fx.dir)
        .arg(format!("PROFILE={profile}"))
        .args(args);
    let output = common::run_within(&mut cmd, std::time::Duration::from_secs(900));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "make {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `pkg-config ARGS` against the installed `.pc` files.
fn pkg_config(pc_dir: &Path, args: &[&str]) -> Vec<String> {
    let out = run_ok(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", pc_dir)
            .args(args),
    );
    out.split_whitespace().map(str::to_owned).collect()
}

/// `cc -o OUT SOURCE FLAGS...` with the test programs' warnings as errors.
fn cc(out: &Path, source: &str, flags: &[String]) {
    let output = run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(out)
        .arg(common::root().join(source))
        .args(flags));
    assert!(
        output.status.success(),
        "cc {source} {flags:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The libraries a program needs at run time (`NEEDED`), from `readelf -d`; `None` without
/// readelf.
fn needed(program: &Path) -> Option<Vec<String>> {
    if !have("readelf") {
        println!("note: readelf is not installed; NEEDED entries not checked");
        return None;
    }
    let out = run_ok(Command::new("readelf").arg("-d").arg(program));
    Some(
        out.lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_owned()))
            .collect(),
    )
}

/// Links the `-lshmem*` libraries statically and the rest (Libs.private) as usual: how a
/// program takes `libshmem.a` when `libshmem.so` is installed beside it.
fn static_shmem(libs: Vec<String>) -> Vec<String> {
    libs.into_iter()
        .flat_map(|l| {
            if l.starts_with("-lshmem") {
                vec!["-Wl,-Bstatic".to_owned(), l, "-Wl,-Bdynamic".to_owned()]
            } else {
                vec![l]
            }
        })
        .collect()
}

/// Every file (not directory) under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = e.path();
            if e.file_type().expect("file_type").is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn installed_library_builds_programs_with_pkg_config_dynamic_and_static() {
    if !have_tools() {
        return;
    }
    let fx = Fixture::new("install");
    let prefix = fx.build.join("prefix");
    make(
        &fx,
        &["install".into(), format!("PREFIX={}", prefix.display())],
    );

    // The files, the symlinks and the SONAMEs.
    let lib = prefix.join("lib");
    for f in [
        "include/shmem.h",
        "include/shmem_compat.h",
        "lib/libshmem.a",
        "lib/libshmem_compat.a",
        "lib/pkgconfig/shmem.pc",
        "lib/pkgconfig/shmem-compat.pc",
        "bin/shmem",
    ] {
        assert!(prefix.join(f).is_file(), "{f} was not installed");
    }
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    for name in ["libshmem", "libshmem_compat"] {
        let real = format!("{name}.so.{VERSION}");
        assert!(lib.join(&real).is_file(), "{real}");
        let link = |l: &str| std::fs::read_link(lib.join(l)).expect("a symlink");
        assert_eq!(link(&format!("{name}.so.{major}")), Path::new(&real));
        assert_eq!(
            link(&format!("{name}.so")),
            Path::new(&format!("{name}.so.{major}"))
        );
        if have("readelf") {
            let out = run_ok(Command::new("readelf").arg("-d").arg(lib.join(&real)));
            assert!(
                out.contains(&format!("Library soname: [{name}.so.{major}]")),
                "{real}:\n{out}"
            );
        }
    }
    run_ok(Command::new(prefix.join("bin/shmem")).arg("--help"));
    let out = run_ok(Command::new(prefix.join("bin/shmem")).arg("--version"));
    assert!(out.starts_with("shmem "), "{out}");

    // pkg-config: the version, and Libs.private as cargo printed it for the staticlib.
    let pc = lib.join("pkgconfig");
    assert_eq!(pkg_config(&pc, &["--modversion", "shmem"]), [VERSION]);
    assert_eq!(
        pkg_config(&pc, &["--modversion", "shmem-compat"]),
        [VERSION]
    );
    let static_libs = pkg_config(&pc, &["--static", "--libs", "shmem"]);
    for l in common::native_static_libs() {
        assert!(static_libs.contains(&l), "{l} missing from {static_libs:?}");
    }

    // A handle-API program, linked with the installed libshmem.so.
    let cflags = pkg_config(&pc, &["--cflags", "shmem"]);
    let libs = pkg_config(&pc, &["--libs", "shmem"]);
    let version_src = "crates/shmem-ffi/tests/c/version.c";
    let dynamic = fx.build.join("version_dynamic");
    let rpath = format!("-Wl,-rpath,{}", lib.display());
    cc(
        &dynamic,
        version_src,
        &[cflags.clone(), libs.clone(), vec![rpath.clone()]].concat(),
    );
    let out = run_ok(fx.command(&dynamic).arg(&fx.name));
    assert_eq!(out, format!("libshmem/{VERSION}\n"));
    if let Some(needed) = needed(&dynamic) {
        assert!(
            needed.contains(&format!("libshmem.so.{major}")),
            "{needed:?}"
        );
    }

    // Without an rpath, a private prefix is unknown to the runtime linker (what the README says
    // to do about it: ldconfig for a system prefix, LD_LIBRARY_PATH or an rpath otherwise).
    let bare = fx.build.join("version_bare");
    cc(&bare, version_src, &[cflags, libs].concat());
    let output = run(fx
        .command(&bare)
        .arg(&fx.name)
        .env_remove("LD_LIBRARY_PATH"));
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains(&format!("libshmem.so.{major}")), "{err}");
    let out = run_ok(fx.command(&bare).arg(&fx.name).env("LD_LIBRARY_PATH", &lib));
    assert_eq!(out, format!("libshmem/{VERSION}\n"));

    // Static, with the README's command: libshmem.a with Libs.private, and nothing of libshmem
    // needed at run time.
    let stat = fx.build.join("version_static");
    let readme = format!(
        "cc -o {} {} $(pkg-config --cflags shmem) \
         $(pkg-config --static --libs shmem | sed 's/-lshmem\\b/-Wl,-Bstatic -lshmem -Wl,-Bdynamic/')",
        stat.display(),
        common::root().join(version_src).display()
    );
    run_ok(
        Command::new("sh")
            .env("PKG_CONFIG_PATH", &pc)
            .args(["-c", &readme]),
    );
    if let Some(needed) = needed(&stat) {
        assert!(
            !needed.iter().any(|n| n.starts_with("libshmem")),
            "{needed:?}"
        );
    }
    let out = run_ok(fx.command(&stat).arg(&fx.name));
    assert_eq!(out, format!("libshmem/{VERSION}\n"));

    // The seed's parent and child with libshmem_compat, dynamic and static.
    let cflags = pkg_config(&pc, &["--cflags", "shmem-compat"]);
    for (tag, libs) in [
        ("dynamic", pkg_config(&pc, &["--libs", "shmem-compat"])),
        (
            "static",
            static_shmem(pkg_config(&pc, &["--static", "--libs", "shmem-compat"])),
        ),
    ] {
        let parent = fx.build.join(format!("parent_{tag}"));
        let child = fx.build.join(format!("child_{tag}"));
        let flags = [cflags.clone(), libs, vec![rpath.clone()]].concat();
        cc(&parent, "examples/c/parent.c", &flags);
        cc(&child, "examples/c/child.c", &flags);
        let out = run_ok(fx.command(&parent).arg(&child));
        assert!(out.lines().any(|l| l == CHILD_LINE), "{tag}:\n{out}");
        if tag == "static" {
            if let Some(needed) = needed(&child) {
                assert!(
                    !needed.iter().any(|n| n.starts_with("libshmem")),
                    "{needed:?}"
                );
            }
        }
    }

    // The examples' Makefile against the installed library.
    let out = run_ok(
        fx.command("make")
            .env_remove("MAKEFLAGS")
            .env("PKG_CONFIG_PATH", &pc)
            .arg("--no-print-directory")
            .arg("-C")
            .arg(common::root().join("examples/c"))
            .arg("INSTALLED=1")
            .arg(format!("OUT={}", fx.build.join("examples").display()))
            .arg("run"),
    );
    assert!(out.lines().any(|l| l == CHILD_LINE), "{out}");
    assert!(
        out.contains("child: version 2: second value, seen by the child"),
        "{out}"
    );

    make(
        &fx,
        &["uninstall".into(), format!("PREFIX={}", prefix.display())],
    );
    assert_eq!(files_under(&prefix), Vec::<PathBuf>::new());
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn destdir_and_the_directory_variables_are_honoured() {
    if !have_tools() {
        return;
    }
    let fx = Fixture::new("destdir");
    let stage = fx.build.join("stage");
    let vars = vec![
        format!("DESTDIR={}", stage.display()),
        "PREFIX=/opt/shmem".to_owned(),
        "LIBDIR=/opt/shmem/lib64".to_owned(),
        "INCLUDEDIR=/opt/shmem/inc".to_owned(),
        "BINDIR=/opt/shmem/tools".to_owned(),
    ];
    make(&fx, &[vec!["install".to_owned()], vars.clone()].concat());
    let root = stage.join("opt/shmem");
    for f in [
        "inc/shmem.h",
        "inc/shmem_compat.h",
        "lib64/libshmem.a",
        "lib64/libshmem_compat.a",
        "lib64/pkgconfig/shmem.pc",
        "tools/shmem",
    ] {
        assert!(root.join(f).is_file(), "{f} was not installed");
    }
    assert!(root.join(format!("lib64/libshmem.so.{VERSION}")).is_file());
    // The .pc file names the final location, not the staging directory.
    let pc = std::fs::read_to_string(root.join("lib64/pkgconfig/shmem.pc")).expect("read");
    for line in [
        "prefix=/opt/shmem",
        "libdir=/opt/shmem/lib64",
        "includedir=/opt/shmem/inc",
    ] {
        assert!(pc.lines().any(|l| l == line), "{line} not in:\n{pc}");
    }
    assert!(!pc.contains(&stage.display().to_string()), "{pc}");

    make(&fx, &[vec!["uninstall".to_owned()], vars].concat());
    assert_eq!(files_under(&stage), Vec::<PathBuf>::new());
}

#[test]
fn the_makefile_builds_where_cargo_target_dir_says() {
    if !have_tools() {
        return;
    }
    let fx = Fixture::new("targetdir");
    let elsewhere = fx.build.join("elsewhere");
    // Where the libraries go, and a dry run of a cargo step: without building a second copy.
    let dir = elsewhere.display().to_string();
    let out = run_ok(
        common::make_command()
            .env("CARGO_TARGET_DIR", &elsewhere)
            .args(["-s", "print-build", "PROFILE=release"]),
    );
    assert_eq!(out, format!("{dir}/release/capi\n"));
    let out = run_ok(
        common::make_command()
            .env("CARGO_TARGET_DIR", &elsewhere)
            .args(["-n", "cli", "PROFILE=release"]),
    );
    assert!(out.contains(&format!("--target-dir {dir}")), "{out}");
}

#[test]
fn the_examples_makefile_builds_and_runs_against_the_build() {
    if !have_tools() {
        return;
    }
    let fx = Fixture::new("examples");
    lib_dir();
    let (target, profile) = target_and_profile();
    let out = run_ok(
        fx.command("make")
            .env_remove("MAKEFLAGS")
            .env("CARGO_TARGET_DIR", &target)
            .arg("--no-print-directory")
            .arg("-C")
            .arg(common::root().join("examples/c"))
            .arg(format!("PROFILE={profile}"))
            .arg(format!("OUT={}", fx.build.display()))
            .arg("run"),
    );
    assert!(out.lines().any(|l| l == CHILD_LINE), "{out}");
    assert!(
        out.contains("child: version 2: second value, seen by the child"),
        "{out}"
    );
    assert_eq!(fx.files(), Vec::<String>::new());
}
