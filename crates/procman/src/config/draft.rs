//! What the parser hands to the mutators and validators: each process as written, with the
//! positions later stages need for their messages, and the diagnostics collected so far.

use std::path::PathBuf;

use super::error::Diagnostic;
use super::model::{Location, ProcessSpec};

/// One process as written (a top-level key or a Procfile line), before the mutators.
///
/// `spec` holds the values as written: `env` values and dependency fields are not expanded
/// yet, `for_each` is the template's, `env_files` are not read.
pub(super) struct Draft {
    pub spec: ProcessSpec,
    /// `env` keys in file order, each with where its value was written.
    pub env_order: Vec<(String, Location)>,
    /// Where each entry of `spec.env_files` was written.
    pub env_files_at: Vec<Location>,
    /// Where `for_each`'s glob was written.
    pub for_each_at: Location,
    /// `replicas: N`, with where N was written.
    pub replicas: Option<(u32, Location)>,
    /// For each of `spec.depends`, then each watch check: the field to expand, if any.
    pub expansions: Vec<Option<Expansion>>,
    /// False when `once`/`autostart` were malformed, so their values are unknown.
    pub flags_known: bool,
    /// False when some `depends` entry could not be parsed (a `process_exited` may be missing).
    pub deps_complete: bool,
    /// `process_exited` references, for the cross-process checks.
    pub exited: Vec<ExitedRef>,
    /// `output_matches` targets: the process and where it was named.
    pub outputs: Vec<(String, Location)>,
    /// `on_fail: spawn:` targets: the process, where it was named, the watch's name.
    pub spawns: Vec<(String, Location, String)>,
    /// `${{ process.KEY }}` templates: process, key, where.
    pub templates: Vec<(String, String, Location)>,
}

impl Draft {
    /// A draft of `spec` with nothing else written.
    pub fn of(spec: ProcessSpec) -> Draft {
        Draft {
            spec,
            env_order: Vec::new(),
            env_files_at: Vec::new(),
            for_each_at: Location::default(),
            replicas: None,
            expansions: Vec::new(),
            flags_known: true,
            deps_complete: true,
            exited: Vec::new(),
            outputs: Vec::new(),
            spawns: Vec::new(),
            templates: Vec::new(),
        }
    }
}

/// A dependency field that `$VAR` expansion applies to, located for its message.
#[derive(Debug, Clone)]
pub(super) struct Expansion {
    /// Where the value was written.
    pub at: Location,
    /// What the value is, for messages: "`url` of a dependency of process `web`".
    pub context: String,
}

/// A `process_exited` reference, kept for cross-process checks.
pub(super) struct ExitedRef {
    pub name: String,
    pub at_value: Location,
    pub at_entry: Location,
    pub in_depends: bool,
}

/// Collects diagnostics through every stage, so one run reports every problem.
#[derive(Default)]
pub(super) struct Ctx {
    pub diags: Vec<Diagnostic>,
}

impl Ctx {
    /// A problem in the config file itself.
    pub fn err(&mut self, at: Location, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: None,
            line: at.line,
            column: at.column,
            message: message.into(),
        });
    }

    /// A problem in another file (an environment file); `line` 0 when it has no position.
    pub fn err_in(&mut self, file: PathBuf, line: usize, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: Some(file),
            line,
            column: 0,
            message: message.into(),
        });
    }
}
