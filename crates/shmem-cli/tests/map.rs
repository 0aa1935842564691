//! End-to-end tests of `shmem map`: a map held by one process, changed and read by others.
//! Every wait is on a line of output or a process exit, with a deadline.

#![cfg(target_os = "linux")]

mod support;

use rustix::process::Signal;
use support::{Proc, TestDir};

/// Starts `shmem map hold NAME ARGS` and waits until it holds the map.
fn hold_map(dir: &TestDir, name: &str, args: &[&str]) -> Proc {
    let holder = Proc::spawn(dir.shmem().args(["map", "hold", name]).args(args));
    assert_eq!(
        holder.next_line(),
        format!("holding {name} (pid {})", holder.pid())
    );
    holder
}

#[test]
fn set_get_del_and_ls_across_processes() {
    let dir = TestDir::new();
    let _holder = hold_map(&dir, "cfg", &[]);
    dir.ok(&["map", "set", "cfg", "mode", "fast"]);
    dir.run_with_input(&["map", "set", "cfg", "blob", "-"], b"a\xffb\n");
    let set = dir.json(&["map", "set", "cfg", "level", "3"]);
    assert_eq!(set["op"], "set");
    assert_eq!(set["version"], 3, "{set}");

    assert_eq!(dir.ok(&["map", "get", "cfg", "mode"]).stdout, "fast");
    assert_eq!(
        dir.ok(&["map", "get", "cfg", "blob"]).stdout_bytes,
        b"a\xffb\n"
    );
    let blob = dir.json(&["map", "get", "cfg", "blob"]);
    assert_eq!(blob["key"], "blob");
    assert!(blob["value"].is_null(), "{blob}");
    assert_eq!(blob["value_hex"], "61ff620a");
    assert_eq!(blob["version"], 2);
    assert!(blob.get("op").is_none(), "{blob}");

    let out = dir.ok(&["map", "ls", "cfg"]);
    assert_eq!(
        out.stdout,
        "KEY     VERSION    LENGTH  VALUE\n\
         blob          2         4  a\\xffb\\n\n\
         level         3         1  3\n\
         mode          1         4  fast\n"
    );
    let list = dir.json(&["map", "ls", "cfg"]);
    assert_eq!(list["version"], 3);
    assert_eq!(list["keys"], 3);
    let keys: Vec<_> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["blob", "level", "mode"]);

    dir.ok(&["map", "del", "cfg", "mode"]);
    dir.run(&["map", "get", "cfg", "mode"])
        .assert_fails(3, "'mode' is not in map 'cfg'");
    dir.run(&["map", "del", "cfg", "mode"])
        .assert_fails(3, "'mode' is not in map 'cfg'");
    assert_eq!(dir.json(&["map", "ls", "cfg"])["keys"], 2);
    // The delete took a version: the map is at 4.
    assert_eq!(dir.json(&["map", "ls", "cfg"])["version"], 4);
}

#[test]
fn a_missing_map_is_not_created_and_the_advice_names_map_hold() {
    let dir = TestDir::new();
    let out = dir.run(&["map", "set", "nothere", "k", "v"]);
    out.assert_fails(3, "nothere");
    assert!(out.stderr.contains("`shmem map hold nothere`"), "{out:?}");
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());

    let out = dir.run(&["map", "create", "brief", "--size", "4096"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("shmem map hold brief --size 4096"),
        "{out:?}"
    );
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());

    // A value is not a map: a clear error naming it, never a misread.
    let _value = dir.hold("plain");
    dir.run(&["map", "get", "plain", "k"])
        .assert_fails(1, "plain");
}

#[test]
fn watch_of_the_whole_map_prints_sets_and_deletes_of_other_processes() {
    let dir = TestDir::new();
    let _holder = hold_map(&dir, "jobs", &[]);
    dir.ok(&["map", "set", "jobs", "a", "1"]);
    let watch = Proc::spawn(
        dir.shmem()
            .args(["map", "watch", "jobs", "-c", "4", "--since", "1"]),
    );
    // --since 1: a set after version 1 is printed even if it came before the watch attached.
    dir.ok(&["map", "set", "jobs", "b", "two words"]);
    assert_eq!(watch.next_line(), "2 set b two words");
    dir.ok(&["map", "del", "jobs", "a"]);
    assert_eq!(watch.next_line(), "3 del a");
    dir.run_with_input(&["map", "set", "jobs", "c", "-"], b"x\ny");
    assert_eq!(watch.next_line(), "4 set c x\\ny");
    dir.ok(&["map", "set", "jobs", "b", "again"]);
    assert_eq!(watch.next_line(), "5 set b again");
    let (status, rest, stderr) = watch.finish();
    assert!(status.success(), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn watch_of_one_key_ignores_the_others_and_prints_json() {
    let dir = TestDir::new();
    let _holder = hold_map(&dir, "state", &[]);
    let watch = Proc::spawn(dir.shmem().args([
        "map", "watch", "state", "w1", "--json", "-c", "2", "--since", "0",
    ]));
    // Changes of other keys print nothing; the first line is w1's.
    for i in 0..20 {
        dir.ok(&["map", "set", "state", "w2", &i.to_string()]);
    }
    dir.ok(&["map", "set", "state", "w1", "busy"]);
    let line: serde_json::Value = serde_json::from_str(&watch.next_line()).unwrap();
    assert_eq!(line["op"], "set");
    assert_eq!(line["key"], "w1");
    assert_eq!(line["value"], "busy");
    assert_eq!(line["version"], 21);
    dir.ok(&["map", "set", "state", "w2", "more"]);
    dir.ok(&["map", "del", "state", "w1"]);
    let line: serde_json::Value = serde_json::from_str(&watch.next_line()).unwrap();
    assert_eq!(line["op"], "del", "{line}");
    assert_eq!(line["key"], "w1");
    assert!(line.get("value").is_none(), "{line}");
    assert!(line["version"].as_u64().unwrap() >= 23, "{line}");
    let (status, rest, stderr) = watch.finish();
    assert!(status.success(), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn watch_ends_cleanly_on_ctrl_c_and_detaches() {
    let dir = TestDir::new();
    let _holder = hold_map(&dir, "quiet", &[]);
    let watch = Proc::spawn(dir.shmem().args(["map", "watch", "quiet", "--since", "0"]));
    dir.ok(&["map", "set", "quiet", "k", "x"]);
    assert_eq!(watch.next_line(), "1 set k x");
    assert_eq!(dir.json(&["info", "quiet"])["attached"], 2);
    watch.signal(Signal::INT);
    let (status, _, stderr) = watch.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(dir.json(&["info", "quiet"])["attached"], 1);
}

#[test]
fn info_and_ls_show_keys_and_bytes() {
    let dir = TestDir::new();
    dir.ok(&["map", "create", "stats", "--size", "4096", "--persistent"]);
    // A record: 16 header bytes, the key zero-padded to 8, the value, rounded up to 8.
    dir.ok(&["map", "set", "stats", "k1", "0123456789"]); // 16 + 8 + 10 -> 40 bytes
    dir.ok(&["map", "set", "stats", "k2", "x"]); // 16 + 8 + 1 -> 32 bytes
    let info = dir.json(&["info", "stats"]);
    assert_eq!(info["kind"], "map");
    assert_eq!(info["capacity"], 4096, "{info}");
    assert_eq!(info["version"], 2);
    assert_eq!(info["map"]["keys"], 2, "{info}");
    assert_eq!(info["map"]["bytes_used"], 72, "{info}");
    assert_eq!(info["map"]["bytes_free"], 4096 - 72, "{info}");
    let text = dir.ok(&["info", "stats"]).stdout;
    assert!(text.contains("\nkeys:       2 of at most "), "{text}");
    assert!(
        text.contains("\nrecords:    72 bytes used, 4024 free\n"),
        "{text}"
    );
    let list = dir.json(&["ls"]);
    assert_eq!(list[0]["name"], "stats");
    assert_eq!(list[0]["capacity"], 4096, "{list}");
    dir.ok(&["rm", "stats"]);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn a_full_map_is_an_error_that_changes_nothing() {
    let dir = TestDir::new();
    dir.ok(&["map", "create", "small", "--size", "64", "--persistent"]);
    dir.ok(&["map", "set", "small", "k", "kept"]);
    let big = "x".repeat(40);
    let out = dir.run(&["map", "set", "small", "other", &big]);
    out.assert_fails(1, "small");
    assert_eq!(dir.ok(&["map", "get", "small", "k"]).stdout, "kept");
    assert_eq!(dir.json(&["map", "ls", "small"])["keys"], 1);
    dir.ok(&["rm", "small"]);
}

#[test]
fn a_map_watch_whose_map_is_removed_says_so_and_exits_3() {
    for key in [None, Some("k")] {
        let dir = TestDir::new();
        let _old_holder = hold_map(&dir, "feed", &[]);
        let mut args = vec!["map", "watch", "feed"];
        args.extend(key);
        args.extend(["--since", "0"]);
        let watch = Proc::spawn(dir.shmem().args(&args));
        dir.ok(&["map", "set", "feed", "k", "first"]);
        assert_eq!(watch.next_line(), "1 set k first");
        dir.ok(&["rm", "--force", "feed"]);
        // A new generation takes the name; the watch holds the old one, which nothing changes.
        let _new_holder = hold_map(&dir, "feed", &[]);
        dir.ok(&["map", "set", "feed", "k", "second"]);
        let (status, rest, stderr) = watch.finish();
        assert_eq!(status.code(), Some(3), "{key:?}: {rest:?} {stderr}");
        assert!(rest.is_empty(), "no change of the new generation: {rest:?}");
        assert!(
            stderr.contains("'feed' was removed while being watched"),
            "{stderr}"
        );
    }
}
