//! `procman check` on arbitrary `procman.yaml` text: the whole loader pipeline (parse,
//! mutate, validate) answers with a config or located errors, never a panic or a hang.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = procman_fuzz::scratch_dir();
    let result = procman::config::parse_str(text, Path::new("procman.yaml"), dir, &BTreeMap::new());
    procman::fuzzing::assert_well_formed(text, procman::config::Format::Yaml, &result);
});
