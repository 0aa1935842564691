//! What the tests that run C and Python programs against libshmem share.
//!
//! - [`lib_dir`]: builds the C libraries with the root `Makefile` (Cargo does not build a
//!   cdylib-only library for integration tests, and the Makefile is what users run) and returns
//!   the directory holding them.
//! - [`Fixture`]: per test, a unique segment name and a private segment directory under
//!   `/dev/shm` passed as `SHMEM_DIR`, plus a build directory; both removed on drop, also when
//!   the test fails, so nothing is ever left in `/dev/shm`.
//! - [`run`]: runs a program and waits for it on a pidfd with a deadline (no sleeping); a
//!   program still running then is killed and the test fails.
#![allow(dead_code)] // each test file uses a part

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

/// How long any one program may run.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The line the seed's child prints.
pub const CHILD_LINE: &str = "Child process read from shared memory: This is a test string";

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The header's directory.
pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// The directory with the C libraries as the root `Makefile` builds them (`make lib`):
/// `libshmem.so` (and its versioned name and SONAME link), `libshmem.a`, the same for
/// `libshmem_compat`, and `native-static-libs`. Built first with the profile of this test (the
/// directory above `deps/` that holds the test executable) in its target directory.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let (target_dir, profile) = target_and_profile();
        assert!(
            have("make"),
            "make is needed to build the C libraries (the root Makefile)"
        );
        // A cold build of the library may take minutes on a busy machine.
        let output = run_within(
            make_command()
                .arg("lib")
                .arg(format!("PROFILE={profile}"))
                .arg(format!("TARGET_DIR={}", target_dir.display())),
            Duration::from_secs(900),
        );
        assert!(
            output.status.success(),
            "make lib failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let dir = target_dir.join(profile_dir(&profile)).join("capi");
        for lib in [
            "libshmem.so",
            "libshmem.a",
            "libshmem_compat.so",
            "libshmem_compat.a",
        ] {
            let path = dir.join(lib);
            assert!(path.is_file(), "{} was not built", path.display());
        }
        dir
    })
}

/// This test's target directory and cargo profile.
pub fn target_and_profile() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps")
        .to_owned();
    let target_dir = profile_dir.parent().expect("<target>").to_owned();
    let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => "dev".to_owned(),
        Some(p) => p.to_owned(),
    };
    (target_dir, profile)
}

/// The directory cargo puts a profile's output in.
pub fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        p => p,
    }
}

/// `make -C <root>`, without the jobserver of an outer `make` (say `make check`), whose
/// descriptors the test's children do not have.
pub fn make_command() -> Command {
    let mut make = Command::new("make");
    make.arg("--no-print-directory")
        .arg("-C")
        .arg(root())
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL");
    make
}

/// The path of `libshmem.so`.
pub fn lib_so() -> PathBuf {
    lib_dir().join("libshmem.so")
}

/// The path of `libshmem_compat.so`.
pub fn compat_so() -> PathBuf {
    lib_dir().join("libshmem_compat.so")
}

/// What a program linked with `libshmem.a` also needs, as `make lib` recorded it from
/// `rustc --print native-static-libs`.
pub fn native_static_libs() -> Vec<String> {
    let path = lib_dir().join("native-static-libs");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let libs: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    assert!(
        libs.iter().any(|l| l == "-lc"),
        "{}: {text}",
        path.display()
    );
    libs
}

/// Whether `program` is installed. Under CI (`CI` set), a missing tool is a failure, not a
/// skip: `.ci/run` installs them all, so a skip there would hide a regression.
pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{program} is not installed, and CI must run every test"
    );
    found
}

/// How a test program gets libshmem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// `-lshmem`: `libshmem.so`, found at run time through the rpath.
    Shared,
    /// `-lshmem_compat -lshmem`: the compatibility library too, attached at load.
    Compat,
    /// `libshmem.a`, linked into the program.
    Static,
    /// `libshmem_compat.a` and `libshmem.a`.
    StaticCompat,
    /// Not linked: the program loads a library with `dlopen`.
    None,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A test's segment name, segment directory and build directory.
#[derive(Debug)]
pub struct Fixture {
    /// The segment name, unique to this test and run: `ffi-<tag>-<pid>-<n>`.
    pub name: String,
    /// A private directory on `/dev/shm`, passed to every program as `SHMEM_DIR`.
    pub dir: PathBuf,
    /// Where this test's programs are built.
    pub build: PathBuf,
}

impl Fixture {
    /// Creates the directories.
    pub fn new(tag: &str) -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("ffi-{tag}-{}-{n}", std::process::id());
        let dir = Path::new("/dev/shm").join(format!("shmem-test-{name}"));
        let build = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&name);
        std::fs::create_dir(&dir).expect("create the segment directory");
        std::fs::create_dir_all(&build).expect("create the build directory");
        Fixture { name, dir, build }
    }

    /// The file that holds segment `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("shmem.{name}"))
    }

    /// The file of this test's default (compatibility) segment.
    pub fn compat_file(&self) -> PathBuf {
        self.file(&self.name)
    }

    /// The names of the files in the segment directory.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("read the segment directory")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A command with this test's environment: `SHMEM_DIR` and `SHMEM_COMPAT_NAME`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SHMEM_DIR", &self.dir)
            .env("SHMEM_COMPAT_NAME", &self.name)
            .env_remove("LD_PRELOAD");
        cmd
    }

    /// Compiles `sources` (relative to the repository root) into program `out` with the system C
    /// compiler, with the header and linked to libshmem as `link` says.
    pub fn compile(&self, out: &str, sources: &[&str], link: Link, extra: &[&str]) -> PathBuf {
        let exe = self.build.join(out);
        let lib = lib_dir();
        let mut cc = Command::new("cc");
        cc.args([
            "-std=c11", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-I",
        ])
        .arg(include_dir())
        .arg("-o")
        .arg(&exe)
        .args(sources.iter().map(|s| root().join(s)))
        .args(extra);
        let shared = |cc: &mut Command| {
            cc.arg("-L")
                .arg(lib)
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        };
        match link {
            Link::Shared => {
                shared(&mut cc);
                cc.arg("-lshmem");
            }
            Link::Compat => {
                shared(&mut cc);
                cc.args(["-lshmem_compat", "-lshmem"]);
            }
            Link::Static => {
                cc.arg(lib.join("libshmem.a")).args(native_static_libs());
            }
            Link::StaticCompat => {
                cc.arg(lib.join("libshmem_compat.a"))
                    .arg(lib.join("libshmem.a"))
                    .args(native_static_libs());
            }
            Link::None => {
                cc.arg("-ldl");
            }
        }
        let output = run(&mut cc);
        assert!(
            output.status.success(),
            "cc {sources:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        exe
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.build);
    }
}

/// Runs `cmd` to the end with its output captured, within [`DEADLINE`].
pub fn run(cmd: &mut Command) -> Output {
    run_within(cmd, DEADLINE)
}

/// Runs `cmd` with its output captured; kills it and panics if it runs longer than `timeout`.
pub fn run_within(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pidfd = pidfd_open(Pid::from_child(&child), PidfdFlags::empty()).expect("pidfd_open");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));

    // The pidfd becomes readable when the process exits.
    let deadline = Instant::now() + timeout;
    let exited = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => break false,
            Ok(_) => break true,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll on a pidfd: {e}"),
        }
    };
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the child");
    let output = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        exited,
        "{cmd:?} still running after {timeout:?}; killed. Output so far:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `cmd` and panics, with its output, unless it succeeds; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let output = run(cmd);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{cmd:?} failed with {} (signal {:?}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        output.status.signal(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
