//! Colour decisions and the stable per-name colour.

use owo_colors::{AnsiColors, OwoColorize};

use super::ColorChoice;

/// Readable foreground colours; red is left out so it keeps meaning "error".
const PALETTE: [AnsiColors; 10] = [
    AnsiColors::Cyan,
    AnsiColors::Yellow,
    AnsiColors::Green,
    AnsiColors::Magenta,
    AnsiColors::Blue,
    AnsiColors::BrightCyan,
    AnsiColors::BrightYellow,
    AnsiColors::BrightGreen,
    AnsiColors::BrightMagenta,
    AnsiColors::BrightBlue,
];

/// Whether to colour: `Auto` means a TTY and `NO_COLOR` unset or empty.
pub(crate) fn enabled(choice: ColorChoice, is_tty: bool, no_color: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_tty && !no_color,
    }
}

/// Whether the environment asks for no colour (`NO_COLOR` set to a non-empty value).
pub(crate) fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// 32-bit FNV-1a: fixed by its specification, so colours never change between builds.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The colour of process `name`.
pub(crate) fn for_name(name: &str) -> AnsiColors {
    PALETTE[fnv1a(name.as_bytes()) as usize % PALETTE.len()]
}

/// Paints a prefix: bold for the supervisor's own name, the name's colour otherwise.
pub(crate) fn paint(name: &str, text: &str, supervisor: bool) -> String {
    if supervisor {
        text.bold().to_string()
    } else {
        text.color(for_name(name)).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn choice() {
        assert!(enabled(ColorChoice::Always, false, true));
        assert!(!enabled(ColorChoice::Never, true, false));
        assert!(enabled(ColorChoice::Auto, true, false));
        assert!(!enabled(ColorChoice::Auto, true, true));
        assert!(!enabled(ColorChoice::Auto, false, false));
    }
}
