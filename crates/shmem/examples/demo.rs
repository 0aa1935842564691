//! The Windows DLL scenario on Linux: a parent stores a string in the shared value
//! `dllmemfilemap`, starts a child process, and waits; the child reads and prints it.
//!
//! `cargo run --example demo -p named-shm [-- NAME]`

use std::process::{Command, ExitCode};

use shmem::{Error, Value};

const CAPACITY: usize = 4096;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--child") => {
            child(args.get(2).map_or("dllmemfilemap", String::as_str)).map_err(Into::into)
        }
        name => parent(name.unwrap_or("dllmemfilemap")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parent(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let value = Value::open(name, CAPACITY)?;
    println!(
        "parent: attached '{}' (created = {})",
        name,
        value.created()
    );
    value.set_str("This is a test string")?;
    let status = Command::new(std::env::current_exe()?)
        .args(["--child", name])
        .status()?;
    if !status.success() {
        return Err(format!("child failed: {status}").into());
    }
    #[cfg(target_os = "linux")]
    {
        let path = value.segment().path().to_owned();
        drop(value);
        println!(
            "parent: detached; {} {}",
            path.display(),
            if path.exists() {
                "still exists"
            } else {
                "is gone"
            }
        );
    }
    #[cfg(windows)]
    {
        drop(value);
        let gone = matches!(
            Value::builder(name).open_existing(),
            Err(Error::NotFound { .. })
        );
        println!(
            "parent: detached; the section {}",
            if gone { "is gone" } else { "still exists" }
        );
    }
    Ok(())
}

fn child(name: &str) -> Result<(), Error> {
    let value = Value::builder(name).open_existing()?;
    let (text, _) = value.get_string()?;
    eprintln!("child: attached '{}' (created = {})", name, value.created());
    println!("Child process read from shared memory: {text}");
    Ok(())
}
