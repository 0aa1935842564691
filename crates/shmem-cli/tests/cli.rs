#![cfg(target_os = "linux")]
//! End-to-end tests of the `shmem` binary. Each test has its own directory under /dev/shm,
//! started processes are killed when the test ends, and every wait has a deadline.

mod support;

use rustix::process::Signal;
use serde_json::Value as Json;
use support::{Proc, TestDir};

fn pids(entry: &Json) -> Vec<u64> {
    let mut pids: Vec<u64> = entry["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    pids
}

fn entry<'a>(list: &'a Json, name: &str) -> &'a Json {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed in {list}"))
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[test]
fn demo_prints_the_seed_scenario_and_leaves_nothing() {
    let dir = TestDir::new();
    let out = dir.ok(&["demo"]);
    let expected = format!(
        "parent: attached 'dllmemfilemap' (created = true)\n\
         parent: stored \"This is a test string\", starting a child process\n\
         Child process read from shared memory: This is a test string\n\
         parent: the child attached the same segment with created = false\n\
         parent: detached; {}/shmem.dllmemfilemap is gone: the last user freed it\n",
        dir.path().display()
    );
    assert_eq!(out.stdout, expected);
    assert_eq!(out.stderr, "");
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());

    let out = dir.ok(&["demo", "--name", "other-map"]);
    assert!(out
        .stdout
        .contains("Child process read from shared memory: This is a test string\n"));
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn demo_interrupted_leaves_nothing() {
    for sig in [Signal::INT, Signal::TERM] {
        let dir = TestDir::new();
        let demo = Proc::spawn(dir.shmem().args(["demo", "--pause-child"]));
        let mut line = demo.next_line();
        while !line.starts_with("Child process read") {
            line = demo.next_line();
        }
        // Both are attached now, the child paused.
        let info = dir.json(&["info", "dllmemfilemap"]);
        assert_eq!(info["attached"], 2, "{info}");
        let attached: Vec<u64> = info["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pid"].as_u64().unwrap())
            .collect();
        assert!(attached.contains(&u64::from(demo.pid())), "{info}");

        demo.signal(sig);
        let (status, _, stderr) = demo.finish();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert_eq!(stderr, "shmem: demo: interrupted\n");
        assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
        for pid in attached {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} still runs"
            );
        }
    }
}

#[test]
fn set_and_get_round_trip_across_processes() {
    let dir = TestDir::new();
    let holder = dir.hold("cfg");

    dir.ok(&["set", "cfg", "mode=fast"]);
    assert_eq!(dir.ok(&["get", "cfg"]).stdout, "mode=fast");
    assert_eq!(dir.ok(&["get", "--text", "cfg"]).stdout, "mode=fast\n");

    // Binary data through stdin, byte for byte.
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let out = dir.run_with_input(&["set", "cfg", "-"], &bytes);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(dir.ok(&["get", "cfg"]).stdout_bytes, bytes);
    let got = dir.json(&["get", "cfg"]);
    assert_eq!(got["version"], 2);
    assert_eq!(got["length"], 256);
    assert_eq!(got["value"], Json::Null);
    assert!(got["value_hex"].as_str().unwrap().starts_with("fffefd"));

    // From a file.
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "from a file").unwrap();
    dir.ok(&["set", "cfg", "--file", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    let got = dir.json(&["get", "cfg"]);
    assert_eq!(got["name"], "cfg");
    assert_eq!(got["version"], 3);
    assert_eq!(got["value"], "from a file");

    // The value lives as long as the holder does.
    holder.signal(Signal::TERM);
    let (status, _, _) = holder.finish();
    assert!(status.success());
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
    dir.run(&["get", "cfg"]).assert_fails(3, "cfg");
}

#[test]
fn get_wait_returns_the_next_change() {
    let dir = TestDir::new();
    let _holder = dir.hold("w");
    dir.ok(&["set", "w", "first"]);
    // `--since` names the version we have seen; a later one returns at once.
    assert_eq!(
        dir.ok(&["get", "--wait", "--since", "0", "--text", "w"])
            .stdout,
        "first\n"
    );
    let waiter = Proc::spawn(
        dir.shmem()
            .args(["get", "--wait", "--since", "1", "--text", "w"]),
    );
    dir.ok(&["set", "w", "second"]);
    assert_eq!(waiter.next_line(), "second");
    assert!(waiter.finish().0.success());
}

#[test]
fn a_persistent_segment_needs_no_holder() {
    let dir = TestDir::new();
    let out = dir.ok(&["create", "kept", "--size", "100", "--persistent"]);
    assert!(out.stdout.contains("persistent"), "{out:?}");
    dir.ok(&["set", "kept", "still here"]);
    assert_eq!(dir.ok(&["get", "--text", "kept"]).stdout, "still here\n");
    let info = dir.json(&["info", "kept"]);
    assert_eq!(info["state"], "stale");
    assert_eq!(info["lifetime"], "persistent");
    assert_eq!(info["capacity"], 128);
    assert_eq!(info["version"], 1);
    assert_eq!(info["mode"], "0600");
    dir.ok(&["rm", "kept"]);
    assert!(dir.files().is_empty());
}

#[test]
fn create_transient_is_refused_with_advice_and_leaves_nothing() {
    let dir = TestDir::new();
    let out = dir.run(&["create", "brief", "--size", "64", "--mode", "0640"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("shmem hold brief --size 64"), "{out:?}");
    assert!(out.stderr.contains("--persistent"), "{out:?}");
    assert!(dir.files().is_empty());

    // Held by someone, creating it again is refused as existing.
    let _holder = dir.hold("brief");
    dir.run(&["create", "brief", "--size", "64"])
        .assert_fails(1, "brief");
}

#[test]
fn a_missing_name_close_to_an_existing_one_gets_a_suggestion() {
    let dir = TestDir::new();
    let _holder = dir.hold("config");
    let out = dir.run(&["get", "confg"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("did you mean 'config'?"), "{out:?}");
    let out = dir.run(&["get", "elsewhere"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(!out.stderr.contains("did you mean"), "{out:?}");
}

#[test]
fn watch_json_prints_one_object_a_line_text_or_hex() {
    let dir = TestDir::new();
    let _holder = dir.hold("feed");
    let watch = Proc::spawn(
        dir.shmem()
            .args(["watch", "feed", "--json", "-c", "2", "--since", "0"]),
    );
    dir.ok(&["set", "feed", "one\nline"]);
    let first: serde_json::Value = serde_json::from_str(&watch.next_line()).unwrap();
    assert_eq!(first["version"], 1);
    assert_eq!(first["value"], "one\nline");
    assert_eq!(first["length"], 8);
    dir.run_with_input(&["set", "feed", "-"], b"\xff\x00\x1b");
    let second: serde_json::Value = serde_json::from_str(&watch.next_line()).unwrap();
    assert_eq!(second["version"], 2);
    assert!(second["value"].is_null());
    assert_eq!(second["value_hex"], "ff001b");
    let (status, rest, stderr) = watch.finish();
    assert!(status.success(), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn plain_watch_lines_keep_every_byte_escaped() {
    let dir = TestDir::new();
    let _holder = dir.hold("raw");
    let watch = Proc::spawn(
        dir.shmem()
            .args(["watch", "raw", "-c", "1", "--since", "0"]),
    );
    dir.run_with_input(&["set", "raw", "-"], b"a\\b\x1b\xff");
    assert_eq!(watch.next_line(), "1 a\\\\b\\x1b\\xff");
    let (status, _, stderr) = watch.finish();
    assert!(status.success(), "{stderr}");
}

#[test]
fn get_text_escapes_control_characters_on_a_terminal_only() {
    let dir = TestDir::new();
    let _holder = dir.hold("tty");
    dir.run_with_input(&["set", "tty", "-"], b"red\x1b[31m!");
    // Not a terminal: the bytes as they are.
    let out = dir.ok(&["get", "--text", "tty"]);
    assert_eq!(out.stdout, "red\x1b[31m!\n");
    // A terminal (`script` gives the command a pseudo-terminal): escaped.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "`script` (util-linux) is needed for the terminal test under CI"
        );
        eprintln!("skipped the terminal half: `script` is not installed");
        return;
    }
    let cmd = format!(
        "{} --dir {} get --text tty",
        env!("CARGO_BIN_EXE_shmem"),
        dir.path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("SHMEM_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("red\\x1b[31m!"), "{text:?}");
    assert!(!text.contains('\x1b'), "{text:?}");
}

#[test]
fn create_sets_the_mode() {
    let dir = TestDir::new();
    dir.ok(&[
        "create",
        "shared",
        "--size",
        "64",
        "--persistent",
        "--mode",
        "0640",
    ]);
    let info = dir.json(&["info", "shared"]);
    assert_eq!(info["mode"], "0640");
    assert!(dir
        .ok(&["info", "shared"])
        .stdout
        .contains("0640 (rw-r-----)"));
}

#[test]
fn watch_prints_three_changes_from_other_processes() {
    let dir = TestDir::new();
    let _holder = dir.hold("news");
    let watch = Proc::spawn(
        dir.shmem()
            .args(["watch", "news", "--count", "3", "--since", "0"]),
    );
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        dir.ok(&["set", "news", text]);
        assert_eq!(watch.next_line(), format!("{} {text}", i + 1));
    }
    let (status, rest, stderr) = watch.finish();
    assert!(status.success(), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn watch_ends_cleanly_on_ctrl_c() {
    let dir = TestDir::new();
    let _holder = dir.hold("quiet");
    let watch = Proc::spawn(dir.shmem().args(["watch", "quiet", "--since", "0"]));
    dir.ok(&["set", "quiet", "x"]);
    // Once it printed a change it is attached, with its handler installed.
    assert_eq!(watch.next_line(), "1 x");
    assert_eq!(dir.json(&["info", "quiet"])["attached"], 2);
    watch.signal(Signal::INT);
    let (status, _, stderr) = watch.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(dir.json(&["info", "quiet"])["attached"], 1);
}

#[test]
fn ls_and_info_show_holders_then_stale_after_kill_9() {
    let dir = TestDir::new();
    let a1 = dir.hold("alpha");
    let a2 = dir.hold("alpha");
    let b = dir.hold("beta");

    let list = dir.json(&["ls"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let alpha = entry(&list, "alpha");
    assert_eq!(alpha["attached"], 2);
    assert_eq!(alpha["state"], "live");
    assert_eq!(alpha["lifetime"], "transient");
    assert_eq!(pids(alpha), sorted(vec![a1.pid().into(), a2.pid().into()]));
    let beta = entry(&list, "beta");
    assert_eq!(beta["attached"], 1);
    assert_eq!(pids(beta), vec![u64::from(b.pid())]);

    let text = dir.ok(&["ls"]).stdout;
    let line = text.lines().find(|l| l.starts_with("alpha ")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[2..5], ["transient", "2", "live"], "{text}");

    let info = dir.json(&["info", "alpha"]);
    assert_eq!(info["attached"], 2);
    assert_eq!(info["kind"], "value");
    assert_eq!(info["capacity"], 4096);
    assert_eq!(info["version"], 0);
    let procs = info["processes"].as_array().unwrap();
    let mut seen: Vec<u64> = procs.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, sorted(vec![a1.pid().into(), a2.pid().into()]));
    assert!(procs.iter().all(|p| p["command"] == "shmem"), "{info}");
    let text = dir.ok(&["info", "alpha"]).stdout;
    assert!(text.contains(&format!("{} shmem", a1.pid())), "{text}");
    assert!(text.contains("attached:   2"), "{text}");

    a1.kill9();
    assert_eq!(entry(&dir.json(&["ls"]), "alpha")["attached"], 1);
    a2.kill9();
    b.kill9();

    let list = dir.json(&["ls"]);
    for name in ["alpha", "beta"] {
        let e = entry(&list, name);
        assert_eq!(e["state"], "stale", "{list}");
        assert_eq!(e["attached"], 0);
        assert!(pids(e).is_empty());
    }
    let text = dir.ok(&["ls"]).stdout;
    assert!(text.lines().skip(1).all(|l| l.contains(" stale")), "{text}");
    let info = dir.json(&["info", "alpha"]);
    assert_eq!(info["state"], "stale");
    assert_eq!(info["version"], Json::Null);
    // Looking did not bring it back or remove it.
    assert_eq!(dir.files(), ["shmem.alpha", "shmem.beta"]);
}

#[test]
fn ls_skips_foreign_files_unless_all() {
    let dir = TestDir::new();
    let _holder = dir.hold("mine");
    std::fs::write(dir.path().join("someone-elses"), b"x").unwrap();
    // Our prefix, but not our magic number.
    std::fs::write(dir.path().join("shmem.not-a-segment"), [b'g'; 100]).unwrap();

    let list = dir.json(&["ls"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let list = dir.json(&["ls", "--all"]);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    assert_eq!(entry(&list, "someone-elses")["state"], "foreign");
    assert_eq!(entry(&list, "not-a-segment")["state"], "foreign");
    let text = dir.ok(&["ls", "--all"]).stdout;
    assert!(text
        .lines()
        .any(|l| l.starts_with("someone-elses") && l.contains("foreign")));
}

#[test]
fn gc_removes_only_stale_segments() {
    let dir = TestDir::new();
    let _live = dir.hold("live");
    dir.hold("crashed").kill9();
    dir.ok(&["create", "kept", "--size", "64", "--persistent"]);
    assert_eq!(dir.files(), ["shmem.crashed", "shmem.kept", "shmem.live"]);

    let plan = dir.json(&["gc", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["removed"], serde_json::json!(["crashed"]));
    assert_eq!(dir.files().len(), 3);

    assert_eq!(dir.ok(&["gc"]).stdout, "removed crashed\n");
    assert_eq!(dir.files(), ["shmem.kept", "shmem.live"]);

    let done = dir.json(&["gc", "--persistent"]);
    assert_eq!(done["removed"], serde_json::json!(["kept"]));
    assert_eq!(dir.files(), ["shmem.live"]);
    assert_eq!(
        dir.json(&["gc", "--persistent"])["removed"],
        serde_json::json!([])
    );
}

#[test]
fn rm_refuses_a_held_segment_unless_forced() {
    let dir = TestDir::new();
    let holder = dir.hold("busy");
    dir.run(&["rm", "busy"]).assert_fails(1, "busy");
    assert_eq!(dir.files(), ["shmem.busy"]);
    dir.ok(&["rm", "--force", "busy"]);
    assert!(dir.files().is_empty());
    // The holder keeps its memory and exits cleanly.
    holder.signal(Signal::TERM);
    assert!(holder.finish().0.success());
}

#[test]
fn error_paths_have_their_exit_codes() {
    let dir = TestDir::new();

    // 3: not found. `set` on a transient name nobody holds says what to do.
    let out = dir.run(&["set", "nobody", "x"]);
    out.assert_fails(3, "nobody");
    assert!(out.stderr.contains("shmem hold nobody"), "{out:?}");
    assert!(out.stderr.contains("--persistent"), "{out:?}");
    assert!(
        dir.files().is_empty(),
        "set must not create: {:?}",
        dir.files()
    );
    dir.run(&["get", "nobody"]).assert_fails(3, "nobody");
    dir.run(&["watch", "nobody"]).assert_fails(3, "nobody");
    dir.run(&["info", "nobody"]).assert_fails(3, "nobody");
    dir.run(&["rm", "nobody"]).assert_fails(3, "nobody");

    // 4: timeout.
    let _holder = dir.hold("slow");
    dir.run(&["get", "--wait", "--timeout", "50", "slow"])
        .assert_fails(4, "slow");
    dir.run(&["watch", "--timeout", "50", "slow"])
        .assert_fails(4, "slow");

    // 1: errors.
    let big = "x".repeat(5000);
    dir.run(&["set", "slow", &big]).assert_fails(1, "slow");
    dir.run(&["set", "slow", "--file", "/nonexistent/input"])
        .assert_fails(1, "/nonexistent/input");
    let missing = dir.path().join("no-such-dir");
    let out = run_in(&missing, &["ls"]);
    out.assert_fails(1, missing.to_str().unwrap());

    // 2: usage.
    dir.run(&["info", "bad/name"]).assert_fails(2, "bad/name");
    assert_eq!(dir.run(&["frobnicate"]).code, 2);
    assert_eq!(dir.run(&["set", "slow"]).code, 2);
    assert_eq!(dir.run(&["create", "x", "--size", "0"]).code, 2);
    dir.run(&["create", "x", "--size", "99999999999999999"])
        .assert_fails(2, "x");
    assert_eq!(
        dir.run(&["create", "x", "--size", "8", "--mode", "0999"])
            .code,
        2
    );
    assert_eq!(dir.run(&["get", "--since", "3", "slow"]).code, 2);
    assert_eq!(dir.files(), ["shmem.slow"]);
}

fn run_in(dir: &std::path::Path, args: &[&str]) -> support::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shmem"));
    cmd.arg("--dir").arg(dir).args(args);
    support::run(&mut cmd, None)
}

#[test]
fn dir_comes_from_the_environment() {
    let dir = TestDir::new();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shmem"));
    cmd.env("SHMEM_DIR", dir.path())
        .args(["create", "env", "--size", "8", "--persistent"]);
    assert_eq!(support::run(&mut cmd, None).code, 0);
    assert_eq!(dir.files(), ["shmem.env"]);
    // An empty SHMEM_DIR means the default directory, as for libshmem: `ls` works.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shmem"));
    cmd.env("SHMEM_DIR", "").args(["ls", "--json"]);
    assert_eq!(support::run(&mut cmd, None).code, 0);
}

#[test]
fn help_documents_exit_codes_and_examples() {
    let dir = TestDir::new();
    let top = dir.ok(&["--help"]).stdout;
    assert!(
        top.contains("Exit codes:") && top.contains("4  timeout"),
        "{top}"
    );
    // Every command the help lists, and every command of a command group (`map`), so that a
    // new command cannot go without examples and exit codes.
    let mut checked = Vec::new();
    let mut todo: Vec<Vec<String>> = commands(&top).into_iter().map(|c| vec![c]).collect();
    while let Some(cmd) = todo.pop() {
        let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        args.push("--help");
        let help = dir.ok(&args).stdout;
        assert!(help.contains("Examples:"), "{cmd:?}: {help}");
        assert!(help.contains("Exit codes:"), "{cmd:?}: {help}");
        assert!(help.contains("--dir"), "{cmd:?}: {help}");
        for sub in commands(&help) {
            todo.push([cmd.clone(), vec![sub]].concat());
        }
        checked.push(cmd.join(" "));
    }
    checked.sort();
    for expected in ["demo", "gc", "ls", "map", "map del", "map watch", "watch"] {
        assert!(checked.iter().any(|c| c == expected), "{checked:?}");
    }
}

/// The commands a `--help` lists under "Commands:" (without `help`).
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_watch_whose_segment_is_removed_says_so_and_ls_marks_the_orphan() {
    let dir = TestDir::new();
    let old_holder = dir.hold("feed");
    let watch = Proc::spawn(dir.shmem().args(["watch", "feed", "--since", "0"]));
    dir.ok(&["set", "feed", "first"]);
    assert_eq!(watch.next_line(), "1 first");
    dir.ok(&["rm", "--force", "feed"]);
    // A new generation takes the name; the watch holds the old one.
    let _new_holder = dir.hold("feed");
    dir.ok(&["set", "feed", "second"]);
    let list = dir.json(&["ls"]);
    let states: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&("feed", "live")), "{list}");
    assert!(states.contains(&("feed", "removed")), "{list}");
    let orphan = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state"] == "removed")
        .unwrap();
    assert_eq!(
        pids(orphan),
        sorted(vec![old_holder.pid().into(), watch.pid().into()]),
        "{list}"
    );
    let (status, rest, stderr) = watch.finish();
    assert_eq!(status.code(), Some(3), "{rest:?} {stderr}");
    assert!(rest.is_empty(), "no value of the new generation: {rest:?}");
    assert!(
        stderr.contains("'feed' was removed while being watched"),
        "{stderr}"
    );
}

#[test]
fn hold_and_gc_never_touch_a_foreign_file_whose_first_bytes_are_zero() {
    let dir = TestDir::new();
    let path = dir.path().join("shmem.cache");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let out = dir.run(&["hold", "cache"]);
    out.assert_fails(1, "cache");
    assert!(out.stderr.contains("not a shmem segment"), "{out:?}");
    let out = dir.ok(&["gc"]);
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 8192]);
}

#[test]
fn info_of_a_value_segment_too_small_for_a_value_says_why() {
    let dir = TestDir::new();
    dir.ok(&["create", "tiny", "--size", "64", "--persistent"]);
    // Grow it to a size no value layout has, header and file agreeing (448 = 256 + 192, and
    // the two slots must be equal multiples of 64).
    let path = dir.path().join("shmem.tiny");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 384);
    bytes.resize(448, 0);
    bytes[24..32].copy_from_slice(&448u64.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let info = dir.json(&["info", "tiny"]);
    let why = info["version_unavailable"].as_str().unwrap();
    assert!(why.contains("is not a value layout"), "{info}");
    dir.ok(&["rm", "tiny"]);
}

#[test]
fn ls_shows_capacities_and_calls_an_unheld_persistent_segment_idle() {
    let dir = TestDir::new();
    dir.ok(&["create", "kept", "--size", "4096", "--persistent"]);
    let _holder = dir.hold("held");
    let list = dir.json(&["ls"]);
    let kept = entry(&list, "kept");
    assert_eq!(kept["state"], "idle", "{list}");
    assert_eq!(kept["capacity"], 4096, "{list}");
    let held = entry(&list, "held");
    assert_eq!(held["state"], "live", "{list}");
    assert_eq!(held["capacity"], 4096, "{list}");
    let text = dir.ok(&["ls"]).stdout;
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("CAPACITY"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("kept") && l.contains(" 4096 ") && l.contains("idle")),
        "{text}"
    );
    dir.ok(&["rm", "kept"]);
}
