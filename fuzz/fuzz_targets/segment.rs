//! Fuzzes what shmem reads from shared memory: the header validation on attach, and the value's
//! read, write and wait paths, against arbitrary bytes written by a "peer".
//!
//! `cargo fuzz run segment -- -max_total_time=60` (from the repository root)
#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmem::Value;

const CAP: usize = 256;

struct Fixture {
    dir: std::path::PathBuf,
    held: Value,
    file: std::fs::File,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::path::PathBuf::from(format!("/dev/shm/shmem-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz directory");
        // Persistent: its memory is the file written below (a transient value's memory is
        // SysV shared memory, and its file only the 64-byte name).
        let held = Value::builder("fuzz")
            .dir(&dir)
            .capacity(CAP)
            .lifetime(shmem::Lifetime::Persistent)
            .lock_timeout(Duration::from_millis(5))
            .open()
            .expect("open the fuzzed value");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("shmem.fuzz"))
            .expect("open the segment file");
        Fixture { dir, held, file }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // The peer writes `data` over the start of the file (header, control block, slot metadata
    // and data), never changing the file's size.
    let len = f.file.metadata().map(|m| m.len()).unwrap_or(0) as usize;
    let n = data.len().min(len);
    let _ = f.file.write_at(&data[..n], 0);
    // A second attacher validates the header...
    let _ = Value::builder("fuzz").dir(&f.dir).open_existing();
    // ...and the handle we already hold reads, writes and waits on whatever is there.
    let mut buf = [0u8; CAP];
    let _ = f.held.get(&mut buf);
    let _ = f.held.get_vec();
    let _ = f.held.set(b"fuzz");
    let _ = f.held.wait_changed(f.held.version(), Some(Duration::from_micros(10)));
});
