//! Multiplexed process output and the log directory.
//!
//! Every line of every process goes to the terminal and the combined log
//! `procman.log` as `{name:>width} | {line}`, and bare to the process's own
//! `{name}.log`. Reader threads ([`Output::capture`]) split pipe data into lines,
//! format a whole chunk per destination and write each destination once per chunk.

mod ansi;
mod batch;
mod color;
mod lines;
mod logdir;
mod terminal;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use batch::Batch;
use lines::{LineReader, split_lines};
use logdir::LogFile;
use terminal::Terminal;

/// The name under which the supervisor's own messages appear.
pub const SUPERVISOR: &str = "procman";

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
    /// Directory for `procman.log` and `{name}.log`; `None` writes no log files.
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
    log_dir: Option<PathBuf>,
    /// Width of the name column, in characters.
    width: AtomicUsize,
    procs: Mutex<HashMap<String, Arc<Proc>>>,
    shared: Mutex<Shared>,
}

/// A registered name.
struct Proc {
    name: String,
    log: Option<Mutex<LogFile>>,
}

/// Destinations shared by all processes, written under one lock so that they
/// see lines in the same order.
struct Shared {
    terminal: Terminal,
    combined: Option<LogFile>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let combined = match &config.log_dir {
            Some(dir) => Some(logdir::prepare(dir)?),
            None => None,
        };
        let supervisor = Arc::new(Proc {
            name: SUPERVISOR.to_owned(),
            log: None,
        });
        let inner = Inner {
            color,
            log_dir: config.log_dir,
            width: AtomicUsize::new(SUPERVISOR.len()),
            procs: Mutex::new(HashMap::from([(SUPERVISOR.to_owned(), supervisor)])),
            shared: Mutex::new(Shared {
                terminal: Terminal::new(out, is_tty, color, size_fd),
                combined,
            }),
        };
        Ok(Output {
            inner: Arc::new(inner),
        })
    }

    /// Declares a process name: widens the name column, creates `{log_dir}/{name}.log`.
    ///
    /// Registering a name again is a no-op (its log is not truncated). Names are
    /// stored injectively: `%`, `/`, NUL and a leading `.` are percent-encoded.
    pub fn register(&self, name: &str) -> io::Result<()> {
        self.inner.register(name).map(drop)
    }

    /// One complete line (no trailing newline) from `name`.
    ///
    /// An unregistered name is registered first. Embedded newlines split the line.
    pub fn line(&self, name: &str, line: &[u8]) {
        let proc = self.inner.proc(name);
        self.inner.emit(&proc, line);
    }

    /// A supervisor message, shown under the name `procman` (combined log only, no per-process file).
    pub fn procman(&self, message: &str) {
        let proc = self.inner.proc(SUPERVISOR);
        self.inner.emit(&proc, message.as_bytes());
    }

    /// Spawns a reader thread that drains `pipe` until EOF, emitting its lines under `name`.
    /// Returns the number of lines emitted. Joining it means every byte was written out.
    pub fn capture(&self, name: &str, pipe: OwnedFd) -> JoinHandle<io::Result<u64>> {
        let inner = Arc::clone(&self.inner);
        let proc = self.inner.proc(name);
        let thread_name: String = format!("out:{name}").replace('\0', "");
        let spawned = thread::Builder::new()
            .name(thread_name)
            .spawn(move || inner.drain(&proc, pipe));
        match spawned {
            Ok(handle) => handle,
            Err(e) => {
                self.procman(&format!("cannot capture the output of {name}: {e}"));
                thread::spawn(move || Err(e))
            }
        }
    }

    /// Live status line at the bottom of a TTY (e.g. "waiting: api (http://…/health)"); None clears it.
    /// On a non-TTY this does nothing (the supervisor logs plain lines instead).
    pub fn set_status(&self, status: Option<String>) {
        lock(&self.inner.shared).terminal.set_status(status);
    }

    /// Flushes the terminal writer (log files are unbuffered).
    pub fn flush(&self) -> io::Result<()> {
        lock(&self.inner.shared).terminal.flush()
    }

    /// The log directory, if logging to files.
    pub fn log_dir(&self) -> Option<&Path> {
        self.inner.log_dir.as_deref()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("color", &self.inner.color)
            .field("log_dir", &self.inner.log_dir)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn register(&self, name: &str) -> io::Result<Arc<Proc>> {
        let mut procs = lock(&self.procs);
        if let Some(proc) = procs.get(name) {
            return Ok(Arc::clone(proc));
        }
        let log = match &self.log_dir {
            Some(dir) => Some(Mutex::new(LogFile::create(
                dir.join(logdir::file_name(name)),
            )?)),
            None => None,
        };
        let proc = Arc::new(Proc {
            name: name.to_owned(),
            log,
        });
        procs.insert(name.to_owned(), Arc::clone(&proc));
        self.width
            .fetch_max(name.chars().count(), Ordering::Relaxed);
        Ok(proc)
    }

    /// The entry for `name`, registering it (without a log file if that fails).
    fn proc(&self, name: &str) -> Arc<Proc> {
        self.register(name).unwrap_or_else(|e| {
            eprintln!("procman: cannot create the log file of {name}: {e}");
            let proc = Arc::new(Proc {
                name: name.to_owned(),
                log: None,
            });
            lock(&self.procs).insert(name.to_owned(), Arc::clone(&proc));
            self.width
                .fetch_max(name.chars().count(), Ordering::Relaxed);
            proc
        })
    }

    fn batch(&self, proc: &Proc) -> Batch {
        let mut batch = Batch::new(
            &proc.name,
            proc.name == SUPERVISOR,
            self.color,
            self.log_dir.is_some(),
        );
        batch.set_width(self.width.load(Ordering::Relaxed));
        batch
    }

    fn emit(&self, proc: &Proc, text: &[u8]) {
        let mut batch = self.batch(proc);
        if text.is_empty() {
            batch.push(text);
        } else {
            split_lines(text, true, |line| batch.push(line));
        }
        self.commit(proc, &mut batch);
    }

    fn drain(&self, proc: &Proc, pipe: OwnedFd) -> io::Result<u64> {
        let mut src = File::from(pipe);
        let mut reader = LineReader::new();
        let mut batch = self.batch(proc);
        let mut total = 0;
        loop {
            batch.set_width(self.width.load(Ordering::Relaxed));
            let more = reader.read_from(&mut src, |line| batch.push(line));
            total += batch.lines;
            self.commit(proc, &mut batch);
            if !more? {
                return Ok(total);
            }
        }
    }

    /// Writes a batch: the process's own log first, then the shared destinations
    /// under one short lock.
    fn commit(&self, proc: &Proc, batch: &mut Batch) {
        if batch.lines == 0 {
            return;
        }
        if let Some(log) = &proc.log {
            lock(log).write(&batch.own);
        }
        {
            let mut shared = lock(&self.shared);
            shared.terminal.write_lines(&batch.term);
            if let Some(combined) = &mut shared.combined {
                combined.write(&batch.combined);
            }
        }
        batch.clear();
    }
}
