//! The `shmem` command on Windows, run under Wine by `.ci/windows.sh`: real processes (the
//! demo's parent and child, `hold`, `watch`) sharing segments. Every wait has a deadline, and
//! no assertion is about a duration.
#![cfg(windows)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "wincli-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private directory for persistent segments, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> TestDir {
        let d = std::env::temp_dir().join(unique("dir"));
        std::fs::create_dir_all(&d).unwrap();
        TestDir(d)
    }

    fn shmem(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shmem"));
        c.arg("--dir").arg(&self.0).env_remove("SHMEM_DIR");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.shmem();
        cmd.args(args).stdin(Stdio::null());
        retrying_wine(|| cmd.output())
    }

    /// Runs and checks for success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "shmem {args:?}: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts a process with `start`. Wine now and then fails a `CreateProcess` with
/// `ERROR_INTERNAL_ERROR` (1359) that a second attempt does not repeat: that error alone is
/// retried, a few times; any other fails at once.
fn retrying_wine<T>(mut start: impl FnMut() -> std::io::Result<T>) -> T {
    const ERROR_INTERNAL_ERROR: i32 = 1359;
    for attempt in 1.. {
        match start() {
            Ok(t) => return t,
            Err(e) if e.raw_os_error() == Some(ERROR_INTERNAL_ERROR) && attempt < 5 => {
                eprintln!("start shmem: {e}; trying again");
            }
            Err(e) => panic!("start shmem: {e} (attempt {attempt})"),
        }
    }
    unreachable!("the loop returns or panics")
}

/// Output as text, without Windows' carriage returns.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// A long-running `shmem` (hold, watch), terminated if the test ends first.
struct Proc {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = retrying_wine(|| cmd.spawn());
        let out = BufReader::new(child.stdout.take().unwrap());
        Proc { child, out }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        assert!(self.out.read_line(&mut l).unwrap() > 0, "it ended first");
        l.trim_end().to_owned()
    }

    /// Waits for its exit, at most [`DEADLINE`]; returns the exit code.
    fn finish(mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(start.elapsed() < DEADLINE, "it did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `get` of `name` fails with "not found" (its last holder is gone).
fn wait_gone(dir: &TestDir, name: &str) {
    let start = Instant::now();
    while code(&dir.run(&["get", name])) != Some(3) {
        assert!(start.elapsed() < DEADLINE, "{name} was never freed");
        std::thread::yield_now();
    }
}

fn hold(dir: &TestDir, name: &str) -> Proc {
    let mut p = Proc::spawn({
        let mut c = dir.shmem();
        c.args(["hold", name]);
        c
    });
    assert!(p.line().starts_with(&format!("holding {name} (pid ")));
    p
}

#[test]
fn demo_prints_the_childs_line_and_frees_the_segment() {
    let dir = TestDir::new();
    let name = unique("demo");
    let out = dir.ok(&["demo", "--name", &name]);
    let expected = format!(
        "parent: attached '{name}' (created = true)\n\
         parent: stored \"This is a test string\", starting a child process\n\
         Child process read from shared memory: This is a test string\n\
         parent: the child attached the same segment with created = false\n\
         parent: detached; Local\\shmem.{name} is gone: the last user freed it\n"
    );
    assert_eq!(out, expected);
    assert!(dir.entries().is_empty());
}

#[test]
fn set_and_get_round_trip_across_processes_while_held() {
    let dir = TestDir::new();
    let name = unique("setget");
    let nobody = dir.run(&["set", &name, "x"]);
    assert_eq!(code(&nobody), Some(3), "{}", text(&nobody.stderr));
    assert!(text(&nobody.stderr).contains("shmem hold"));
    let holder = hold(&dir, &name);
    dir.ok(&["set", &name, "hello from set"]);
    assert_eq!(dir.ok(&["get", "--text", &name]), "hello from set\n");
    let json: serde_json::Value = serde_json::from_str(&dir.ok(&["get", "--json", &name])).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["value"], "hello from set");
    let info = dir.ok(&["info", "--json", &name]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["lifetime"], "transient");
    assert_eq!(info["version"], 1);
    assert_eq!(info["object"], format!("Local\\shmem.{name}"));
    drop(holder); // TerminateProcess: the kernel frees the section
    wait_gone(&dir, &name);
}

#[test]
fn watch_is_woken_by_a_set_from_another_process() {
    let dir = TestDir::new();
    let name = unique("watch");
    let _holder = hold(&dir, &name);
    dir.ok(&["set", &name, "first"]);
    // From version 1 on: only the next set can end it.
    let watch = Proc::spawn({
        let mut c = dir.shmem();
        c.args([
            "watch",
            "-c",
            "1",
            "--since",
            "1",
            "--timeout",
            "60000",
            &name,
        ]);
        c
    });
    dir.ok(&["set", &name, "second"]);
    let mut watch = watch;
    assert_eq!(watch.line(), "2 second");
    assert_eq!(watch.finish(), Some(0));
}

#[test]
fn map_commands_share_keys_across_processes_and_a_key_watch_is_woken() {
    let dir = TestDir::new();
    let name = unique("map");
    let mut holder = Proc::spawn({
        let mut c = dir.shmem();
        c.args(["map", "hold", &name]);
        c
    });
    assert!(holder.line().starts_with(&format!("holding {name} (pid ")));
    dir.ok(&["map", "set", &name, "w1", "idle"]);
    dir.ok(&["map", "set", &name, "w2", "busy"]);
    assert_eq!(dir.ok(&["map", "get", "--text", &name, "w1"]), "idle\n");
    let ls = dir.ok(&["map", "ls", &name]);
    assert!(ls.contains("w1") && ls.contains("w2"), "{ls}");
    // A watch of w1 from version 2: other keys' sets do not end it, w1's does.
    let mut watch = Proc::spawn({
        let mut c = dir.shmem();
        c.args(["map", "watch", &name, "w1", "-c", "1", "--since", "2"]);
        c.args(["--timeout", "60000"]);
        c
    });
    dir.ok(&["map", "set", &name, "w2", "done"]);
    dir.ok(&["map", "set", &name, "w1", "busy"]);
    assert_eq!(watch.line(), "4 set w1 busy");
    assert_eq!(watch.finish(), Some(0));
    dir.ok(&["map", "del", &name, "w1"]);
    assert_eq!(code(&dir.run(&["map", "get", &name, "w1"])), Some(3));
    drop(holder); // TerminateProcess: the kernel frees the section
    let start = Instant::now();
    while code(&dir.run(&["map", "get", &name, "w2"])) != Some(3) {
        assert!(start.elapsed() < DEADLINE, "{name} was never freed");
        std::thread::yield_now();
    }
}

#[test]
fn a_persistent_segment_is_listed_kept_and_removed() {
    let dir = TestDir::new();
    let name = unique("persist");
    let out = dir.ok(&[
        "create",
        &name,
        "--size",
        "64",
        "--persistent",
        "--mode",
        "0640",
    ]);
    assert!(out.contains("created persistent value"), "{out}");
    dir.ok(&["set", &name, "kept"]);
    assert_eq!(dir.ok(&["get", "--text", &name]), "kept\n");
    let again = dir.run(&["create", &name, "--size", "64", "--persistent"]);
    assert_eq!(code(&again), Some(1), "{}", text(&again.stderr));
    let ls = dir.run(&["ls", "--json"]);
    assert!(ls.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["name"], name.as_str());
    assert_eq!(rows[0]["lifetime"], "persistent");
    assert_eq!(rows[0]["capacity"], 64);
    assert_eq!(rows[0]["version"], 1);
    dir.ok(&["rm", &name]);
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    assert_eq!(code(&dir.run(&["get", &name])), Some(3));
    assert_eq!(code(&dir.run(&["rm", &name])), Some(3));
}

#[test]
fn gc_persistent_removes_only_what_nobody_holds() {
    let dir = TestDir::new();
    let (held, idle) = (unique("gc-held"), unique("gc-idle"));
    for n in [&held, &idle] {
        dir.ok(&["create", n, "--size", "64", "--persistent"]);
    }
    let holder = hold(&dir, &held);
    assert_eq!(
        dir.ok(&["gc", "--persistent", "--dry-run"]),
        format!("would remove {idle}\n")
    );
    assert_eq!(dir.entries().len(), 2, "a dry run removes nothing");
    assert_eq!(dir.ok(&["gc", "--persistent"]), format!("removed {idle}\n"));
    assert_eq!(dir.entries(), vec![format!("shmem.{held}")]);
    dir.ok(&["set", &held, "still held"]);
    drop(holder);
    // Its holder is gone: the next gc proves nobody holds it (once the kernel has closed the
    // killed process's handles).
    let start = Instant::now();
    while !dir.entries().is_empty() {
        assert!(start.elapsed() < DEADLINE, "never collected");
        dir.ok(&["gc", "--persistent"]);
    }
}

#[test]
fn a_watch_whose_persistent_segment_is_removed_says_so() {
    let dir = TestDir::new();
    let name = unique("watch-rm");
    dir.ok(&["create", &name, "--size", "64", "--persistent"]);
    let mut watch = Proc::spawn({
        let mut c = dir.shmem();
        c.args(["watch", "--json", "--since", "0", &name]);
        c
    });
    dir.ok(&["set", &name, "one"]);
    let line: serde_json::Value = serde_json::from_str(&watch.line()).unwrap();
    assert_eq!(line["value"], "one");
    dir.ok(&["rm", &name]);
    // The watch holds the removed generation: it notices and exits with code 3.
    assert_eq!(watch.finish(), Some(3));
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn what_windows_cannot_do_is_said_with_its_exit_code() {
    let dir = TestDir::new();
    let name = unique("transient");
    let _holder = hold(&dir, &name);
    // ls: lists what it can (no persistent segment here) and says why transient ones are not.
    let ls = dir.run(&["ls"]);
    assert_eq!(code(&ls), Some(0));
    assert!(!text(&ls.stdout).contains(&name));
    assert!(
        text(&ls.stderr).contains(
            "transient segments are not listed: Windows has no call that enumerates named \
             sections"
        ),
        "{}",
        text(&ls.stderr)
    );
    // rm of a transient segment: exit code 5, saying why.
    let rm = dir.run(&["rm", &name]);
    assert_eq!(code(&rm), Some(5), "{}", text(&rm.stderr));
    assert!(text(&rm.stderr).contains("removing a transient segment"));
    assert_eq!(dir.ok(&["get", "--text", &name]), "\n", "rm left it alone");
    assert!(dir.ok(&["gc"]).starts_with("nothing transient to collect"));
}
