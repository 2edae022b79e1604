//! Splits a byte stream into lines of bounded length, whatever the chunking of reads.

use crate::protocol::MAX_LINE;

/// What the splitter found.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece {
    /// A complete, non-blank line without its `\n`.
    Line(Vec<u8>),
    /// A line grew past [`MAX_LINE`]; its bytes up to the next `\n` are discarded.
    TooLong,
}

/// Accumulates bytes until `\n`; reports an over-long line once, then skips to its end.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    discarding: bool,
}

impl LineSplitter {
    /// Feeds one chunk, appending what it completes to `out`.
    pub(crate) fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Piece>) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            let (segment, rest) = match newline {
                Some(i) => (&chunk[..i], &chunk[i + 1..]),
                None => (chunk, &[][..]),
            };
            chunk = rest;
            if self.discarding {
                self.discarding = newline.is_none();
                continue;
            }
            self.buf.extend_from_slice(segment);
            if newline.is_some() {
                let line = std::mem::take(&mut self.buf);
                if line.len() > MAX_LINE {
                    out.push(Piece::TooLong);
                } else if !line.iter().all(u8::is_ascii_whitespace) {
                    out.push(Piece::Line(line));
                }
            } else if self.buf.len() > MAX_LINE {
                self.buf = Vec::new();
                self.discarding = true;
                out.push(Piece::TooLong);
            }
        }
    }

    /// The unterminated last line at end of stream, if it is not blank.
    pub(crate) fn take_partial(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.buf);
        (!self.discarding && !line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }

    /// The unterminated line so far, if `complete` says it is already a whole message: for
    /// a stream whose end we never see (the FIFO, which the server holds open itself), a
    /// writer that closed without a final newline. Only tried when the line ends in `}`.
    pub(crate) fn take_if_complete(
        &mut self,
        complete: impl FnOnce(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let last = self.buf.iter().rposition(|b| !b.is_ascii_whitespace())?;
        if self.discarding || self.buf[last] != b'}' || !complete(&self.buf) {
            return None;
        }
        Some(std::mem::take(&mut self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Piece> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        out
    }

    #[test]
    fn splits_across_chunks_and_skips_blanks() {
        assert_eq!(
            split(&[b"ab", b"c\n\n  \nd", b"e\n"]),
            vec![Piece::Line(b"abc".to_vec()), Piece::Line(b"de".to_vec())]
        );
    }

    #[test]
    fn a_complete_unterminated_line_is_taken_only_when_complete() {
        let json = |b: &[u8]| crate::protocol::is_json(b);
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(br#"{"type":"shutdown"#, &mut out);
        assert_eq!(s.take_if_complete(json), None);
        s.push(br#"","message":"{}"}  "#, &mut out);
        assert_eq!(
            s.take_if_complete(json),
            Some(br#"{"type":"shutdown","message":"{}"}  "#.to_vec())
        );
        // What follows starts a new line; a newline alone is a blank line.
        s.push(b"\n", &mut out);
        assert!(out.is_empty());
        s.push(b"not json }", &mut out);
        assert_eq!(s.take_if_complete(json), None);
        assert_eq!(s.take_partial(), Some(b"not json }".to_vec()));
    }

    #[test]
    fn long_line_reported_once() {
        let big = vec![b'x'; MAX_LINE + 10];
        let out = split(&[&big, &big, b"tail\nok\n"]);
        assert_eq!(out, vec![Piece::TooLong, Piece::Line(b"ok".to_vec())]);
    }

    /// Found by fuzzing: a long line whose `\n` came in the read that took it past
    /// MAX_LINE was passed on whole, so the answer depended on how the stream was read.
    #[test]
    fn long_line_is_too_long_however_it_is_read() {
        let mut line = vec![b'x'; MAX_LINE + 1];
        line.push(b'\n');
        let (start, end) = line.split_at(MAX_LINE);
        for chunks in [vec![&line[..]], vec![start, end]] {
            assert_eq!(split(&chunks), vec![Piece::TooLong]);
        }
        let mut max = vec![b'x'; MAX_LINE];
        max.push(b'\n');
        assert_eq!(split(&[&max]), vec![Piece::Line(vec![b'x'; MAX_LINE])]);
    }
}
