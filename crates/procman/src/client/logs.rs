//! `procman logs`: the last lines of some or all processes, merged in time order with
//! `run`'s prefixes, then with `-f` new lines as they come. Asks the running server (its
//! bounded in-memory tail and live feed); without one, reads the log directory's
//! `procman.log`.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use super::{client_reference, paths_for, warn_on_version_skew};
use crate::config::{self, suggest};
use crate::control::{self, RuntimePaths, ServerInfo, Stream};
use crate::output::{self, ColorChoice};
use crate::protocol::{
    LogLine, LogsRequest, MAX_REPLY, Message, Reply, SUPERVISOR_NAME, Timestamp,
};

/// What `procman logs` was asked.
#[derive(Debug, Clone)]
pub struct LogsOptions {
    /// Processes or groups; empty for all.
    pub names: Vec<String>,
    /// How many of the newest lines (of all the named processes together).
    pub lines: usize,
    /// Only lines read at most this long ago.
    pub since: Option<Duration>,
    /// Keep printing new lines until Ctrl-C or the server leaves.
    pub follow: bool,
    /// Where `procman.log` is when no server runs (`run`'s `--log-dir`).
    pub log_dir: PathBuf,
}

/// Bound on the first exchange with the server (the table, the tail).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints the output of the server for `config`, or of its log files. Returns the exit code.
pub fn logs(config: &Path, options: &LogsOptions) -> Result<i32> {
    let paths = paths_for(config)?;
    let since = options.since.map(|ago| {
        SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    match ServerInfo::read(&paths.discovery).filter(ServerInfo::is_live) {
        Some(server) => {
            warn_on_version_skew(&server);
            let _reference = client_reference(&paths);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(from_server(&paths, options, since))
        }
        None => from_files(&paths, options, since),
    }
}

/// Asks the server: its table (for the name column), then the tail and, with `follow`,
/// the lines that follow it.
async fn from_server(
    paths: &RuntimePaths,
    options: &LogsOptions,
    since: Option<SystemTime>,
) -> Result<i32> {
    let table = match control::request(paths, &Message::Status, REQUEST_TIMEOUT).await? {
        Reply::Status { processes, .. } => processes,
        other => bail!("unexpected reply: {}", serde_json::to_string(&other)?),
    };
    let mut printer = Printer::new(table.iter().map(|p| p.name.to_string()));
    let request = Message::Logs(LogsRequest {
        names: options.names.clone(),
        lines: options.lines,
        since: since.map(Timestamp::from),
        follow: options.follow,
    });
    let mut stream = Stream::open(paths, &request).await?;
    loop {
        match stream.next().await? {
            Some(Reply::Logs { lines, more }) => {
                for line in &lines {
                    printer.line(line);
                }
                if !more && !options.follow {
                    printer.flush();
                    return Ok(0);
                }
            }
            Some(Reply::Log(line)) => printer.line(&line),
            Some(Reply::LogGap { missed }) => printer.line(&LogLine {
                name: SUPERVISOR_NAME.into(),
                seq: None,
                time: Timestamp::now(),
                line: format!("… {missed} output lines skipped: this client fell behind"),
            }),
            Some(Reply::Error { message }) => {
                printer.flush();
                eprintln!("procman: {message}");
                return Ok(1);
            }
            Some(other) => bail!("unexpected reply: {}", serde_json::to_string(&other)?),
            None => {
                printer.flush();
                if options.follow {
                    eprintln!(
                        "procman: the server for {} has stopped; no more output to follow",
                        paths.config.display()
                    );
                }
                return Ok(0);
            }
        }
        printer.flush_if_idle(&stream);
    }
}

/// Reads the newest lines from `procman.log`; a `follow` is refused after them, since
/// only a server writes that file and none runs.
fn from_files(
    paths: &RuntimePaths,
    options: &LogsOptions,
    since: Option<SystemTime>,
) -> Result<i32> {
    let path = options.log_dir.join("procman.log");
    let config = paths.config.display();
    let file = match open_log(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!(
                "procman: no server runs for {config} and there is no log at {} \
                 (give --log-dir if `run` was given one)",
                path.display()
            );
            return Ok(1);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    eprintln!(
        "procman: no server runs for {config}; showing {}",
        path.display()
    );
    // The config tells groups and the table's order; the log alone still works.
    let specs = config::load(&paths.config, &config::LoadOptions::default())
        .map(|c| c.processes)
        .unwrap_or_default();
    let mut known: Vec<String> = specs.iter().map(|s| s.name.to_string()).collect();
    let mut wanted: HashSet<String> = HashSet::new();
    let mut unresolved = Vec::new();
    for name in &options.names {
        let members: Vec<&str> = specs
            .iter()
            .filter(|s| *s.name == **name || s.group.as_deref() == Some(name.as_str()))
            .map(|s| s.name.as_str())
            .collect();
        if members.is_empty() && name != SUPERVISOR_NAME {
            unresolved.push(name.as_str());
        }
        wanted.insert(name.clone());
        wanted.extend(members.into_iter().map(str::to_owned));
    }
    let mut tail = VecDeque::new();
    let mut seen = HashSet::new();
    for entry in read_combined(file) {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        if !seen.contains(&entry.name) {
            seen.insert(entry.name.clone());
            if !known.contains(&entry.name) && entry.name != SUPERVISOR_NAME {
                known.push(entry.name.clone());
            }
        }
        if since.is_some_and(|since| entry.time < since)
            || !(wanted.is_empty() || wanted.contains(&entry.name))
        {
            continue;
        }
        tail.push_back(entry);
        if tail.len() > options.lines {
            tail.pop_front();
        }
    }
    if let Some(name) = unresolved.iter().find(|n| !seen.contains(**n)) {
        for group in specs.iter().filter_map(|s| s.group.as_deref()) {
            if !known.iter().any(|k| k == group) {
                known.push(group.to_owned());
            }
        }
        known.push(SUPERVISOR_NAME.into());
        eprintln!(
            "procman: no process named {name:?}{} in {config} or its log; known: {}",
            suggest(name, known.iter().map(String::as_str)),
            known.join(", ")
        );
        return Ok(1);
    }
    let mut printer = Printer::new(known);
    for entry in tail {
        printer.line(&LogLine {
            name: entry.name,
            seq: None,
            time: entry.time.into(),
            line: entry.text,
        });
    }
    printer.flush();
    if options.follow {
        eprintln!(
            "procman: no server runs for {config}, so nothing writes its log: there is \
             nothing to follow (start one with `procman serve {config}`)"
        );
        return Ok(1);
    }
    Ok(0)
}

/// Opens a log for reading without following a symlink or blocking on a FIFO planted
/// in its place; only a regular file is read.
fn open_log(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file; procman writes its log as one",
        ));
    }
    Ok(file)
}

/// One line of `procman.log`: `{RFC 3339 time} {name:>width} | {text}`.
struct Entry {
    time: SystemTime,
    name: String,
    text: String,
}

/// The lines of `procman.log` that have its form (others, such as a line cut short by a
/// crash, are skipped). Each line is read up to [`MAX_REPLY`] bytes; the rest is dropped.
fn read_combined(file: File) -> impl Iterator<Item = io::Result<Entry>> {
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    std::iter::from_fn(move || {
        loop {
            buf.clear();
            match read_bounded(&mut reader, &mut buf) {
                Ok(false) => return None,
                Ok(true) => {
                    if let Some(entry) = parse_entry(&buf) {
                        return Some(Ok(entry));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    })
}

/// Reads one line into `buf` (without its newline, at most [`MAX_REPLY`] bytes kept);
/// false at end of file.
fn read_bounded(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<bool> {
    let n = reader
        .by_ref()
        .take(MAX_REPLY as u64)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if n == MAX_REPLY {
        // Skip the rest of an overlong line.
        let mut rest = Vec::new();
        while reader
            .by_ref()
            .take(MAX_REPLY as u64)
            .read_until(b'\n', &mut rest)?
            == MAX_REPLY
            && rest.last() != Some(&b'\n')
        {
            rest.clear();
        }
    }
    Ok(true)
}

fn parse_entry(line: &[u8]) -> Option<Entry> {
    let line = String::from_utf8_lossy(line);
    let (time, rest) = line.split_once(' ')?;
    let time = humantime::parse_rfc3339(time).ok()?;
    let (name, text) = rest.split_once(" | ")?;
    Some(Entry {
        time,
        name: name.trim_start().to_owned(),
        text: text.to_owned(),
    })
}

/// Prints lines with `run`'s name column, to a stdout that may close at any time.
struct Printer {
    /// Names in the order of the run (their colours), the supervisor's first.
    names: Vec<String>,
    width: usize,
    color: bool,
    out: io::BufWriter<io::Stdout>,
    scratch: Vec<u8>,
}

impl Printer {
    fn new(names: impl IntoIterator<Item = String>) -> Printer {
        let names: Vec<String> = std::iter::once(SUPERVISOR_NAME.to_owned())
            .chain(names)
            .collect();
        let width = names
            .iter()
            .map(|n| output::name_columns(n))
            .max()
            .unwrap_or(0);
        let stdout = io::stdout();
        let color = output::color_enabled(ColorChoice::Auto, stdout.is_terminal());
        Printer {
            names,
            width,
            color,
            out: io::BufWriter::new(stdout),
            scratch: Vec::new(),
        }
    }

    fn line(&mut self, line: &LogLine) {
        let index = match self.names.iter().position(|n| *n == line.name) {
            Some(i) => i,
            None => {
                self.names.push(line.name.clone());
                self.names.len() - 1
            }
        };
        let prefix = output::prefix(&line.name, index.checked_sub(1), self.width, self.color);
        self.scratch.clear();
        self.scratch.extend_from_slice(prefix.as_bytes());
        output::sanitize_line(line.line.as_bytes(), self.color, &mut self.scratch);
        self.scratch.push(b'\n');
        let result = self.out.write_all(&self.scratch);
        check(result);
    }

    fn flush(&mut self) {
        let result = self.out.flush();
        check(result);
    }

    /// Flushes unless more replies are already waiting (they are printed first).
    fn flush_if_idle(&mut self, stream: &Stream) {
        if !stream.has_buffered() {
            self.flush();
        }
    }
}

/// A closed stdout (`procman logs | head -1`) ends the command quietly.
fn check(result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("procman: error: writing to stdout: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_log_lines() {
        let entry =
            parse_entry(b"2023-11-14T22:13:20.123Z     web | GET / | 200 \x1b[1mok").unwrap();
        assert_eq!(entry.name, "web");
        assert_eq!(entry.text, "GET / | 200 \x1b[1mok");
        assert_eq!(Timestamp::from(entry.time), Timestamp(1_700_000_000_123));
        assert!(parse_entry(b"2023-11-14T22:13:20.1").is_none());
        assert!(parse_entry(b"not a time web | x").is_none());
    }

    #[test]
    fn overlong_lines_are_cut_and_skipped() {
        let mut data = vec![b'x'; MAX_REPLY * 2 + 10];
        data.extend_from_slice(b"\nnext\n");
        let mut reader = io::Cursor::new(data);
        let mut buf = Vec::new();
        assert!(read_bounded(&mut reader, &mut buf).unwrap());
        assert_eq!(buf.len(), MAX_REPLY);
        buf.clear();
        assert!(read_bounded(&mut reader, &mut buf).unwrap());
        assert_eq!(buf, b"next");
        buf.clear();
        assert!(!read_bounded(&mut reader, &mut buf).unwrap());
    }
}
