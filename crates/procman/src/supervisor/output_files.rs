//! `$PROCMAN_OUTPUT` files: where a process leaves `KEY=VALUE` lines that others read as
//! `${{ name.KEY }}`.
//!
//! procman creates each file itself, empty, before the process's first start in a run, in
//! the log directory and recorded in its manifest, so the next start moves it to
//! `previous/` like a log: a stale value of an earlier run never satisfies a template, and
//! no file procman did not create is deleted. A file of that name that is not procman's
//! is left alone (and said so): that process gets no `$PROCMAN_OUTPUT` in this run, and
//! its `${{ name.KEY }}` values stay unresolved rather than being read from it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::config::ReadError;

use crate::output::Output;
use crate::protocol::ProcessName;

/// The output files of this run.
pub(super) struct OutputFiles {
    /// The log directory, absolute (processes may run elsewhere).
    dir: PathBuf,
    /// Processes whose file procman created in this run.
    created: HashSet<ProcessName>,
    /// Processes whose file name was taken by a file that is not procman's.
    refused: HashSet<ProcessName>,
}

impl OutputFiles {
    pub(super) fn new(log_dir: &Path) -> OutputFiles {
        OutputFiles {
            dir: std::path::absolute(log_dir).unwrap_or_else(|_| log_dir.to_path_buf()),
            created: HashSet::new(),
            refused: HashSet::new(),
        }
    }

    /// The file of `name` for this run, created at its first start; `None` when the name
    /// is taken by a file procman did not create (reported once, the file untouched).
    pub(super) fn prepare(&mut self, name: &ProcessName, output: &Output) -> Option<PathBuf> {
        if self.created.contains(name) {
            return self.path(name);
        }
        if self.refused.contains(name) {
            return None;
        }
        match output.create_file(&file_name(name)) {
            Ok(()) => {
                self.created.insert(name.clone());
                self.path(name)
            }
            Err(e) => {
                output.procman(&format!(
                    "{name}: {e}; {name} gets no $PROCMAN_OUTPUT in this run and its ${{{{ {name}.KEY }}}} values stay unresolved"
                ));
                self.refused.insert(name.clone());
                None
            }
        }
    }

    /// The file of `name` if procman created it in this run.
    pub(super) fn path(&self, name: &str) -> Option<PathBuf> {
        self.created
            .contains(name)
            .then(|| self.dir.join(file_name(name)))
    }

    /// The text of `name`'s file (`None` if it has none in this run). Its process may
    /// have replaced it: a FIFO, a device or a huge file is refused, not waited on or read
    /// whole on the supervisor's thread. `Err` says why it is not read.
    pub(super) fn read(&self, name: &str) -> Result<Option<String>, String> {
        let Some(path) = self.path(name) else {
            return Ok(None);
        };
        match crate::config::read_text(&path) {
            Ok(text) => Ok(Some(text)),
            Err(ReadError::NotFound) => Ok(None),
            Err(e) => Err(format!(
                "{name}: {}: {e}; its values are not read",
                path.display()
            )),
        }
    }

    /// At the end of the run: files that their process replaced are recorded too, so the
    /// next start moves them aside like the ones procman created.
    pub(super) fn keep(&self, output: &Output) {
        for name in &self.created {
            if let Err(e) = output.adopt_file(&file_name(name)) {
                output.procman(&format!("{name}: {e}"));
            }
        }
    }
}

/// `{name}.output` (names contain no `/`).
fn file_name(name: &str) -> String {
    format!("{name}.output")
}
