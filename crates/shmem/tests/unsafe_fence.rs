//! The rule "`unsafe` lives in the platform backend files" (`src/platform/`, see its
//! `mod.rs`), kept true. The compiler is the guard: `lib.rs` denies `unsafe_code` and allows it
//! for `mod platform` only, so `unsafe` anywhere else does not build. This test is the
//! backstop that names the lines (a text scan: a `//` inside a string literal hides the rest
//! of its line from it, which the lint does not miss): any other source file of the library
//! that writes the keyword outside a comment fails it. (That every `unsafe` block
//! says why it holds is clippy's `undocumented_unsafe_blocks`, denied for the workspace.)
#![cfg(unix)]

use std::path::{Path, PathBuf};

/// Files outside `src/platform/` still allowed to hold `unsafe`, each with its reason. An entry
/// whose file no longer needs it fails the test too, so the list only shrinks.
const ALLOWED: &[(&str, &str)] = &[];

/// The numbers (from 1) of the lines of `text` that use the keyword outside a `//` comment.
fn offending_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.find("//").map_or(*line, |at| &line[..at]);
            has_keyword(code, "unsafe")
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// Whether `word` occurs in `code` as a whole identifier (so `unsafe_code` does not count).
fn has_keyword(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_is_written_only_in_the_platform_backends() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    assert!(
        files.len() > 10,
        "found only {} source files under {}",
        files.len(),
        root.join("src").display()
    );
    let mut offenders = Vec::new();
    let mut still_needed = Vec::new();
    let mut in_platform = 0;
    for path in &files {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).unwrap();
        let lines = offending_lines(&text);
        if rel.starts_with("src/platform/") {
            in_platform += lines.len();
            continue;
        }
        if ALLOWED.iter().any(|(f, _)| *f == rel) {
            if !lines.is_empty() {
                still_needed.push(rel);
            }
            continue;
        }
        let text_lines: Vec<&str> = text.lines().collect();
        for n in lines {
            offenders.push(format!("{rel}:{n}: {}", text_lines[n - 1].trim()));
        }
    }
    assert!(
        offenders.is_empty(),
        "`unsafe` outside src/platform/ (move it into a backend file, e.g. behind \
         platform/shared.rs):\n{}",
        offenders.join("\n")
    );
    let stale: Vec<_> = ALLOWED
        .iter()
        .filter(|(f, _)| !still_needed.iter().any(|n| n == f))
        .map(|(f, why)| format!("{f} ({why})"))
        .collect();
    assert!(
        stale.is_empty(),
        "these allow-list entries hold no `unsafe` any more (or are gone): remove them from \
         ALLOWED: {}",
        stale.join(", ")
    );
    // The scan sees the backends' own blocks, so it would see any elsewhere.
    assert!(
        in_platform > 10,
        "only {in_platform} lines of `unsafe` found in src/platform/"
    );
}

#[test]
fn the_scan_finds_the_keyword_in_code_only() {
    let sample = "fn a() {}\n\
                  let x = unsafe { f() };\n\
                  // SAFETY: a comment naming unsafe is fine\n\
                  #![forbid(unsafe_code)]\n\
                  pub(crate) unsafe trait T {}\n\
                  g(); // unsafe in a trailing comment\n\
                  unsafe impl Send for X {}\n";
    assert_eq!(offending_lines(sample), [2, 5, 7]);
    assert!(!has_keyword("not_unsafe()", "unsafe"));
    assert!(has_keyword("(unsafe)", "unsafe"));
}
