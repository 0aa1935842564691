//! A loop of `Map::get_into` (one hot key, or cycling through 10,000 keys) or of `Value::get`,
//! 64 bytes each, for counting instructions per call under callgrind (docs/BENCHMARKS.md):
//!
//! ```sh
//! cargo build --release -p shmem-bench --example map_loop
//! valgrind --tool=callgrind --toggle-collect='shmem::map::Map::get_into' \
//!     target/release/examples/map_loop hot 100000     # I refs / 300,000 = per call
//! valgrind --tool=callgrind --toggle-collect='shmem::value::Value::get' \
//!     target/release/examples/map_loop value 100000
//! ```
//!
//! Three rounds of `N` calls each; prints the time per call of each round (meaningless under
//! valgrind, a rough figure outside it). The map and value are transient: gone at exit.

use std::hint::black_box;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "hot".into());
    let n: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let pid = std::process::id();
    let m = shmem::Map::open(&format!("bench-loop-{pid}-map"), 1 << 20)?;
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i:05}")).collect();
    for k in &keys {
        m.set(k, &[0x5a; 64])?;
    }
    let v = shmem::Value::open(&format!("bench-loop-{pid}-value"), 64)?;
    v.set(&[0x5a; 64])?;
    let mut buf = [0u8; 64];
    for round in 0..3 {
        let t = Instant::now();
        match mode.as_str() {
            "hot" => {
                for _ in 0..n {
                    black_box(m.get_into(black_box(&keys[77]), &mut buf)?);
                }
            }
            "cycle" => {
                for i in 0..n {
                    black_box(m.get_into(black_box(&keys[i % keys.len()]), &mut buf)?);
                }
            }
            "value" => {
                for _ in 0..n {
                    black_box(v.get(black_box(&mut buf))?);
                }
            }
            other => return Err(format!("unknown mode {other} (hot, cycle or value)").into()),
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        eprintln!("round {round}, {mode}: {ns:.1} ns per call");
    }
    Ok(())
}
