//! `procman check Procfile` on arbitrary text: the Procfile parser and the loader stages
//! after it answer with a config or located errors.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = procman_fuzz::scratch_dir();
    let result = procman::fuzzing::load_procfile(text, Path::new("Procfile"), dir);
    procman::fuzzing::assert_well_formed(text, procman::config::Format::Procfile, &result);
});
