//! Environment files (`.env`, `--env-file`, `env_file`) on arbitrary text: variables with
//! valid names and no NUL, or errors at real line numbers, in order; line endings
//! (`\n` or `\r\n`) never change the answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procman::fuzzing::parse_env_file;

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_env_file(text);
    match &parsed {
        Ok(pairs) => {
            for (key, value) in pairs {
                assert!(is_env_name(key), "{key:?}");
                assert!(!value.contains('\0'), "{value:?}");
            }
        }
        Err(errors) => {
            let lines = text.split('\n').count();
            assert!(!errors.is_empty());
            for pair in errors.windows(2) {
                assert!(pair[0].0 < pair[1].0, "errors out of order: {errors:?}");
            }
            for (line, message) in errors {
                assert!(*line >= 1 && *line <= lines, "line {line} of {lines}");
                assert!(!message.trim().is_empty());
            }
        }
    }
    if !text.contains('\r') {
        assert_eq!(parse_env_file(&text.replace('\n', "\r\n")), parsed);
    }
});
