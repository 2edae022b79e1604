//! Formatting lines for the terminal and `procman.log`, many lines per write.

use std::fmt::Write as _;
use std::ops::Range;
use std::time::SystemTime;

use super::ansi::clean;
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
        let plain = format!("{} | ", label(name, width));
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

    /// The column as the terminal shows it.
    pub(crate) fn terminal(&self) -> &[u8] {
        &self.term
    }
}

/// Lines of any processes, formatted for the terminal and for the combined log.
pub(crate) struct Batch {
    logs: bool,
    /// `{RFC 3339 UTC time with milliseconds} ` of the lines being added.
    stamp: String,
    /// The stamp and the log prefix of the process whose lines are being added.
    log_prefix: Vec<u8>,
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
            log_prefix: Vec::new(),
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

    /// Starts adding lines of the process with `prefix`.
    pub(crate) fn begin(&mut self, prefix: &Prefix) {
        if self.logs {
            self.log_prefix.clear();
            self.log_prefix.extend_from_slice(self.stamp.as_bytes());
            self.log_prefix.extend_from_slice(&prefix.log);
        }
    }

    /// Adds the lines `ranges` of `data` (without their line endings) of the process
    /// given to [`Batch::begin`]. `controls` says whether they may hold escape sequences
    /// or other control characters, which the log shows cleaned (see [`clean`]).
    pub(crate) fn push(
        &mut self,
        prefix: &Prefix,
        data: &[u8],
        ranges: &[Range<usize>],
        controls: bool,
    ) {
        let text: usize = ranges.iter().map(|r| r.len()).sum();
        self.term
            .reserve(text + ranges.len() * (prefix.term.len() + 1));
        for range in ranges {
            self.term.extend_from_slice(&prefix.term);
            self.term.extend_from_slice(&data[range.clone()]);
            self.term.push(b'\n');
        }
        if !self.logs {
            return;
        }
        self.log
            .reserve(text + ranges.len() * (self.log_prefix.len() + 1));
        for range in ranges {
            self.log.extend_from_slice(&self.log_prefix);
            if controls {
                clean(&data[range.clone()], &mut self.log);
            } else {
                self.log.extend_from_slice(&data[range.clone()]);
            }
            self.log.push(b'\n');
        }
    }

    /// Bytes waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.term.len() + self.log.len()
    }

    /// Empties the terminal's buffer; a large one is released so a burst does not pin
    /// memory. (The log's buffer is handed to the log writer instead.)
    pub(crate) fn clear_term(&mut self) {
        self.term.clear();
        self.term.shrink_to(KEEP);
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
        batch.begin(&prefix);
        let data = b"\x1b[1mbold\x1b[0m\nplain";
        batch.push(&prefix, data, &[0..12, 13..18], true);
        assert_eq!(batch.term, b"  web | \x1b[1mbold\x1b[0m\n  web | plain\n");
        assert_eq!(
            String::from_utf8_lossy(&batch.log),
            "2023-11-14T22:13:20.123Z   web | bold\n2023-11-14T22:13:20.123Z   web | plain\n"
        );
    }
}
