//! Formatting lines of one process into one buffer per destination.

use super::ansi::strip_ansi;
use super::color;

/// Lines of one process, formatted for the terminal, the combined log and its own log.
pub(crate) struct Batch {
    name: String,
    supervisor: bool,
    color: bool,
    logs: bool,
    width: usize,
    term_prefix: Vec<u8>,
    log_prefix: Vec<u8>,
    /// Prefixed (and maybe coloured) lines for the terminal.
    pub(crate) term: Vec<u8>,
    /// Prefixed lines without escape sequences for the combined log.
    pub(crate) combined: Vec<u8>,
    /// Bare lines without escape sequences for the process's own log.
    pub(crate) own: Vec<u8>,
    /// Number of lines in the buffers.
    pub(crate) lines: u64,
}

impl Batch {
    /// An empty batch for `name`; `logs` says whether log buffers are needed.
    ///
    /// Control characters in the name are shown as `?` so a name cannot break a line.
    pub(crate) fn new(name: &str, supervisor: bool, color: bool, logs: bool) -> Batch {
        Batch {
            name: name
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
            supervisor,
            color,
            logs,
            width: usize::MAX,
            term_prefix: Vec::new(),
            log_prefix: Vec::new(),
            term: Vec::new(),
            combined: Vec::new(),
            own: Vec::new(),
            lines: 0,
        }
    }

    /// Aligns later lines to a name column of `width` characters.
    pub(crate) fn set_width(&mut self, width: usize) {
        if width == self.width {
            return;
        }
        self.width = width;
        let plain = format!("{:>width$} | ", self.name);
        self.term_prefix = if self.color {
            color::paint(&self.name, &plain, self.supervisor).into_bytes()
        } else {
            plain.clone().into_bytes()
        };
        self.log_prefix = plain.into_bytes();
    }

    /// Adds one line (without its newline).
    pub(crate) fn push(&mut self, line: &[u8]) {
        self.lines += 1;
        self.term.extend_from_slice(&self.term_prefix);
        self.term.extend_from_slice(line);
        self.term.push(b'\n');
        if self.logs {
            let start = self.own.len();
            strip_ansi(line, &mut self.own);
            self.own.push(b'\n');
            self.combined.extend_from_slice(&self.log_prefix);
            self.combined.extend_from_slice(&self.own[start..]);
        }
    }

    /// Empties the buffers, keeping their capacity.
    pub(crate) fn clear(&mut self) {
        self.term.clear();
        self.combined.clear();
        self.own.clear();
        self.lines = 0;
    }
}
