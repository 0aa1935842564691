//! The C libraries driven from C: the examples, libshmem_compat's load-time attach (also with
//! `dlopen`) and libshmem's lack of one, the seed's overflow, the handle API's contract,
//! concurrent use, `shmem_close` racing calls on other threads, and the map API. Each test compiles its programs with
//! the system C compiler against `include/shmem.h` and `libshmem`, and runs them in a private
//! segment directory (`SHMEM_DIR`) with a unique default segment (`SHMEM_COMPAT_NAME`).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{compat_so, have, lib_so, run, run_ok, Fixture, Link, CHILD_LINE};

#[test]
fn the_seeds_parent_and_child_share_the_string() {
    let fx = Fixture::new("seed");
    let parent = fx.compile("parent", &["examples/c/parent.c"], Link::Compat, &[]);
    let child = fx.compile("child", &["examples/c/child.c"], Link::Compat, &[]);
    let out = run_ok(fx.command(&parent).arg(&child));
    assert!(
        out.lines().any(|l| l == CHILD_LINE),
        "the child did not print its line:\n{out}"
    );
    assert!(out.contains("Process is writing to shared memory..."));
    assert_eq!(
        fx.files(),
        Vec::<String>::new(),
        "the last user freed the segment"
    );
}

#[test]
fn the_parent_asks_for_a_child_and_reports_a_missing_one() {
    let fx = Fixture::new("noarg");
    let parent = fx.compile("parent", &["examples/c/parent.c"], Link::Compat, &[]);
    let out = run_ok(&mut fx.command(&parent));
    assert_eq!(out.trim(), "Please specify an input file");
    let output = run(fx.command(&parent).arg(fx.build.join("no-such-program")));
    assert!(!output.status.success());
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn the_handle_api_example_runs() {
    let fx = Fixture::new("demo");
    let demo = fx.compile(
        "value_demo",
        &["examples/c/value_demo.c"],
        Link::Shared,
        &[],
    );
    let out = run_ok(fx.command(&demo).arg(&fx.name));
    assert!(out.contains("parent: version 1: first value"), "{out}");
    assert!(
        out.contains("child: version 2: second value, seen by the child"),
        "{out}"
    );
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn the_map_api_example_runs() {
    let fx = Fixture::new("mapdemo");
    let demo = fx.compile("map_demo", &["examples/c/map_demo.c"], Link::Shared, &[]);
    let out = run_ok(fx.command(&demo).arg(&fx.name));
    let expected = [
        "parent: two settings stored, map version 2",
        "child: job/status set at version 3: done",
        "child:   config/mode = fast (version 2)",
        "child:   config/threads = 4 (version 1)",
        "child:   job/status = done (version 3)",
        "parent: config/mode deleted, 2 keys left",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn dlopen_attaches_and_the_last_dlclose_frees() {
    let fx = Fixture::new("dlopen");
    let prog = fx.compile(
        "dlopen",
        &["crates/shmem-ffi/tests/c/dlopen.c"],
        Link::None,
        &[],
    );
    let file = fx.compat_file();
    assert!(!file.exists());
    let out = run_ok(fx.command(&prog).arg(compat_so()).arg(&file).arg("alone"));
    assert_eq!(out, "ok\n");
    assert!(!file.exists());
}

#[test]
fn dlclose_keeps_a_segment_another_process_holds() {
    let fx = Fixture::new("held");
    let prog = fx.compile(
        "dlopen",
        &["crates/shmem-ffi/tests/c/dlopen.c"],
        Link::None,
        &[],
    );
    let file = fx.compat_file();
    let holder = shmem_core::Value::builder(&fx.name)
        .dir(&fx.dir)
        .capacity(4096)
        .open()
        .expect("hold the default segment");
    let out = run_ok(fx.command(&prog).arg(compat_so()).arg(&file).arg("held"));
    assert_eq!(out, "ok\n");
    assert!(file.exists());
    let (bytes, _) = holder.get_vec().expect("read the value");
    let text: Vec<u8> = "loaded twice\0"
        .chars()
        .flat_map(|c| (c as u32).to_ne_bytes())
        .collect();
    assert_eq!(
        bytes, text,
        "SetSharedMem stores UTF-32 code units and a NUL"
    );
    drop(holder);
    assert!(!file.exists(), "the last user freed it");
}

#[test]
fn a_crashed_user_lets_go_and_the_next_one_starts_afresh() {
    let fx = Fixture::new("crash");
    let crash = fx.compile(
        "crash",
        &["crates/shmem-ffi/tests/c/crash.c"],
        Link::Compat,
        &[],
    );
    let child = fx.compile("child", &["examples/c/child.c"], Link::Compat, &[]);
    let output = run(&mut fx.command(&crash));
    assert_eq!(output.status.signal(), Some(9), "{output:?}");
    // Nobody detached: the file stays, but nobody holds it.
    assert!(fx.compat_file().exists());
    let info = shmem_core::admin::inspect(&fx.dir, &fx.name).expect("inspect");
    assert_eq!(info.state, shmem_core::admin::State::Stale);
    // The next user starts a new, zero-filled generation, as after the last CloseHandle, and
    // frees it when it exits.
    let out = run_ok(&mut fx.command(&child));
    assert_eq!(out, "Child process read from shared memory: \n");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn shared_and_static_programs_attach_before_main() {
    let fx = Fixture::new("start");
    let tests = "crates/shmem-ffi/tests/c/at_start.c";
    for link in [Link::Compat, Link::StaticCompat] {
        let prog = fx.compile(&format!("at_start_{link:?}"), &[tests], link, &[]);
        let out = run_ok(fx.command(&prog).arg(fx.compat_file()));
        assert_eq!(out, "ok\n", "{link:?}");
        assert_eq!(fx.files(), Vec::<String>::new(), "{link:?}: freed at exit");
    }
}

#[test]
fn a_failed_attach_is_reported_not_fatal() {
    let fx = Fixture::new("fail");
    let child = fx.compile("child", &["examples/c/child.c"], Link::Compat, &[]);
    let parent = fx.compile("parent", &["examples/c/parent.c"], Link::Compat, &[]);
    // The directory does not exist: the attach at load fails.
    let missing = fx.dir.join("missing");
    let out = run_ok(fx.command(&child).env("SHMEM_DIR", &missing));
    assert_eq!(out, "Child process read from shared memory: \n");
    let output = run(fx.command(&parent).env("SHMEM_DIR", &missing).arg(&child));
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("libshmem could not attach its shared memory: system error"),
        "{err}"
    );
    // An invalid name.
    let output = run(fx
        .command(&parent)
        .env("SHMEM_COMPAT_NAME", "a/b")
        .arg(&child));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid argument"));
    assert_eq!(fx.files(), Vec::<String>::new());
}

/// Runs `prog args` under valgrind when it is installed, else as it is (it was then built with
/// AddressSanitizer if the compiler has it). Valgrind runs one thread at a time, and by default
/// a thread that spins (the writers' lock, a wait's spin window) can keep the others from
/// running for minutes: `--fair-sched=yes` hands the CPU round, as the kernel would.
fn checked_run(fx: &Fixture, prog: &std::path::Path, args: &[&str], valgrind: bool) -> String {
    if valgrind {
        run_ok(
            fx.command("valgrind")
                .args([
                    "--quiet",
                    "--fair-sched=yes",
                    "--error-exitcode=99",
                    "--leak-check=no",
                ])
                .arg(prog)
                .args(args),
        )
    } else {
        run_ok(fx.command(prog).args(args))
    }
}

/// Whether the C compiler can build with AddressSanitizer.
fn have_asan(fx: &Fixture) -> bool {
    let src = fx.build.join("asan.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").expect("write asan.c");
    let exe = fx.build.join("asan");
    run(std::process::Command::new("cc")
        .arg("-fsanitize=address")
        .arg("-o")
        .arg(&exe)
        .arg(&src))
    .status
    .success()
        && run(&mut std::process::Command::new(&exe)).status.success()
}

/// The memory checker for a test program: valgrind, or ASan flags, or nothing.
fn memory_checker(fx: &Fixture) -> (bool, Vec<&'static str>) {
    if have("valgrind") {
        (true, vec![])
    } else if have_asan(fx) {
        (false, vec!["-fsanitize=address", "-fno-omit-frame-pointer"])
    } else {
        println!("note: neither valgrind nor AddressSanitizer is available");
        (false, vec![])
    }
}

#[test]
fn a_long_string_is_truncated_and_nothing_past_is_written() {
    let fx = Fixture::new("long");
    let (valgrind, flags) = memory_checker(&fx);
    let src = "crates/shmem-ffi/tests/c/long_string.c";
    let prog = fx.compile("long_string", &[src], Link::Compat, &flags);
    let holder = shmem_core::Value::builder(&fx.name)
        .dir(&fx.dir)
        .capacity(4096)
        .open()
        .expect("hold the default segment");
    let size = std::fs::metadata(fx.compat_file()).expect("stat").len();
    let out = checked_run(&fx, &prog, &[], valgrind);
    assert_eq!(out, "ok\n");
    assert_eq!(
        std::fs::metadata(fx.compat_file()).expect("stat").len(),
        size
    );
    let (bytes, _) = holder.get_vec().expect("read the value");
    assert_eq!(bytes.len(), 4096, "1023 characters and the NUL");
    let units: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(units[1023], 0);
    for (i, &u) in units[..1023].iter().enumerate() {
        assert_eq!(u, u32::from(b'a') + (i % 26) as u32, "character {i}");
    }
}

#[test]
fn the_handle_api_checks_every_argument_and_keeps_neighbours_working() {
    let fx = Fixture::new("handles");
    let (valgrind, flags) = memory_checker(&fx);
    let src = "crates/shmem-ffi/tests/c/handles.c";
    let prog = fx.compile("handles", &[src], Link::Compat, &flags);
    let out = checked_run(&fx, &prog, &[&fx.name], valgrind);
    assert_eq!(out, "ok\n");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn the_map_api_checks_every_argument_and_works_across_processes() {
    let fx = Fixture::new("map");
    let (valgrind, flags) = memory_checker(&fx);
    let src = "crates/shmem-ffi/tests/c/map.c";
    let prog = fx.compile("map", &[src], Link::Shared, &flags);
    let out = checked_run(&fx, &prog, &[&fx.name], valgrind);
    assert_eq!(out, "ok\n");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn two_threads_and_two_processes_share_one_segment() {
    let fx = Fixture::new("conc");
    let src = "crates/shmem-ffi/tests/c/concurrent.c";
    let prog = fx.compile("concurrent", &[src], Link::Shared, &["-O2"]);
    let output = common::run_within(
        fx.command(&prog).arg(&fx.name).arg("20000"),
        Duration::from_secs(120),
    );
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(out, "ok 80000 versions\n");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn children_forked_during_calls_still_exit() {
    let fx = Fixture::new("forkexit");
    let prog = fx.compile(
        "fork_exit",
        &["crates/shmem-ffi/tests/c/fork_exit.c"],
        Link::Compat,
        &[],
    );
    assert_eq!(run_ok(&mut fx.command(&prog)), "ok\n");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn a_read_only_handle_reads_and_every_write_is_a_permission_error() {
    let fx = Fixture::new("readonly");
    let prog = fx.compile(
        "readonly",
        &["crates/shmem-ffi/tests/c/readonly.c"],
        Link::Shared,
        &[],
    );
    assert_eq!(run_ok(fx.command(&prog).arg(&fx.name)), "ok\n");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn a_read_only_map_handle_reads_and_every_write_is_a_permission_error() {
    let fx = Fixture::new("map-readonly");
    let prog = fx.compile(
        "map_readonly",
        &["crates/shmem-ffi/tests/c/map_readonly.c"],
        Link::Shared,
        &[],
    );
    assert_eq!(run_ok(fx.command(&prog).arg(&fx.name)), "ok\n");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn shmem_wake_cancels_a_wait_forever() {
    let fx = Fixture::new("wake");
    let prog = fx.compile(
        "wake",
        &["crates/shmem-ffi/tests/c/wake.c"],
        Link::Shared,
        &[],
    );
    let out = run_ok(fx.command(&prog).arg(&fx.name));
    assert_eq!(out, "-12 wait cancelled by shmem_wake\n");
    assert_eq!(fx.files(), Vec::<String>::new());
}

#[test]
fn a_handle_api_program_attaches_nothing_it_did_not_open() {
    let fx = Fixture::new("noattach");
    let src = "crates/shmem-ffi/tests/c/no_attach.c";
    for link in [Link::Shared, Link::Static] {
        let prog = fx.compile(&format!("no_attach_{link:?}"), &[src], link, &[]);
        // Without SHMEM_COMPAT_NAME: a load-time attach would make `dllmemfilemap`.
        let out = run_ok(
            fx.command(&prog)
                .env_remove("SHMEM_COMPAT_NAME")
                .arg(&fx.dir)
                .arg(&fx.name),
        );
        assert_eq!(out, "ok\n", "{link:?}");
        assert_eq!(fx.files(), Vec::<String>::new(), "{link:?}");
    }
    // Loaded with dlopen, libshmem attaches nothing either.
    let prog = fx.compile(
        "dlopen_plain",
        &["crates/shmem-ffi/tests/c/no_attach.c"],
        Link::None,
        &["-DLOAD_WITH_DLOPEN"],
    );
    let out = run_ok(
        fx.command(&prog)
            .env_remove("SHMEM_COMPAT_NAME")
            .arg(&fx.dir)
            .arg(&fx.name)
            .arg(lib_so()),
    );
    assert_eq!(out, "ok\n");
    assert!(!fx.file("dllmemfilemap").exists());
}

#[test]
fn closing_a_handle_while_other_threads_use_it_is_safe() {
    let fx = Fixture::new("closerace");
    let (valgrind, flags) = memory_checker(&fx);
    let src = "crates/shmem-ffi/tests/c/close_race.c";
    let prog = fx.compile("close_race", &[src], Link::Shared, &flags);
    // Valgrind runs the threads one at a time and slowly: fewer rounds.
    let rounds = if valgrind { "30" } else { "300" };
    let out = checked_run(&fx, &prog, &[&fx.name, rounds], valgrind);
    assert_eq!(out, format!("ok {rounds} rounds\n"));
    assert_eq!(fx.files(), Vec::<String>::new());
}

/// Whether a SysV segment created by process `pid` still exists (`/proc/sysvipc/shm`, cpid).
fn sysv_of(pid: &str) -> bool {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    text.lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(4) == Some(pid))
}

#[test]
fn a_c_program_that_never_closes_its_handle_leaves_nothing_at_exit() {
    let fx = Fixture::new("exitopen");
    let prog = fx.compile(
        "exit_open",
        &["crates/shmem-ffi/tests/c/exit_open.c"],
        Link::Shared,
        &[],
    );
    for how in ["return", "exit"] {
        let out = run_ok(fx.command(&prog).arg(&fx.name).arg(how));
        let pid = out
            .trim()
            .strip_prefix("pid=")
            .expect("pid line")
            .to_owned();
        assert!(!sysv_of(&pid), "{how}: its memory is still there");
        assert_eq!(fx.files(), Vec::<String>::new(), "{how}: left behind");
    }
}
