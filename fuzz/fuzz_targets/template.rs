//! The `${{ process.KEY }}` scanner on arbitrary text: references and malformed
//! occurrences agree with what resolution does, text without `${{` is left alone, and the
//! `$PROCMAN_OUTPUT` file parser takes any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procman::config::template::{parse_output_file, references, resolve};
use procman::fuzzing::malformed_templates;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let refs = references(text);
    let malformed = malformed_templates(text);
    let resolved = resolve(text, |p, k| Some(format!("<{p}.{k}>")));
    match (&resolved, malformed.first()) {
        (Ok(_), None) => {}
        (Err(e), Some(first)) => assert_eq!(e, first),
        _ => panic!("resolve {resolved:?} disagrees with malformed {malformed:?}"),
    }
    if !text.contains("${{") {
        assert!(refs.is_empty() && malformed.is_empty());
        assert_eq!(resolve(text, |_, _| None).as_deref(), Ok(text));
    }
    if malformed.is_empty() {
        // Resolution asks for exactly the references, in order.
        let asked = std::cell::RefCell::new(Vec::new());
        let _ = resolve(text, |p, k| {
            asked.borrow_mut().push((p.to_owned(), k.to_owned()));
            Some(String::new())
        });
        assert_eq!(asked.into_inner(), refs);
        if let Some((p, k)) = refs.first() {
            let e = resolve(text, |_, _| None).unwrap_err();
            assert!(
                e.contains(&format!("`{p}`")) && e.contains(&format!("`{k}`")),
                "{e}"
            );
        }
    }
    let _ = parse_output_file(text);
});
