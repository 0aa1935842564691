//! `shmem-bench`: see the library documentation and docs/BENCHMARKS.md.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(shmem_bench::main_with_args(&args));
}
