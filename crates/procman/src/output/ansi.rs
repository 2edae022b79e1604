//! Removing ANSI escape sequences for the log files.

pub(crate) const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// Appends `line` to `out` without its ANSI escape sequences.
///
/// Handles CSI (`ESC [ … final`), OSC/DCS/SOS/PM/APC strings (ended by BEL or `ESC \`)
/// and two-byte escapes with intermediates (`ESC ( B`). An unterminated sequence runs
/// to the end of the line. 8-bit C1 controls are left alone: they clash with UTF-8.
pub(crate) fn strip_ansi(line: &[u8], out: &mut Vec<u8>) {
    let mut rest = line;
    while let Some(i) = memchr::memchr(ESC, rest) {
        out.extend_from_slice(&rest[..i]);
        rest = &rest[i + escape_len(&rest[i..])..];
    }
    out.extend_from_slice(rest);
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
    use super::strip_ansi;

    fn strip(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        strip_ansi(s, &mut out);
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
}
