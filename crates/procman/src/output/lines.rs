//! Splitting a byte stream into bounded lines.

use std::io::{self, Read};

/// Longest line emitted as one piece; longer lines become consecutive pieces.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Bytes that must be seen before a line without `\n` is cut: one full piece
/// plus room for a `\r\n` so that a line of exactly [`MAX_LINE`] bytes is never cut.
const CUT_WINDOW: usize = MAX_LINE + 2;

/// Emits every line of `data` that is complete, returning how many bytes were consumed.
///
/// A line ends at `\n`; a trailing `\r` is removed. A line of more than [`MAX_LINE`]
/// bytes is emitted as several pieces. With `eof`, the unterminated rest is a line too.
/// The result does not depend on how the stream was chunked.
pub(crate) fn split_lines(data: &[u8], eof: bool, mut emit: impl FnMut(&[u8])) -> usize {
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        let window = &rest[..rest.len().min(CUT_WINDOW)];
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            emit_pieces(&rest[..i], &mut emit);
            pos += i + 1;
        } else if rest.len() >= CUT_WINDOW {
            emit(&rest[..MAX_LINE]);
            pos += MAX_LINE;
        } else if eof {
            emit_pieces(rest, &mut emit);
            pos = data.len();
        } else {
            break;
        }
    }
    pos
}

fn emit_pieces(line: &[u8], emit: &mut impl FnMut(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        emit(line);
    }
    for piece in line.chunks(MAX_LINE) {
        emit(piece);
    }
}

/// Reads a stream in large chunks and splits it into lines, keeping the partial tail.
pub(crate) struct LineReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl LineReader {
    /// A reader whose buffer always has room for at least one full [`MAX_LINE`] read.
    pub(crate) fn new() -> Self {
        LineReader {
            buf: vec![0; 2 * CUT_WINDOW],
            start: 0,
            end: 0,
        }
    }

    /// Reads once from `src` and emits the lines that became complete.
    ///
    /// Returns `Ok(false)` at end of stream, after emitting the unterminated tail.
    pub(crate) fn read_from(
        &mut self,
        src: &mut impl Read,
        mut emit: impl FnMut(&[u8]),
    ) -> io::Result<bool> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let n = loop {
            match src.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.finish(&mut emit);
                    return Err(e);
                }
            }
        };
        if n == 0 {
            self.finish(&mut emit);
            return Ok(false);
        }
        let fresh = self.end;
        self.end += n;
        // Rescanning a long partial line on every small read would be quadratic.
        if self.end - self.start < CUT_WINDOW && !self.buf[fresh..self.end].contains(&b'\n') {
            return Ok(true);
        }
        self.start += split_lines(&self.buf[self.start..self.end], false, &mut emit);
        Ok(true)
    }

    fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        split_lines(&self.buf[self.start..self.end], true, emit);
        self.start = self.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        split_lines(data, true, |l| out.push(l.len()));
        out
    }

    /// Reads at most `step` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn piece_boundaries() {
        let max = vec![b'x'; MAX_LINE];
        assert_eq!(lengths(&[&max[..], b"\r\n"].concat()), [MAX_LINE]);
        assert_eq!(lengths(&[&max[..], b"y\n"].concat()), [MAX_LINE, 1]);
        assert_eq!(lengths(&[&max[..], b"yz"].concat()), [MAX_LINE, 2]);
        assert_eq!(lengths(b"\n\r\n"), [0, 0]);
        assert_eq!(lengths(b""), [0usize; 0]);
    }

    #[test]
    fn chunking_does_not_matter() {
        let mut data = Vec::new();
        for i in 0..40usize {
            data.extend(std::iter::repeat_n(b'a', i * 997 % (3 * MAX_LINE)));
            data.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        }
        data.extend_from_slice(b"tail\r");
        let mut expected = Vec::new();
        split_lines(&data, true, |l| expected.push(l.to_vec()));
        for step in [3, 4096, MAX_LINE + 1, usize::MAX] {
            let mut src = Trickle(&data, step);
            let mut reader = LineReader::new();
            let mut got = Vec::new();
            while reader
                .read_from(&mut src, |l| got.push(l.to_vec()))
                .expect("read")
            {}
            assert!(got == expected, "step {step}");
        }
    }
}
