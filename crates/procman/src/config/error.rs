//! Errors from loading `procman.yaml`.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file, located 1-based at the offending key or value.
///
/// `line` and `column` are 0 when there is no position (dependencies that arrived as JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the process it belongs to.
    pub message: String,
}

/// Why a config could not be loaded. `Display` is the complete, user-facing text (it already
/// starts with `error:`), so callers print it as is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error(
        "error: no config file at {}\n  hint: create one, or pass a path: procman run path/to/procman.yaml",
        path.display()
    )]
    NotFound {
        /// The path that was looked at.
        path: PathBuf,
    },
    /// The path exists but is a directory (or another non-file).
    #[error(
        "error: {} is a directory, not a config file\n  hint: pass the file itself, e.g. {}",
        path.display(),
        path.join("procman.yaml").display()
    )]
    NotAFile {
        /// The path that was looked at.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("error: cannot read config file {}: {reason}", path.display())]
    Unreadable {
        /// The path that was looked at.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid UTF-8.
    #[error(
        "error: config file {} is not valid UTF-8 (first bad byte at offset {offset})",
        path.display()
    )]
    NotUtf8 {
        /// The path that was looked at.
        path: PathBuf,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The file was read but has one or more problems.
    #[error("{}", Rendered { path: display_path, diagnostics })]
    Invalid {
        /// The path as shown in messages.
        display_path: PathBuf,
        /// Every problem found, ordered by position.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The individual problems (empty for I/O-level errors), for tests and tooling.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

struct Rendered<'a> {
    path: &'a PathBuf,
    diagnostics: &'a [Diagnostic],
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.path.display(),
                d.line,
                d.column,
                d.message
            )?;
        }
        Ok(())
    }
}
