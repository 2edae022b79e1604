//! `procman check`: validate a config without running it.

use std::path::Path;

use anyhow::Result;

use crate::config;

/// Loads the config exactly as `run` does and prints every error as
/// `file:line:col: error: …` (as `run` would); silent and 0 when the config is valid.
pub fn check(path: &Path, options: &config::LoadOptions) -> Result<i32> {
    match config::load(path, options) {
        Ok(_) => Ok(0),
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}
