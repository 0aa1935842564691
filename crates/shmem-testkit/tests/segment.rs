//! The lifetime of named segments, across real processes.

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::Duration;

use shmem::{admin, Error, Lifetime, Segment};
use shmem_testkit::{field, hex, require, unique_name, Proc, TestDir};

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
        gc(dir.path(), false, false).unwrap().removed,
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
fn foreign_files_symlinks_fifos_and_devices_under_our_prefix_are_refused() {
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

    // A character device under our name (here /dev/null's): opened without blocking, refused
    // by its type, never written.
    let mut made = 3;
    let root = rustix::process::geteuid().is_root();
    if require(
        "the device half",
        (!root).then(|| "making a device node needs root".into()),
    ) {
        let n = unique_name("dev");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.file(&n),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        let e = open(&n).unwrap_err();
        assert!(matches!(e, Error::Foreign { .. }), "{e}");
        made += 1;
    }
    let listed = admin::list(dir.path()).unwrap();
    assert_eq!(listed.len(), made);
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

    let root = rustix::process::geteuid().is_root();
    if !require(
        "the other-owner half",
        (!root).then(|| "changing a segment's owner needs root".into()),
    ) {
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
        TinyTmpfs::mount_with("size=256k")
    }

    fn mount_with(options: &str) -> Option<TinyTmpfs> {
        let dir = TestDir::new("tiny");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
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
        require(
            "the tiny tmpfs test",
            Some("cannot mount a tmpfs here (needs root)".into()),
        );
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
        gc(dir.path(), false, true).unwrap().removed,
        vec![name.clone()]
    );
    assert_eq!(dir.files().len(), 1, "dry run removed something");
    assert_eq!(gc(dir.path(), false, false).unwrap().removed, vec![name]);
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

// ---- Every way out frees the segment; admin never destroys what is not its own ----------

/// Whether SysV segment `shmid` still exists (`/proc/sysvipc/shm`).
fn sysv_exists(shmid: &str) -> bool {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    text.lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(shmid))
}

/// After every user left without the detach step: the memory is gone at once (the kernel
/// freed it), and what remains of the name, if anything, is a stale 64-byte header that the
/// next opener replaces with a new, zero-filled generation.
fn assert_freed_and_fresh(dir: &TestDir, name: &str, shmid: &str) {
    assert!(
        !sysv_exists(shmid),
        "SysV segment {shmid} outlived its users"
    );
    for f in dir.files() {
        let len = std::fs::metadata(dir.path().join(&f)).unwrap().len();
        assert_eq!(len, 64, "{f}: only the name file's header may remain");
        let info = admin::inspect(dir.path(), name).unwrap();
        assert_eq!(info.state, admin::State::Stale, "{info:?}");
    }
    let again = shmem::Value::builder(name)
        .dir(dir.path())
        .capacity(64)
        .open()
        .unwrap();
    assert!(again.created(), "joined a dead generation");
    assert_eq!(again.get_vec().unwrap(), (Vec::new(), 0));
    drop(again);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn a_normal_exit_without_close_leaves_nothing() {
    for how in ["exit", "return"] {
        let dir = TestDir::new("exit");
        let name = unique_name("exit");
        let d = dir.path().to_str().unwrap();
        let mut p = Proc::spawn(["exit-attached", d, &name, how]);
        let line = p.expect("ready", T);
        assert_eq!(field(&line, "storage"), "sysv", "{line}");
        let shmid = field(&line, "shmid").to_owned();
        assert!(sysv_exists(&shmid));
        assert!(p.finish().success());
        assert!(!sysv_exists(&shmid), "{how}: memory kept");
        assert!(dir.files().is_empty(), "{how}: left {:?}", dir.files());
    }
}

#[test]
fn exec_while_attached_frees_the_memory_and_the_name_opens_fresh() {
    let dir = TestDir::new("exec");
    let name = unique_name("exec");
    let d = dir.path().to_str().unwrap();
    let mut p = Proc::spawn(["exit-attached", d, &name, "exec"]);
    let line = p.expect("ready", T);
    let shmid = field(&line, "shmid").to_owned();
    assert!(p.finish().success());
    assert_freed_and_fresh(&dir, &name, &shmid);
}

#[test]
fn a_forked_child_that_exits_or_execs_after_the_parent_closed_leaves_nothing() {
    for how in ["exit", "_exit", "exec"] {
        let dir = TestDir::new("fork");
        let name = unique_name("forkleave");
        let d = dir.path().to_str().unwrap();
        let (status, out) = Proc::spawn(["fork-leave", d, &name, how]).wait_output(T);
        assert!(status.success(), "{how}: {out:?}");
        assert!(out.contains(&"child-status=0".to_owned()), "{how}: {out:?}");
        let shmid = field(&out[0], "shmid").to_owned();
        if how == "exit" {
            assert!(!sysv_exists(&shmid), "exit: memory kept");
            assert!(dir.files().is_empty(), "exit: left {:?}", dir.files());
        } else {
            assert_freed_and_fresh(&dir, &name, &shmid);
        }
    }
}

/// Shmem in /proc/meminfo, in bytes.
fn meminfo_shmem() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("Shmem:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_256_mib_segment_whose_only_user_is_killed_gives_its_memory_back() {
    const SIZE: u64 = 256 << 20;
    let dir = TestDir::new("mem");
    let name = unique_name("mem");
    let d = dir.path().to_str().unwrap();
    let before = meminfo_shmem();
    let mut p = Proc::spawn(["fill", d, &name, &SIZE.to_string()]);
    let line = p.expect("ready", Duration::from_secs(60));
    let shmid = field(&line, "shmid").to_owned();
    let filled = meminfo_shmem();
    assert!(
        filled >= before + SIZE * 3 / 4,
        "the filled segment is not counted in Shmem: {before} -> {filled}"
    );
    p.kill9();
    // No process of ours runs now; poll for the kernel's doing (deadline, no fixed sleep).
    let back = shmem_testkit::wait_for(Duration::from_secs(5), || {
        meminfo_shmem() + SIZE * 3 / 4 <= filled
    });
    assert!(
        back,
        "Shmem still {} bytes after the kill (was {filled} filled)",
        meminfo_shmem()
    );
    assert!(!sysv_exists(&shmid));
    let sut = Segment::builder(&name)
        .dir(dir.path())
        .size(SIZE as usize)
        .open()
        .unwrap();
    assert!(sut.created(), "a killed generation must not be reused");
    let mut buf = vec![0xffu8; 1 << 20];
    for off in (0..SIZE as usize).step_by(1 << 20) {
        sut.read(off, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "not zeroed at {off}");
    }
    drop(sut);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn a_child_made_without_fork_handlers_never_gets_the_segment_freed_under_it() {
    let dir = TestDir::new("clone");
    let name = unique_name("clone");
    let d = dir.path().to_str().unwrap();
    let mut p = Proc::spawn(["raw-clone", d, &name]);
    p.expect("parent-dropped", T);
    p.expect("child-wrote", T);
    // The parent let go; the child (sharing its description, without a lock of its own) is
    // still attached: a new opener must join its generation, not start another.
    let sut = shmem::Value::builder(&name)
        .dir(dir.path())
        .open_existing()
        .unwrap();
    assert!(!sut.created());
    assert_eq!(sut.get_string().unwrap().0, "from the raw child");
    sut.set(b"seen by the child's generation").unwrap();
    p.send("bye");
    p.close_stdin();
    let (status, out) = p.wait_output(T);
    assert!(status.success(), "{out:?}");
    drop(sut);
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn a_foreign_file_whose_first_bytes_are_zero_is_never_collected_or_overwritten() {
    let dir = TestDir::new("foreign0");
    let name = unique_name("cache");
    let path = dir.file(&name);
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    // Another program keeps it mapped (in use).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert!(matches!(info.state, admin::State::Foreign(_)), "{info:?}");
    let done = gc(dir.path(), true, false).unwrap();
    assert!(done.removed.is_empty(), "{done:?}");
    let e = Segment::builder(&name)
        .dir(dir.path())
        .size(64)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::Foreign { .. }), "{e}");
    let e = shmem::Value::builder(&name)
        .dir(dir.path())
        .capacity(64)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::Foreign { .. }), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 1 << 20], "changed");
    drop(f);
}

#[test]
fn a_damaged_persistent_segment_is_an_error_for_every_command_until_a_forced_removal() {
    let dir = TestDir::new("damaged");
    let name = unique_name("damaged");
    let b = Segment::builder(&name)
        .dir(dir.path())
        .size(4096)
        .lifetime(Lifetime::Persistent);
    let sut = b.open().unwrap();
    sut.write(0, b"precious").unwrap();
    drop(sut);
    let path = dir.file(&name);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    for e in [
        b.open().unwrap_err(),
        b.open_existing().unwrap_err(),
        b.create_new().unwrap_err(),
        shmem::Value::builder(&name)
            .dir(dir.path())
            .open_existing()
            .unwrap_err(),
        admin::remove(dir.path(), &name, false).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&name), "{e}");
    }
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert!(matches!(info.state, admin::State::Corrupt(_)), "{info:?}");
    let done = gc(dir.path(), true, false).unwrap();
    assert!(done.removed.is_empty());
    assert_eq!(done.skipped.len(), 1, "{done:?}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the damaged file changed"
    );
    admin::remove(dir.path(), &name, true).unwrap();
    assert!(dir.files().is_empty());
}

#[test]
fn listing_thousands_of_segments_held_by_one_process_shows_every_one_live() {
    const N: usize = 2000;
    let dir = TestDir::new("many");
    let d = dir.path().to_str().unwrap();
    let mut p = Proc::spawn(["hold-many", d, "many", &N.to_string()]);
    p.expect("ready", Duration::from_secs(120));
    let start = std::time::Instant::now();
    let listed = admin::list(dir.path()).unwrap();
    let took = start.elapsed();
    println!("listed {} segments in {took:?}", listed.len());
    assert_eq!(listed.len(), N);
    let wrong: Vec<_> = listed
        .iter()
        .filter(|i| i.state != admin::State::Live || i.attached != 1 || i.pids != [p.pid()])
        .map(|i| (&i.name, &i.state, i.attached, &i.pids))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} wrong, first {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(p.finish().success());
    assert!(dir.files().is_empty(), "left {}", dir.files().len());
}

#[test]
fn an_entry_that_changes_under_the_listing_is_reported_and_the_rest_listed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TestDir::new("race");
    let live = unique_name("live");
    let seg = Segment::builder(&live)
        .dir(dir.path())
        .size(64)
        .open()
        .unwrap();
    let racing = dir.file("x");
    let target = dir.path().join("target");
    std::fs::write(&target, b"t").unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Another user's `shmem.x` turns from a file into a symlink and back, atomically.
            let file = dir.path().join("tmp-file");
            let link = dir.path().join("tmp-link");
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&file, b"a regular file").unwrap();
                std::fs::rename(&file, &racing).unwrap();
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&target, &link).unwrap();
                std::fs::rename(&link, &racing).unwrap();
            }
        });
        // Failures are collected, not panicked on, so that the swapping thread always stops.
        let mut failures = Vec::new();
        for round in 0..2000 {
            match admin::list(dir.path()) {
                Ok(listed) => match listed.iter().find(|i| i.name == live) {
                    Some(i) if i.state == admin::State::Live => {}
                    other => {
                        failures.push(format!("round {round}: live segment shown as {other:?}"))
                    }
                },
                Err(e) => failures.push(format!("round {round}: listing failed: {e}")),
            }
            if let Err(e) = gc(dir.path(), false, true) {
                failures.push(format!("round {round}: gc failed: {e}"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(
            failures.is_empty(),
            "{} failures, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    });
    drop(seg);
}

#[test]
fn a_parent_that_detached_or_died_is_not_listed_while_its_forked_child_holds_on() {
    for (storage, extra) in [("sysv", None), ("file", Some("persistent"))] {
        for how in ["exit", "kill"] {
            let dir = TestDir::new("forkls");
            let name = unique_name("forkls");
            let d = dir.path().to_str().unwrap();
            let mut args = vec!["fork-hold", d, &name];
            args.extend(extra);
            if how == "kill" {
                args.push("kill");
            }
            let mut p = Proc::spawn(args);
            let lines = [p.line(T), p.line(T)];
            let line = lines
                .iter()
                .find(|l| l.starts_with("child="))
                .expect("the parent's line")
                .clone();
            assert!(lines.contains(&"forked".to_owned()), "{lines:?}");
            let child: u32 = field(&line, "child").parse().unwrap();
            let parent: u32 = field(&line, "parent").parse().unwrap();
            // The parent is gone once it is no longer in /proc (reaped or a zombie).
            assert!(shmem_testkit::wait_for(T, || {
                std::fs::read_to_string(format!("/proc/{parent}/stat"))
                    .map_or(true, |s| s.contains(") Z "))
            }));
            let info = admin::inspect(dir.path(), &name).unwrap();
            assert_eq!(
                (info.attached, info.pids.clone()),
                (1, vec![child]),
                "{storage}/{how}: {info:?}"
            );
            p.close_stdin();
            assert!(
                shmem_testkit::wait_for(T, || {
                    match admin::inspect(dir.path(), &name) {
                        Ok(i) => i.attached == 0,
                        Err(e) => matches!(e, Error::NotFound { .. }),
                    }
                }),
                "{storage}/{how}: {:?}",
                admin::inspect(dir.path(), &name)
            );
            if extra.is_some() {
                admin::remove(dir.path(), &name, false).unwrap();
            }
            assert!(
                shmem_testkit::wait_for(T, || dir.files().is_empty()),
                "{storage}/{how}: left {:?}",
                dir.files()
            );
        }
    }
}

#[test]
fn a_huge_file_with_a_valid_looking_header_is_corrupt_not_stale() {
    let dir = TestDir::new("huge");
    let name = unique_name("huge");
    let sut = Segment::builder(&name)
        .dir(dir.path())
        .size(64)
        .lifetime(Lifetime::Persistent)
        .open()
        .unwrap();
    drop(sut);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.file(&name))
        .unwrap();
    let huge: u64 = 2 << 40;
    f.set_len(huge).unwrap();
    f.write_at(&huge.to_le_bytes(), 24).unwrap();
    let info = admin::inspect(dir.path(), &name).unwrap();
    assert!(
        matches!(&info.state, admin::State::Corrupt(r) if r.contains("more than")),
        "{info:?}"
    );
    admin::remove(dir.path(), &name, true).unwrap();
}

/// A hugetlbfs mount for the test (needs root), with one more huge page in the pool if the
/// kernel can find one; restores the pool and unmounts on drop.
struct Hugetlbfs {
    dir: TestDir,
    pages_before: u64,
    grown: bool,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

fn hugepages_free() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("HugePages_Free:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn nr_hugepages() -> Option<u64> {
    std::fs::read_to_string(NR_HUGEPAGES)
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Hugetlbfs {
    fn mount() -> Option<Hugetlbfs> {
        let pages_before = nr_hugepages()?;
        let dir = TestDir::new("huge");
        let ok = std::process::Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        // Growing the pool needs a free, contiguous 2 MiB of memory: not always there.
        let _ = std::fs::write(NR_HUGEPAGES, (pages_before + 1).to_string());
        let grown = nr_hugepages() == Some(pages_before + 1);
        Some(Hugetlbfs {
            dir,
            pages_before,
            grown,
        })
    }
}

impl Drop for Hugetlbfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
        let _ = std::fs::write(NR_HUGEPAGES, self.pages_before.to_string());
    }
}

#[test]
fn hugetlbfs_sizes_are_rounded_to_the_huge_page_and_a_failure_leaks_nothing() {
    let Some(huge) = Hugetlbfs::mount() else {
        require(
            "the hugetlbfs test",
            Some("cannot mount hugetlbfs here (needs root)".into()),
        );
        return;
    };
    let d = huge.dir.path();
    let free = hugepages_free();
    // More than the pool holds: a clear error naming the page size, nothing left behind.
    let e = Segment::builder("big")
        .dir(d)
        .size(((free as usize) + 4) << 21)
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "{e}");
    assert!(e.to_string().contains("2097152"), "{e}");
    assert!(
        !huge.dir.file("big").exists(),
        "a failed create left its file"
    );
    assert_eq!(hugepages_free(), free, "a failed create kept huge pages");
    if !huge.grown || free == 0 {
        println!(
            "only the failure path was tested: the kernel had no huge page to add to the pool"
        );
        return;
    }
    let sut = Segment::builder("odd").dir(d).size(512).open().unwrap();
    assert!(sut.created());
    assert_eq!(sut.storage(), shmem::Storage::File);
    assert_eq!(sut.header().size, 2 << 20, "rounded up to the huge page");
    assert_eq!(sut.data_len(), (2 << 20) - 64);
    sut.write(0, b"huge").unwrap();
    let other = Segment::builder("odd").dir(d).open_existing().unwrap();
    let mut got = [0u8; 4];
    other.read(0, &mut got).unwrap();
    assert_eq!(&got, b"huge");
    drop(other);
    drop(sut);
    assert!(huge.dir.files().is_empty(), "left {:?}", huge.dir.files());
    assert!(
        shmem_testkit::wait_for(T, || hugepages_free() == free),
        "huge pages leaked: {} free, {free} before",
        hugepages_free()
    );
}

#[test]
fn running_out_of_inodes_is_a_clear_error() {
    let Some(tiny) = TinyTmpfs::mount_with("size=256k,nr_inodes=3") else {
        require(
            "the inode test",
            Some("cannot mount a tmpfs here (needs root)".into()),
        );
        return;
    };
    let d = tiny.dir.path();
    let mut held = Vec::new();
    let e = loop {
        match Segment::builder(&format!("c{}", held.len()))
            .dir(d)
            .size(64)
            .open()
        {
            Ok(seg) => held.push(seg),
            Err(e) => break e,
        }
        assert!(held.len() < 10, "the inode limit was never reached");
    };
    assert!(matches!(e, Error::NoSpace { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("inode"), "{text}");
    assert!(text.contains("of 128 bytes"), "{text}");
    drop(held);
    assert!(tiny.dir.files().is_empty());
}

#[test]
fn gc_frees_a_sysv_orphan_it_can_prove_ours_and_dead_and_nothing_else() {
    // No other test's gc may sweep our orphan first: SysV orphans are machine-wide.
    let _gc = GC.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("orphan");
    let make = |what: &str| {
        let (status, out) = Proc::spawn(["orphan", what]).wait_output(T);
        assert!(status.success(), "{out:?}");
        field(&out[0], "shmid").to_owned()
    };
    let ours = make("ours");
    let zeros = make("zeros");
    // Both are marked for removal when the test ends, whatever happens (nobody is attached,
    // so that frees them).
    let _cleanup = [
        RemoveAtEnd(ours.parse().unwrap()),
        RemoveAtEnd(zeros.parse().unwrap()),
    ];
    assert!(sysv_exists(&ours) && sysv_exists(&zeros));
    let dry = admin::collect(dir.path(), false, true).unwrap();
    assert!(dry.orphans.contains(&ours.parse().unwrap()), "{dry:?}");
    assert!(sysv_exists(&ours), "a dry run freed it");
    let done = admin::collect(dir.path(), false, false).unwrap();
    assert!(done.orphans.contains(&ours.parse().unwrap()), "{done:?}");
    assert!(!done.orphans.contains(&zeros.parse().unwrap()), "{done:?}");
    assert!(!sysv_exists(&ours), "the orphan is still there");
    assert!(
        sysv_exists(&zeros),
        "a segment we cannot prove ours was freed"
    );
}

/// Marks SysV segment `.0` for removal on drop.
struct RemoveAtEnd(i32);

impl Drop for RemoveAtEnd {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID ignores the buffer argument; an id already gone just fails.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// Serialises the tests that collect: `gc` also frees SysV orphans, which are machine-wide, so
/// one test's collect could free the orphan another test is watching.
static GC: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `admin::collect` under [`GC`].
fn gc(dir: &std::path::Path, persistent: bool, dry_run: bool) -> shmem::Result<admin::Collected> {
    let _gc = GC.lock().unwrap_or_else(|e| e.into_inner());
    admin::collect(dir, persistent, dry_run)
}

/// Why a private IPC namespace with a lowered `kernel.shmmni` cannot be had here, if not.
fn no_ipc_namespace() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for unshare --ipc".into());
    }
    match std::process::Command::new("unshare")
        .args(["--ipc", "sh", "-c", "echo 16 > /proc/sys/kernel/shmmni"])
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("unshare --ipc with a lowered shmmni failed: {s}")),
        Err(e) => Some(format!("unshare: {e}")),
    }
}

#[test]
fn reaching_kernel_shmmni_is_a_clear_error_and_leaves_the_others_intact() {
    if !require("the shmmni test", no_ipc_namespace()) {
        return;
    }
    // A private IPC namespace (its own SysV segments and limits) with room for 16 segments.
    let dir = TestDir::new("shmmni");
    let d = dir.path().to_str().unwrap();
    let mut p = Proc::spawn_cmd(
        std::process::Command::new("unshare")
            .args(["--ipc", "sh", "-c"])
            .arg("echo 16 > /proc/sys/kernel/shmmni && exec \"$0\" \"$@\"")
            .arg(shmem_testkit::helper_path())
            .args(["open-until-full", d, "lim"]),
    );
    let full = p.expect("full", T);
    assert_eq!(field(&full, "made"), "16", "{full}");
    assert_eq!(field(&full, "kind"), "NoSpace", "{full}");
    assert!(
        full.contains("kernel.shmmni"),
        "the error names the limit: {full}"
    );
    assert!(
        full.contains("lim-16"),
        "the error names the segment: {full}"
    );
    p.expect("intact", T);
    let (status, out) = p.wait_output(T);
    assert!(status.success(), "{out:?}");
    // Its exit freed all 16 (the namespace went with it): no name file is left either.
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn an_open_that_waits_past_its_attach_timeout_on_a_lock_holder_is_a_timeout() {
    let dir = TestDir::new("attach");
    let name = unique_name("busy");
    let builder = Segment::builder(&name)
        .dir(dir.path())
        .size(64)
        .lifetime(Lifetime::Persistent);
    let seg = builder.clone().open().unwrap();
    seg.write(0, b"kept").unwrap();
    drop(seg);
    // A write lock on the name file, as an initialiser or a detacher holds it (a traditional
    // record lock conflicts with the library's OFD locks, even within one process).
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(dir.file(&name))
        .unwrap();
    rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let e = builder
        .clone()
        .attach_timeout(Duration::from_millis(100))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    // Once the holder lets go, the open joins the segment, its bytes intact.
    drop(file);
    let seg = builder.open().unwrap();
    assert!(!seg.created());
    let mut got = [0u8; 4];
    seg.read(0, &mut got).unwrap();
    assert_eq!(&got, b"kept");
    drop(seg);
    admin::remove(dir.path(), &name, false).unwrap();
    assert!(dir.files().is_empty(), "left behind: {:?}", dir.files());
}

#[test]
fn a_name_file_whose_token_never_matches_its_memory_ends_in_attach_retries() {
    let dir = TestDir::new("attach");
    let name = unique_name("token");
    let (holder, _) = hold(&dir, &name, &[]);
    // The holder keeps its read lock; its SysV memory carries the real token. A peer scribbles
    // the token in the name file: every attach finds a generation that is not the one
    // announced, and retries.
    let path = dir.file(&name);
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.write_at(&[0x5a; 8], 48).unwrap();
    let e = Segment::builder(&name)
        .dir(dir.path())
        .size(4096)
        .open()
        .unwrap_err();
    assert!(
        matches!(e, Error::AttachRetries { attempts: 100, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&name), "{e}");
    drop(holder);
}
