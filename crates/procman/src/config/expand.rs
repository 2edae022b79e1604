//! Variable expansion: `$VAR` / `${VAR}` in dependency fields, `${VAR}` in `env` values.

use std::collections::BTreeMap;

/// The longest value an expansion may produce: Linux refuses to pass a longer
/// `KEY=VALUE` string to a process (`MAX_ARG_STRLEN`), and the bound keeps values that
/// name each other (`B: ${A}${A}`, `C: ${B}${B}`, …) from growing exponentially.
pub const MAX_EXPANDED: usize = 128 * 1024;

/// Appends a variable's `value` to `out`, or says why the result would be too long.
fn push_value(out: &mut String, name: &str, value: &str) -> Result<(), String> {
    if out.len() + value.len() > MAX_EXPANDED {
        return Err(format!(
            "the value grows past 128 KiB (more than a process can receive) where `{name}` is expanded"
        ));
    }
    out.push_str(value);
    Ok(())
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Expands `$VAR` and `${VAR}` from `env`; `$$` is a literal `$`, and a `$` not followed by a
/// name stays literal. Dependency fields are expanded once, at parse time, so that a typo in a
/// variable name is reported before anything starts.
///
/// The error names the undefined (or malformed) variable.
pub fn expand_vars(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                chars.next();
                let mut name = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(format!(
                        "unterminated `${{{name}`: expected `}}` (write `$$` for a literal `$`)"
                    ));
                }
                let valid = name.chars().next().is_some_and(is_name_start)
                    && name.chars().all(is_name_char);
                if !valid {
                    return Err(format!(
                        "invalid variable name in `${{{name}}}` (names are letters, digits and `_`)"
                    ));
                }
                match env.get(&name) {
                    Some(v) => push_value(&mut out, &name, v)?,
                    None => return Err(format!("undefined environment variable `{name}`")),
                }
            }
            Some(c) if is_name_start(c) => {
                let mut name = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if !is_name_char(c) {
                        break;
                    }
                    name.push(c);
                    chars.next();
                }
                match env.get(&name) {
                    Some(v) => push_value(&mut out, &name, v)?,
                    None => return Err(format!("undefined environment variable `{name}`")),
                }
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

/// Expands `${VAR}` from `env` in an `env` value; `$${` is a literal `${`, `${{ … }}`
/// templates are left for spawn time, and every other `$` stays as written (procman 0.12
/// passed `env` values literally, so `$VAR` without braces keeps that meaning).
///
/// The error names the undefined (or malformed) variable.
pub fn expand_braced(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${{") {
            out.push_str("${{");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let Some(close) = body.find('}') else {
                return Err(format!(
                    "unterminated `${{{body}`: expected `}}` (write `$${{` for a literal `${{`)"
                ));
            };
            let name = &body[..close];
            let valid =
                name.chars().next().is_some_and(is_name_start) && name.chars().all(is_name_char);
            if !valid {
                return Err(format!(
                    "invalid variable name in `${{{name}}}` (names are letters, digits and `_`; write `$${{` for a literal `${{`)"
                ));
            }
            match env.get(name) {
                Some(v) => push_value(&mut out, name, v)?,
                None => {
                    return Err(format!(
                        "undefined environment variable `{name}` (write `$${{` for a literal `${{`)"
                    ));
                }
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("HOME", "/home/u"), ("PORT", "8080"), ("A_B", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_text_unchanged() {
        assert_eq!(expand_vars("http://x/y", &env()).unwrap(), "http://x/y");
        assert_eq!(expand_vars("", &env()).unwrap(), "");
    }

    #[test]
    fn simple_and_braced() {
        assert_eq!(expand_vars("$HOME/f", &env()).unwrap(), "/home/u/f");
        assert_eq!(expand_vars("h:${PORT}x", &env()).unwrap(), "h:8080x");
        assert_eq!(expand_vars("$A_B$PORT", &env()).unwrap(), "x8080");
    }

    #[test]
    fn name_stops_at_dot() {
        assert_eq!(expand_vars("$A_B.txt", &env()).unwrap(), "x.txt");
    }

    #[test]
    fn dollar_dollar_is_literal() {
        assert_eq!(expand_vars("a$$HOME", &env()).unwrap(), "a$HOME");
        assert_eq!(expand_vars("$$", &env()).unwrap(), "$");
    }

    #[test]
    fn lone_and_trailing_dollar_stay() {
        assert_eq!(expand_vars("cost $5", &env()).unwrap(), "cost $5");
        assert_eq!(expand_vars("end$", &env()).unwrap(), "end$");
        assert_eq!(expand_vars("$ x", &env()).unwrap(), "$ x");
    }

    #[test]
    fn undefined_is_an_error_naming_it() {
        let e = expand_vars("$NOPE/x", &env()).unwrap_err();
        assert!(e.contains("`NOPE`"), "{e}");
        let e = expand_vars("${MISSING}", &env()).unwrap_err();
        assert!(e.contains("`MISSING`"), "{e}");
    }

    #[test]
    fn braced_only_in_env_values() {
        let e = env();
        assert_eq!(expand_braced("shard-${PORT}", &e).unwrap(), "shard-8080");
        assert_eq!(expand_braced("$HOME ${HOME}", &e).unwrap(), "$HOME /home/u");
        assert_eq!(expand_braced("$${HOME} $$ $", &e).unwrap(), "${HOME} $$ $");
        assert_eq!(
            expand_braced("${{ a.b }} ${A_B}", &e).unwrap(),
            "${{ a.b }} x"
        );
        assert!(expand_braced("${NOPE}", &e).unwrap_err().contains("`NOPE`"));
        assert!(expand_braced("${1x}", &e).unwrap_err().contains("invalid"));
        assert!(
            expand_braced("${HOME", &e)
                .unwrap_err()
                .contains("unterminated")
        );
    }

    #[test]
    fn malformed_braces() {
        assert!(
            expand_vars("${HOME", &env())
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(expand_vars("${}", &env()).unwrap_err().contains("invalid"));
        assert!(
            expand_vars("${{ a.b }}", &env())
                .unwrap_err()
                .contains("invalid")
        );
    }
}
