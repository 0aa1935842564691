//! `shmem-soak [--seconds N] [--seed S] [--min-kills K]`: runs the soak (see `shmem_testkit::soak`) and prints
//! its figures; exits 1 if it found any error.
//!
//! `cargo run --release -p shmem-testkit --bin shmem-soak -- --seconds 60`

use std::process::ExitCode;

use shmem_testkit::soak::{self, Config};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("role") {
        shmem_testkit::roles::run(&args[1..]);
    }
    let mut cfg = Config {
        seconds: 10,
        seed: std::process::id().into(),
        min_kills: 0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (a.as_str(), value) {
            ("--seconds", Some(n)) => cfg.seconds = n,
            ("--seed", Some(n)) => cfg.seed = n,
            ("--min-kills", Some(n)) => cfg.min_kills = n,
            _ => {
                eprintln!("usage: shmem-soak [--seconds N] [--seed S] [--min-kills K]");
                return ExitCode::from(2);
            }
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("shmem-soak: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("soak: {} s, seed {}", cfg.seconds, cfg.seed);
    let report = soak::run(&cfg, &exe);
    println!("{report}");
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
