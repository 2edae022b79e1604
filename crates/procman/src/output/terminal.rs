//! The terminal sink: tolerant of write errors, with an optional status line.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use owo_colors::OwoColorize;

/// Moves to column 0 and erases the line.
const ERASE: &[u8] = b"\r\x1b[2K";
const DEFAULT_WIDTH: usize = 80;
/// Bytes written at once (a pipe's capacity), so that a slow reader's progress is seen.
const CHUNK: usize = 64 * 1024;

/// Where prefixed lines are shown.
pub(crate) struct Terminal {
    out: Box<dyn Write + Send>,
    broken: bool,
    /// `Some` on a TTY: the status line is supported.
    status: Option<StatusLine>,
    scratch: Vec<u8>,
    /// Counts the chunks written, for [`super::Output::flush`] to tell a slow terminal
    /// from one that takes nothing.
    progress: Arc<AtomicU64>,
}

/// The live status line at the bottom of a TTY.
struct StatusLine {
    text: Option<String>,
    drawn: bool,
    color: bool,
    /// Queried for the width; `None` means [`DEFAULT_WIDTH`].
    size_fd: Option<OwnedFd>,
}

impl Terminal {
    /// A sink writing to `out`; `tty` enables the status line.
    pub(crate) fn new(
        out: Box<dyn Write + Send>,
        tty: bool,
        color: bool,
        size_fd: Option<OwnedFd>,
        progress: Arc<AtomicU64>,
    ) -> Terminal {
        let status = tty.then_some(StatusLine {
            text: None,
            drawn: false,
            color,
            size_fd,
        });
        Terminal {
            out,
            broken: false,
            status,
            scratch: Vec::new(),
            progress,
        }
    }

    /// Writes complete lines, keeping the status line below them.
    pub(crate) fn write_lines(&mut self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        match &mut self.status {
            Some(status) if status.text.is_some() => {
                self.scratch.clear();
                if status.drawn {
                    self.scratch.extend_from_slice(ERASE);
                }
                self.scratch.extend_from_slice(lines);
                status.draw(&mut self.scratch);
                let scratch = std::mem::take(&mut self.scratch);
                self.write(&scratch);
                self.scratch = scratch;
            }
            _ => self.write(lines),
        }
    }

    /// Replaces the status line; does nothing unless the terminal is a TTY.
    pub(crate) fn set_status(&mut self, text: Option<String>) {
        let Some(status) = &mut self.status else {
            return;
        };
        if status.text == text {
            return;
        }
        let mut buf = Vec::new();
        if status.drawn {
            buf.extend_from_slice(ERASE);
            status.drawn = false;
        }
        status.text = text;
        status.draw(&mut buf);
        self.write(&buf);
    }

    /// Flushes the underlying writer.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            return Ok(());
        }
        self.out.flush()
    }

    /// Writes everything or gives the terminal up: a closed stdout must not stop
    /// the draining of pipes or the log files.
    fn write(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        for chunk in bytes.chunks(CHUNK) {
            if let Err(e) = self.out.write_all(chunk) {
                self.broken = true;
                if e.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("procman: writing output: {e}; output continues in the logs only");
                }
                return;
            }
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl StatusLine {
    /// Appends the status text, truncated to the terminal width, if there is one.
    fn draw(&mut self, buf: &mut Vec<u8>) {
        let Some(text) = &self.text else {
            return;
        };
        let cols = self.width().saturating_sub(1);
        let shown: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(cols)
            .collect();
        buf.extend_from_slice(ERASE);
        if self.color {
            buf.extend_from_slice(shown.dimmed().to_string().as_bytes());
        } else {
            buf.extend_from_slice(shown.as_bytes());
        }
        self.drawn = true;
    }

    fn width(&self) -> usize {
        self.size_fd
            .as_ref()
            .and_then(|fd| rustix::termios::tcgetwinsize(fd).ok())
            .map(|ws| usize::from(ws.ws_col))
            .filter(|&w| w > 0)
            .unwrap_or(DEFAULT_WIDTH)
    }
}
