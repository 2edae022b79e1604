//! Formatting lines for the terminal, many lines per write.
//!
//! (`procman.log` is formatted by the log writer thread, [`super::writer`].)

use std::ops::Range;

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

    /// The column as `procman.log` shows it.
    pub(crate) fn log(&self) -> &[u8] {
        &self.log
    }
}

/// Lines of any processes, prefixed (and maybe coloured) for the terminal.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) term: Vec<u8>,
}

impl Batch {
    /// Adds the lines `ranges` of `data` (without their line endings) under `prefix`.
    pub(crate) fn push(&mut self, prefix: &Prefix, data: &[u8], ranges: &[Range<usize>]) {
        let text: usize = ranges.iter().map(|r| r.len()).sum();
        let term = &mut self.term;
        term.reserve(text + ranges.len() * (prefix.term.len() + 1));
        for range in ranges {
            term.extend_from_slice(&prefix.term);
            // A line that ends at its `\n` is copied with it, in one piece.
            if data.get(range.end) == Some(&b'\n') {
                term.extend_from_slice(&data[range.start..=range.end]);
            } else {
                term.extend_from_slice(&data[range.clone()]);
                term.push(b'\n');
            }
        }
    }

    /// Bytes waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.term.len()
    }

    /// Empties the buffer; a large one is released so a burst does not pin memory.
    pub(crate) fn clear(&mut self) {
        self.term.clear();
        self.term.shrink_to(KEEP);
    }
}

/// Capacity kept by an empty buffer.
const KEEP: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_ends_in_one_newline() {
        let mut batch = Batch::default();
        let prefix = Prefix::new("web", Some(0), 5, false);
        let data = b"\x1b[1mbold\x1b[0m\r\nplain\nlast";
        batch.push(&prefix, data, &[0..12, 14..19, 20..24]);
        assert_eq!(
            batch.term,
            b"  web | \x1b[1mbold\x1b[0m\n  web | plain\n  web | last\n"
        );
    }
}
