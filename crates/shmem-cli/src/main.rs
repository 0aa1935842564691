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
mod report;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
