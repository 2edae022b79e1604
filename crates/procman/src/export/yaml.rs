//! YAML documents for Compose and Kubernetes, built in the order a person writes their
//! keys and written for YAML 1.1 readers (PyYAML in docker-compose, go-yaml behind
//! kubectl): any string such a reader could take for something else (`no`, `on`, `8080`,
//! `1e3`, `~`, a leading indicator, `: `, ` #`) is double-quoted; scripts are block literals.

use serde_norway::{Mapping, Value};

/// A mapping with these entries, in order; `None` values are left out.
pub fn map<'k>(entries: impl IntoIterator<Item = (&'k str, Option<Value>)>) -> Value {
    let mut mapping = Mapping::new();
    for (key, value) in entries {
        if let Some(value) = value {
            mapping.insert(Value::String(key.to_owned()), value);
        }
    }
    Value::Mapping(mapping)
}

/// A string.
pub fn text(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

/// A list of strings.
pub fn texts<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Value {
    Value::Sequence(values.into_iter().map(text).collect())
}

/// An integer.
pub fn number(value: impl Into<i64>) -> Value {
    Value::Number(value.into().into())
}

/// The document as YAML text.
pub fn to_text(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(m, 0, &mut out),
        Value::Sequence(s) if !s.is_empty() => sequence(s, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn mapping(m: &Mapping, indent: usize, out: &mut String) {
    for (key, value) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(key));
        out.push(':');
        nested(value, indent, indent + 2, out);
    }
}

fn sequence(s: &[Value], indent: usize, out: &mut String) {
    for item in s {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                // The first key goes on the dash's line.
                let mut inner = String::new();
                mapping(m, indent + 2, &mut inner);
                out.push(' ');
                out.push_str(&inner[indent + 2..]);
            }
            _ => nested(item, indent + 2, indent + 2, out),
        }
    }
}

/// Writes what follows a `key:` or `-`: a scalar on the same line, or a block below it.
fn nested(value: &Value, seq_indent: usize, block_indent: usize, out: &mut String) {
    match value {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            mapping(m, block_indent, out);
        }
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            sequence(s, seq_indent, out);
        }
        Value::String(s) if literal_block(s) => {
            let chomp = match s.len() - s.trim_end_matches('\n').len() {
                0 => "-",
                1 => "",
                _ => "+",
            };
            out.push_str(&format!(" |{chomp}\n"));
            let body = s.strip_suffix('\n').unwrap_or(s);
            for line in body.split('\n') {
                if !line.is_empty() {
                    out.push_str(&" ".repeat(block_indent));
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// Whether `s` reads back exactly as a `|` block: several lines, printable, and a first
/// line that does not start with a space (which would need an indentation indicator).
fn literal_block(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars()
            .all(|c| c == '\n' || c == '\t' || !needs_escape(c))
}

/// Characters that read back as themselves only `\`-escaped in a double-quoted scalar:
/// YAML readers break lines at U+0085, U+2028 and U+2029 (in a `|` block, the text after
/// one would become keys of the enclosing mapping), and PyYAML refuses the other control
/// characters, U+FEFF, U+FFFE and U+FFFF anywhere in a file.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

/// `s` double-quoted, with every character [`needs_escape`] names as `\uXXXX`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if plain(s) => s.clone(),
        Value::String(s) => quoted(s),
        Value::Sequence(_) => "[]".into(),
        Value::Mapping(_) => "{}".into(),
        Value::Tagged(tagged) => scalar(&tagged.value),
    }
}

/// Whether `s` reads back as this string in YAML 1.1 and 1.2 without quotes.
fn plain(s: &str) -> bool {
    const SPECIAL: &[&str] = &["y", "n", "yes", "no", "true", "false", "on", "off", "null"];
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/');
    first_ok
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str())
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _./:@%+=,-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "no",
            "On",
            "8080",
            "1e3",
            "~",
            "-x",
            ".inf",
            "a: b",
            "x #y",
            "",
            "*a",
            "2001-12-14",
        ] {
            assert!(!plain(s), "{s:?} must be quoted");
        }
        for s in [
            "web",
            "http://127.0.0.1:8765/",
            "/app",
            "python:3.12-slim",
            "exec a --b",
        ] {
            assert!(plain(s), "{s:?} can stay plain");
        }
    }

    #[test]
    fn documents_read_back() {
        let doc = map([
            ("restart", Some(text("no"))),
            ("script", Some(text("echo \"$HOME\"\n\n  indented\ttab\n"))),
            ("raw", Some(text("no newline\nat end"))),
            (
                "list",
                Some(texts([
                    "-e",
                    "yes",
                    "a\u{7}b",
                    "\"\\\u{2028}\u{7f}\u{fffe}",
                ])),
            ),
            ("block", Some(text("a\n\u{2028}b: c\n"))),
            (
                "items",
                Some(Value::Sequence(vec![map([
                    ("name", Some(text("a"))),
                    ("value", Some(number(1))),
                ])])),
            ),
            ("empty", Some(Value::Sequence(vec![]))),
        ]);
        let yaml = to_text(&doc);
        let back: Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, doc, "{yaml}");
    }
}
