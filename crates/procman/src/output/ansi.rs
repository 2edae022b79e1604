//! Cleaning lines of escape sequences and control characters: for `procman.log`
//! ([`clean`]) and for a terminal ([`sanitize`]).

pub(crate) const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// Whether `byte` is a control character that [`clean`] removes or shows (all of C0 and
/// DEL but TAB; a line holds no `\n`).
pub(crate) fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// Whether `data` holds a byte that [`clean`] would change, line endings apart: a
/// control character other than `\n` (so `\r` of a `\r\n` counts).
///
/// Branch-free over blocks so that it vectorizes: it runs over every byte logged.
pub(crate) fn has_controls(data: &[u8]) -> bool {
    const BLOCK: usize = 64;
    let flagged = |block: &[u8]| {
        block.iter().fold(false, |found, &b| {
            found | ((b < 0x20) & (b != b'\t') & (b != b'\n')) | (b == 0x7f)
        })
    };
    let mut blocks = data.chunks_exact(BLOCK);
    blocks.by_ref().any(flagged) || flagged(blocks.remainder())
}

/// Appends `line` to `out` without its ANSI escape sequences, and with every other
/// control character but TAB in caret notation (`\r` as `^M`, NUL as `^@`), as
/// `cat -v` shows them: a line shown from the log cannot return over its own time stamp
/// and name and pass for another process's or procman's.
///
/// Handles CSI (`ESC [ … final`), OSC/DCS/SOS/PM/APC strings (ended by BEL or `ESC \`)
/// and two-byte escapes with intermediates (`ESC ( B`). An unterminated sequence runs
/// to the end of the line. 8-bit C1 controls are left alone: they clash with UTF-8.
pub(crate) fn clean(line: &[u8], out: &mut Vec<u8>) {
    let mut rest = line;
    while let Some(i) = rest.iter().position(|&b| is_control(b)) {
        out.extend_from_slice(&rest[..i]);
        if rest[i] == ESC {
            rest = &rest[i + escape_len(&rest[i..])..];
        } else {
            out.extend_from_slice(&[b'^', rest[i] ^ 0x40]);
            rest = &rest[i + 1..];
        }
    }
    out.extend_from_slice(rest);
}

/// Appends `line` to `out` safe for a terminal: with `sgr`, colour and style sequences
/// (`ESC [ params m`) are kept; every other escape sequence (cursor moves, titles,
/// hyperlinks, clearing, DCS, …) and control character except tab is dropped, so a
/// process cannot move the cursor, retitle, or reset the terminal it is shown on.
pub(crate) fn sanitize(line: &[u8], sgr: bool, out: &mut Vec<u8>) {
    let mut rest = line;
    while let Some(i) = rest.iter().position(|&b| is_control(b)) {
        out.extend_from_slice(&rest[..i]);
        let len = if rest[i] == ESC {
            escape_len(&rest[i..])
        } else {
            1
        };
        let sequence = &rest[i..i + len];
        if sgr && is_sgr(sequence) {
            out.extend_from_slice(sequence);
        }
        rest = &rest[i + len..];
    }
    out.extend_from_slice(rest);
}

/// `ESC [ {digits ; :} m`.
fn is_sgr(sequence: &[u8]) -> bool {
    sequence
        .strip_prefix(b"\x1b[")
        .and_then(|s| s.strip_suffix(b"m"))
        .is_some_and(|params| {
            params
                .iter()
                .all(|b| b.is_ascii_digit() || *b == b';' || *b == b':')
        })
}

/// Length of the escape sequence at the start of `s` (which begins with ESC).
fn escape_len(s: &[u8]) -> usize {
    match s.get(1) {
        None => 1,
        Some(b'[') => s[2..]
            .iter()
            .position(|b| (0x40..=0x7e).contains(b))
            .map_or(s.len(), |i| i + 3),
        Some(b']' | b'P' | b'X' | b'^' | b'_') => string_len(s),
        Some(_) => s[1..]
            .iter()
            .position(|b| !(0x20..=0x2f).contains(b))
            .map_or(s.len(), |i| i + 2),
    }
}

fn string_len(s: &[u8]) -> usize {
    let mut i = 2;
    while i < s.len() {
        match s[i] {
            BEL => return i + 1,
            ESC if s.get(i + 1) == Some(&b'\\') => return i + 2,
            _ => i += 1,
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::{clean, sanitize};

    fn strip(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        clean(s, &mut out);
        out
    }

    #[test]
    fn removes_sequences() {
        assert_eq!(strip(b"\x1b[1;31mred\x1b[0m plain"), b"red plain");
        assert_eq!(
            strip(b"a\x1b]8;;http://x\x07link\x1b]8;;\x1b\\b"),
            b"alinkb"
        );
        assert_eq!(strip(b"\x1b(Bx\x1b=y"), b"xy");
        assert_eq!(strip(b"cut\x1b[12"), b"cut");
        assert_eq!(strip(b"end\x1b"), b"end");
        assert_eq!(strip(b"\xff\xfe raw"), b"\xff\xfe raw");
    }

    #[test]
    fn sanitize_keeps_only_colours() {
        let clean = |s: &[u8], sgr| {
            let mut out = Vec::new();
            sanitize(s, sgr, &mut out);
            out
        };
        let hostile = b"a\x1b[2J\x1b]0;pwned\x07\x1b[10;10Hb\x07\x1bP1$q\x1b\\\x1b[?1049l\x1bc\r\x1b[1;31mred\x1b[0m\tc\x7f";
        assert_eq!(clean(hostile, true), b"ab\x1b[1;31mred\x1b[0m\tc");
        assert_eq!(clean(hostile, false), b"abred\tc");
        assert_eq!(clean(b"\x1b[38:5:1mx", true), b"\x1b[38:5:1mx");
        assert_eq!(clean(b"cut\x1b[1", true), b"cut");
    }

    #[test]
    fn controls_are_found_in_any_block() {
        use super::{has_controls, is_control};
        for at in [0, 1, 63, 64, 65, 127, 128, 200] {
            for byte in 0..=255u8 {
                let mut data = vec![b'a'; 201];
                data[at] = byte;
                let expected = byte != b'\n' && is_control(byte);
                assert_eq!(has_controls(&data), expected, "byte {byte:#x} at {at}");
            }
        }
        assert!(!has_controls(b""));
        assert!(!has_controls(b"line\n\tline\n"));
        assert!(has_controls(b"crlf\r\n"));
    }

    #[test]
    fn shows_controls_that_move_the_cursor() {
        assert_eq!(
            strip(b"x\r2026-01-01T00:00:00.000Z procman | db stopped"),
            b"x^M2026-01-01T00:00:00.000Z procman | db stopped"
        );
        assert_eq!(strip(b"a\0b\x08c\x7fd\te\x07"), b"a^@b^Hc^?d\te^G");
        assert_eq!(strip(b"\x1b[2K\rfake"), b"^Mfake");
    }
}
