//! Splitting a byte stream into bounded lines for the terminal, `procman.log` and the tail.
//!
//! `<name>.log` does not go through this: it receives the bytes exactly as read.

use std::ops::Range;

/// Longest line shown as one piece; longer lines become consecutive pieces.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Bytes that must be seen before a line without `\n` is cut: one full piece
/// plus room for a `\r\n` so that a line of exactly [`MAX_LINE`] bytes is never cut.
pub(crate) const CUT_WINDOW: usize = MAX_LINE + 2;

/// Emits the range of every line of `data` that is complete, returning how many bytes
/// were consumed.
///
/// A line ends at `\n`; a trailing `\r` is not part of it. A line of more than
/// [`MAX_LINE`] bytes is emitted as several pieces. With `eof`, the unterminated rest is
/// a line too. The result does not depend on how the stream was chunked.
pub(crate) fn split_lines(data: &[u8], eof: bool, mut emit: impl FnMut(Range<usize>)) -> usize {
    let mut pos = 0;
    for_each_newline(data, |newline| {
        pos = cut_long(pos, newline, &mut emit);
        let end = if newline > pos && data[newline - 1] == b'\r' {
            newline - 1
        } else {
            newline
        };
        emit_pieces(pos, end, &mut emit);
        pos = newline + 1;
    });
    if eof {
        let end = if data.last() == Some(&b'\r') {
            data.len() - 1
        } else {
            data.len()
        };
        if pos < data.len() {
            pos = cut_long(pos, data.len(), &mut emit);
            emit_pieces(pos, end.max(pos), &mut emit);
        }
        data.len()
    } else {
        cut_long(pos, data.len(), &mut emit)
    }
}

/// Calls `found` with the position of every `\n` in `data`, in order.
///
/// Eight bytes at a time with a word-wide compare: with short lines (the common case of
/// a busy log) this costs a few instructions per line, where a `memchr` call per line
/// costs a call and its set-up.
#[inline]
pub(crate) fn for_each_newline(data: &[u8], mut found: impl FnMut(usize)) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const NEWLINES: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let mut words = data.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ NEWLINES;
        // The top bit of each byte that is zero in `x` (exact: no carries between bytes).
        let mut zeros = !(((x & LOW7) + LOW7) | x | LOW7);
        while zeros != 0 {
            found(base + zeros.trailing_zeros() as usize / 8);
            zeros &= zeros - 1;
        }
        base += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b'\n' {
            found(base + i);
        }
    }
}

/// Emits [`MAX_LINE`] pieces from `pos` while `end` (a newline, or the end of the data)
/// is more than [`CUT_WINDOW`] away; returns where the rest starts.
#[inline]
fn cut_long(mut pos: usize, end: usize, emit: &mut impl FnMut(Range<usize>)) -> usize {
    while end - pos >= CUT_WINDOW {
        emit(pos..pos + MAX_LINE);
        pos += MAX_LINE;
    }
    pos
}

/// Emits a line of at most [`CUT_WINDOW`] bytes, in two pieces if it is longer than
/// [`MAX_LINE`].
#[inline]
fn emit_pieces(start: usize, end: usize, emit: &mut impl FnMut(Range<usize>)) {
    if end - start > MAX_LINE {
        emit(start..start + MAX_LINE);
        emit(start + MAX_LINE..end);
    } else {
        emit(start..end);
    }
}

/// Whether a partial line of `len` bytes that received no `\n` can wait for more data
/// without being split (rescanning it on every small read would be quadratic).
pub(crate) fn can_wait(len: usize) -> bool {
    len < CUT_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8], eof: bool) -> (Vec<Vec<u8>>, usize) {
        let mut out = Vec::new();
        let used = split_lines(data, eof, |r| out.push(data[r].to_vec()));
        (out, used)
    }

    fn lengths(data: &[u8]) -> Vec<usize> {
        lines(data, true).0.iter().map(Vec::len).collect()
    }

    #[test]
    fn piece_boundaries() {
        let max = vec![b'x'; MAX_LINE];
        assert_eq!(lengths(&[&max[..], b"\r\n"].concat()), [MAX_LINE]);
        assert_eq!(lengths(&[&max[..], b"y\n"].concat()), [MAX_LINE, 1]);
        assert_eq!(lengths(&[&max[..], b"yz"].concat()), [MAX_LINE, 2]);
        assert_eq!(lengths(b"\n\r\n"), [0, 0]);
        assert_eq!(lengths(b""), [0usize; 0]);
        assert_eq!(lines(b"a\r\nb\rc", false), (vec![b"a".to_vec()], 3));
        assert_eq!(lines(b"b\rc", true).0, [b"b\rc".to_vec()]);
    }

    /// Feeds `data` in steps as the output thread does: carry the unconsumed rest over.
    fn chunked(data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut carried: Vec<u8> = Vec::new();
        for chunk in data.chunks(step) {
            let fresh_has_newline = chunk.contains(&b'\n');
            carried.extend_from_slice(chunk);
            if !fresh_has_newline && can_wait(carried.len()) {
                continue;
            }
            let used = split_lines(&carried, false, |r| got.push(carried[r].to_vec()));
            carried.drain(..used);
        }
        split_lines(&carried, true, |r| got.push(carried[r].to_vec()));
        got
    }

    proptest::proptest! {
        #[test]
        fn finds_the_newlines_memchr_finds(
            data in proptest::collection::vec(proptest::sample::select(vec![b'\n', b'a', 0x8a, 0x0b, 0x09, 0xff, 0]), 0..100)
        ) {
            let mut found = Vec::new();
            for_each_newline(&data, |i| found.push(i));
            let expected: Vec<usize> = memchr::memchr_iter(b'\n', &data).collect();
            proptest::prop_assert_eq!(found, expected);
        }
    }

    #[test]
    fn chunking_does_not_matter() {
        let mut data = Vec::new();
        for i in 0..40usize {
            data.extend(std::iter::repeat_n(b'a', i * 997 % (3 * MAX_LINE)));
            data.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        }
        data.extend_from_slice(b"tail\r");
        let (expected, _) = lines(&data, true);
        for step in [3, 4096, MAX_LINE + 1, usize::MAX] {
            assert!(chunked(&data, step) == expected, "step {step}");
        }
    }
}
