//! A process's output line as styled text: SGR sequences (colours, bold, …) become ratatui
//! styles, every other escape sequence and control character is dropped, so a process can
//! colour its lines in the pane but never move the cursor, retitle or reset the terminal.

use ratatui::style::{Color, Modifier, Style};
use vte::{Params, Parser, Perform};

/// Columns between tab stops.
const TAB: usize = 8;

/// One line's visible text with the style of each run of it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StyledLine {
    /// The printable text, escapes removed and tabs expanded.
    pub text: String,
    /// `(byte offset in text, style)` where each style starts, in order.
    pub runs: Vec<(usize, Style)>,
}

impl StyledLine {
    /// Parses `raw`. Without `color`, colours are dropped and only modifiers (bold,
    /// underline, …) are kept (`NO_COLOR`).
    pub fn parse(raw: &str, color: bool) -> StyledLine {
        let mut builder = Builder {
            line: StyledLine::default(),
            style: Style::default(),
            color,
            column: 0,
            carriage_return: false,
        };
        Parser::new().advance(&mut builder, raw.as_bytes());
        builder.line
    }

    /// The style at byte offset `at` of the text.
    pub fn style_at(&self, at: usize) -> Style {
        match self.runs.partition_point(|&(start, _)| start <= at) {
            0 => Style::default(),
            n => self.runs[n - 1].1,
        }
    }
}

/// The text without any escape sequence or control character.
pub fn plain(raw: &str) -> String {
    StyledLine::parse(raw, false).text
}

/// Text from the server (names, reasons, messages) made safe to draw: control characters
/// become `�`, so no such text can send escape sequences to the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

struct Builder {
    line: StyledLine,
    style: Style,
    color: bool,
    column: usize,
    /// A `\r` was seen: the next character overwrites the line from its start, as on a
    /// terminal (progress bars); a trailing `\r` (CRLF endings) changes nothing.
    carriage_return: bool,
}

impl Builder {
    fn push(&mut self, c: char) {
        if self.carriage_return {
            self.carriage_return = false;
            self.line = StyledLine::default();
            self.column = 0;
        }
        if self.line.runs.last().map(|&(_, style)| style) != Some(self.style) {
            self.line.runs.push((self.line.text.len(), self.style));
        }
        self.line.text.push(c);
        self.column += unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
    }

    fn sgr(&mut self, params: &Params) {
        let mut values = params.iter().peekable();
        if values.peek().is_none() {
            self.style = Style::default();
            return;
        }
        while let Some(param) = values.next() {
            let code = param.first().copied().unwrap_or(0);
            match code {
                0 => self.style = Style::default(),
                1 => self.style = self.style.add_modifier(Modifier::BOLD),
                2 => self.style = self.style.add_modifier(Modifier::DIM),
                3 => self.style = self.style.add_modifier(Modifier::ITALIC),
                4 => self.style = self.style.add_modifier(Modifier::UNDERLINED),
                5 | 6 => self.style = self.style.add_modifier(Modifier::SLOW_BLINK),
                7 => self.style = self.style.add_modifier(Modifier::REVERSED),
                8 => self.style = self.style.add_modifier(Modifier::HIDDEN),
                9 => self.style = self.style.add_modifier(Modifier::CROSSED_OUT),
                21 | 22 => self.style = self.style.remove_modifier(Modifier::BOLD | Modifier::DIM),
                23 => self.style = self.style.remove_modifier(Modifier::ITALIC),
                24 => self.style = self.style.remove_modifier(Modifier::UNDERLINED),
                25 => self.style = self.style.remove_modifier(Modifier::SLOW_BLINK),
                27 => self.style = self.style.remove_modifier(Modifier::REVERSED),
                28 => self.style = self.style.remove_modifier(Modifier::HIDDEN),
                29 => self.style = self.style.remove_modifier(Modifier::CROSSED_OUT),
                30..=37 => self.fg(Some(Color::Indexed((code - 30) as u8))),
                39 => self.fg(None),
                40..=47 => self.bg(Some(Color::Indexed((code - 40) as u8))),
                49 => self.bg(None),
                90..=97 => self.fg(Some(Color::Indexed((code - 90 + 8) as u8))),
                100..=107 => self.bg(Some(Color::Indexed((code - 100 + 8) as u8))),
                38 | 48 => {
                    // `38;5;N` / `38;2;R;G;B`, or the same with colons as sub-parameters.
                    let extended = if param.len() > 1 {
                        extended_color(&mut param[1..].iter().copied())
                    } else {
                        let mut rest =
                            std::iter::from_fn(|| values.next().and_then(|p| p.first().copied()));
                        extended_color(&mut rest)
                    };
                    if code == 38 {
                        self.fg(extended);
                    } else {
                        self.bg(extended);
                    }
                }
                _ => {}
            }
        }
    }

    fn fg(&mut self, color: Option<Color>) {
        if self.color {
            self.style.fg = color;
        }
    }

    fn bg(&mut self, color: Option<Color>) {
        if self.color {
            self.style.bg = color;
        }
    }
}

/// The colour after `38`/`48`: `5;N` (256 colours) or `2;R;G;B` (true colour).
fn extended_color(values: &mut impl Iterator<Item = u16>) -> Option<Color> {
    let byte = |v: Option<u16>| v.map(|v| v.min(255) as u8);
    match values.next()? {
        5 => byte(values.next()).map(Color::Indexed),
        2 => {
            let (r, g, b) = (
                byte(values.next())?,
                byte(values.next())?,
                byte(values.next())?,
            );
            Some(Color::Rgb(r, g, b))
        }
        _ => None,
    }
}

impl Perform for Builder {
    fn print(&mut self, c: char) {
        if !c.is_control() {
            self.push(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\t' => {
                let spaces = TAB - self.column % TAB;
                for _ in 0..spaces {
                    self.push(' ');
                }
            }
            b'\r' => self.carriage_return = true,
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: char) {
        if action == 'm' && intermediates.is_empty() && !ignore {
            self.sgr(params);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn styles(line: &StyledLine) -> Vec<(&str, Style)> {
        let mut out = Vec::new();
        for (i, &(start, style)) in line.runs.iter().enumerate() {
            let end = line.runs.get(i + 1).map_or(line.text.len(), |r| r.0);
            out.push((&line.text[start..end], style));
        }
        out
    }

    #[test]
    fn colours_and_modifiers_become_styles() {
        let line = StyledLine::parse(
            "a\x1b[1;31mred\x1b[0m b\x1b[38;5;208mo\x1b[48:2:1:2:3mx",
            true,
        );
        assert_eq!(line.text, "ared box");
        assert_eq!(
            styles(&line),
            vec![
                ("a", Style::default()),
                (
                    "red",
                    Style::default()
                        .fg(Color::Indexed(1))
                        .add_modifier(Modifier::BOLD)
                ),
                (" b", Style::default()),
                ("o", Style::default().fg(Color::Indexed(208))),
                (
                    "x",
                    Style::default()
                        .fg(Color::Indexed(208))
                        .bg(Color::Rgb(1, 2, 3))
                ),
            ]
        );
        assert_eq!(line.style_at(0), Style::default());
        assert_eq!(line.style_at(2), line.runs[1].1);
    }

    #[test]
    fn no_color_keeps_modifiers_only() {
        let line = StyledLine::parse("\x1b[1;32;44mok\x1b[m", false);
        assert_eq!(line.text, "ok");
        assert_eq!(
            styles(&line),
            vec![("ok", Style::default().add_modifier(Modifier::BOLD))]
        );
    }

    #[test]
    fn other_escapes_and_controls_are_dropped() {
        let hostile = "x\x1b]0;title\x07\x1b[2J\x1b[H\x1bcy\x1bP1;2q\x1b\\\x08\x00\u{9b}z";
        assert_eq!(plain(hostile), "xyz");
        assert_eq!(plain("a\tb"), "a       b");
        assert_eq!(plain("10%\r50%\r100%\r"), "100%");
        assert_eq!(plain("line\r"), "line");
        assert_eq!(plain("unterminated \x1b[31"), "unterminated ");
        // Hostile parameter lists neither panic nor produce colours out of range.
        let line = StyledLine::parse("\x1b[38;2;999;1m\x1b[38;5m\x1b[48;5;70000mq", true);
        assert_eq!(line.text, "q");
    }

    #[test]
    fn printable_replaces_controls() {
        assert_eq!(printable("a\x1b[31mb\nc"), "a\u{fffd}[31mb\u{fffd}c");
    }
}
