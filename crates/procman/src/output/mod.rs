//! Multiplexed process output, the log directory and the in-memory tail.
//!
//! Every line of every process goes to the terminal as `{name:>width} | {line}`, to the
//! combined log `procman.log` as `{time} {name:>width} | {line}` without escape sequences,
//! and into a bounded tail per process (for `procman logs`, followers and the TUI). Each
//! process's own `{name}.log` receives its bytes exactly as printed; the previous run's
//! logs move to `previous/` at start. One output thread (`pump.rs`) reads all pipes and
//! writes the terminal; one log writer thread (`writer.rs`) formats and writes the logs.

mod ansi;
mod batch;
mod color;
mod lines;
mod logdir;
mod names;
mod pump;
mod tail;
mod terminal;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, oneshot};

use logdir::LogDir;
use names::{Names, SUPERVISOR_ID};
use pump::{Command, Mailbox, Sinks};
use tail::Tails;
use terminal::Terminal;

pub use tail::{LogLine, TAIL_BYTES, TAIL_LINES};

/// Appends `line` to `out` for a terminal: colour sequences kept with `color`, every
/// other escape sequence and control character (but tab) dropped.
pub fn sanitize_line(line: &[u8], color: bool, out: &mut Vec<u8>) {
    ansi::sanitize(line, color, out);
}

/// The name column as `run` shows it: `{name:>width} | `, shortened like the server's,
/// in the colour of the `index`-th name of the run (`None`: the supervisor, in bold) when
/// `paint`.
pub fn prefix(name: &str, index: Option<usize>, width: usize, paint: bool) -> String {
    let prefix = batch::Prefix::new(name, index, width.min(names::WIDTH_CAP), paint);
    String::from_utf8_lossy(prefix.terminal()).into_owned()
}

/// Terminal columns `name` takes in the name column (what [`prefix`]'s `width` counts).
pub fn name_columns(name: &str) -> usize {
    names::columns(name)
}

/// Whether output to a terminal (`is_tty`) is coloured under `choice` and `NO_COLOR`.
pub fn color_enabled(choice: ColorChoice, is_tty: bool) -> bool {
    color::enabled(choice, is_tty, color::no_color_env())
}

/// The name under which the supervisor's own messages appear.
pub const SUPERVISOR: &str = "procman";

/// How long [`Output::flush`] waits while neither the terminal nor the logs take a byte.
const STALL: Duration = Duration::from_secs(5);

/// Lines a subscriber may fall behind before it is told it lagged.
pub const FEED_CAPACITY: usize = 1024;

/// When to colour the name column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour iff the terminal is a TTY and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    /// Always colour, even with `NO_COLOR` set (an explicit choice overrides it).
    Always,
    /// Never colour.
    Never,
}

impl FromStr for ColorChoice {
    type Err = UnknownColorChoice;

    /// Parses `auto`, `always` or `never`, as given to a `--color` option.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ColorChoice::Auto),
            "always" => Ok(ColorChoice::Always),
            "never" => Ok(ColorChoice::Never),
            _ => Err(UnknownColorChoice(s.to_owned())),
        }
    }
}

/// A colour choice other than `auto`, `always` or `never`.
#[derive(Debug, thiserror::Error)]
#[error("unknown colour choice {0:?} (expected auto, always or never)")]
pub struct UnknownColorChoice(pub String);

/// How output is shown and logged.
#[derive(Clone, Debug, Default)]
pub struct OutputConfig {
    /// Directory for `procman.log` and `{name}.log` (created 0700; the previous run's
    /// logs move to `previous/`); `None` writes no log files.
    pub log_dir: Option<PathBuf>,
    /// Whether to colour the terminal output.
    pub color: ColorChoice,
}

/// Shared handle to the multiplexed output; cheap to clone.
#[derive(Clone)]
pub struct Output {
    inner: Arc<Inner>,
}

struct Inner {
    color: bool,
    log_path: Option<PathBuf>,
    log_dir: Option<LogDir>,
    shared: Arc<Shared>,
    mailbox: Mailbox,
    /// Bumped by every write to the terminal and every batch written to the logs.
    progress: Arc<AtomicU64>,
}

/// State read by callers and written by the output thread.
pub(crate) struct Shared {
    pub(crate) names: Mutex<Names>,
    pub(crate) tails: Mutex<Tails>,
    pub(crate) feed: broadcast::Sender<LogLine>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The output of one process being read: await [`Capture::finished`] to know that it
/// reached end of file and that every byte was written out.
#[derive(Debug)]
pub struct Capture {
    done: oneshot::Receiver<io::Result<u64>>,
}

impl Capture {
    /// Resolves once the pipe reached end of file (every process holding its write end
    /// closed it) and all its lines were written: the number of lines.
    pub async fn finished(self) -> io::Result<u64> {
        self.done.await.unwrap_or_else(|_| Err(gone()))
    }

    /// [`Capture::finished`] for threads outside an async runtime (panics inside one).
    pub fn wait(self) -> io::Result<u64> {
        self.done.blocking_recv().unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> io::Error {
    io::Error::other("the output thread ended before the pipe did")
}

impl Output {
    /// Writes to the process's stdout (detects TTY); a closed stdout discards
    /// terminal output but still writes the logs.
    pub fn stdout(config: OutputConfig) -> io::Result<Output> {
        let stdout = io::stdout();
        let is_tty = stdout.is_terminal();
        let (out, size_fd): (Box<dyn Write + Send>, _) = match stdout.as_fd().try_clone_to_owned() {
            Ok(fd) => {
                let size_fd = if is_tty { Some(fd.try_clone()?) } else { None };
                (Box::new(File::from(fd)), size_fd)
            }
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => (Box::new(io::sink()), None),
            Err(e) => return Err(e),
        };
        Output::build(config, out, is_tty, color::no_color_env(), size_fd)
    }

    /// Writes to any writer (tests, benches); `is_tty` decides colour (with Auto)
    /// and the status line (whose width is then taken as 80 columns).
    pub fn new(
        config: OutputConfig,
        terminal: Box<dyn Write + Send>,
        is_tty: bool,
    ) -> io::Result<Output> {
        Output::build(config, terminal, is_tty, color::no_color_env(), None)
    }

    fn build(
        config: OutputConfig,
        out: Box<dyn Write + Send>,
        is_tty: bool,
        no_color: bool,
        size_fd: Option<OwnedFd>,
    ) -> io::Result<Output> {
        let color = color::enabled(config.color, is_tty, no_color);
        let (log_dir, combined) = match &config.log_dir {
            Some(path) => {
                let (dir, combined) = LogDir::open(path)?;
                (Some(dir), Some(combined))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            names: Mutex::new(Names::new()),
            tails: Mutex::new(Tails::default()),
            feed: broadcast::channel(FEED_CAPACITY).0,
        });
        let progress = Arc::new(AtomicU64::new(0));
        let sinks = Sinks {
            terminal: Terminal::new(out, is_tty, color, size_fd, Arc::clone(&progress)),
            combined,
            color,
            progress: Arc::clone(&progress),
        };
        let mailbox = pump::start(Arc::clone(&shared), sinks)?;
        mailbox.send(Command::Register {
            id: SUPERVISOR_ID,
            name: SUPERVISOR.into(),
            log: None,
        });
        Ok(Output {
            inner: Arc::new(Inner {
                color,
                log_path: config.log_dir,
                log_dir,
                shared,
                mailbox,
                progress,
            }),
        })
    }

    /// Declares a process name and creates its `{log_dir}/{name}.log`.
    ///
    /// The names registered before the first line is given set the width of the name
    /// column (capped at 24 characters); it never changes afterwards, and a longer name
    /// is shortened with `…` in the column. Colours follow the order of registration.
    /// Registering a name again is a no-op. A log file that cannot be created is reported
    /// (also as a supervisor line); the name is registered without one.
    pub fn register(&self, name: &str) -> io::Result<()> {
        self.inner.id(name, false).1
    }

    /// One complete line (no trailing newline) from `name`; embedded newlines split it.
    ///
    /// An unregistered name is registered first.
    pub fn line(&self, name: &str, line: &[u8]) {
        let (id, _) = self.inner.id(name, true);
        self.inner.send(Command::Text {
            id,
            text: line.to_vec(),
        });
    }

    /// A supervisor message, shown under the name `procman` (combined log only, no per-process file).
    pub fn procman(&self, message: &str) {
        lock(&self.inner.shared.names).fix_width();
        self.inner.send(Command::Text {
            id: SUPERVISOR_ID,
            text: message.as_bytes().to_vec(),
        });
    }

    /// Reads `pipe` until end of file on the output thread, showing its lines under `name`.
    pub fn capture(&self, name: &str, pipe: OwnedFd) -> Capture {
        let (id, _) = self.inner.id(name, true);
        let (tx, done) = oneshot::channel();
        self.inner.send(Command::Capture { id, pipe, done: tx });
        Capture { done }
    }

    /// Resolves once the output thread has written out everything given to it before:
    /// soon, unless the terminal takes nothing (which holds the thread).
    pub async fn caught_up(&self) {
        let (tx, rx) = oneshot::channel();
        self.inner.send(Command::CaughtUp(tx));
        let _ = rx.await;
    }

    /// Live status line at the bottom of a TTY (e.g. "waiting: api (http://…/health)"); None clears it.
    /// On a non-TTY this does nothing (the supervisor logs plain lines instead).
    pub fn set_status(&self, status: Option<String>) {
        self.inner.send(Command::Status(status));
    }

    /// Waits until everything given so far is written, and flushes the terminal.
    ///
    /// A slow terminal is waited for, but one that takes nothing for [`STALL`] (stdout
    /// piped into a command that never reads) is given up with an error, so that the
    /// shutdown this ends cannot hang on it; the logs have every line read until then.
    pub fn flush(&self) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !self.inner.mailbox.send(Command::Flush(tx)) {
            return Err(gone());
        }
        let mut seen = self.inner.progress.load(Ordering::Relaxed);
        loop {
            match rx.recv_timeout(STALL) {
                Ok(result) => return result,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(gone()),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = self.inner.progress.load(Ordering::Relaxed);
                    if now == seen {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the terminal took no output for {}s; the rest is in the logs only",
                                STALL.as_secs()
                            ),
                        ));
                    }
                    seen = now;
                }
            }
        }
    }

    /// The newest lines of `names` (every name, `procman` included, when empty), at most
    /// `n` in all, none older than `since`, in output order.
    pub fn tail(&self, names: &[&str], n: usize, since: Option<SystemTime>) -> Vec<LogLine> {
        let ids: Vec<(usize, Arc<str>)> = {
            let registry = lock(&self.inner.shared.names);
            if names.is_empty() {
                registry.all().collect()
            } else {
                names
                    .iter()
                    .filter_map(|name| {
                        let id = registry.get(name)?;
                        Some((id, Arc::clone(registry.name(id))))
                    })
                    .collect()
            }
        };
        lock(&self.inner.shared.tails).tail(&ids, n, since)
    }

    /// Every line from now on, of every name.
    ///
    /// To follow with history: subscribe first, then take [`Output::tail`], then skip the
    /// received lines whose `seq` is not above the last line of the tail. A subscriber
    /// that falls more than [`FEED_CAPACITY`] lines behind gets
    /// [`broadcast::error::RecvError::Lagged`] with the number it missed; it never slows
    /// the processes down.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.inner.shared.feed.subscribe()
    }

    /// The `seq` that every line given from now on will at least have: a process whose
    /// output is captured after this call prints only lines at or above it.
    pub fn next_seq(&self) -> u64 {
        lock(&self.inner.shared.tails).next_seq()
    }

    /// Creates the empty file `file` in the log directory, recorded as procman's (the next
    /// start moves it to `previous/`). Fails, touching nothing, when the name is taken by a
    /// file procman did not create this run, or when there is no log directory.
    pub fn create_file(&self, file: &str) -> io::Result<()> {
        match &self.inner.log_dir {
            Some(dir) => dir.create(file).map(drop),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no log directory to create {file} in"),
            )),
        }
    }

    /// Records `file` in the log directory as procman's if it is now a private regular
    /// file of this user (a process replaced the one [`Output::create_file`] made).
    pub fn adopt_file(&self, file: &str) -> io::Result<()> {
        match &self.inner.log_dir {
            Some(dir) => dir.adopt(file),
            None => Ok(()),
        }
    }

    /// The log directory, if logging to files.
    pub fn log_dir(&self) -> Option<&Path> {
        self.inner.log_path.as_deref()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("color", &self.inner.color)
            .field("log_dir", &self.inner.log_path)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn send(&self, command: Command) {
        // Only fails once the output thread is gone, when there is nowhere to write anyway.
        self.mailbox.send(command);
    }

    /// The id of `name`, registering it (and creating its log file) if it is new.
    /// `showing`: lines of it follow, so the name column is fixed from now on.
    fn id(&self, name: &str, showing: bool) -> (usize, io::Result<()>) {
        let mut names = lock(&self.shared.names);
        let known = names.get(name);
        if showing {
            names.fix_width();
        }
        if let Some(id) = known {
            return (id, Ok(()));
        }
        let id = names.add(name);
        let (log, result) = match &self.log_dir {
            None => (None, Ok(())),
            Some(dir) => match dir.create(&logdir::file_name(name)) {
                Ok(log) => (Some(log), Ok(())),
                Err(e) => (None, Err(e)),
            },
        };
        // Sent under the lock, so it precedes every command that uses the id.
        self.send(Command::Register {
            id,
            name: Arc::clone(names.name(id)),
            log,
        });
        if let Err(e) = &result {
            self.send(Command::Text {
                id: SUPERVISOR_ID,
                text: format!("{e}; the output of {name} is in {} only", logdir::COMBINED)
                    .into_bytes(),
            });
        }
        (id, result)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.send(Command::Stop);
    }
}
