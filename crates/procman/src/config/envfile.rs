//! Environment files (`.env`, `--env-file`, `env_file`), in the format foreman and docker
//! compose accept: `KEY=VALUE` lines, an optional `export ` before the key, `#` comments and
//! blank lines, values in single quotes (literal) or double quotes (`\n`, `\t`, `\"`, `\\`
//! escapes; both may span lines), and unquoted values that end at a ` #` comment.
//!
//! Values are taken literally: nothing is expanded, so a file means the same wherever it is
//! read from.

/// One malformed line: where (1-based) and what is wrong, with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    pub line: usize,
    pub message: String,
}

/// The `KEY=VALUE` pairs of `text`, in order (a later key overrides an earlier one when
/// collected into a map), or every malformed line.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, Vec<LineError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        match entry(&lines, &mut i) {
            Ok(Some(pair)) => pairs.push(pair),
            Ok(None) => {}
            Err(message) => errors.push(LineError {
                line: number,
                message,
            }),
        }
        i += 1;
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(errors)
    }
}

const HINT: &str = "write `KEY=VALUE` (a line starting with `#` is a comment)";

/// Parses the entry starting at `lines[*i]`; a quoted value spanning lines advances `*i` to
/// its last line.
fn entry(lines: &[&str], i: &mut usize) -> Result<Option<(String, String)>, String> {
    let line = lines[*i];
    if line.contains('\0') {
        return Err("the line contains a NUL byte, which no environment variable can hold".into());
    }
    let body = line.trim_start();
    if body.is_empty() || body.starts_with('#') {
        return Ok(None);
    }
    let body = match body.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => body,
    };
    let Some((key, rest)) = body.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got `{}`; {HINT}", line.trim()));
    };
    let key = key.trim_end();
    if !super::parse::is_env_name(key) {
        return Err(format!(
            "`{key}` is not a variable name (letters, digits and `_`, not starting with a digit); {HINT}"
        ));
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let value = match rest.chars().next() {
        Some(quote @ ('\'' | '"')) => quoted(lines, i, quote, &rest[1..])?,
        _ => unquoted(rest),
    };
    Ok(Some((key.to_owned(), value)))
}

/// An unquoted value: up to a ` #` comment, trailing blanks removed.
fn unquoted(rest: &str) -> String {
    let end = rest
        .char_indices()
        .find(|&(at, c)| c == '#' && rest[..at].ends_with([' ', '\t']))
        .map_or(rest.len(), |(at, _)| at);
    rest[..end].trim_end().to_owned()
}

/// A quoted value starting after its opening quote, possibly continued on later lines.
fn quoted(lines: &[&str], i: &mut usize, quote: char, first: &str) -> Result<String, String> {
    let start = *i;
    let mut value = String::new();
    let mut text = first;
    loop {
        let mut chars = text.char_indices();
        while let Some((at, c)) = chars.next() {
            if c == quote {
                let after = text[at + 1..].trim_start();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err(format!(
                        "unexpected `{after}` after the closing {quote}; quote the whole value or put a `#` before a comment"
                    ));
                }
                return Ok(value);
            }
            if c == '\\' && quote == '"' {
                match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('r') => value.push('\r'),
                    Some(e @ ('"' | '\\' | '$')) => value.push(e),
                    Some(other) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => value.push('\\'),
                }
                continue;
            }
            value.push(c);
        }
        *i += 1;
        match lines.get(*i) {
            Some(next) if !next.contains('\0') => {
                value.push('\n');
                text = next;
            }
            Some(_) => {
                return Err(format!(
                    "the value quoted at line {} continues on line {}, which contains a NUL byte",
                    start + 1,
                    *i + 1
                ));
            }
            None => {
                *i = start;
                return Err(format!(
                    "the {quote} that opens this value is never closed; close it, or escape it as `\\{quote}`"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn foreman_and_docker_forms() {
        let text = "# comment\n\nA=1\nexport B=two words\n  C = spaced  \nD=\"quoted # not a comment\"\nE='single $NOT \\n'\nF=x # comment\nG=a#b\nH=\nI=\"esc\\n\\t\\\"\\\\\\$x\"\r\n";
        assert_eq!(
            ok(text),
            pairs(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", "spaced"),
                ("D", "quoted # not a comment"),
                ("E", "single $NOT \\n"),
                ("F", "x"),
                ("G", "a#b"),
                ("H", ""),
                ("I", "esc\n\t\"\\$x"),
            ])
        );
    }

    #[test]
    fn quoted_values_span_lines() {
        assert_eq!(
            ok("K=\"line1\nline2\"\nL='a\n\nb'\nM=3\n"),
            pairs(&[("K", "line1\nline2"), ("L", "a\n\nb"), ("M", "3")])
        );
    }

    #[test]
    fn export_alone_is_a_key() {
        assert_eq!(
            ok("export=1\nexported=2\n"),
            pairs(&[("export", "1"), ("exported", "2")])
        );
    }

    #[test]
    fn malformed_lines_are_reported_with_their_numbers() {
        let e = parse("A=1\njust words\n1X=2\nB=\"open\nC=3\n").unwrap_err();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4], "{e:?}");
        assert!(e[0].message.contains("expected KEY=VALUE"), "{e:?}");
        assert!(
            e[1].message.contains("`1X` is not a variable name"),
            "{e:?}"
        );
        assert!(e[2].message.contains("never closed"), "{e:?}");
    }

    #[test]
    fn text_after_a_closing_quote_is_an_error() {
        let e = parse("A=\"x\" y\n").unwrap_err();
        assert!(e[0].message.contains("after the closing"), "{e:?}");
        assert_eq!(ok("A=\"x\"  # fine\n"), pairs(&[("A", "x")]));
    }

    #[test]
    fn nul_bytes_are_errors() {
        let e = parse("A=x\0y\n").unwrap_err();
        assert_eq!(e[0].line, 1);
    }
}
