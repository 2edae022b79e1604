//! Formatting lines for the terminal, many lines per write.
//!
//! (`procman.log` is formatted by the log writer thread, [`super::writer`].)

use std::ops::Range;

use super::color;
use super::names::label;

/// The name column of one process, ready to copy in front of each line.
pub(crate) struct Prefix {
    /// `{name:>width} | `, coloured if the terminal is, followed by [`SLACK`] zeros (see
    /// [`append`]).
    term: Vec<u8>,
    /// `{name:>width} | ` without colour.
    log: Vec<u8>,
}

impl Prefix {
    /// `color` is the name's colour index (`None`: the supervisor, in bold); `paint` says
    /// whether the terminal is coloured.
    pub(crate) fn new(name: &str, color: Option<usize>, width: usize, paint: bool) -> Prefix {
        let plain = format!("{} | ", label(name, width));
        let mut term = if paint {
            color::paint(&plain, color).into_bytes()
        } else {
            plain.clone().into_bytes()
        };
        term.resize(term.len() + SLACK, 0);
        Prefix {
            term,
            log: plain.into_bytes(),
        }
    }

    /// The column as the terminal shows it.
    pub(crate) fn terminal(&self) -> &[u8] {
        &self.term[..self.term.len() - SLACK]
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
        let column = prefix.terminal().len();
        let term = &mut self.term;
        term.reserve(text + ranges.len() * (column + 1) + SLACK);
        for range in ranges {
            append(term, &prefix.term, column);
            // A line that ends at its `\n` is copied with it, in one piece.
            if data.get(range.end) == Some(&b'\n') {
                append(term, &data[range.start..], range.len() + 1);
            } else {
                append(term, &data[range.start..], range.len());
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

/// Bytes copied at once by [`append`].
const SLACK: usize = 32;

/// Appends the first `len` bytes of `src` to `out`.
///
/// Most lines and name columns are short: when `src` holds [`SLACK`] bytes and `len` is
/// at most that, it copies a fixed [`SLACK`] bytes (one move, no `memcpy` call and its
/// dispatch) and cuts `out` back to the `len` wanted.
#[inline]
fn append(out: &mut Vec<u8>, src: &[u8], len: usize) {
    match src.first_chunk::<SLACK>() {
        Some(block) if len <= SLACK => {
            let end = out.len() + len;
            out.extend_from_slice(block);
            out.truncate(end);
        }
        _ => out.extend_from_slice(&src[..len]),
    }
}

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

    #[test]
    fn short_and_long_copies_agree() {
        let data: Vec<u8> = (0..100u8).collect();
        for len in 0..=60 {
            for start in [0, 30, 40, 100 - len] {
                let mut out = b"x".to_vec();
                append(&mut out, &data[start..], len);
                assert_eq!(out[1..], data[start..start + len], "{start} {len}");
            }
        }
    }
}
