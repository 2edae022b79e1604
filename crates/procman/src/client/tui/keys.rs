//! Keys and the mouse: what each one means in each mode, and the key list the footer and
//! the help show (one table, so they cannot disagree with the handling).

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind};

use super::app::Mode;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Leave the view; the stack keeps running.
    Quit,
    /// Ask to stop the whole stack (then `y` confirms).
    AskShutdown,
    /// Confirm the stop of the whole stack.
    Shutdown,
    /// Restart the selected process.
    Restart,
    /// Stop the selected process.
    Stop,
    /// Start the selected process if it is stopped or dormant.
    Start,
    /// Switch between the selected process's output and everyone's.
    ToggleMerged,
    /// Show or hide the key help.
    ToggleHelp,
    /// Select the process `n` rows down (negative: up).
    Select(i32),
    /// Scroll the pane by pages (negative: back).
    Page(i32),
    /// Scroll the pane by lines (negative: back).
    Scroll(i32),
    /// Back to the oldest kept line.
    Oldest,
    /// Follow new lines again.
    Follow,
    /// Start typing a search.
    BeginSearch,
    /// A character of the search being typed.
    SearchChar(char),
    /// Delete the last character of the search being typed.
    SearchBackspace,
    /// Search for what was typed.
    SearchSubmit,
    /// The next older match.
    NextMatch,
    /// The next newer match.
    PreviousMatch,
    /// Close what is open (search prompt, help, confirmation) or clear the search.
    Cancel,
    /// Redraw (the terminal was resized).
    Redraw,
}

/// The keys the footer shows, in order: (key, what it does).
pub const FOOTER: &[(&str, &str)] = &[
    ("↑↓", "select"),
    ("⏎", "start"),
    ("r", "restart"),
    ("s", "stop"),
    ("m", "merged"),
    ("/", "search"),
    ("n/N", "next"),
    ("PgUp/PgDn", "scroll"),
    ("?", "help"),
    ("q", "quit"),
    ("Q", "stop all"),
];

/// Every key, for the help: (keys, what they do).
pub const HELP: &[(&str, &str)] = &[
    ("↑ ↓  k j", "select a process"),
    (
        "Enter",
        "start the selected process (stopped, dormant, exited, failed)",
    ),
    ("r", "restart the selected process"),
    ("s", "stop the selected process"),
    ("m  Tab", "switch between its output and everyone's"),
    ("PgUp PgDn  wheel", "scroll the output"),
    ("Home  g", "oldest kept line"),
    ("End  G  f", "follow new lines"),
    ("/", "search the output (Enter: go, Esc: cancel)"),
    ("n  N", "older / newer match"),
    ("Esc", "clear the search or message"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit the view (the stack keeps running)"),
    ("Q", "stop the whole stack (asks y/n)"),
];

/// What `event` means in `mode`, if anything.
pub fn command(event: &Event, mode: &Mode) -> Option<Command> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => key_command(key, mode),
        Event::Mouse(mouse) => match mouse.kind {
            MouseEventKind::ScrollUp => Some(Command::Scroll(-3)),
            MouseEventKind::ScrollDown => Some(Command::Scroll(3)),
            _ => None,
        },
        Event::Resize(..) => Some(Command::Redraw),
        _ => None,
    }
}

fn key_command(key: &KeyEvent, mode: &Mode) -> Option<Command> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(Command::Quit);
    }
    match mode {
        Mode::Searching(_) => match key.code {
            KeyCode::Enter => Some(Command::SearchSubmit),
            KeyCode::Esc => Some(Command::Cancel),
            KeyCode::Backspace => Some(Command::SearchBackspace),
            KeyCode::Char(c) if !ctrl => Some(Command::SearchChar(c)),
            _ => None,
        },
        Mode::ConfirmShutdown => match key.code {
            KeyCode::Char('y' | 'Y') => Some(Command::Shutdown),
            _ => Some(Command::Cancel),
        },
        Mode::Help => match key.code {
            KeyCode::Char('q') => Some(Command::Quit),
            _ => Some(Command::ToggleHelp),
        },
        Mode::Normal => match key.code {
            KeyCode::Char('q') => Some(Command::Quit),
            KeyCode::Char('Q') => Some(Command::AskShutdown),
            KeyCode::Char('r') => Some(Command::Restart),
            KeyCode::Char('s') => Some(Command::Stop),
            KeyCode::Enter => Some(Command::Start),
            KeyCode::Char('m') | KeyCode::Tab | KeyCode::BackTab => Some(Command::ToggleMerged),
            KeyCode::Char('?') | KeyCode::F(1) => Some(Command::ToggleHelp),
            KeyCode::Up | KeyCode::Char('k') => Some(Command::Select(-1)),
            KeyCode::Down | KeyCode::Char('j') => Some(Command::Select(1)),
            KeyCode::PageUp => Some(Command::Page(-1)),
            KeyCode::PageDown | KeyCode::Char(' ') => Some(Command::Page(1)),
            KeyCode::Home | KeyCode::Char('g') => Some(Command::Oldest),
            KeyCode::End | KeyCode::Char('G' | 'f') => Some(Command::Follow),
            KeyCode::Char('/') => Some(Command::BeginSearch),
            KeyCode::Char('n') => Some(Command::NextMatch),
            KeyCode::Char('N') => Some(Command::PreviousMatch),
            KeyCode::Esc => Some(Command::Cancel),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn keys_mean_different_things_per_mode() {
        let q = key(KeyCode::Char('q'));
        assert_eq!(command(&q, &Mode::Normal), Some(Command::Quit));
        assert_eq!(
            command(&q, &Mode::Searching(String::new())),
            Some(Command::SearchChar('q'))
        );
        assert_eq!(
            command(&key(KeyCode::Char('y')), &Mode::ConfirmShutdown),
            Some(Command::Shutdown)
        );
        assert_eq!(
            command(&key(KeyCode::Char('x')), &Mode::ConfirmShutdown),
            Some(Command::Cancel)
        );
        let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(
            command(&ctrl_c, &Mode::Searching("a".into())),
            Some(Command::Quit)
        );
        assert_eq!(command(&key(KeyCode::Char('z')), &Mode::Normal), None);
    }

    #[test]
    fn every_footer_key_is_handled_in_normal_mode() {
        let codes = [
            KeyCode::Up,
            KeyCode::Enter,
            KeyCode::Char('r'),
            KeyCode::Char('s'),
            KeyCode::Char('m'),
            KeyCode::Char('/'),
            KeyCode::Char('n'),
            KeyCode::PageUp,
            KeyCode::Char('?'),
            KeyCode::Char('q'),
            KeyCode::Char('Q'),
        ];
        assert_eq!(codes.len(), FOOTER.len());
        for code in codes {
            assert!(command(&key(code), &Mode::Normal).is_some(), "{code:?}");
        }
    }
}
