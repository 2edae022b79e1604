//! The log directory: cleaning, file names and error-tolerant log files.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Name of the combined log, which is also why `procman` gets no per-process log.
pub(crate) const COMBINED: &str = "procman.log";

/// Creates `dir` (mode 0700) if needed, removes the previous run's `*.log` files
/// and returns a fresh combined log.
pub(crate) fn prepare(dir: &Path) -> io::Result<LogFile> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let is_log = entry.path().extension().is_some_and(|e| e == "log");
        if is_log && !entry.file_type()?.is_dir() {
            fs::remove_file(entry.path())?;
        }
    }
    LogFile::create(dir.join(COMBINED))
}

/// File name of the log for process `name`: injective and never leaving the directory.
///
/// `%` becomes `%25`, `/` becomes `%2F`, NUL becomes `%00`, and a leading `.` becomes `%2E`,
/// so `../x` is stored as `%2E.%2Fx.log`; the empty name is stored as `%.log`.
pub(crate) fn file_name(name: &str) -> String {
    if name.is_empty() {
        return "%.log".to_owned();
    }
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    out.push_str(".log");
    out
}

/// A log file whose write errors are reported once on stderr and otherwise ignored.
pub(crate) struct LogFile {
    file: File,
    path: PathBuf,
    reported: bool,
}

impl LogFile {
    /// Creates or truncates the file at `path`.
    pub(crate) fn create(path: PathBuf) -> io::Result<LogFile> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(LogFile {
            file,
            path,
            reported: false,
        })
    }

    /// Writes all of `bytes`, reporting the first failure.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(bytes) {
            if !self.reported {
                self.reported = true;
                eprintln!("procman: writing {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn names_stay_inside() {
        assert_eq!(file_name("web"), "web.log");
        assert_eq!(file_name("../etc/x"), "%2E.%2Fetc%2Fx.log");
        assert_eq!(file_name(".hidden"), "%2Ehidden.log");
        assert_eq!(file_name("a%2Fb"), "a%252Fb.log");
        assert_eq!(file_name("a.b"), "a.b.log");
        assert_eq!(file_name(""), "%.log");
    }
}
