//! `shmem watch NAME`: print each new value as it changes.

use std::io::{self, Write};
use std::path::Path;

use super::Waited;
use crate::cli::WatchArgs;
use crate::error::Result;
use crate::interrupt::Interrupt;

pub fn run(dir: &Path, args: &WatchArgs) -> Result {
    let interrupt = Interrupt::install()?;
    let value = std::sync::Arc::new(super::open_existing(dir, &args.name)?);
    let deadline = super::deadline(args.timeout);
    let mut since = args.since.unwrap_or_else(|| value.version());
    let mut out = io::stdout().lock();
    let mut printed = 0u64;
    while args.count.map_or(true, |count| printed < count) {
        if let Waited::Interrupted = super::wait_change(&value, since, deadline, &interrupt)? {
            break; // Ctrl-C is how a watch normally ends
        }
        let (bytes, version) = value.get_vec()?;
        writeln!(
            out,
            "{version} {}",
            one_line(&String::from_utf8_lossy(&bytes))
        )?;
        out.flush()?;
        since = version;
        printed += 1;
    }
    Ok(())
}

/// `text` on one line: backslashes and control characters escaped, everything else as is.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn values_print_on_one_line() {
        assert_eq!(one_line("a b"), "a b");
        assert_eq!(one_line("a\nb\\c\td\u{1b}é"), "a\\nb\\\\c\\td\\u{1b}é");
    }
}
