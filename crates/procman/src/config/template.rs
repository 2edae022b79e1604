//! `${{ process.KEY }}` output templates and the `$PROCMAN_OUTPUT` file format.
//!
//! A `once` process writes `KEY=VALUE` lines (or heredoc blocks) to `$PROCMAN_OUTPUT`;
//! dependents reference them in `run` and `env` as `${{ process.KEY }}`, resolved at spawn time.

use std::collections::BTreeMap;

/// One `${{ ... }}` occurrence: its byte range in the source and what it names.
struct Occurrence<'a> {
    start: usize,
    end: usize,
    inner: &'a str,
    parsed: Option<(&'a str, &'a str)>,
}

/// Finds every closed `${{ ... }}`; an unclosed `${{` is left as literal text.
fn scan(s: &str) -> Vec<Occurrence<'_>> {
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(rel) = s[pos..].find("${{") {
        let start = pos + rel;
        let body = start + 3;
        let Some(close) = s[body..].find("}}") else {
            break;
        };
        let inner = &s[body..body + close];
        let end = body + close + 2;
        let parsed = inner.trim().split_once('.').and_then(|(p, k)| {
            let (p, k) = (p.trim(), k.trim());
            let ok = !p.is_empty()
                && !k.is_empty()
                && !p.contains(char::is_whitespace)
                && !k.contains(char::is_whitespace);
            ok.then_some((p, k))
        });
        found.push(Occurrence {
            start,
            end,
            inner,
            parsed,
        });
        pos = end;
    }
    found
}

/// The `(process, key)` pairs referenced by `s`, in order of appearance (well-formed ones only).
/// Used at parse time to validate references and by the supervisor to know which output files
/// a process needs.
pub fn references(s: &str) -> Vec<(String, String)> {
    scan(s)
        .into_iter()
        .filter_map(|o| o.parsed)
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect()
}

/// Messages for `${{ ... }}` occurrences that are not of the form `${{ process.KEY }}`.
pub(crate) fn malformed(s: &str) -> Vec<String> {
    scan(s)
        .into_iter()
        .filter(|o| o.parsed.is_none())
        .map(|o| malformed_message(o.inner))
        .collect()
}

fn malformed_message(inner: &str) -> String {
    format!("invalid template `${{{{{inner}}}}}`: expected `${{{{ process.KEY }}}}`")
}

/// Substitutes every `${{ process.KEY }}` in `s` with `lookup(process, key)`, as text.
/// For values no shell reads (`env`, dependency fields); a `run` script goes through
/// [`resolve_script`].
///
/// Fails on the first reference that `lookup` cannot answer (naming the process and key) or
/// that is malformed, so a process never starts with a half-resolved command.
pub fn resolve(s: &str, lookup: impl Fn(&str, &str) -> Option<String>) -> Result<String, String> {
    substitute(s, lookup, |value, out| out.push_str(&value))
}

/// The prefix of the variables through which [`resolve_script`] passes template values.
pub const SCRIPT_VALUE_ENV: &str = "PROCMAN_TEMPLATE_";

/// Resolves the templates of a `run` script without letting a value be read as shell syntax.
///
/// A value made only of characters that mean nothing to the shell in any quoting context
/// (letters, digits and `_ . / : @ % + , = -`; not even a space, which in `A=${{ x.V }} cmd`
/// would start another command) is spliced as text, exactly as
/// procman 0.12 did, so ports, hosts, paths and tokens work inside any quotes. Any other value
/// (`$(…)`, quotes, `;`, a newline, …) is passed in the environment as
/// `PROCMAN_TEMPLATE_<n>` and the script refers to it as `${PROCMAN_TEMPLATE_<n>}`: the shell
/// expands it as a variable, never as code. Returns the script and those variables.
pub fn resolve_script(
    s: &str,
    lookup: impl Fn(&str, &str) -> Option<String>,
) -> Result<(String, Vec<(String, String)>), String> {
    let mut passed = Vec::new();
    let script = substitute(s, lookup, |value, out| {
        if value.chars().all(means_nothing_to_the_shell) {
            out.push_str(&value);
        } else {
            let var = format!("{SCRIPT_VALUE_ENV}{}", passed.len());
            out.push_str(&format!("${{{var}}}"));
            passed.push((var, value));
        }
    })?;
    Ok((script, passed))
}

fn means_nothing_to_the_shell(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./:@%+,=-".contains(c)
}

fn substitute(
    s: &str,
    lookup: impl Fn(&str, &str) -> Option<String>,
    mut put: impl FnMut(String, &mut String),
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for o in scan(s) {
        out.push_str(&s[pos..o.start]);
        let Some((process, key)) = o.parsed else {
            return Err(malformed_message(o.inner));
        };
        match lookup(process, key) {
            Some(v) => put(v, &mut out),
            None => {
                return Err(format!(
                    "process `{process}` did not output `{key}` (template `${{{{ {process}.{key} }}}}`); \
                     write `{key}=VALUE` to $PROCMAN_OUTPUT in `{process}`"
                ));
            }
        }
        pos = o.end;
    }
    out.push_str(&s[pos..]);
    Ok(out)
}

/// Parses a `$PROCMAN_OUTPUT` file: `KEY=VALUE` lines and heredoc blocks (`KEY<<DELIM`, lines,
/// `DELIM`). Blank lines and lines that are neither are ignored; a later key overrides an earlier
/// one; an unterminated heredoc takes the rest of the file.
pub fn parse_output_file(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let heredoc = line.split_once("<<").filter(|(k, _)| !k.contains('='));
        if let Some((key, delim)) = heredoc {
            let delim = delim.trim();
            let mut body = Vec::new();
            for inner in lines.by_ref() {
                if inner.trim() == delim {
                    break;
                }
                body.push(inner);
            }
            map.insert(key.trim().to_string(), body.join("\n"));
        } else if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() {
                map.insert(key.to_string(), value.to_string());
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_simple_lines() {
        let m = parse_output_file("A=1\n\nB=x=y\nC=\n");
        assert_eq!(m.get("A").map(String::as_str), Some("1"));
        assert_eq!(m.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(m.get("C").map(String::as_str), Some(""));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn output_heredoc() {
        let m = parse_output_file("simple=value\nCERT<<EOF\nline1\n\nline2\nEOF\nAFTER=1\n");
        assert_eq!(m["CERT"], "line1\n\nline2");
        assert_eq!(m["simple"], "value");
        assert_eq!(m["AFTER"], "1");
    }

    #[test]
    fn output_heredoc_unterminated_and_value_with_shift() {
        let m = parse_output_file("K<<END\na\nb");
        assert_eq!(m["K"], "a\nb");
        let m = parse_output_file("X=a<<b\n");
        assert_eq!(m["X"], "a<<b");
    }

    #[test]
    fn references_in_order_with_whitespace() {
        let r = references("a ${{migrate.URL}} b ${{  setup . KEY  }} ${{ bad }} ${{ x.y");
        assert_eq!(
            r,
            vec![
                ("migrate".to_string(), "URL".to_string()),
                ("setup".to_string(), "KEY".to_string())
            ]
        );
    }

    #[test]
    fn resolve_substitutes_all() {
        let s = "--db \"${{ migrate.URL }}\" --k ${{setup.K}} tail ${{ open";
        let out = resolve(s, |p, k| Some(format!("{p}:{k}"))).unwrap();
        assert_eq!(out, "--db \"migrate:URL\" --k setup:K tail ${{ open");
    }

    #[test]
    fn resolve_missing_key_names_both() {
        let e = resolve("x ${{ migrate.URL }}", |_, _| None).unwrap_err();
        assert!(e.contains("`migrate`") && e.contains("`URL`"), "{e}");
    }

    #[test]
    fn resolve_malformed_is_error() {
        let e = resolve("${{ nodot }}", |_, _| Some(String::new())).unwrap_err();
        assert!(e.contains("invalid template"), "{e}");
        assert_eq!(malformed("${{ a.b }} ${{ c }}").len(), 1);
    }

    #[test]
    fn script_splices_plain_values_and_passes_the_rest_through_the_environment() {
        let values = |_: &str, k: &str| {
            Some(match k {
                "PORT" => "8080".to_string(),
                "WORDS" => "a touch PWNED".to_string(),
                "URL" => "postgres://u@db:5432/app?x=1".to_string(),
                _ => "$(touch PWNED)'; echo \"`id`\"\n".to_string(),
            })
        };
        let (script, env) = resolve_script(
            "serve ${{ db.PORT }} '${{ db.EVIL }}' ${{ db.URL }}",
            values,
        )
        .unwrap();
        assert_eq!(
            script,
            "serve 8080 '${PROCMAN_TEMPLATE_0}' ${PROCMAN_TEMPLATE_1}"
        );
        assert_eq!(env[0].1, "$(touch PWNED)'; echo \"`id`\"\n");
        assert_eq!(env[1].1, "postgres://u@db:5432/app?x=1");
    }

    #[test]
    fn no_templates_is_identity() {
        assert_eq!(
            resolve("echo $HOME ${X}", |_, _| None).unwrap(),
            "echo $HOME ${X}"
        );
    }
}
