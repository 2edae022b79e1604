//! Drawing the state: the process list on top, the output pane below it, a status line
//! and the key footer; the help and the stop-everything question over them.

use std::ops::Range;
use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, HighlightSpacing, Paragraph, Row, Table, TableState,
};

use super::ansi::{StyledLine, printable};
use super::app::{App, Mode};
use super::keys::{FOOTER, HELP};
use super::pane::{Entry, Geometry};
use crate::protocol::{Exit, ProcessState, ProcessStatus, StopReason, Timestamp};

/// The names' colours, in the output module's order (`output/color.rs`): the n-th
/// process of the table gets the n-th colour; red is left for errors.
const PALETTE: [Color; 10] = [
    Color::Cyan,
    Color::Yellow,
    Color::Green,
    Color::Magenta,
    Color::Blue,
    Color::LightYellow,
    Color::LightCyan,
    Color::LightMagenta,
    Color::LightGreen,
    Color::LightBlue,
];

/// Widest NAME column.
const MAX_NAME_COLUMN: usize = 20;

/// Draws everything; records the pane's size in `app` for scrolling.
pub fn draw(frame: &mut Frame, app: &mut App, now: Timestamp) {
    let area = frame.area();
    let footer = footer_lines(area.width, app.color);
    let list_rows = app
        .processes
        .len()
        .clamp(1, usize::from(area.height.saturating_sub(8) / 2).max(3));
    let [list, title, pane, status, keys] = Layout::vertical([
        Constraint::Length(1 + list_rows as u16),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(footer.len() as u16),
    ])
    .areas(area);
    app.pane = (pane.width, pane.height);

    draw_list(frame, app, list, now);
    draw_title(frame, app, title);
    draw_pane(frame, app, pane);
    draw_status(frame, app, status);
    frame.render_widget(Paragraph::new(footer), keys);
    match app.mode {
        Mode::Help => draw_help(frame, area),
        Mode::Searching(ref query) => {
            let x = status.x + 1 + query.chars().count() as u16;
            frame.set_cursor_position((x.min(status.right().saturating_sub(1)), status.y));
        }
        _ => {}
    }
}

/// The colour of the process at `index`, or the supervisor's bold.
fn name_style(index: Option<usize>, color: bool) -> Style {
    match index {
        Some(i) if color => Style::default().fg(PALETTE[i % PALETTE.len()]),
        Some(_) => Style::default(),
        None => Style::default().add_modifier(Modifier::BOLD),
    }
}

fn colored(style: Style, color: bool) -> Style {
    if color {
        style
    } else {
        Style {
            fg: None,
            bg: None,
            ..style
        }
    }
}

fn draw_list(frame: &mut Frame, app: &App, area: Rect, now: Timestamp) {
    let name_width = app
        .processes
        .iter()
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(4, MAX_NAME_COLUMN);
    let right = |text: String| Cell::from(Line::from(text).right_aligned());
    let header = Row::new([
        Cell::from("NAME"),
        Cell::from("STATE"),
        right("PID".into()),
        right("UPTIME".into()),
        right("RESTARTS".into()),
    ])
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows = app.processes.iter().enumerate().map(|(i, p)| {
        let (state, style) = state_cell(p, now);
        let dash = || "-".to_owned();
        Row::new(vec![
            Cell::from(Span::styled(
                printable(&p.name),
                name_style(Some(i), app.color),
            )),
            Cell::from(Span::styled(state, colored(style, app.color))),
            right(p.state.pid().map_or_else(dash, |pid| pid.to_string())),
            right(
                p.state
                    .since()
                    .map_or_else(dash, |since| clock(since.until(now))),
            ),
            right(p.restarts.to_string()),
        ])
    });
    let widths = [
        Constraint::Length(name_width as u16),
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
    if app.processes.is_empty() {
        let empty = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        frame.render_widget(
            Paragraph::new("  (waiting for the server's process table)"),
            empty,
        );
    }
}

/// The STATE cell: the state with what it waits for, why, or how it ended, and its colour.
fn state_cell(process: &ProcessStatus, now: Timestamp) -> (String, Style) {
    let plain = Style::default();
    let green = plain.fg(Color::Green);
    let yellow = plain.fg(Color::Yellow);
    let red = plain.fg(Color::Red);
    let grey = plain.fg(Color::DarkGray);
    match &process.state {
        ProcessState::Dormant => ("dormant".into(), grey),
        ProcessState::Waiting { waiting_for } => (
            match waiting_for {
                Some(what) => format!("waiting for {}", printable(what)),
                None => "waiting".into(),
            },
            yellow,
        ),
        ProcessState::Running { .. } => ("running".into(), green),
        ProcessState::Stopping {
            deadline, reason, ..
        } => {
            let why = match reason {
                StopReason::Requested => "requested",
                StopReason::Restart => "restart",
                StopReason::Watch => "watch",
                StopReason::Shutdown => "shutdown",
                StopReason::Leftovers => "leftovers",
            };
            (
                format!("stopping ({why}), SIGKILL in {}", countdown(now, *deadline)),
                yellow,
            )
        }
        ProcessState::BackingOff {
            until,
            attempt,
            exit,
            waiting_for_output,
        } => {
            let ended = exit.map_or_else(|| "spawn failed".into(), short_exit);
            let when = if *waiting_for_output {
                "once its output is read".to_owned()
            } else {
                format!("in {}", countdown(now, *until))
            };
            (
                format!("backing off ({ended}), restart {attempt} {when}"),
                yellow,
            )
        }
        ProcessState::Exited { exit } => (
            format!("exited ({})", short_exit(*exit)),
            if exit.success() { plain } else { red },
        ),
        ProcessState::Stopped { .. } => ("stopped".into(), grey),
        ProcessState::Failed { reason, .. } => (
            format!("failed: {}", printable(reason)),
            red.add_modifier(Modifier::BOLD),
        ),
    }
}

/// `code 3`, `SIGKILL`.
fn short_exit(exit: Exit) -> String {
    match exit {
        Exit::Code(code) => format!("code {code}"),
        Exit::Signal(signal) => crate::protocol::signal_name(signal),
    }
}

/// Whole seconds left until `at`, rounded up, as a clock.
fn countdown(now: Timestamp, at: Timestamp) -> String {
    let left = now.until(at);
    clock(Duration::from_secs(left.as_millis().div_ceil(1000) as u64))
}

/// `42s`, `3m07s`, `2h05m`, `3d04h`: short enough for a column, to the second.
pub fn clock(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn draw_title(frame: &mut Frame, app: &App, area: Rect) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut spans = vec![Span::raw("─ ")];
    if app.merged {
        spans.push(Span::styled("all processes", bold));
    } else if let Some(p) = app.selected() {
        spans.push(Span::styled(
            printable(&p.name),
            name_style(Some(app.selected), app.color).add_modifier(Modifier::BOLD),
        ));
    }
    let tail = app.tail();
    let lines = tail.map_or(0, |t| t.len());
    let position = match tail.and_then(|t| Some((t, app.viewport.bottom_line(t)?))) {
        Some((tail, bottom)) if !app.viewport.following() => {
            format!(
                " ─ line {} of {lines}, End follows",
                bottom - tail.first() + 1
            )
        }
        _ if lines == 1 => " ─ following, 1 line".into(),
        _ => format!(" ─ following, {lines} lines"),
    };
    spans.push(Span::raw(position));
    if let Some(search) = &app.search {
        spans.push(Span::raw(format!(" ─ /{}", printable(&search.query))));
    }
    spans.push(Span::raw(" "));
    let used: usize = spans.iter().map(Span::width).sum();
    spans.push(Span::raw(
        "─".repeat(usize::from(area.width).saturating_sub(used)),
    ));
    let style = colored(Style::default().fg(Color::DarkGray), app.color);
    frame.render_widget(Paragraph::new(Line::from(spans)).style(style), area);
}

fn draw_pane(frame: &mut Frame, app: &App, area: Rect) {
    let Some(tail) = app.tail() else {
        let text = match app.selected() {
            Some(p) if !app.merged => format!("no output from {} yet", printable(&p.name)),
            _ => "no output yet".into(),
        };
        frame.render_widget(
            Paragraph::new(text).style(colored(Style::default().fg(Color::DarkGray), app.color)),
            area,
        );
        return;
    };
    let geometry = app.geometry();
    let visible = app
        .viewport
        .visible(tail, geometry, usize::from(area.height));
    let mut rows: Vec<Line> = Vec::new();
    for &(seq, _) in &visible.lines {
        if let Some(entry) = tail.get(seq) {
            rows.extend(line_rows(app, entry, geometry, seq));
        }
    }
    let rows: Vec<Line> = rows.into_iter().skip(visible.skip).collect();
    frame.render_widget(Paragraph::new(rows), area);
}

/// The rows one output line takes: its name prefix in the merged view, its own styles,
/// search matches highlighted.
fn line_rows<'a>(app: &App, entry: &Entry, geometry: Geometry, seq: u64) -> Vec<Line<'a>> {
    let styled = StyledLine::parse(&entry.raw, app.color);
    let matches: Vec<Range<usize>> = app
        .search
        .as_ref()
        .map(|s| s.matches(&styled.text))
        .unwrap_or_default();
    let current = app.search.as_ref().and_then(|s| s.current) == Some(seq);
    let highlight = if app.color {
        Style::default().fg(Color::Black).bg(if current {
            Color::LightYellow
        } else {
            Color::Yellow
        })
    } else {
        Style::default().add_modifier(Modifier::REVERSED)
    };
    let starts = geometry.row_starts(&styled.text);
    let mut rows = Vec::with_capacity(starts.len());
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(styled.text.len());
        let mut spans = Vec::new();
        if geometry.prefix > 0 {
            if i == 0 {
                let width = geometry.prefix - 3;
                let name: String = printable(&entry.name).chars().take(width).collect();
                let index = app.color_index(&entry.name);
                spans.push(Span::styled(
                    format!("{name:>width$} | "),
                    name_style(index, app.color),
                ));
            } else {
                spans.push(Span::raw(" ".repeat(geometry.indent())));
            }
        }
        let mut run = String::new();
        let mut run_style = None;
        for (at, c) in styled.text[start..end].char_indices() {
            let at = start + at;
            let mut style = styled.style_at(at);
            if matches.iter().any(|m| m.contains(&at)) {
                style = style.patch(highlight);
            }
            if run_style != Some(style) && !run.is_empty() {
                spans.push(Span::styled(
                    std::mem::take(&mut run),
                    run_style.unwrap_or_default(),
                ));
            }
            run_style = Some(style);
            run.push(c);
        }
        if !run.is_empty() {
            spans.push(Span::styled(run, run_style.unwrap_or_default()));
        }
        rows.push(Line::from(spans));
    }
    rows
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.mode {
        Mode::Searching(query) => Line::from(format!("/{}", printable(query))),
        Mode::ConfirmShutdown => Line::styled(
            "Stop the whole stack (every process and the server)? y/n",
            colored(
                Style::default()
                    .fg(Color::White)
                    .bg(Color::Red)
                    .add_modifier(Modifier::BOLD),
                app.color,
            )
            .add_modifier(if app.color {
                Modifier::empty()
            } else {
                Modifier::REVERSED
            }),
        ),
        _ => match &app.notice {
            Some(notice) => Line::styled(
                printable(&notice.text),
                if notice.error {
                    colored(Style::default().fg(Color::Red), app.color).add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                },
            ),
            None => Line::styled(
                match app.server_pid {
                    Some(pid) => format!("server pid {pid} · {}", printable(&app.config)),
                    None => format!("connecting to the server of {}", printable(&app.config)),
                },
                colored(Style::default().fg(Color::DarkGray), app.color),
            ),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The footer's key list packed into as few rows as `width` allows.
fn footer_lines(width: u16, color: bool) -> Vec<Line<'static>> {
    let key_style = if color {
        Style::default().fg(Color::Black).bg(Color::Cyan)
    } else {
        Style::default().add_modifier(Modifier::REVERSED)
    };
    let mut lines = vec![Line::default()];
    let mut used = 0;
    for (key, what) in FOOTER {
        let item = key.chars().count() + 1 + what.chars().count();
        let gap = usize::from(used > 0);
        if used > 0 && used + gap + item > usize::from(width) {
            lines.push(Line::default());
            used = 0;
        }
        let line = lines.last_mut().expect("one line at least");
        if used > 0 {
            line.push_span(Span::raw(" "));
            used += 1;
        }
        line.push_span(Span::styled(*key, key_style));
        line.push_span(Span::raw(format!(" {what}")));
        used += item;
    }
    lines
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.saturating_sub(4).min(72);
    let height = (HELP.len() as u16 + 3).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let key_width = HELP
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{keys:<key_width$}  "),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from("any key closes this help"));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::client::tui::connection::{FromServer, LogLine};
    use crate::protocol::{ProcessName, Reply};

    fn screen(app: &mut App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|frame| draw(frame, app, Timestamp(100_000)))
            .unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn row(name: &str, state: ProcessState) -> crate::protocol::ProcessStatus {
        crate::protocol::ProcessStatus {
            name: ProcessName::new(name).unwrap(),
            state,
            restarts: 2,
            group: None,
        }
    }

    #[test]
    fn every_state_reads_in_an_80_by_24_screen() {
        let mut app = App::new("/p/procman.yaml".into(), false);
        app.on_server(FromServer::Reply(Reply::Status {
            pid: 7,
            config: "/p/procman.yaml".into(),
            processes: vec![
                row(
                    "web",
                    ProcessState::Running {
                        pid: 42,
                        since: Timestamp(100_000 - 65_000),
                    },
                ),
                row(
                    "db",
                    ProcessState::Waiting {
                        waiting_for: Some("tcp 127.0.0.1:5432".into()),
                    },
                ),
                row(
                    "flaky",
                    ProcessState::BackingOff {
                        until: Timestamp(100_000 + 2_500),
                        attempt: 3,
                        exit: Some(Exit::Code(1)),
                        waiting_for_output: false,
                    },
                ),
                row(
                    "job",
                    ProcessState::Exited {
                        exit: Exit::Code(0),
                    },
                ),
                row("old", ProcessState::Stopped { exit: None }),
                row(
                    "bad",
                    ProcessState::Failed {
                        exit: None,
                        reason: "bad could not\x1b[2J be started".into(),
                    },
                ),
                row(
                    "slow",
                    ProcessState::Stopping {
                        pid: 43,
                        since: Timestamp(0),
                        deadline: Timestamp(101_000),
                        reason: StopReason::Restart,
                        exit: None,
                    },
                ),
                row("later", ProcessState::Dormant),
            ],
        }));
        app.on_server(FromServer::Logs(vec![LogLine {
            name: "web".into(),
            seq: Some(1),
            time: Timestamp(1),
            line: "\x1b[32mGET / 200\x1b[0m".into(),
        }]));
        let text = screen(&mut app, 80, 24);
        for expected in [
            "web   running",
            "42    1m05s        2",
            "waiting for tcp 127.0.0.1:5432",
            "backing off (code 1), restart 3 in 3s",
            "exited (code 0)",
            "stopped",
            "failed: bad could not\u{fffd}[2J be started",
            "stopping (restart), SIGKILL in 1s",
            "dormant",
            "GET / 200",
            "server pid 7 · /p/procman.yaml",
            "q quit",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in\n{text}");
        }
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn the_footer_fits_80_columns_in_two_rows_and_help_fits() {
        let lines = footer_lines(80, false);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.width() <= 80));
        assert_eq!(footer_lines(200, true).len(), 1);
        let mut app = App::new("c".into(), true);
        app.mode = Mode::Help;
        let text = screen(&mut app, 80, 24);
        assert!(text.contains("stop the whole stack (asks y/n)"), "{text}");
    }

    #[test]
    fn merged_lines_carry_prefixes_and_wrap_under_them() {
        let mut app = App::new("c".into(), false);
        app.on_server(FromServer::Reply(Reply::Status {
            pid: 7,
            config: "c".into(),
            processes: vec![row("web", ProcessState::Stopped { exit: None })],
        }));
        app.on_server(FromServer::Logs(vec![
            LogLine {
                name: "web".into(),
                seq: Some(2),
                time: Timestamp(1),
                line: "x".repeat(100),
            },
            LogLine {
                name: "procman".into(),
                seq: Some(3),
                time: Timestamp(2),
                line: "web [42] exited with code 0".into(),
            },
        ]));
        app.merged = true;
        let text = screen(&mut app, 60, 16);
        let prefix = format!("    web | {}", "x".repeat(50));
        assert!(text.contains(&prefix), "{text}");
        assert!(
            text.contains(&format!("\n          {}\n", "x".repeat(50))),
            "{text}"
        );
        assert!(
            text.contains("procman | web [42] exited with code 0"),
            "{text}"
        );
    }

    #[test]
    fn tiny_terminals_draw_without_panicking() {
        let mut app = App::new("c".into(), true);
        app.on_server(FromServer::Reply(Reply::Status {
            pid: 7,
            config: "c".into(),
            processes: vec![row("web", ProcessState::Dormant)],
        }));
        app.on_server(FromServer::Logs(vec![LogLine {
            name: "web".into(),
            seq: Some(4),
            time: Timestamp(1),
            line: "界".repeat(50),
        }]));
        for mode in [Mode::Normal, Mode::Help, Mode::Searching("x".into())] {
            for merged in [false, true] {
                app.mode = mode.clone();
                app.merged = merged;
                for (w, h) in [(1, 1), (2, 3), (10, 3), (20, 5), (40, 8)] {
                    screen(&mut app, w, h);
                }
            }
        }
    }

    #[test]
    fn clocks() {
        assert_eq!(clock(Duration::from_secs(5)), "5s");
        assert_eq!(clock(Duration::from_secs(187)), "3m07s");
        assert_eq!(clock(Duration::from_secs(7500)), "2h05m");
        assert_eq!(clock(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d04h");
        assert_eq!(countdown(Timestamp(0), Timestamp(1)), "1s");
        assert_eq!(countdown(Timestamp(5), Timestamp(1)), "0s");
    }
}
