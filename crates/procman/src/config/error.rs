//! Errors from loading `procman.yaml`.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file, located 1-based at the offending key or value.
///
/// `line` and `column` are 0 when there is no position (dependencies that arrived as JSON).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file the problem is in when it is not the config itself (an environment file).
    pub file: Option<PathBuf>,
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
    /// The path exists but is a directory, a FIFO, a socket or a device.
    #[error(
        "error: {} is {kind}, not a config file\n  hint: {}",
        path.display(),
        if *kind == "a directory" {
            format!("pass the file itself, e.g. {}", path.join("procman.yaml").display())
        } else {
            "pass a regular file (procman.yaml or a Procfile)".to_owned()
        }
    )]
    NotAFile {
        /// The path that was looked at.
        path: PathBuf,
        /// What it is instead, with its article: "a directory", "a FIFO (named pipe)", …
        kind: &'static str,
    },
    /// The file is larger than any config procman reads.
    #[error("error: config file {} is larger than {limit} bytes; is it the right file?", path.display())]
    TooLarge {
        /// The path that was looked at.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
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
            match &d.file {
                None => write!(f, "{}:{}:{}: ", self.path.display(), d.line, d.column)?,
                Some(file) if d.line == 0 => write!(f, "{}: ", file.display())?,
                Some(file) if d.column == 0 => write!(f, "{}:{}: ", file.display(), d.line)?,
                Some(file) => write!(f, "{}:{}:{}: ", file.display(), d.line, d.column)?,
            }
            write!(f, "error: {}", d.message)?;
        }
        Ok(())
    }
}
