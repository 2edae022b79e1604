//! Formatting lines for the terminal and `procman.log`, many lines per write.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::ansi::strip_ansi;
use super::color;
use super::names::label;

/// The name column of one process, ready to copy in front of each line.
pub(crate) struct Prefix {
    /// `{name:>width} | `, coloured if the terminal is.
    term: Vec<u8>,
    /// `{name:>width} | ` without colour.
    log: Vec<u8>,
}

impl Prefix {
    /// `color` is the name's colour index (`None`: the supervisor, in bold); `paint` says
    /// whether the terminal is coloured.
    pub(crate) fn new(name: &str, color: Option<usize>, width: usize, paint: bool) -> Prefix {
        let plain = format!("{:>width$} | ", label(name, width));
        let term = if paint {
            color::paint(&plain, color).into_bytes()
        } else {
            plain.clone().into_bytes()
        };
        Prefix {
            term,
            log: plain.into_bytes(),
        }
    }
}

/// Lines of any processes, formatted for the terminal and for the combined log.
pub(crate) struct Batch {
    logs: bool,
    /// `{RFC 3339 UTC time with milliseconds} ` of the lines being added.
    stamp: String,
    /// Prefixed (and maybe coloured) lines for the terminal.
    pub(crate) term: Vec<u8>,
    /// Time-stamped, prefixed lines without escape sequences for `procman.log`.
    pub(crate) log: Vec<u8>,
}

impl Batch {
    /// An empty batch; `logs` says whether the combined log is written.
    pub(crate) fn new(logs: bool) -> Batch {
        Batch {
            logs,
            stamp: String::new(),
            term: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Stamps the lines added from now on with `time`.
    pub(crate) fn set_time(&mut self, time: SystemTime) {
        if self.logs {
            self.stamp.clear();
            let _ = write!(self.stamp, "{} ", humantime::format_rfc3339_millis(time));
        }
    }

    /// Adds one line (without its line ending). `escapes` says whether the line may hold
    /// escape sequences that the log must not.
    pub(crate) fn push(&mut self, prefix: &Prefix, line: &[u8], escapes: bool) {
        self.term.extend_from_slice(&prefix.term);
        self.term.extend_from_slice(line);
        self.term.push(b'\n');
        if self.logs {
            self.log.extend_from_slice(self.stamp.as_bytes());
            self.log.extend_from_slice(&prefix.log);
            if escapes {
                strip_ansi(line, &mut self.log);
            } else {
                self.log.extend_from_slice(line);
            }
            self.log.push(b'\n');
        }
    }

    /// Bytes waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.term.len() + self.log.len()
    }

    /// Empties the buffers; large ones are released so a burst does not pin memory.
    pub(crate) fn clear(&mut self) {
        for buf in [&mut self.term, &mut self.log] {
            buf.clear();
            buf.shrink_to(KEEP);
        }
    }
}

/// Capacity kept by an empty buffer.
const KEEP: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_and_strips_the_log_only() {
        let mut batch = Batch::new(true);
        batch.set_time(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let prefix = Prefix::new("web", Some(0), 5, false);
        batch.push(&prefix, b"\x1b[1mbold\x1b[0m", true);
        assert_eq!(batch.term, b"  web | \x1b[1mbold\x1b[0m\n");
        assert_eq!(
            String::from_utf8_lossy(&batch.log),
            "2023-11-14T22:13:20.123Z   web | bold\n"
        );
    }
}
