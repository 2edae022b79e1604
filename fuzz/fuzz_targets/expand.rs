//! Variable expansion on arbitrary text and environments: `$VAR`/`${VAR}` in dependency
//! fields ([`expand_vars`]) and `${VAR}` in `env` values ([`expand_braced`]).
//!
//! Input: the text, then `\0`-separated `KEY=VALUE` entries of the environment.
//! Properties: escaping (`$` → `$$`, `${` → `$${`) always expands back to the text;
//! a value is substituted as is, never expanded again; text without `$` is unchanged.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use procman::config::expand_vars;
use procman::fuzzing::expand_braced;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = input.split('\0');
    let text = parts.next().unwrap_or_default();
    let env: BTreeMap<String, String> = parts
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();

    let vars = expand_vars(text, &env);
    let braced = expand_braced(text, &env);
    for result in [&vars, &braced] {
        if let Err(e) = result {
            assert!(!e.trim().is_empty());
        }
    }
    if !text.contains('$') {
        assert_eq!(vars.as_deref(), Ok(text));
        assert_eq!(braced.as_deref(), Ok(text));
    }
    if !text.contains("${") {
        assert_eq!(braced.as_deref(), Ok(text));
    }
    assert_eq!(
        expand_vars(&text.replace('$', "$$"), &env).as_deref(),
        Ok(text)
    );
    assert_eq!(
        expand_braced(&text.replace("${", "$${"), &env).as_deref(),
        Ok(text)
    );
    for (key, value) in &env {
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && key.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
        if valid {
            let braces = format!("${{{key}}}");
            assert_eq!(expand_vars(&braces, &env).as_ref(), Ok(value));
            assert_eq!(expand_braced(&braces, &env).as_ref(), Ok(value));
            assert_eq!(expand_vars(&format!("${key}"), &env).as_ref(), Ok(value));
        }
    }
    if let Ok(out) = &vars
        && !out.contains('$')
    {
        assert_eq!(expand_vars(out, &env).as_ref(), Ok(out));
    }
});
