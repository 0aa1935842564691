//! `shmem`: named shared memory from the command line.
//!
//! The seed's demo, values to set, get and watch, and an `ipcs` for POSIX shared memory that
//! shows who is attached. Parsing is in `cli.rs`, each command in `cmd/`; `main` only parses,
//! runs, and turns a failure into a message and an exit code.
#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod error;
mod interrupt;
mod render;
#[cfg(target_os = "linux")]
mod report;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // An empty SHMEM_DIR means the default, as it does for libshmem (clap would refuse it).
    if std::env::var_os("SHMEM_DIR").is_some_and(|d| d.is_empty()) {
        std::env::remove_var("SHMEM_DIR"); // edition 2021: safe, and no thread runs yet
    }
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.is_quiet() {
                eprintln!("shmem: {failure}");
            }
            failure.exit_code()
        }
    }
}
