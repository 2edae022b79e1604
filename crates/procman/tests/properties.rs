//! Properties of the parsers, checked on generated inputs (proptest) as part of the normal
//! suite; the fuzz targets under `fuzz/` check the same kinds of property for much longer.
//!
//! - no input makes the config loader (YAML and Procfile), the environment-file parser, the
//!   message parser, the FIFO's recovery, the line splitter, the template scanner or
//!   variable expansion panic, and every loader error is located inside the file;
//! - every request and reply, with every process state, encodes to one line that parses back
//!   to itself;
//! - the line splitter gives the same lines however the stream is cut into reads, and the
//!   FIFO delivers every message of a stream of messages however it is read;
//! - expansion substitutes each value once, as is; escaping expands back to the text; and it
//!   is idempotent exactly on text without `$` (a second pass over an expansion is needed
//!   nowhere and would be wrong: `$$HOME` means the text `$HOME`);
//! - environment files and `$PROCMAN_OUTPUT` files read back what was written.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config;

use procman::config::template::{parse_output_file, references, resolve};
use procman::config::{Format, expand_vars};
use procman::fuzzing::{
    assert_well_formed, expand_braced, fifo_requests, load_procfile, malformed_templates,
    parse_env_file, recover_fifo_line, split_lines,
};
use procman::protocol::{
    Exit, MAX_LINE, Message, ProcessName, ProcessState, ProcessStatus, Reply, RunRequest,
    StopReason, Timestamp, encode, encode_reply, parse_line, parse_reply,
};

/// Few cases each, so the whole file runs in seconds; `PROPTEST_CASES=N` sets them all.
fn cases(n: u32) -> Config {
    match std::env::var_os("PROPTEST_CASES") {
        Some(_) => Config::default(),
        None => Config::with_cases(n),
    }
}

// ---------------------------------------------------------------------------------------
// Config loader

/// Pieces of `procman.yaml` syntax, concatenated: mostly nonsense, sometimes valid.
fn yaml_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("web".to_owned()),
        Just("api".to_owned()),
        Just(":".to_owned()),
        Just(": ".to_owned()),
        Just("\n".to_owned()),
        Just("\n  ".to_owned()),
        Just("\n    ".to_owned()),
        Just("- ".to_owned()),
        Just("run: echo hi".to_owned()),
        Just("once: true".to_owned()),
        Just("depends:".to_owned()),
        Just("process_exited: web".to_owned()),
        Just("url: http://127.0.0.1:1/".to_owned()),
        Just("tcp: $HOST:1".to_owned()),
        Just("env:".to_owned()),
        Just("K: ${HOME}".to_owned()),
        Just("${{ web.URL }}".to_owned()),
        Just("for_each: {glob: \"*.yaml\", as: F}".to_owned()),
        Just("replicas: 3".to_owned()),
        Just("env_file: vars.env".to_owned()),
        Just("stop_timeout: 1s".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("!!str ".to_owned()),
        Just("---\n".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(", ".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("# c".to_owned()),
        Just("\t".to_owned()),
        "[a-z0-9_.-]{1,6}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..48).prop_map(|t| t.concat())
}

const VALID: &str = "setup:\n  run: echo DB=x >> $PROCMAN_OUTPUT\n  once: true\nweb:\n  env:\n    PORT: \"8000\"\n    URL: http://127.0.0.1:${PORT}/\n  run: serve --db ${{ setup.DB }}\n  depends:\n    - process_exited: setup\n    - url: http://127.0.0.1:$PORT/health\n      code: 200\nworker:\n  replicas: 2\n  run: work $PROCMAN_REPLICA\n  restart: on-failure\n";

/// A valid config with characters inserted, replaced and removed at random places.
fn mutated(valid: &'static str) -> impl Strategy<Value = String> {
    let edit = (any::<prop::sample::Index>(), 0..3u8, any::<char>());
    prop::collection::vec(edit, 1..6).prop_map(move |edits| {
        let mut chars: Vec<char> = valid.chars().collect();
        for (at, kind, c) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 => chars.insert(i, c),
                1 if i < chars.len() => chars[i] = c,
                _ if i < chars.len() => {
                    chars.remove(i);
                }
                _ => {}
            }
        }
        chars.into_iter().collect()
    })
}

fn load_yaml(
    text: &str,
    dir: &Path,
) -> Result<procman::config::Config, procman::config::ConfigError> {
    procman::config::parse_str(text, Path::new("procman.yaml"), dir, &BTreeMap::new())
}

fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "").unwrap();
    std::fs::write(dir.path().join("vars.env"), "A=1\n").unwrap();
    dir
}

proptest! {
    #![proptest_config(cases(192))]

    #[test]
    fn the_loader_answers_every_text_with_a_config_or_located_errors(
        text in prop_oneof![yaml_like(), mutated(VALID), any::<String>()]
    ) {
        let dir = config_dir();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let first = load_yaml(&text, &dir);
        assert_well_formed(&text, Format::Yaml, &first);
        // The same text gets the same answer (no state survives a load).
        let again = load_yaml(&text, &dir);
        prop_assert_eq!(
            first.as_ref().map_err(|e| e.diagnostics().to_vec()).map(|c| c.processes.len()),
            again.as_ref().map_err(|e| e.diagnostics().to_vec()).map(|c| c.processes.len())
        );
    }

    #[test]
    fn procfiles_load_or_fail_with_located_errors(
        text in prop_oneof![
            prop::collection::vec(
                prop_oneof![
                    "[a-z_-]{1,8}: [ -~]{0,20}",
                    "#[ -~]{0,10}",
                    "[ -~]{0,20}",
                    Just(String::new()),
                    any::<String>(),
                ],
                0..8
            ).prop_map(|lines| lines.join("\n")),
            any::<String>(),
        ]
    ) {
        let dir = config_dir();
        let result = load_procfile(&text, Path::new("Procfile"), dir.path());
        assert_well_formed(&text, Format::Procfile, &result);
    }

    #[test]
    fn env_files_parse_or_fail_at_real_lines(text in any::<String>()) {
        match parse_env_file(&text) {
            Ok(pairs) => prop_assert!(pairs.iter().all(|(_, v)| !v.contains('\0'))),
            Err(errors) => {
                let lines = text.split('\n').count();
                prop_assert!(!errors.is_empty());
                prop_assert!(errors.iter().all(|(l, m)| (1..=lines).contains(l) && !m.is_empty()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Environment files: what is written is read back

fn env_key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,12}"
}

/// Writes `KEY=VALUE` in one of the forms the parser accepts: 0 double quotes with every
/// special character escaped, 1 double quotes spanning lines, 2 single quotes, 3 unquoted;
/// a form that cannot hold the value falls back to the first.
fn env_line(key: &str, value: &str, form: u8, export: bool) -> String {
    let escaped = |newlines: bool| {
        let mut out = String::from("\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\r' => out.push_str("\\r"),
                '\n' if newlines => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    let simple = |c: char| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c);
    let written = match form {
        1 => escaped(false),
        2 if !value.contains(['\'', '\r']) => format!("'{value}'"),
        3 if value.chars().all(simple) => value.to_owned(),
        _ => escaped(true),
    };
    let export = if export { "export " } else { "" };
    format!("{export}{key}={written}")
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn env_files_read_back_what_was_written(
        entries in prop::collection::vec(
            (env_key(), prop_oneof!["[A-Za-z0-9_./:-]{0,12}", "[^\0]{0,16}"], 0..4u8, any::<bool>()),
            0..8
        ),
        crlf in any::<bool>(),
    ) {
        let lines: Vec<String> =
            entries.iter().map(|(k, v, form, export)| env_line(k, v, *form, *export)).collect();
        let end = if crlf { "\r\n" } else { "\n" };
        let text = lines.join(end) + end;
        let expected: Vec<(String, String)> =
            entries.into_iter().map(|(k, v, _, _)| (k, v)).collect();
        prop_assert_eq!(parse_env_file(&text), Ok(expected), "{:?}", text);
    }

    #[test]
    fn output_files_read_back_what_was_written(
        entries in prop::collection::btree_map(
            "[A-Za-z_][A-Za-z0-9_]{0,10}",
            prop_oneof!["[^\r\n]{0,16}", "[^\r]{0,24}"],
            0..6
        )
    ) {
        let mut text = String::new();
        for (key, value) in &entries {
            if value.contains('\n') || value.trim() != value {
                prop_assume!(value.lines().all(|l| l.trim() != "END"));
                text.push_str(&format!("{key}<<END\n{value}\nEND\n"));
            } else {
                text.push_str(&format!("{key}={value}\n"));
            }
        }
        prop_assert_eq!(parse_output_file(&text), entries, "{:?}", text);
    }
}

// ---------------------------------------------------------------------------------------
// Protocol: every message and reply round-trips through one line

fn name() -> impl Strategy<Value = ProcessName> {
    prop_oneof!["[a-z][a-z0-9_.-]{0,12}", "[^/\\p{Cc}]{1,64}"]
        .prop_filter_map("not a valid name", |s| ProcessName::new(&s).ok())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[ -~]{0,16}", any::<String>()]
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn message() -> impl Strategy<Value = Message> {
    let run = (
        name(),
        text().prop_filter("blank", |s| !s.trim().is_empty()),
        prop::collection::btree_map(
            text().prop_filter("an env key", |k| !k.is_empty() && !k.contains(['=', '\0'])),
            text(),
            0..4,
        ),
        // `"depends": null` on the wire means no dependencies, so `Some(Null)` is not a message.
        prop::option::of(json().prop_filter("null", |v| !v.is_null())),
        any::<bool>(),
    )
        .prop_map(|(name, run, env, depends, once)| {
            Message::Run(RunRequest {
                name,
                run,
                env,
                depends,
                once,
            })
        });
    let target = || {
        text().prop_filter("a name", |s| {
            !s.trim().is_empty() && !s.chars().any(char::is_control)
        })
    };
    prop_oneof![
        run,
        (prop::option::of(text()), prop::option::of(text()))
            .prop_map(|(user, message)| Message::Shutdown { user, message }),
        Just(Message::Status),
        Just(Message::Ready),
        any::<bool>().prop_map(|logs| Message::Subscribe { logs }),
        target().prop_map(|name| Message::StopProcess { name }),
        target().prop_map(|name| Message::RestartProcess { name }),
    ]
}

fn exit() -> impl Strategy<Value = Exit> {
    prop_oneof![
        any::<i32>().prop_map(Exit::Code),
        any::<i32>().prop_map(Exit::Signal)
    ]
}

fn state() -> impl Strategy<Value = ProcessState> {
    let time = || any::<u64>().prop_map(Timestamp);
    let reason = prop_oneof![
        Just(StopReason::Requested),
        Just(StopReason::Restart),
        Just(StopReason::Watch),
        Just(StopReason::Shutdown),
        Just(StopReason::Leftovers),
    ];
    prop_oneof![
        Just(ProcessState::Dormant),
        prop::option::of(text()).prop_map(|waiting_for| ProcessState::Waiting { waiting_for }),
        (any::<u32>(), time()).prop_map(|(pid, since)| ProcessState::Running { pid, since }),
        (
            any::<u32>(),
            time(),
            time(),
            reason,
            prop::option::of(exit())
        )
            .prop_map(
                |(pid, since, deadline, reason, exit)| ProcessState::Stopping {
                    pid,
                    since,
                    deadline,
                    reason,
                    exit
                }
            ),
        (
            time(),
            any::<u32>(),
            prop::option::of(exit()),
            any::<bool>()
        )
            .prop_map(|(until, attempt, exit, waiting_for_output)| {
                ProcessState::BackingOff {
                    until,
                    attempt,
                    exit,
                    waiting_for_output,
                }
            }),
        exit().prop_map(|exit| ProcessState::Exited { exit }),
        prop::option::of(exit()).prop_map(|exit| ProcessState::Stopped { exit }),
        (prop::option::of(exit()), text())
            .prop_map(|(exit, reason)| ProcessState::Failed { exit, reason }),
    ]
}

fn status() -> impl Strategy<Value = ProcessStatus> {
    (name(), state(), any::<u32>(), prop::option::of(name())).prop_map(
        |(name, state, restarts, group)| ProcessStatus {
            name,
            state,
            restarts,
            group,
        },
    )
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        text().prop_map(|message| Reply::Ok { message }),
        status().prop_map(|process| Reply::Started { process }),
        (any::<u32>(), text(), prop::collection::vec(status(), 0..5)).prop_map(
            |(pid, config, processes)| Reply::Status {
                pid,
                config,
                processes
            }
        ),
        status().prop_map(|process| Reply::Event { process }),
        text().prop_map(|message| Reply::Error { message }),
    ]
}

/// Pads a line's body with spaces (valid JSON whitespace) to `len` bytes.
fn padded(line: &str, len: usize) -> Vec<u8> {
    let mut body = line.trim_end_matches('\n').as_bytes().to_vec();
    body.resize(len, b' ');
    body
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn messages_round_trip_through_one_line(message in message()) {
        let line = encode(&message);
        prop_assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{}", line);
        prop_assert_eq!(parse_line(line.as_bytes()), Ok(message.clone()));
        prop_assert_eq!(recover_fifo_line(line.as_bytes()), vec![Ok(message.clone())]);
        // The splitter sees it as one line, whole.
        let (lines, partial) = split_lines([line.as_bytes()]);
        prop_assert_eq!(lines, vec![Some(line.trim_end_matches('\n').as_bytes().to_vec())]);
        prop_assert_eq!(partial, None);
        // At MAX_LINE bytes it is still accepted; one byte more and it is refused.
        if line.len() <= MAX_LINE {
            prop_assert_eq!(parse_line(&padded(&line, MAX_LINE)), Ok(message));
            let mut over = padded(&line, MAX_LINE + 1);
            prop_assert!(parse_line(&over).is_err());
            over.extend_from_slice(b"\r\n");
            prop_assert!(parse_line(&over).is_err());
        }
    }

    #[test]
    fn the_fifo_delivers_every_message_however_it_is_read(
        messages in prop::collection::vec(message(), 0..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let stream: Vec<u8> = messages.iter().flat_map(|m| encode(m).into_bytes()).collect();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        at.extend([0, stream.len()]);
        at.sort_unstable();
        let chunks = at.windows(2).map(|w| &stream[w[0]..w[1]]);
        let expected: Vec<Result<Message, String>> = messages.into_iter().map(Ok).collect();
        prop_assert_eq!(fifo_requests(chunks), expected);
    }

    #[test]
    fn replies_round_trip_with_every_process_state(reply in reply()) {
        let line = encode_reply(&reply);
        prop_assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{}", line);
        prop_assert_eq!(parse_reply(line.as_bytes()), Ok(reply));
    }

    #[test]
    fn any_line_parses_or_gets_one_sentence(
        line in prop_oneof![
            any::<Vec<u8>>(),
            any::<String>().prop_map(String::into_bytes),
            message().prop_map(|m| {
                let mut line = encode(&m).into_bytes();
                line.truncate(line.len() / 2);
                line.extend_from_slice(encode(&m).as_bytes());
                line
            }),
        ]
    ) {
        let results = recover_fifo_line(&line);
        prop_assert!(matches!(results.len(), 1 | 2));
        for result in results {
            match result {
                Ok(message) => prop_assert_eq!(parse_line(encode(&message).as_bytes()), Ok(message)),
                Err(e) => prop_assert!(!e.trim().is_empty() && !e.contains('\n'), "{}", e),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Line splitting: the same lines whatever the reads

/// A stream of short lines, blank lines and lines around [`MAX_LINE`] bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(prop_oneof![Just(b' '), Just(b'\t'), Just(b'\r')], 0..4),
        1 => (MAX_LINE - 2..=MAX_LINE + 2).prop_map(|n| vec![b'x'; n]),
    ];
    (prop::collection::vec(line, 0..6), any::<bool>()).prop_map(|(lines, end)| {
        let mut out = lines.join(&b'\n');
        if end {
            out.push(b'\n');
        }
        out
    })
}

/// The lines of `bytes` as the splitter should give them, read in one go.
fn expected_lines(bytes: &[u8]) -> (Vec<Option<Vec<u8>>>, Option<Vec<u8>>) {
    let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
    let mut segments: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let last = segments.pop().unwrap_or_default();
    let mut lines: Vec<_> = segments
        .into_iter()
        .filter(|l| l.len() > MAX_LINE || !blank(l))
        .map(|l| (l.len() <= MAX_LINE).then(|| l.to_vec()))
        .collect();
    if last.len() > MAX_LINE {
        lines.push(None);
    }
    let partial = (!blank(last) && last.len() <= MAX_LINE).then(|| last.to_vec());
    (lines, partial)
}

proptest! {
    #![proptest_config(cases(96))]

    #[test]
    fn splitting_does_not_depend_on_the_reads(
        bytes in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let chunks = at.windows(2).map(|w| &bytes[w[0]..w[1]]);
        let expected = expected_lines(&bytes);
        prop_assert_eq!(&split_lines(chunks), &expected);
        prop_assert_eq!(&split_lines([&bytes[..]]), &expected);
    }
}

// ---------------------------------------------------------------------------------------
// Templates and variable expansion

fn var_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}"
}

fn env_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(var_name(), text(), 0..5)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn expansion_never_panics(s in any::<String>(), env in env_map()) {
        let _ = expand_vars(&s, &env);
        let _ = expand_braced(&s, &env);
    }

    #[test]
    fn escaped_text_expands_back_to_itself(s in any::<String>(), env in env_map()) {
        prop_assert_eq!(expand_vars(&s.replace('$', "$$"), &env), Ok(s.clone()));
        prop_assert_eq!(expand_braced(&s.replace("${", "$${"), &env), Ok(s));
    }

    #[test]
    fn values_are_substituted_once_as_they_are(
        key in var_name(),
        value in prop_oneof![text(), Just("$HOME ${HOME} $$ ${{ a.b }}".to_owned())],
        before in "[a-z /:]{0,6}",
        after in "[ /:.-][a-z]{0,5}|",
    ) {
        let env = BTreeMap::from([(key.clone(), value.clone()), ("HOME".to_owned(), "/h".to_owned())]);
        let expected = format!("{before}{value}{after}");
        let braces = format!("{before}${{{key}}}{after}");
        prop_assert_eq!(expand_vars(&braces, &env), Ok(expected.clone()));
        prop_assert_eq!(expand_braced(&braces, &env), Ok(expected.clone()));
        prop_assert_eq!(expand_vars(&format!("{before}${key}{after}"), &env), Ok(expected));
    }

    #[test]
    fn expansion_is_idempotent_on_text_without_dollars(s in any::<String>(), env in env_map()) {
        let clean = s.replace('$', "");
        prop_assert_eq!(expand_vars(&clean, &env), Ok(clean.clone()));
        prop_assert_eq!(expand_braced(&clean, &env), Ok(clean.clone()));
        if let Ok(out) = expand_vars(&s, &env)
            && !out.contains('$')
        {
            prop_assert_eq!(expand_vars(&out, &env), Ok(out));
        }
    }

    #[test]
    fn templates_are_found_and_resolved_in_order(
        parts in prop::collection::vec(
            ("[a-z $}{.:]{0,8}", "[A-Za-z0-9_-]{1,8}", "[A-Za-z0-9_.-]{1,8}", "[ ]{0,2}"),
            0..5
        ),
        tail in "[a-z $}{.:]{0,8}",
    ) {
        prop_assume!(parts.iter().all(|(lit, ..)| !lit.contains("${{")) && !tail.contains("${{"));
        let mut text = String::new();
        let mut resolved = String::new();
        let mut refs = Vec::new();
        for (lit, process, key, pad) in &parts {
            text.push_str(&format!("{lit}${{{{{pad}{process}.{key}{pad}}}}}"));
            resolved.push_str(&format!("{lit}<{process}:{key}>"));
            refs.push((process.clone(), key.clone()));
        }
        text.push_str(&tail);
        resolved.push_str(&tail);
        prop_assert_eq!(references(&text), refs);
        prop_assert!(malformed_templates(&text).is_empty());
        prop_assert_eq!(resolve(&text, |p, k| Some(format!("<{p}:{k}>"))), Ok(resolved));
    }

    #[test]
    fn the_template_scanner_takes_any_text(s in any::<String>()) {
        let malformed = malformed_templates(&s);
        let result = resolve(&s, |_, _| Some(String::new()));
        prop_assert_eq!(result.is_ok(), malformed.is_empty());
        let _ = references(&s);
        let _ = parse_output_file(&s);
    }
}

#[test]
fn expansion_is_deliberately_not_idempotent_in_general() {
    let env = BTreeMap::from([("HOME".to_owned(), "/h".to_owned())]);
    let once = expand_vars("$$HOME", &env).unwrap();
    assert_eq!(once, "$HOME");
    // A second pass would turn the literal text the user wrote into a variable.
    assert_eq!(expand_vars(&once, &env).unwrap(), "/h");
}
