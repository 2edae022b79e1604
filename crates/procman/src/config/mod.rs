//! `procman.yaml`: the typed model and its parser.

mod error;
mod expand;
mod model;
mod parse;
pub mod template;

pub use error::{ConfigError, Diagnostic};
pub use expand::expand_vars;
pub use model::*;
pub use parse::{load, parse_dependencies_json, parse_str};
