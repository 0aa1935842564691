//! How values are shown: one line of text, escaped; or a JSON object that keeps every byte.

use serde::Serialize;

/// A value as JSON: the text when it is UTF-8, else its bytes in hexadecimal.
#[derive(Serialize)]
pub struct Json<'a> {
    /// The segment's name.
    pub name: &'a str,
    /// The value's version.
    pub version: u64,
    /// Its length in bytes.
    pub length: usize,
    /// The value as text, or `null` if it is not UTF-8.
    pub value: Option<&'a str>,
    /// The value in hexadecimal, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
}

impl<'a> Json<'a> {
    /// The JSON form of `bytes`, at `version`, of segment `name`.
    pub fn new(name: &'a str, version: u64, bytes: &'a [u8]) -> Json<'a> {
        let (value, value_hex) = text_or_hex(bytes);
        Json {
            name,
            version,
            length: bytes.len(),
            value,
            value_hex,
        }
    }
}

/// `bytes` as text when they are UTF-8, else `None` and their hexadecimal.
pub fn text_or_hex(bytes: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text), None),
        Err(_) => (
            None,
            Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        ),
    }
}

/// `bytes` on one line: valid UTF-8 as is, except that backslashes, control characters and
/// the bytes of invalid sequences are escaped (`\\`, `\n`, `\t`, `\x1b`, `\xff`), so the line
/// can be read back byte for byte and never drives a terminal.
pub fn one_line(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() && (c as u32) < 0x100 => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_on_one_line_byte_for_byte() {
        assert_eq!(one_line(b"a b"), "a b");
        assert_eq!(
            one_line("a\nb\\c\td\u{1b}é\u{85}".as_bytes()),
            "a\\nb\\\\c\\td\\x1bé\\x85"
        );
        assert_eq!(one_line(b"ok\xff\xfe!"), "ok\\xff\\xfe!");
    }

    #[test]
    fn json_keeps_text_or_every_byte() {
        let t = serde_json::to_value(Json::new("n", 3, b"hi")).unwrap();
        assert_eq!(t["value"], "hi");
        assert!(t.get("value_hex").is_none());
        let b = serde_json::to_value(Json::new("n", 4, b"\xff\x00")).unwrap();
        assert!(b["value"].is_null());
        assert_eq!(b["value_hex"], "ff00");
        assert_eq!(b["length"], 2);
    }
}
