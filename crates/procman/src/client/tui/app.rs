//! The TUI's state and how each server message and each command changes it. No terminal
//! here: plain data that `render` draws and unit tests drive.

use std::collections::VecDeque;

use super::connection::{FromServer, LogLine};
use super::keys::Command;
use super::pane::{Geometry, Logs, MERGED_BYTES, MERGED_LINES, Search, Tail, Viewport};
use crate::control::ClientError;
use crate::protocol::{Message, ProcessState, ProcessStatus, Reply, SUPERVISOR_NAME, Timestamp};

/// Widest name prefix of the merged view.
const MAX_PREFIX_NAME: usize = 16;

/// What keys mean at the moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// The list and the pane.
    Normal,
    /// Typing a search (the text so far).
    Searching(String),
    /// The key help is open.
    Help,
    /// `Q` was pressed: `y` stops the whole stack.
    ConfirmShutdown,
}

/// A message in the status line.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// One line.
    pub text: String,
    /// Whether it reports a failure.
    pub error: bool,
}

/// What the state asks the event loop to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send `message` to the server; `doing` says what for, until its answer arrives.
    Request {
        /// The request.
        message: Message,
        /// `restarting web`, for the status line.
        doing: String,
    },
    /// Leave the view.
    Quit,
}

/// Everything the TUI shows.
pub struct App {
    /// The config the server runs, as the server names it.
    pub config: String,
    /// The server's pid, once known.
    pub server_pid: Option<u32>,
    /// The process table in the server's order.
    pub processes: Vec<ProcessStatus>,
    /// Row of the selected process.
    pub selected: usize,
    /// Whether the pane shows everyone's output.
    pub merged: bool,
    /// Every process's output.
    pub logs: Logs,
    /// Where the pane's view stands.
    pub viewport: Viewport,
    /// The search, once one was submitted.
    pub search: Option<Search>,
    /// What keys mean now.
    pub mode: Mode,
    /// The status line's message.
    pub notice: Option<Notice>,
    /// Whether to use colours (`NO_COLOR` unset).
    pub color: bool,
    /// The pane's size as last drawn: (columns, rows).
    pub pane: (u16, u16),
    /// Whether this view asked the whole stack to stop.
    pub stopping_stack: bool,
    /// Lines streamed before the kept tail arrived, to splice after it (bounded).
    early: Option<VecDeque<LogLine>>,
    early_bytes: usize,
    /// The `seq` of the newest line in the pane, when the server numbers its lines.
    newest_seq: Option<u64>,
}

impl App {
    /// An empty view of the server for `config`.
    pub fn new(config: String, color: bool) -> App {
        App {
            config,
            server_pid: None,
            processes: Vec::new(),
            selected: 0,
            merged: false,
            logs: Logs::default(),
            viewport: Viewport::default(),
            search: None,
            mode: Mode::Normal,
            notice: None,
            color,
            pane: (80, 10),
            stopping_stack: false,
            early: Some(VecDeque::new()),
            early_bytes: 0,
            newest_seq: None,
        }
    }

    /// The selected process's row.
    pub fn selected(&self) -> Option<&ProcessStatus> {
        self.processes.get(self.selected)
    }

    /// The tail on view: the selected process's, or the merged one.
    pub fn tail(&self) -> Option<&Tail> {
        if self.merged {
            self.logs.tail(None)
        } else {
            self.logs.tail(Some(self.selected()?.name.as_str()))
        }
    }

    /// Columns of the widest name in the merged view's prefixes.
    pub fn name_width(&self) -> usize {
        self.processes
            .iter()
            .map(|p| p.name.chars().count())
            .chain([SUPERVISOR_NAME.len()])
            .max()
            .unwrap_or(0)
            .min(MAX_PREFIX_NAME)
    }

    /// How lines wrap in the pane as it is now.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            width: usize::from(self.pane.0),
            prefix: if self.merged {
                self.name_width() + 3
            } else {
                0
            },
        }
    }

    /// The palette position of `name`: its row (the output module colours names in the
    /// order they are registered, which is the table's order).
    pub fn color_index(&self, name: &str) -> Option<usize> {
        self.processes.iter().position(|p| p.name == name)
    }

    /// Whether something on screen counts time (uptime, a countdown), so it needs a tick.
    pub fn counting(&self) -> bool {
        self.processes.iter().any(|p| {
            matches!(
                p.state,
                ProcessState::Running { .. }
                    | ProcessState::Stopping { .. }
                    | ProcessState::BackingOff { .. }
            )
        })
    }

    /// Takes in what the server sent.
    pub fn on_server(&mut self, message: FromServer) {
        match message {
            FromServer::Reply(Reply::Status {
                pid,
                config,
                processes,
            }) => {
                let selected = self.selected().map(|p| p.name.clone());
                self.server_pid = Some(pid);
                self.config = config;
                self.processes = processes;
                self.selected = selected
                    .and_then(|name| self.processes.iter().position(|p| p.name == name))
                    .unwrap_or(0);
            }
            FromServer::Reply(Reply::Event { process }) => {
                match self.processes.iter_mut().find(|p| p.name == process.name) {
                    Some(row) => *row = process,
                    None => self.processes.push(process),
                }
            }
            FromServer::Reply(Reply::Error { message }) => self.tell(message, true),
            FromServer::Reply(Reply::LogGap { missed }) => {
                // Where the lines are missing, in the pane itself.
                self.on_server(FromServer::Log(LogLine {
                    name: SUPERVISOR_NAME.into(),
                    seq: None,
                    time: Timestamp::now(),
                    line: format!("… {missed} output lines skipped: this view fell behind"),
                }));
            }
            FromServer::Reply(_) => {}
            FromServer::Log(line) => match &mut self.early {
                Some(early) => {
                    self.early_bytes += line.line.len();
                    early.push_back(line);
                    while early.len() > MERGED_LINES || self.early_bytes > MERGED_BYTES {
                        let Some(old) = early.pop_front() else { break };
                        self.early_bytes -= old.line.len();
                    }
                }
                None => self.show(line),
            },
            FromServer::Logs(kept) => self.splice(kept),
        }
    }

    /// Fills the pane with the server's kept tail, then the lines streamed meanwhile,
    /// each line once: after a new subscription the tail repeats what the pane has, and
    /// it may end with the first of the streamed lines.
    fn splice(&mut self, kept: Vec<LogLine>) {
        let early: Vec<LogLine> = self.early.take().unwrap_or_default().into();
        self.early_bytes = 0;
        if kept.iter().all(|line| line.seq.is_some()) {
            // Numbered lines: each is shown once, in the server's order.
            for line in kept.into_iter().chain(early) {
                if line.seq.is_none() || line.seq > self.newest_seq {
                    self.show(line);
                }
            }
            return;
        }
        // A server from before `seq`: lines are matched by content.
        let shown = self.logs.newest().and_then(|newest| {
            kept.iter().rposition(|line| {
                line.time == newest.time && line.name == *newest.name && line.line == newest.raw
            })
        });
        let kept = &kept[shown.map_or(0, |i| i + 1)..];
        let overlap = (0..kept.len())
            .find(|&start| {
                let rest = &kept[start..];
                rest.len() <= early.len() && early[..rest.len()] == *rest
            })
            .unwrap_or(kept.len());
        for line in kept[..overlap].iter().cloned().chain(early) {
            self.show(line);
        }
    }

    /// Adds a line to the pane.
    fn show(&mut self, line: LogLine) {
        self.newest_seq = self.newest_seq.max(line.seq);
        self.logs.push(&line.name, line.time, line.line);
    }

    /// Starts buffering streamed lines until the kept tail arrives (a new subscription).
    pub fn await_tail(&mut self) {
        self.early.get_or_insert_with(VecDeque::new);
    }

    /// Shows the answer to a request made for `doing`.
    pub fn on_answer(&mut self, doing: &str, answer: Result<Reply, ClientError>) {
        match answer {
            Ok(Reply::Ok { message }) => self.tell(message, false),
            Ok(Reply::Started { process }) => {
                let text = match process.state.pid() {
                    Some(pid) => format!("started {} (pid {pid})", process.name),
                    None => format!("{} is {}", process.name, process.state.label()),
                };
                self.tell(text, false);
            }
            Ok(Reply::Error { message }) => self.tell(message, true),
            Ok(other) => self.tell(format!("{doing}: unexpected reply {other:?}"), true),
            Err(e) => self.tell(format!("{doing}: {e}"), true),
        }
    }

    /// Shows `text` in the status line.
    pub fn tell(&mut self, text: impl Into<String>, error: bool) {
        self.notice = Some(Notice {
            text: text.into(),
            error,
        });
    }

    /// Carries out `command`; returns what the event loop must do for it.
    pub fn on_command(&mut self, command: Command) -> Option<Action> {
        let height = usize::from(self.pane.1);
        let geometry = self.geometry();
        match command {
            Command::Quit => return Some(Action::Quit),
            Command::AskShutdown => self.mode = Mode::ConfirmShutdown,
            Command::Shutdown => {
                self.mode = Mode::Normal;
                self.stopping_stack = true;
                return Some(Action::Request {
                    message: Message::Shutdown {
                        user: std::env::var("USER").ok(),
                        message: Some("stopped from procman tui".into()),
                    },
                    doing: "stopping the whole stack".into(),
                });
            }
            Command::Restart => return self.process_request(Verb::Restart),
            Command::Stop => return self.process_request(Verb::Stop),
            Command::Start => return self.process_request(Verb::Start),
            Command::ToggleMerged => {
                self.merged = !self.merged;
                self.reset_view();
            }
            Command::ToggleHelp => {
                self.mode = match self.mode {
                    Mode::Help => Mode::Normal,
                    _ => Mode::Help,
                }
            }
            Command::Select(delta) => {
                let last = self.processes.len().saturating_sub(1);
                let target = self
                    .selected
                    .saturating_add_signed(delta as isize)
                    .min(last);
                if target != self.selected {
                    self.selected = target;
                    if !self.merged {
                        self.reset_view();
                    }
                }
            }
            Command::Page(pages) => {
                let mut viewport = self.viewport;
                if let Some(tail) = self.tail() {
                    for _ in 0..pages.unsigned_abs() {
                        if pages < 0 {
                            viewport.page_up(tail, geometry, height);
                        } else {
                            viewport.page_down(tail, geometry, height);
                        }
                    }
                }
                self.viewport = viewport;
            }
            Command::Scroll(lines) => {
                let mut viewport = self.viewport;
                if let Some(tail) = self.tail() {
                    viewport.scroll(tail, i64::from(lines));
                }
                self.viewport = viewport;
            }
            Command::Oldest => {
                let mut viewport = self.viewport;
                if let Some(tail) = self.tail() {
                    viewport.oldest(tail);
                }
                self.viewport = viewport;
            }
            Command::Follow => self.viewport = Viewport::default(),
            Command::BeginSearch => self.mode = Mode::Searching(String::new()),
            Command::SearchChar(c) => {
                if let Mode::Searching(query) = &mut self.mode {
                    query.push(c);
                }
            }
            Command::SearchBackspace => {
                if let Mode::Searching(query) = &mut self.mode {
                    query.pop();
                }
            }
            Command::SearchSubmit => {
                let Mode::Searching(query) = std::mem::replace(&mut self.mode, Mode::Normal) else {
                    return None;
                };
                self.search = Search::new(&query);
                if self.search.is_some() {
                    let from = self
                        .tail()
                        .and_then(|tail| self.viewport.bottom_line(tail))
                        .unwrap_or(0);
                    self.jump(from, true);
                }
            }
            Command::NextMatch => self.next_match(true),
            Command::PreviousMatch => self.next_match(false),
            Command::Cancel => {
                if self.mode == Mode::Normal {
                    self.search = None;
                    self.notice = None;
                }
                self.mode = Mode::Normal;
            }
            Command::Redraw => {}
        }
        None
    }

    fn reset_view(&mut self) {
        self.viewport = Viewport::default();
        if let Some(search) = &mut self.search {
            search.current = None;
        }
    }

    fn next_match(&mut self, older: bool) {
        let Some(current) = self.search.as_ref().map(|s| s.current) else {
            self.tell("no search: type / to search", true);
            return;
        };
        let from = match (current, older) {
            (Some(seq), true) => match seq.checked_sub(1) {
                Some(seq) => seq,
                None => return self.tell("no older match", true),
            },
            (Some(seq), false) => seq + 1,
            (None, _) => match self.tail().and_then(|t| self.viewport.bottom_line(t)) {
                Some(bottom) => bottom,
                None => return self.tell("no output to search", true),
            },
        };
        self.jump(from, older);
    }

    /// Moves the view to the nearest match from `from`, and says where it is.
    fn jump(&mut self, from: u64, older: bool) {
        let (Some(search), Some(tail)) = (&self.search, self.tail()) else {
            return self.tell("no output to search", true);
        };
        let found = search.find(tail, from, older);
        let query = search.query.clone();
        match found {
            Some(seq) => {
                let count = search.count(tail);
                let last = tail.end() - 1;
                self.viewport.bottom = (seq < last).then_some(seq);
                if let Some(search) = &mut self.search {
                    search.current = Some(seq);
                }
                let lines = if count == 1 { "line" } else { "lines" };
                self.tell(format!("{query:?}: {count} matching {lines}"), false);
            }
            None if self.search.as_ref().is_some_and(|s| s.current.is_some()) => {
                let which = if older { "older" } else { "newer" };
                self.tell(format!("{query:?}: no {which} match"), true);
            }
            None => self.tell(format!("{query:?}: no match"), true),
        }
    }

    fn process_request(&mut self, verb: Verb) -> Option<Action> {
        let Some(process) = self.selected() else {
            self.tell("no process selected", true);
            return None;
        };
        let name = process.name.to_string();
        let state = &process.state;
        let busy = matches!(
            state,
            ProcessState::Waiting { .. }
                | ProcessState::Running { .. }
                | ProcessState::Stopping { .. }
                | ProcessState::BackingOff { .. }
        );
        let (message, doing) = match verb {
            Verb::Restart => (
                Message::RestartProcess { name: name.clone() },
                format!("restarting {name}"),
            ),
            Verb::Stop if !busy => {
                self.tell(
                    format!("{name} is {}: nothing to stop", state.label()),
                    true,
                );
                return None;
            }
            Verb::Stop => (
                Message::StopProcess { name: name.clone() },
                format!("stopping {name}"),
            ),
            Verb::Start if busy => {
                self.tell(format!("{name} is {}: r restarts it", state.label()), true);
                return None;
            }
            // A process that is not busy starts again through `restart_process`: a `run`
            // with its name would add a new process for one added at runtime.
            Verb::Start => (
                Message::RestartProcess { name: name.clone() },
                format!("starting {name}"),
            ),
        };
        self.tell(format!("{doing}…"), false);
        Some(Action::Request { message, doing })
    }
}

#[derive(Clone, Copy)]
enum Verb {
    Restart,
    Stop,
    Start,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Exit, ProcessName, Timestamp};

    fn row(name: &str, state: ProcessState) -> ProcessStatus {
        ProcessStatus {
            name: ProcessName::new(name).unwrap(),
            state,
            restarts: 0,
            group: None,
        }
    }

    fn running(pid: u32) -> ProcessState {
        ProcessState::Running {
            pid,
            since: Timestamp(1),
        }
    }

    fn app() -> App {
        let mut app = App::new("procman.yaml".into(), true);
        app.on_server(FromServer::Reply(Reply::Status {
            pid: 1,
            config: "/x/procman.yaml".into(),
            processes: vec![
                row("web", running(10)),
                row("db", ProcessState::Stopped { exit: None }),
            ],
        }));
        app
    }

    /// A line numbered by its time, as a server numbers its lines.
    fn log(name: &str, time: u64, line: &str) -> LogLine {
        LogLine {
            name: name.into(),
            seq: Some(time),
            time: Timestamp(time),
            line: line.into(),
        }
    }

    fn lines(app: &App, name: Option<&str>) -> Vec<String> {
        let tail = app.logs.tail(name).unwrap();
        (tail.first()..tail.end())
            .map(|s| tail.get(s).unwrap().raw.clone())
            .collect()
    }

    #[test]
    fn events_update_rows_and_keep_the_selection() {
        let mut app = app();
        assert_eq!(app.config, "/x/procman.yaml");
        app.on_command(Command::Select(1));
        assert_eq!(app.selected().unwrap().name, "db");
        app.on_server(FromServer::Reply(Reply::Event {
            process: row("db", running(11)),
        }));
        app.on_server(FromServer::Reply(Reply::Event {
            process: row("extra", running(12)),
        }));
        assert_eq!(app.processes.len(), 3);
        assert_eq!(app.selected().unwrap().state.pid(), Some(11));
        // A fresh snapshot in another order keeps the same process selected.
        let mut rows = app.processes.clone();
        rows.reverse();
        app.on_server(FromServer::Reply(Reply::Status {
            pid: 1,
            config: "c".into(),
            processes: rows,
        }));
        assert_eq!(app.selected().unwrap().name, "db");
        assert!(app.counting());
    }

    #[test]
    fn keys_become_requests_only_where_they_make_sense() {
        let mut app = app();
        let Some(Action::Request { message, .. }) = app.on_command(Command::Restart) else {
            panic!()
        };
        assert_eq!(message, Message::RestartProcess { name: "web".into() });
        assert_eq!(app.on_command(Command::Start), None);
        assert!(app.notice.as_ref().unwrap().text.contains("r restarts it"));
        app.on_command(Command::Select(1));
        assert_eq!(app.on_command(Command::Stop), None);
        assert!(app.notice.as_ref().unwrap().error);
        let Some(Action::Request { message, .. }) = app.on_command(Command::Start) else {
            panic!()
        };
        assert_eq!(message, Message::RestartProcess { name: "db".into() });
        app.on_command(Command::AskShutdown);
        assert_eq!(app.mode, Mode::ConfirmShutdown);
        app.on_command(Command::Cancel);
        assert_eq!(app.mode, Mode::Normal);
        assert!(!app.stopping_stack);
        app.on_command(Command::AskShutdown);
        let Some(Action::Request {
            message: Message::Shutdown { .. },
            ..
        }) = app.on_command(Command::Shutdown)
        else {
            panic!()
        };
        assert!(app.stopping_stack);
        assert_eq!(app.on_command(Command::Quit), Some(Action::Quit));
    }

    #[test]
    fn answers_go_to_the_status_line() {
        let mut app = app();
        app.on_answer(
            "restarting web",
            Ok(Reply::Started {
                process: row("web", running(99)),
            }),
        );
        assert_eq!(app.notice.as_ref().unwrap().text, "started web (pid 99)");
        app.on_answer(
            "stopping web",
            Ok(Reply::Error {
                message: "no process named \"web\"".into(),
            }),
        );
        assert!(app.notice.as_ref().unwrap().error);
        app.on_command(Command::Cancel);
        assert_eq!(app.notice, None);
    }

    #[test]
    fn the_kept_tail_and_the_stream_are_spliced_without_duplicates() {
        the_kept_tail_and_the_stream_are_spliced(log);
        // A server from before `seq`: the same result by comparing lines.
        the_kept_tail_and_the_stream_are_spliced(|name, time, line| LogLine {
            seq: None,
            ..log(name, time, line)
        });
    }

    #[test]
    fn numbered_lines_are_spliced_even_when_they_repeat() {
        let mut app = app();
        let x = |seq| LogLine {
            seq: Some(seq),
            ..log("web", 1, "x")
        };
        app.on_server(FromServer::Logs(vec![x(1)]));
        app.await_tail();
        app.on_server(FromServer::Log(x(3)));
        app.on_server(FromServer::Logs(vec![x(1), x(2), x(3)]));
        app.on_server(FromServer::Log(x(4)));
        assert_eq!(lines(&app, None), ["x", "x", "x", "x"]);
    }

    fn the_kept_tail_and_the_stream_are_spliced(log: fn(&str, u64, &str) -> LogLine) {
        let mut app = app();
        app.on_server(FromServer::Log(log("web", 3, "c")));
        app.on_server(FromServer::Log(log("web", 4, "d")));
        app.on_server(FromServer::Logs(vec![
            log("web", 1, "a"),
            log("web", 2, "b"),
            log("web", 3, "c"),
        ]));
        app.on_server(FromServer::Log(log("db", 5, "e")));
        assert_eq!(lines(&app, Some("web")), ["a", "b", "c", "d"]);
        assert_eq!(lines(&app, None), ["a", "b", "c", "d", "e"]);

        // A new subscription's tail repeats what is shown: only the rest is added.
        app.await_tail();
        app.on_server(FromServer::Log(log("web", 7, "g")));
        app.on_server(FromServer::Logs(vec![
            log("web", 4, "d"),
            log("db", 5, "e"),
            log("web", 6, "f"),
            log("web", 7, "g"),
        ]));
        assert_eq!(lines(&app, None), ["a", "b", "c", "d", "e", "f", "g"]);

        // Without an overlap, nothing is dropped.
        let mut app = App::new("c".into(), false);
        app.on_server(FromServer::Log(log("web", 9, "z")));
        app.on_server(FromServer::Logs(vec![log("web", 1, "a")]));
        assert_eq!(lines(&app, None), ["a", "z"]);
    }

    #[test]
    fn search_jumps_between_matches() {
        let mut app = app();
        app.on_server(FromServer::Logs(Vec::new()));
        for (i, text) in ["ok", "error 1", "ok", "error 2", "ok"].iter().enumerate() {
            app.on_server(FromServer::Log(log("web", i as u64, text)));
        }
        app.pane = (40, 2);
        app.on_command(Command::BeginSearch);
        for c in "error".chars() {
            app.on_command(Command::SearchChar(c));
        }
        app.on_command(Command::SearchSubmit);
        assert_eq!(app.search.as_ref().unwrap().current, Some(3));
        assert_eq!(app.viewport.bottom, Some(3));
        assert!(
            app.notice
                .as_ref()
                .unwrap()
                .text
                .contains("2 matching lines")
        );
        app.on_command(Command::NextMatch);
        assert_eq!(app.viewport.bottom, Some(1));
        app.on_command(Command::NextMatch);
        assert!(app.notice.as_ref().unwrap().text.contains("no older match"));
        app.on_command(Command::PreviousMatch);
        assert_eq!(app.search.as_ref().unwrap().current, Some(3));
        app.on_command(Command::Follow);
        assert!(app.viewport.following());
        app.on_command(Command::Page(-1));
        assert_eq!(app.viewport.bottom, Some(3));
    }

    #[test]
    fn the_merged_view_prefixes_with_the_widest_name() {
        let mut app = app();
        app.pane = (40, 5);
        assert_eq!(app.geometry().prefix, 0);
        app.on_command(Command::ToggleMerged);
        assert_eq!(app.geometry().prefix, "procman".len() + 3);
        assert_eq!(app.color_index("db"), Some(1));
        let exited = row(
            "a-very-long-process-name-indeed",
            ProcessState::Exited {
                exit: Exit::Code(0),
            },
        );
        app.on_server(FromServer::Reply(Reply::Event { process: exited }));
        assert_eq!(app.name_width(), MAX_PREFIX_NAME);
    }
}
