//! The Windows backend across real processes (run under Wine by `.ci/windows.sh`).
//!
//! The "other process" is this test binary run again: the parent spawns
//! `current_exe() helper --exact --ignored` with `SHMEM_HELPER=<role> <name>`, and the
//! `helper` test (ignored in a normal run) plays that role. Children report on stdout line by line;
//! every wait has a deadline, and no assertion is about a duration.
#![cfg(windows)]

mod common;

use std::time::{Duration, Instant};

use std::path::PathBuf;

use common::{block, say, unique, wait_freed, Helper, DEADLINE};
use shmem::{Error, Lifetime, Securable, Segment, Value};

#[test]
#[ignore = "the other process of the tests here, which spawn it with --ignored"]
fn helper() {
    let spec = std::env::var("SHMEM_HELPER").expect("SHMEM_HELPER=<role> <name>");
    let (role, name) = spec.split_once(' ').expect("role and name");
    let dir = std::env::var_os("SHMEM_HELPER_DIR").map(PathBuf::from);
    match role {
        // Creates persistent value NAME in the directory, sets it, exits (nobody holds it).
        "persist-set" => {
            let v = Value::builder(name)
                .dir(dir.unwrap())
                .capacity(64)
                .lifetime(Lifetime::Persistent)
                .open()
                .unwrap();
            say(format!("created {}", v.created()));
            v.set_str("kept").unwrap();
            say("set");
        }
        // Holds persistent value NAME; on each line of stdin, reports what it reads, and
        // sets what the line says when it starts with "set ".
        "persist-hold" => {
            let v = Value::builder(name)
                .dir(dir.unwrap())
                .open_existing()
                .unwrap();
            say(format!("holding {}", v.get_string().unwrap().0));
            for line in std::io::stdin().lines() {
                let line = line.unwrap();
                if let Some(s) = line.strip_prefix("set ") {
                    v.set_str(s).unwrap();
                }
                say(format!("reads {}", v.get_string().unwrap().0));
            }
        }
        // Opens the existing raw segment, checks the parent's bytes, writes its answer.
        "join" => {
            let seg = Segment::builder(name).open_existing().unwrap();
            assert!(!seg.created());
            let mut buf = [0u8; 5];
            seg.read(0, &mut buf).unwrap();
            assert_eq!(&buf, b"hello");
            seg.write(5, b"child").unwrap();
            say("joined");
        }
        // Creates a segment and holds it until killed.
        "hold" => {
            let seg = Segment::open(name, 4096).unwrap();
            assert!(seg.created());
            seg.write(0, b"held").unwrap();
            say("holding");
            block();
        }
        // Dies inside `set_with`, holding the writers' lock (of a persistent value in the
        // directory, when one is given).
        "die-in-set" => {
            let v = match &dir {
                Some(d) => Value::builder(name).dir(d).open_existing().unwrap(),
                None => Value::open(name, 64).unwrap(),
            };
            v.set_with(7, |buf| {
                buf.copy_from_slice(b"partial");
                say("locked");
                block();
            })
            .unwrap();
        }
        // Waits for 20 changes, sleeping at once each time, and reports each.
        "wait" => {
            let v = Value::builder(name)
                .capacity(64)
                .wait_spin(Duration::ZERO)
                .open_existing()
                .unwrap();
            let mut since = v.version();
            for _ in 0..20 {
                say(format!("waiting {since}"));
                since = v.wait_changed(since, Some(DEADLINE)).unwrap();
                say(format!("woke {since} {}", v.get_string().unwrap().0));
            }
        }
        // Publishes uniform values of varying lengths as fast as it can.
        "write" => {
            let v = Value::builder(name).capacity(4096).open_existing().unwrap();
            say("writing");
            for i in 0..3000u32 {
                let len = 64 + (i as usize * 37) % 4000;
                v.set_with(len, |buf| buf.fill(i as u8)).unwrap();
            }
            say("done");
        }
        other => panic!("unknown helper role {other}"),
    }
}

#[test]
fn created_flags_and_freed_at_last_close() {
    let name = unique("last-close");
    let seg = Segment::open(&name, 4096).unwrap();
    assert!(seg.created());
    assert!(seg.object_name().starts_with("Local\\shmem.shmtest-"));
    seg.write(0, b"hello").unwrap();
    let again = Segment::open(&name, 4096).unwrap();
    assert!(
        !again.created(),
        "the second opener must see ERROR_ALREADY_EXISTS"
    );
    assert!(matches!(
        Segment::builder(&name).size(4096).create_new(),
        Err(Error::Exists { .. })
    ));
    drop(again);
    let mut h = Helper::spawn("join", &name);
    h.expect("joined");
    h.finish();
    let mut buf = [0u8; 5];
    seg.read(5, &mut buf).unwrap();
    assert_eq!(&buf, b"child");
    drop(seg);
    wait_freed(&name);
    // A new generation starts zero-filled.
    let seg = Segment::open(&name, 4096).unwrap();
    assert!(seg.created());
    seg.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 5]);
}

#[test]
fn freed_after_terminate_process() {
    let name = unique("terminate");
    let mut h = Helper::spawn("hold", &name);
    h.expect("holding");
    let seg = Segment::builder(&name).open_existing().unwrap();
    assert!(!seg.created());
    let mut buf = [0u8; 4];
    seg.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"held");
    drop(seg);
    h.kill();
    wait_freed(&name);
}

#[test]
fn bad_requests_are_named_errors() {
    let name = unique("errors");
    assert!(matches!(
        Segment::builder(&name).open_existing(),
        Err(Error::NotFound { .. })
    ));
    // A persistent segment in a directory that does not exist: an error naming it.
    let missing = std::env::temp_dir().join(unique("no-such-dir"));
    let e = Segment::builder(&name)
        .dir(&missing)
        .size(64)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
    assert!(matches!(
        Segment::builder(&name).open(),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        Segment::open("bad/name", 64),
        Err(Error::InvalidName { .. })
    ));
    let seg = Segment::open(&name, 100).unwrap();
    assert!(matches!(
        Value::builder(&name).capacity(64).open(),
        Err(Error::Incompatible { .. })
    ));
    assert!(matches!(
        Segment::builder(&name).size(1 << 20).open(),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        seg.write(99, b"xy"),
        Err(Error::InvalidSize { .. })
    ));
}

#[test]
fn a_writer_killed_holding_the_lock_is_taken_over() {
    let name = unique("killed-writer");
    let v = Value::builder(&name)
        .capacity(64)
        .lock_timeout(Duration::from_millis(50))
        .open()
        .unwrap();
    v.set_str("before").unwrap();
    let mut h = Helper::spawn("die-in-set", &name);
    h.expect("locked");
    // Alive: its witness event exists, so we time out rather than take over.
    assert!(matches!(v.set_str("too early"), Err(Error::Timeout { .. })));
    assert_eq!(v.get_string().unwrap().0, "before");
    h.kill();
    // Gone: the kernel destroyed its witness; the lock is ours at once, whatever the timeout.
    let v = Value::builder(&name)
        .lock_timeout(Duration::from_secs(30))
        .open_existing()
        .unwrap();
    let version = v.set_str("after").unwrap();
    assert_eq!(v.get_string().unwrap(), ("after".to_owned(), version));
}

#[test]
fn a_waiter_in_another_process_is_woken_by_set() {
    let name = unique("waiter");
    let v = Value::open(&name, 64).unwrap();
    let mut h = Helper::spawn("wait", &name);
    for i in 0..20 {
        let since: u64 = h.line().strip_prefix("waiting ").unwrap().parse().unwrap();
        let version = v.set_str(&format!("round {i}")).unwrap();
        assert!(version > since);
        assert_eq!(h.line(), format!("woke {version} round {i}"));
    }
    h.finish();
}

#[test]
fn values_are_never_torn_between_two_processes() {
    let name = unique("torn");
    let v = Value::open(&name, 4096).unwrap();
    let mut h = Helper::spawn("write", &name);
    h.expect("writing");
    let mut buf = vec![0u8; 4096];
    let mut reads = 0u64;
    let mut last = 0;
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "the writer never reached version 3000"
        );
        let (len, version) = v.get(&mut buf).unwrap();
        assert!(version >= last);
        last = version;
        if version > 0 {
            let i = (version - 1) as u32;
            assert_eq!(len, 64 + (i as usize * 37) % 4000, "version {version}");
            assert!(
                buf[..len].iter().all(|&b| b == i as u8),
                "torn value at version {version}"
            );
            reads += 1;
        }
        if version == 3000 {
            break;
        }
    }
    h.expect("done");
    h.finish();
    assert!(reads > 0);
}

/// A private directory for persistent segments, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The names in the directory (tombs of removed segments included).
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_persistent_segment_keeps_its_value_when_nobody_holds_it() {
    let dir = TempDir::new("persist");
    let name = unique("persist");
    let mut h = Helper::spawn_in("persist-set", &name, Some(&dir.0));
    h.expect("created true");
    h.expect("set");
    h.finish();
    // Nobody holds it now: the file keeps the bytes.
    assert_eq!(dir.entries(), vec![format!("shmem.{name}")]);
    let v = Value::builder(&name).dir(&dir.0).open_existing().unwrap();
    assert!(
        !v.created(),
        "only the opener that made the file created it"
    );
    assert_eq!(v.segment().lifetime(), Lifetime::Persistent);
    assert_eq!(v.get_string().unwrap(), ("kept".to_owned(), 1));
    // Its events are named after its generation: a segment of the same name in another
    // directory shares none of them.
    let other_dir = TempDir::new("persist-other");
    let other = Value::builder(&name)
        .dir(&other_dir.0)
        .capacity(64)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap();
    assert!(other.created());
    let prefix = format!("Local\\shmem.{name}.g");
    assert!(v.segment().object_name().starts_with(&prefix));
    assert!(other.segment().object_name().starts_with(&prefix));
    assert_ne!(v.segment().object_name(), other.segment().object_name());
    drop(other);
    // An open that asks for a transient segment joins the file: one name, one segment.
    let again = Value::builder(&name)
        .dir(&dir.0)
        .capacity(64)
        .open()
        .unwrap();
    assert!(!again.created());
    assert_eq!(again.get_string().unwrap().0, "kept");
    drop((v, again));
    // A second creator finds it too.
    let mut h = Helper::spawn_in("persist-set", &name, Some(&dir.0));
    h.expect("created false");
    h.expect("set");
    h.finish();
    let listed = shmem::list_persistent(&dir.0).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, name);
    let header = listed[0].header.as_ref().unwrap();
    assert_eq!(header.lifetime, Lifetime::Persistent);
    Segment::builder(&name).dir(&dir.0).remove().unwrap();
    assert!(dir.entries().is_empty());
    assert!(matches!(
        Segment::builder(&name).dir(&dir.0).open_existing(),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_damaged_or_empty_persistent_file_is_corrupt_and_left_alone() {
    let dir = TempDir::new("damaged");
    let open = |name: &str| {
        Segment::builder(name)
            .dir(&dir.0)
            .size(64)
            .lifetime(Lifetime::Persistent)
            .open()
    };
    // Empty (a creator that died before writing anything).
    let empty = unique("empty");
    std::fs::write(dir.0.join(format!("shmem.{empty}")), b"").unwrap();
    let e = open(&empty).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("less than a header"), "{e}");
    // A complete header whose magic was never written (its creator died before the end).
    let unfinished = unique("unfinished");
    let seg = open(&unfinished).unwrap();
    assert!(seg.created());
    let path = seg.path().unwrap().to_owned();
    drop(seg);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let e = open(&unfinished).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("no magic"), "{e}");
    // Our magic, but a size that is not the file's.
    let resized = unique("resized");
    let seg = open(&resized).unwrap();
    let path2 = seg.path().unwrap().to_owned();
    drop(seg);
    let mut bytes = std::fs::read(&path2).unwrap();
    bytes.extend_from_slice(&[0; 64]);
    std::fs::write(&path2, &bytes).unwrap();
    assert!(matches!(open(&resized), Err(Error::Corrupt { .. })));
    // Not ours at all.
    let foreign = unique("foreign");
    std::fs::write(dir.0.join(format!("shmem.{foreign}")), [7u8; 4096]).unwrap();
    assert!(matches!(open(&foreign), Err(Error::Foreign { .. })));
    // Nothing was rewritten, and the listing names each problem.
    assert_eq!(std::fs::read(&path).unwrap()[..8], [0; 8]);
    assert_eq!(
        std::fs::metadata(dir.0.join(format!("shmem.{empty}")))
            .unwrap()
            .len(),
        0
    );
    let listed = shmem::list_persistent(&dir.0).unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|l| l.header.is_err()));
    // `remove` deletes a damaged file.
    for n in [&empty, &unfinished, &resized, &foreign] {
        Segment::builder(n).dir(&dir.0).remove().unwrap();
    }
    assert!(dir.entries().is_empty());
}

#[test]
fn removing_a_held_persistent_segment_frees_the_name_and_the_holder_keeps_its_bytes() {
    let dir = TempDir::new("rm-held");
    let name = unique("rm-held");
    let v = Value::builder(&name)
        .dir(&dir.0)
        .capacity(64)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap();
    assert!(v.created());
    v.set_str("old").unwrap();
    let mut h = Helper::spawn_in("persist-hold", &name, Some(&dir.0));
    h.expect("holding old");
    drop(v);
    Segment::builder(&name).dir(&dir.0).remove().unwrap();
    // The name is free at once: a new segment, zero-filled.
    let fresh = Value::builder(&name)
        .dir(&dir.0)
        .capacity(64)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap();
    assert!(fresh.created());
    assert_eq!(fresh.get_string().unwrap(), (String::new(), 0));
    fresh.set_str("new").unwrap();
    // The holder still shares the removed one, and can write it.
    h.send("set still here");
    h.expect("reads still here");
    assert_eq!(fresh.get_string().unwrap().0, "new");
    // Its file is a tomb until the holder's last handle goes (kill included).
    let tombs = || {
        dir.entries()
            .into_iter()
            .filter(|e| e.starts_with(".shmem-removed."))
            .count()
    };
    h.kill();
    let start = Instant::now();
    while tombs() != 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the removed file was never deleted"
        );
        std::thread::yield_now();
    }
    assert_eq!(dir.entries(), vec![format!("shmem.{name}")]);
    drop(fresh);
    Segment::builder(&name).dir(&dir.0).remove().unwrap();
}

#[test]
fn remove_names_what_it_cannot_do() {
    let dir = TempDir::new("rm-errors");
    let name = unique("rm-transient");
    let seg = Segment::open(&name, 64).unwrap();
    assert!(matches!(
        Segment::builder(&name).dir(&dir.0).remove(),
        Err(Error::Unsupported { .. })
    ));
    drop(seg);
    wait_freed(&name);
    assert!(matches!(
        Segment::builder(&name).dir(&dir.0).remove(),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Segment::builder("bad/name").dir(&dir.0).remove(),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn the_mode_is_the_dacl_of_the_section_and_wine_checks_it_for_the_owner() {
    let me = shmem::user_sid().unwrap();
    assert!(me.starts_with("S-1-5-"), "{me}");
    for mode in [0o600, 0o640, 0o664, 0o777, 0o400] {
        let name = unique("dacl");
        let seg = Segment::builder(&name).size(64).mode(mode).open().unwrap();
        assert!(seg.created());
        let want =
            shmem::canonical_sddl(&shmem::sddl_for_mode(mode, Securable::Section, &me)).unwrap();
        assert_eq!(seg.dacl().unwrap(), want, "mode {mode:o}");
        // Read-write joins need the owner's w bit: the kernel checks the DACL.
        let join = Segment::builder(&name).open_existing();
        if mode & 0o200 != 0 {
            let j = join.unwrap();
            assert!(!j.created());
            assert_eq!(j.dacl().unwrap(), want, "a joiner reads the same DACL");
        } else {
            assert!(
                matches!(join, Err(Error::PermissionDenied { .. })),
                "mode {mode:o}: {join:?}"
            );
        }
    }
    // The SDDL itself: the owner's SID, local users, everyone, exact rights.
    assert_eq!(
        shmem::sddl_for_mode(0o640, Securable::Section, "S-1-5-21-1"),
        "D:P(A;;0x60007;;;S-1-5-21-1)(A;;0x5;;;BU)"
    );
    assert_eq!(
        shmem::sddl_for_mode(0o606, Securable::Event, "S-1-5-21-1"),
        "D:P(A;;0x160002;;;S-1-5-21-1)(A;;0x100002;;;WD)"
    );
    assert_eq!(
        shmem::sddl_for_mode(0o600, Securable::File, "S-1-5-21-1"),
        "D:P(A;;0x17019f;;;S-1-5-21-1)"
    );
}

#[test]
fn a_joiner_waits_for_a_creator_at_work_and_times_out_if_it_never_finishes() {
    use std::os::windows::fs::OpenOptionsExt;
    let dir = TempDir::new("creator-at-work");
    let name = unique("at-work");
    let seg = Segment::builder(&name)
        .dir(&dir.0)
        .size(64)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap();
    let path = seg.path().unwrap().to_owned();
    drop(seg);
    // What a creator holds while it writes the header: the file, shared with nobody.
    let creator = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .share_mode(0)
        .open(&path)
        .unwrap();
    let e = Segment::builder(&name)
        .dir(&dir.0)
        .attach_timeout(Duration::from_millis(50))
        .open_existing()
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("the creator to finish"), "{e}");
    // Once the creator closes, a joiner gets in (whether or not it had started waiting).
    std::thread::scope(|s| {
        let joiner = s.spawn(|| {
            Segment::builder(&name)
                .dir(&dir.0)
                .attach_timeout(DEADLINE)
                .open_existing()
        });
        drop(creator);
        let seg = joiner.join().unwrap().unwrap();
        assert!(!seg.created());
    });
    Segment::builder(&name).dir(&dir.0).remove().unwrap();
}

#[test]
fn collecting_persistent_segments_removes_only_those_nobody_holds() {
    let dir = TempDir::new("collect");
    let (held, idle, damaged) = (unique("held"), unique("idle"), unique("damaged"));
    for n in [&held, &idle] {
        let v = Value::builder(n)
            .dir(&dir.0)
            .capacity(64)
            .lifetime(Lifetime::Persistent)
            .open()
            .unwrap();
        v.set_str("x").unwrap();
    }
    std::fs::write(dir.0.join(format!("shmem.{damaged}")), b"").unwrap();
    let mut h = Helper::spawn_in("persist-hold", &held, Some(&dir.0));
    h.expect("holding x");
    let mut all = vec![
        format!("shmem.{damaged}"),
        format!("shmem.{held}"),
        format!("shmem.{idle}"),
    ];
    all.sort();

    let dry = shmem::collect_persistent(&dir.0, true).unwrap();
    assert_eq!(dry.removed, vec![idle.clone()]);
    assert_eq!(dry.held, vec![held.clone()]);
    assert_eq!(dry.skipped.len(), 1);
    assert_eq!(dry.skipped[0].0, damaged);
    assert_eq!(dir.entries(), all, "a dry run removes nothing");

    let done = shmem::collect_persistent(&dir.0, false).unwrap();
    assert_eq!(done.removed, vec![idle.clone()]);
    assert_eq!(done.held, vec![held.clone()]);
    all.retain(|e| !e.ends_with(&idle));
    assert_eq!(dir.entries(), all);
    // The holder is untouched and still works.
    h.send("set y");
    h.expect("reads y");

    h.kill(); // its handles go with it: nobody holds it now
    let start = Instant::now();
    loop {
        let done = shmem::collect_persistent(&dir.0, false).unwrap();
        if done.removed == vec![held.clone()] {
            break;
        }
        assert_eq!(done.held, vec![held.clone()]);
        assert!(
            start.elapsed() < DEADLINE,
            "the killed holder's handles never went"
        );
        std::thread::yield_now();
    }
    assert_eq!(
        dir.entries(),
        vec![format!("shmem.{damaged}")],
        "damaged: left alone"
    );
    Segment::builder(&damaged).dir(&dir.0).remove().unwrap();
}

#[test]
fn a_persistent_files_dacl_reaches_the_file() {
    // Wine keeps no DACL on files: it turns the one given at creation into the file's unix
    // mode and reads an ACL back from that mode (SYSTEM, the owner, and everyone for the
    // other bits). So what can be checked here is that the other bits made it to the file.
    let dir = TempDir::new("file-dacl");
    for (mode, everyone) in [(0o600, false), (0o640, false), (0o604, true), (0o666, true)] {
        let name = unique("file-dacl");
        let seg = Segment::builder(&name)
            .dir(&dir.0)
            .size(64)
            .mode(mode)
            .lifetime(Lifetime::Persistent)
            .open()
            .unwrap();
        let dacl = seg.dacl().unwrap();
        assert_eq!(dacl.contains(";;;WD)"), everyone, "mode {mode:o}: {dacl}");
        drop(seg);
        Segment::builder(&name).dir(&dir.0).remove().unwrap();
    }
}

#[test]
fn a_writer_killed_holding_a_persistent_values_lock_is_taken_over() {
    let dir = TempDir::new("killed-writer-persistent");
    let name = unique("killed-writer-persistent");
    let v = Value::builder(&name)
        .dir(&dir.0)
        .capacity(64)
        .lifetime(Lifetime::Persistent)
        .lock_timeout(Duration::from_millis(50))
        .open()
        .unwrap();
    v.set_str("before").unwrap();
    let mut h = Helper::spawn_in("die-in-set", &name, Some(&dir.0));
    h.expect("locked");
    assert!(matches!(v.set_str("too early"), Err(Error::Timeout { .. })));
    h.kill();
    let version = v.set_str("after").unwrap();
    assert_eq!(v.get_string().unwrap(), ("after".to_owned(), version));
    drop(v);
    // Nobody holds it now, and the value is still there.
    let v = Value::builder(&name).dir(&dir.0).open_existing().unwrap();
    assert_eq!(v.get_string().unwrap().0, "after");
    drop(v);
    Segment::builder(&name).dir(&dir.0).remove().unwrap();
}
