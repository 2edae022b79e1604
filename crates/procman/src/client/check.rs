//! `procman check`: validate a config without running it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::config;

/// Prints every error as `file:line:col: error: …`; silent and 0 when the config is valid.
pub fn check(path: &Path) -> Result<i32> {
    match config::load(path, &BTreeMap::new()) {
        Ok(_) => Ok(0),
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}
