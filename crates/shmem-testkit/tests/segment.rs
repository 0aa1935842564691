//! The lifetime of named segments, across real processes.

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::Duration;

use shmem::{admin, Error, Lifetime, Segment};
use shmem_testkit::{field, hex, unique_name, Proc, TestDir};

const T: Duration = Duration::from_secs(20);

fn hold(dir: &TestDir, name: &str, extra: &[&str]) -> (Proc, String) {
    let d = dir.path().to_str().unwrap();
    let mut args = vec!["hold", d, name, "4096"];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(args);
    let line = p.expect("ready", T);
    (p, line)
}

#[test]
fn parent_creates_and_a_child_process_sees_its_bytes() {
    let dir = TestDir::new("seg");
    let name = unique_name("pc");
    let sut = Segment::builder(&name)
        .dir(dir.path())
        .size(4096)
        .open()
        .unwrap();
    assert!(sut.created());
    assert_eq!(sut.data_len(), 4096);
    sut.write(0, b"This is a test string").unwrap();
    let (status, out) =
        Proc::spawn(["read", dir.path().to_str().unwrap(), &name, "21"]).wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(
        out,
        [format!(
            "created=false data={}",
            hex(b"This is a test string")
        )]
    );
    drop(sut);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn the_last_detacher_frees_it_whoever_it_is() {
    let dir = TestDir::new("seg");
    let name = unique_name("last");
    let (holder, line) = hold(&dir, &name, &[]);
    assert_eq!(field(&line, "created"), "true");
    let sut = Segment::builder(&name)
        .dir(dir.path())
        .size(4096)
        .open()
        .unwrap();
    assert!(!sut.created());
    assert_eq!(holder.finish().code(), Some(0));
    assert_eq!(dir.files().len(), 1, "freed while still attached");
    drop(sut);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn after_kill_9_of_every_user_the_next_opener_creates_a_zeroed_segment() {
    let dir = TestDir::new("seg");
    let name = unique_name("kill");
    let (a, la) = hold(&dir, &name, &["write", "deadbeef"]);
    let (b, lb) = hold(&dir, &name, &[]);
    assert_eq!(field(&la, "created"), "true");
    assert_eq!(field(&lb, "created"), "false");
    assert!(field(&lb, "data").starts_with("deadbeef"));
    a.kill9();
    b.kill9();
    // Crashed users cannot unlink: the file stays, but nobody holds it.
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert_eq!((info.state, info.attached), (admin::State::Stale, 0));
    let sut = Segment::builder(&name)
        .dir(dir.path())
        .size(4096)
        .open()
        .unwrap();
    assert!(sut.created(), "a dead generation must not be reused");
    let mut buf = vec![0xffu8; 4096];
    sut.read(0, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&x| x == 0),
        "the new generation is not zero-filled"
    );
    drop(sut);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn eight_processes_attaching_and_detaching_at_random_keep_every_invariant() {
    let dir = TestDir::new("seg");
    let name = unique_name("churn");
    let d = dir.path().to_str().unwrap();
    let procs: Vec<Proc> = (0..8)
        .map(|i| Proc::spawn(["churn", d, &name, "500", &(i * 7919 + 1).to_string()]))
        .collect();
    let mut creations = 0;
    for p in procs {
        let (status, out) = p.wait_output(Duration::from_secs(120));
        assert!(status.success(), "{out:?}");
        let last = out.last().expect("a summary line");
        assert_eq!(field(last, "attaches"), "500");
        creations += field(last, "creations").parse::<u32>().unwrap();
    }
    assert!(creations >= 1);
    println!("8 x 500 attaches, {creations} generations");
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn a_forked_child_keeps_the_segment_alive_in_either_order() {
    for order in ["parent-first", "child-first"] {
        let dir = TestDir::new("seg");
        let name = unique_name("fork");
        let (status, out) =
            Proc::spawn(["fork", dir.path().to_str().unwrap(), &name, order]).wait_output(T);
        assert!(status.success(), "{order}: {out:?}");
        assert!(
            out.contains(&"after-first-drop exists=true".to_owned()),
            "{order}: {out:?}"
        );
        assert!(
            out.contains(&"child-status=0".to_owned()),
            "{order}: {out:?}"
        );
        assert!(
            out.contains(&"after-second-drop exists=false".to_owned()),
            "{order}: {out:?}"
        );
        if order == "child-first" {
            assert!(
                out.contains(&"child-wrote=from child".to_owned()),
                "{out:?}"
            );
        }
        assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
    }
}

#[test]
fn one_process_with_two_handles() {
    let dir = TestDir::new("seg");
    let name = unique_name("two");
    let b = Segment::builder(&name).dir(dir.path()).size(100);
    let first = b.open().unwrap();
    let second = b.open().unwrap();
    assert!(first.created() && !second.created());
    second.write(3, b"xyz").unwrap();
    let mut got = [0u8; 3];
    first.read(3, &mut got).unwrap();
    assert_eq!(&got, b"xyz");
    drop(first);
    assert_eq!(dir.files().len(), 1);
    drop(second);
    assert!(dir.files().is_empty());
}

#[test]
fn persistent_segments_stay_until_removed() {
    let dir = TestDir::new("seg");
    let name = unique_name("pers");
    let b = Segment::builder(&name)
        .dir(dir.path())
        .size(64)
        .lifetime(Lifetime::Persistent);
    let sut = b.open().unwrap();
    assert!(sut.created());
    sut.write(0, b"kept").unwrap();
    drop(sut);
    let again = Segment::builder(&name)
        .dir(dir.path())
        .open_existing()
        .unwrap();
    assert!(!again.created());
    assert_eq!(again.lifetime(), Lifetime::Persistent);
    let mut got = [0u8; 4];
    again.read(0, &mut got).unwrap();
    assert_eq!(&got, b"kept");
    assert!(matches!(
        admin::remove(dir.path(), &name, false),
        Err(Error::Busy { .. })
    ));
    drop(again);
    assert_eq!(
        admin::collect(dir.path(), false, false).unwrap().removed,
        Vec::<String>::new()
    );
    admin::remove(dir.path(), &name, false).unwrap();
    assert!(dir.files().is_empty());
}

#[test]
fn create_new_and_open_existing() {
    let dir = TestDir::new("seg");
    let name = unique_name("modes");
    let b = Segment::builder(&name).dir(dir.path()).size(64);
    assert!(matches!(b.open_existing(), Err(Error::NotFound { .. })));
    let first = b.create_new().unwrap();
    assert!(matches!(b.create_new(), Err(Error::Exists { .. })));
    drop(first);
    // A transient segment whose users all crashed no longer exists for either call.
    let (p, _) = hold(&dir, &name, &[]);
    p.kill9();
    assert_eq!(dir.files().len(), 1);
    assert!(matches!(b.open_existing(), Err(Error::NotFound { .. })));
    assert!(
        dir.files().is_empty(),
        "open_existing removes a dead generation"
    );
    let (p, _) = hold(&dir, &name, &[]);
    p.kill9();
    let again = b.create_new().unwrap();
    assert!(again.created());
}

#[test]
fn bad_names_and_sizes_are_clear_errors() {
    let dir = TestDir::new("seg");
    for bad in ["", "a/b", "..", ".x", "white space", &"n".repeat(201)] {
        let e = Segment::builder(bad)
            .dir(dir.path())
            .size(8)
            .open()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e}");
        assert!(e.to_string().contains("invalid segment name"), "{e}");
    }
    let name = unique_name("size");
    let e = Segment::builder(&name)
        .dir(dir.path())
        .size(0)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSize { .. }), "{e}");
    let e = Segment::builder(&name)
        .dir(dir.path())
        .size(usize::MAX)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSize { .. }), "{e}");
    let e = Segment::builder(&name)
        .dir(dir.path())
        .size(1 << 39)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "{e}");
    // An existing segment smaller than asked for.
    let small = Segment::builder(&name)
        .dir(dir.path())
        .size(64)
        .open()
        .unwrap();
    let e = Segment::builder(&name)
        .dir(dir.path())
        .size(128)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSize { .. }), "{e}");
    drop(small);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn foreign_files_symlinks_and_fifos_under_our_prefix_are_refused() {
    let dir = TestDir::new("seg");
    let open = |n: &str| Segment::builder(n).dir(dir.path()).size(64).open();

    let n = unique_name("foreign");
    std::fs::write(dir.file(&n), vec![b'x'; 4096]).unwrap();
    let e = open(&n).unwrap_err();
    assert!(matches!(e, Error::Foreign { .. }), "{e}");
    assert_eq!(
        std::fs::read(dir.file(&n)).unwrap(),
        vec![b'x'; 4096],
        "foreign file changed"
    );

    let n = unique_name("link");
    let target = dir.path().join("target");
    std::fs::write(&target, b"secret").unwrap();
    std::os::unix::fs::symlink(&target, dir.file(&n)).unwrap();
    let e = open(&n).unwrap_err();
    assert!(matches!(e, Error::Foreign { .. }), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"secret");

    let n = unique_name("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.file(&n),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = open(&n).unwrap_err(); // must not block
    assert!(matches!(e, Error::Foreign { .. }), "{e}");
    let listed = admin::list(dir.path()).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed
        .iter()
        .all(|i| matches!(i.state, admin::State::Foreign(_))));
}

#[test]
fn a_truncated_or_corrupted_live_segment_is_an_error() {
    let dir = TestDir::new("seg");
    type Case = (&'static str, u64, &'static [u8], fn(&Error) -> bool);
    let cases: [Case; 4] = [
        ("magic", 0, b"NOTOURS!", |e| {
            matches!(e, Error::Foreign { .. })
        }),
        ("layout", 8, &[9, 0, 0, 0], |e| {
            matches!(e, Error::Incompatible { .. })
        }),
        ("kind", 12, &[77, 0, 0, 0], |e| {
            matches!(e, Error::Corrupt { .. })
        }),
        ("size", 24, &[1, 2, 3, 4, 5, 6, 7, 8], |e| {
            matches!(e, Error::Corrupt { .. })
        }),
    ];
    for (what, offset, bytes, expected) in cases {
        let name = unique_name(what);
        let (holder, _) = hold(&dir, &name, &[]);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.file(&name))
            .unwrap();
        f.write_at(bytes, offset).unwrap();
        let e = Segment::builder(&name).dir(dir.path()).open().unwrap_err();
        assert!(expected(&e), "{what}: {e}");
        drop(holder);
    }
    // Cut short while held (the holder touches no memory after attaching).
    let name = unique_name("cut");
    let (holder, _) = hold(&dir, &name, &[]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.file(&name))
        .unwrap();
    f.set_len(100).unwrap();
    let e = Segment::builder(&name).dir(dir.path()).open().unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("100"), "{e}");
    // Shorter than a header: nothing proves it is ours any more, so it is foreign (and never
    // touched).
    f.set_len(30).unwrap();
    let e = Segment::builder(&name).dir(dir.path()).open().unwrap_err();
    assert!(matches!(e, Error::Foreign { .. }), "{e}");
    drop(holder);
}

#[test]
fn modes_and_owners() {
    let dir = TestDir::new("seg");
    let name = unique_name("mode");
    let sut = Segment::builder(&name)
        .dir(dir.path())
        .size(64)
        .open()
        .unwrap();
    let meta = std::fs::metadata(sut.path()).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "owner-only by default"
    );
    drop(sut);
    let sut = Segment::builder(&name)
        .dir(dir.path())
        .size(64)
        .mode(0o660)
        .open()
        .unwrap();
    assert_eq!(
        std::fs::metadata(sut.path()).unwrap().permissions().mode() & 0o777,
        0o660
    );
    drop(sut);

    if !rustix::process::geteuid().is_root() {
        println!("skipped: changing a segment's owner needs root");
        return;
    }
    // A segment owned by another user: refused by default, not trusted for lifetime
    // decisions when a shared mode is asked for.
    let name = unique_name("owner");
    let (holder, _) = hold(&dir, &name, &["mode", "666"]);
    let path = dir.file(&name);
    std::os::unix::fs::chown(&path, Some(12345), None).unwrap();
    let e = Segment::builder(&name).dir(dir.path()).open().unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
    assert!(e.to_string().contains("12345"), "{e}");
    let shared = Segment::builder(&name)
        .dir(dir.path())
        .mode(0o660)
        .open()
        .unwrap();
    assert!(!shared.created());
    drop(holder);
    drop(shared);
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 12345);
    assert!(
        path.exists(),
        "another user's segment must not be unlinked by us"
    );
}

/// A tmpfs of 256 KiB mounted for the test (needs root; skipped with a message otherwise).
struct TinyTmpfs {
    dir: TestDir,
}

impl TinyTmpfs {
    fn mount() -> Option<TinyTmpfs> {
        let dir = TestDir::new("tiny");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TinyTmpfs { dir })
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_segment_that_does_not_fit_a_tiny_tmpfs_fails_cleanly_at_open() {
    let Some(tiny) = TinyTmpfs::mount() else {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    // File storage (persistent) lives in the tmpfs; transient segments keep their memory in
    // SysV segments, which the tmpfs's size does not limit.
    let d = tiny.dir.path();
    let small = Segment::builder("small")
        .dir(d)
        .size(64 * 1024)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap();
    small.write(0, b"still here").unwrap();
    let e = Segment::builder("big")
        .dir(d)
        .size(1 << 20)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "{e}");
    assert!(e.to_string().contains("no space left"), "{e}");
    assert!(
        !tiny.dir.file("big").exists(),
        "a failed create must not leave its file"
    );
    let mut got = [0u8; 10];
    small.read(0, &mut got).unwrap();
    assert_eq!(&got, b"still here");
    let transient = Segment::builder("transient")
        .dir(d)
        .size(1 << 20)
        .open()
        .unwrap();
    assert_eq!(transient.storage(), shmem::Storage::SysV);
    drop(transient);
    drop(small);
    admin::remove(d, "small", false).unwrap();
    assert!(tiny.dir.files().is_empty());
}

#[test]
fn inspect_shows_who_is_attached() {
    let dir = TestDir::new("seg");
    let name = unique_name("who");
    let (a, _) = hold(&dir, &name, &[]);
    let (b, _) = hold(&dir, &name, &[]);
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert_eq!(info.state, admin::State::Live);
    assert_eq!(info.attached, 2);
    let mut want = vec![a.pid(), b.pid()];
    want.sort_unstable();
    assert_eq!(info.pids, want);
    assert_eq!(info.header.unwrap().lifetime, Lifetime::Transient);
    assert_eq!(info.size, 4096 + 64);
    a.kill9();
    b.kill9();
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert_eq!((info.state, info.attached), (admin::State::Stale, 0));
    assert_eq!(
        admin::collect(dir.path(), false, true).unwrap().removed,
        vec![name.clone()]
    );
    assert_eq!(dir.files().len(), 1, "dry run removed something");
    assert_eq!(
        admin::collect(dir.path(), false, false).unwrap().removed,
        vec![name]
    );
    assert!(dir.files().is_empty());
}

#[test]
fn a_failed_attach_still_frees_a_segment_whose_last_user_left_meanwhile() {
    let dir = TestDir::new("seg");
    let name = unique_name("failed");
    for round in 0..300 {
        let holder = Segment::builder(&name)
            .dir(dir.path())
            .size(64)
            .open()
            .unwrap();
        std::thread::scope(|s| {
            let failing = s.spawn(|| {
                // A raw segment is not a value: this attach takes the read lock, then fails.
                let e = shmem::Value::builder(&name)
                    .dir(dir.path())
                    .open_existing()
                    .unwrap_err();
                assert!(
                    matches!(e, Error::Incompatible { .. } | Error::NotFound { .. }),
                    "{e}"
                );
            });
            drop(holder);
            failing.join().unwrap();
        });
        assert!(
            dir.files().is_empty(),
            "round {round}: left {:?}",
            dir.files()
        );
    }
}

#[test]
fn a_child_forked_without_a_description_of_its_own_does_not_free_the_parents_segment() {
    let dir = TestDir::new("seg");
    let name = unique_name("nospare");
    let (status, out) =
        Proc::spawn(["fork-no-spare", dir.path().to_str().unwrap(), &name]).wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(out, ["child-status=0 created=false value=parent"]);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}
