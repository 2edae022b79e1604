//! Colour decisions and the colour of each name.

use owo_colors::{AnsiColors, OwoColorize};

use super::ColorChoice;

/// Readable foreground colours, the five hues first so that the first five names never
/// share a hue; red is left out so it keeps meaning "error".
const PALETTE: [AnsiColors; 10] = [
    AnsiColors::Cyan,
    AnsiColors::Yellow,
    AnsiColors::Green,
    AnsiColors::Magenta,
    AnsiColors::Blue,
    AnsiColors::BrightYellow,
    AnsiColors::BrightCyan,
    AnsiColors::BrightMagenta,
    AnsiColors::BrightGreen,
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

/// The colour of the `index`-th process name of the run: the first ten are distinct.
pub(crate) fn nth(index: usize) -> AnsiColors {
    PALETTE[index % PALETTE.len()]
}

/// Paints a prefix: bold for the supervisor's own name (`None`), the name's colour otherwise.
pub(crate) fn paint(text: &str, color: Option<usize>) -> String {
    match color {
        None => text.bold().to_string(),
        Some(index) => text.color(nth(index)).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice() {
        assert!(enabled(ColorChoice::Always, false, true));
        assert!(!enabled(ColorChoice::Never, true, false));
        assert!(enabled(ColorChoice::Auto, true, false));
        assert!(!enabled(ColorChoice::Auto, true, true));
        assert!(!enabled(ColorChoice::Auto, false, false));
    }

    #[test]
    fn first_ten_names_differ() {
        let colours: std::collections::HashSet<String> =
            (0..10).map(|i| format!("{:?}", nth(i))).collect();
        assert_eq!(colours.len(), 10);
    }
}
