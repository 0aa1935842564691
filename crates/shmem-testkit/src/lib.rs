//! Fixtures for shmem's multi-process tests.
//!
//! - [`unique_name`]: a segment name no other test (or test run) uses.
//! - [`TestDir`]: a private directory on the `/dev/shm` tmpfs, removed with everything in it on
//!   drop, also when the test panics; tests pass it with `.dir()` so that nothing of theirs can
//!   ever be left in `/dev/shm` itself, and so that listing it shows only their own segments.
//! - [`Proc`]: a spawned helper process (the `shmem-helper` binary of this crate) that is killed
//!   on drop, with line-by-line reading of its output under a deadline.
//! - [`wait_for`]: waits for a condition with a deadline (tests never sleep to wait for events).

pub mod roles;
pub mod soak;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The type the serde tests store (`shmem::Serde<Reading>`), in the test and the helper.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    /// A string field.
    pub sensor: String,
    /// A float.
    pub celsius: f64,
    /// A sequence (length-prefixed in the encoding).
    pub samples: Vec<u32>,
    /// An enum.
    pub state: ReadingState,
}

/// An enum field of [`Reading`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ReadingState {
    /// Fine.
    Ok,
    /// With a code.
    Fault(u16),
}

impl Reading {
    /// The `i`-th reading of the tests.
    pub fn nth(i: u32) -> Reading {
        Reading {
            sensor: format!("sensor-{i}"),
            celsius: f64::from(i) / 4.0,
            samples: (0..i % 17).collect(),
            state: if i % 3 == 0 {
                ReadingState::Fault(i as u16)
            } else {
                ReadingState::Ok
            },
        }
    }
}

/// Whether a test that needs something this machine may lack can run: `why` is `None` when
/// it can. Otherwise it is skipped with a message naming `what` and `why`, except under CI
/// (the `CI` variable set, as `.ci/run` does), where a test that cannot run fails.
pub fn require(what: &str, why: Option<String>) -> bool {
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("{what} cannot run under CI: {why}")
        }
        Some(why) => {
            eprintln!("skipped {what}: {why}");
            false
        }
    }
}

/// `None` when running as root with `setpriv` (util-linux) at hand, to run a command as
/// another user; else why not.
pub fn can_switch_users() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("switching users needs root".into());
    }
    match std::process::Command::new("setpriv")
        .arg("--version")
        .output()
    {
        Ok(_) => None,
        Err(e) => Some(format!("setpriv (util-linux) is not usable: {e}")),
    }
}

/// A name unique to this process and call: `t-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t-{tag}-{}-{n}", std::process::id())
}

/// A private directory under `/dev/shm`, removed on drop.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `/dev/shm/shmem-test-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TestDir {
        let path = Path::new("/dev/shm").join(format!("shmem-test-{}", unique_name(tag)));
        std::fs::create_dir(&path).expect("create test directory");
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the files in it, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .expect("read test directory")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The file that holds segment `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(format!("{}{name}", shmem::FILE_PREFIX))
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Waits until `cond` holds, checking every millisecond, for at most `timeout`.
/// Returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The helper binary's path: next to the directory of the running test binary
/// (`target/<profile>/deps/..`), where Cargo builds it for this crate's integration tests.
pub fn helper_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    profile_dir.join("shmem-helper")
}

/// A helper process, killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `shmem-helper ARGS...` with piped stdin and stdout.
    pub fn spawn<I, S>(args: I) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Proc::spawn_cmd(Command::new(helper_path()).args(args))
    }

    /// Starts a prepared command with piped stdin and stdout.
    pub fn spawn_cmd(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shmem-helper");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of output; panics after `timeout` or at end of output.
    pub fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(e) => panic!(
                "helper {}: no output line within {timeout:?}: {e}",
                self.pid()
            ),
        }
    }

    /// Reads lines until one starts with `prefix`, and returns it.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.line(left);
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    /// Sends one line to the helper's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to helper");
        stdin.flush().expect("flush helper stdin");
    }

    /// Closes stdin without waiting (helpers that hold a segment detach and exit then).
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Closes stdin (helpers that hold a segment detach and exit then) and waits for the exit.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait helper")
    }

    /// Waits for the exit without closing stdin and returns the rest of the output.
    pub fn wait_output(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("helper {} still running after {timeout:?}", self.pid())
                }
            }
        }
        (self.child.wait().expect("wait helper"), out)
    }

    /// `kill -9` and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `key=value` in a helper's output line; panics if it is missing.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Lower-case hexadecimal, as helpers print bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A small deterministic random number generator (xorshift64*), so that runs can be replayed
/// from a printed seed without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator (0 is replaced by a fixed constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A self-checking value: `[len: u32][seed: u32][bytes...][fnv1a of all before: u64]`.
/// A reader that gets exactly such a value knows it is complete and untorn.
pub fn checked_value(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let min = 16;
    let len = min + rng.below((max_len - min + 1) as u64) as usize;
    let seed = rng.next_u64() as u32;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&seed.to_le_bytes());
    let mut r = Rng::new(u64::from(seed) | 1 << 40);
    while v.len() < len - 8 {
        v.push(r.next_u64() as u8);
    }
    let sum = fnv1a(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// Checks a value made by [`checked_value`] (the empty value, never set, is also accepted).
pub fn verify_value(v: &[u8]) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() < 16 {
        return Err(format!("value of {} bytes is shorter than 16", v.len()));
    }
    let len = u32::from_le_bytes(v[0..4].try_into().expect("4 bytes")) as usize;
    if len != v.len() {
        return Err(format!(
            "length field {len} but value has {} bytes",
            v.len()
        ));
    }
    let (body, sum) = v.split_at(len - 8);
    if fnv1a(body).to_le_bytes() != sum {
        return Err(format!("checksum mismatch in a value of {len} bytes"));
    }
    Ok(())
}

/// A self-checking map value bound to its key: `[len: u32][seed: u32][bytes...][fnv1a of the
/// key and all before: u64]`, `min_len(16)..=max_len` bytes. A reader that gets exactly such a
/// value under `key` knows it is complete, untorn and not another key's.
pub fn keyed_value(rng: &mut Rng, key: &[u8], max_len: usize) -> Vec<u8> {
    let len = 16 + rng.below((max_len.max(16) - 16 + 1) as u64) as usize;
    let seed = rng.next_u64() as u32;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&seed.to_le_bytes());
    let mut r = Rng::new(u64::from(seed) | 1 << 41);
    while v.len() < len - 8 {
        v.push(r.next_u64() as u8);
    }
    let sum = fnv1a_pair(key, &v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// Checks a value made by [`keyed_value`] for `key`.
pub fn verify_keyed(key: &[u8], v: &[u8]) -> Result<(), String> {
    if v.len() < 16 {
        return Err(format!("value of {} bytes is shorter than 16", v.len()));
    }
    let len = u32::from_le_bytes(v[0..4].try_into().expect("4 bytes")) as usize;
    if len != v.len() {
        return Err(format!(
            "length field {len} but value has {} bytes",
            v.len()
        ));
    }
    let (body, sum) = v.split_at(len - 8);
    if fnv1a_pair(key, body).to_le_bytes() != sum {
        return Err(format!(
            "checksum of a {len}-byte value does not match key {:?} (torn, or another key's)",
            String::from_utf8_lossy(key)
        ));
    }
    Ok(())
}

fn fnv1a_pair(key: &[u8], body: &[u8]) -> u64 {
    let h = fnv1a(key);
    body.iter().fold(h ^ 0xff, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_verify_only_under_their_key() {
        let mut rng = Rng::new(9);
        for _ in 0..100 {
            let mut v = keyed_value(&mut rng, b"k1", 300);
            verify_keyed(b"k1", &v).unwrap();
            assert!(verify_keyed(b"k2", &v).is_err());
            let i = rng.below(v.len() as u64) as usize;
            v[i] ^= 0x40;
            assert!(verify_keyed(b"k1", &v).is_err());
        }
    }

    #[test]
    fn checked_values_verify_and_damage_is_caught() {
        let mut rng = Rng::new(7);
        for _ in 0..100 {
            let mut v = checked_value(&mut rng, 300);
            verify_value(&v).unwrap();
            let i = rng.below(v.len() as u64) as usize;
            v[i] ^= 0x40;
            assert!(verify_value(&v).is_err());
        }
    }
}

/// The project README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
