//! The output thread: one epoll loop reads every captured pipe and formats its lines.
//!
//! One thread whatever the number of processes; the supervisor's (current-thread) runtime
//! never formats a line or waits on a terminal. A slow destination blocks this thread,
//! which stops reading, so the children block on their full pipes: lines are never dropped.
//! Each read is formatted for the terminal as a whole, and the terminal is written once
//! per wake-up for everything read in it; the bytes read and the positions of their lines
//! go to the log writer thread ([`super::writer`]), which formats `procman.log` and writes
//! the log files.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::thread;
use std::time::SystemTime;

use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use rustix::event::{EventfdFlags, eventfd};
use rustix::io::Errno;
use tokio::sync::oneshot;

use super::batch::{Batch, Prefix};
use super::lines::{CUT_WINDOW, can_wait, split_lines};
use super::logdir::LogFile;
use super::names::{Names, SUPERVISOR_ID};
use super::tail::LogLine;
use super::terminal::Terminal;
use super::writer::{Finished, Flushed, Writer};
use super::{Shared, lock};

/// Bytes read from a pipe at once (a pipe holds 64 KiB by default).
const READ_SIZE: usize = 128 * 1024;
/// Formatted bytes that are written out without waiting for the end of the wake-up.
const WRITE_AT: usize = 512 * 1024;
/// A partial line's buffer larger than this is released once the line is complete.
const KEEP_PARTIAL: usize = 4 * 1024;
/// The epoll key of the wake-up eventfd; pipes count up from 0.
const WAKE: u64 = u64::MAX;
/// Events taken per `epoll_wait`; more ready pipes are served on the next call.
const EVENTS: usize = 256;

/// A request to the output thread.
pub(crate) enum Command {
    /// A new name (its id is the next one) and its own log file.
    Register {
        id: usize,
        name: Arc<str>,
        log: Option<LogFile>,
    },
    /// Read `pipe` until EOF as the output of `id`, then report the number of lines.
    Capture {
        id: usize,
        pipe: OwnedFd,
        done: oneshot::Sender<io::Result<u64>>,
    },
    /// Lines given by the supervisor (the final newline is optional).
    Text {
        id: usize,
        text: Vec<u8>,
    },
    Status(Option<String>),
    /// Write out everything so far, then answer.
    Flush(mpsc::SyncSender<io::Result<()>>),
    /// Answer once the terminal has taken everything formatted so far.
    CaughtUp(oneshot::Sender<()>),
    /// Write out everything so far and end the thread.
    Stop,
}

/// The sending side: commands and the eventfd that wakes the thread for them.
pub(crate) struct Mailbox {
    commands: mpsc::Sender<Command>,
    wake: Arc<OwnedFd>,
}

impl Mailbox {
    /// Queues `command`; false if the output thread is gone.
    pub(crate) fn send(&self, command: Command) -> bool {
        if self.commands.send(command).is_err() {
            return false;
        }
        // An eventfd only fails to count when its counter would overflow (2^64 - 2).
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        true
    }
}

/// Where lines go.
pub(crate) struct Sinks {
    pub(crate) terminal: Terminal,
    /// `procman.log`, if there are log files.
    pub(crate) combined: Option<LogFile>,
    pub(crate) color: bool,
    /// Counts writes to the terminal and the logs (see [`super::Output::flush`]).
    pub(crate) progress: Arc<AtomicU64>,
}

/// Starts the output thread.
pub(crate) fn start(shared: Arc<Shared>, sinks: Sinks) -> io::Result<Mailbox> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
    epoll::add(
        &epoll,
        &*wake,
        epoll::EventData::new_u64(WAKE),
        epoll::EventFlags::IN,
    )?;
    let (tx, rx) = mpsc::channel();
    let logs = sinks
        .combined
        .map(|combined| Writer::start(combined, sinks.progress))
        .transpose()?;
    let pump = Pump {
        batch: Batch::default(),
        logs,
        terminal: sinks.terminal,
        color: sinks.color,
        shared,
        epoll,
        wake: Arc::clone(&wake),
        inbox: rx,
        pipes: HashMap::new(),
        next_key: 0,
        procs: Vec::new(),
        width: None,
        buf: vec![0; CUT_WINDOW + READ_SIZE].into_boxed_slice(),
        ranges: Vec::new(),
        finished: Vec::new(),
        flushed: Vec::new(),
        seq: 0,
        now: SystemTime::now(),
    };
    thread::Builder::new()
        .name("procman-output".into())
        .spawn(move || pump.run())?;
    Ok(Mailbox { commands: tx, wake })
}

struct Pump {
    shared: Arc<Shared>,
    epoll: OwnedFd,
    wake: Arc<OwnedFd>,
    inbox: mpsc::Receiver<Command>,
    pipes: HashMap<u64, Pipe>,
    next_key: u64,
    /// By name id.
    procs: Vec<Proc>,
    terminal: Terminal,
    color: bool,
    /// The log writer thread, if there are log files.
    logs: Option<Writer>,
    /// The name column, fixed at the first line shown.
    width: Option<usize>,
    batch: Batch,
    /// Read buffer shared by all pipes: a carried partial line, then fresh bytes.
    buf: Box<[u8]>,
    ranges: Vec<Range<usize>>,
    /// Captures that reached EOF, answered once their lines are written out.
    finished: Vec<Finished>,
    /// Flush requests, answered once everything before them is written out.
    flushed: Vec<Flushed>,
    /// Number of the next line, across all names.
    seq: u64,
    /// The time of the lines read in this wake-up.
    now: SystemTime,
}

/// A registered name, as the output thread sees it.
struct Proc {
    name: Arc<str>,
    /// Computed at its first line, when the column width is known.
    prefix: Option<Prefix>,
}

/// A pipe being read.
struct Pipe {
    fd: OwnedFd,
    id: usize,
    /// The start of a line that is not complete yet.
    carried: Vec<u8>,
    lines: u64,
    done: oneshot::Sender<io::Result<u64>>,
}

impl Pump {
    fn run(mut self) {
        let mut events = Vec::with_capacity(EVENTS);
        loop {
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    eprintln!("procman: output stopped: epoll_wait: {e}");
                    return;
                }
            }
            self.now = SystemTime::now();
            let mut stop = false;
            for event in &events {
                match event.data.u64() {
                    WAKE => stop |= self.commands(),
                    key => self.read(key),
                }
            }
            self.write_out();
            if stop {
                let _ = self.terminal.flush();
                return;
            }
        }
    }

    /// Runs the queued commands; true when the thread should end.
    fn commands(&mut self) -> bool {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&*self.wake, &mut count);
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Register { id, name, log }) => {
                    // Registrations are sent in id order, under the lock of the names.
                    debug_assert_eq!(id, self.procs.len());
                    self.procs.push(Proc { name, prefix: None });
                    if let Some(logs) = &mut self.logs {
                        logs.register(id, log);
                    }
                }
                Ok(Command::Capture { id, pipe, done }) => self.capture(id, pipe, done),
                Ok(Command::Text { id, mut text }) => {
                    if text.last() != Some(&b'\n') {
                        text.push(b'\n');
                    }
                    // The supervisor has no own log.
                    let raw = (id != SUPERVISOR_ID).then_some(0);
                    self.emit(id, &text, raw, true);
                }
                Ok(Command::Status(status)) => {
                    self.write_out();
                    self.terminal.set_status(status);
                }
                Ok(Command::CaughtUp(reply)) => {
                    self.write_out();
                    let _ = reply.send(());
                }
                Ok(Command::Flush(reply)) => {
                    self.write_out();
                    let flushed = self.terminal.flush();
                    self.flushed.push((reply, flushed));
                    self.write_out();
                }
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return true,
                Err(mpsc::TryRecvError::Empty) => return false,
            }
        }
    }

    fn capture(&mut self, id: usize, fd: OwnedFd, done: oneshot::Sender<io::Result<u64>>) {
        let key = self.next_key;
        let watched = rustix::io::ioctl_fionbio(&fd, true).and_then(|()| {
            epoll::add(
                &self.epoll,
                &fd,
                epoll::EventData::new_u64(key),
                epoll::EventFlags::IN,
            )
        });
        if let Err(e) = watched {
            let message = format!("cannot read the output of {}: {e}", self.procs[id].name);
            self.emit(SUPERVISOR_ID, format!("{message}\n").as_bytes(), None, true);
            let _ = done.send(Err(io::Error::other(message)));
            return;
        }
        self.next_key += 1;
        self.pipes.insert(
            key,
            Pipe {
                fd,
                id,
                carried: Vec::new(),
                lines: 0,
                done,
            },
        );
    }

    /// Reads what pipe `key` has: writes it raw to the process's log, and its complete
    /// lines to the other destinations.
    fn read(&mut self, key: u64) {
        let Some(pipe) = self.pipes.get_mut(&key) else {
            return;
        };
        let carried = pipe.carried.len();
        let mut buf = std::mem::take(&mut self.buf);
        buf[..carried].copy_from_slice(&pipe.carried);
        let result = loop {
            match rustix::io::read(&pipe.fd, &mut buf[carried..]) {
                Err(Errno::INTR) => {}
                other => break other,
            }
        };
        // `None`: more to come; `Some(Ok)`: end of file; `Some(Err)`: the read failed.
        let (fresh, end) = match result {
            Ok(0) => (0, Some(Ok(()))),
            Ok(n) => (n, None),
            Err(Errno::AGAIN) => {
                self.buf = buf;
                return;
            }
            Err(e) => (0, Some(Err(io::Error::from(e)))),
        };
        let data = &buf[..carried + fresh];
        let id = pipe.id;
        let eof = end.is_some();
        if !eof && can_wait(data.len()) && memchr::memchr(b'\n', &data[carried..]).is_none() {
            if let Some(logs) = &mut self.logs {
                logs.raw(id, &data[carried..]);
            }
            pipe.carried.extend_from_slice(&data[carried..]);
        } else {
            let (used, lines) = self.emit(id, data, Some(carried), eof);
            let pipe = self.pipes.get_mut(&key).expect("pipe is still registered");
            pipe.lines += lines;
            pipe.carried.clear();
            if pipe.carried.capacity() > KEEP_PARTIAL {
                pipe.carried = Vec::new();
            }
            pipe.carried.extend_from_slice(&data[used..]);
        }
        self.buf = buf;
        if let Some(end) = end {
            if let Some(pipe) = self.pipes.remove(&key) {
                let _ = epoll::delete(&self.epoll, &pipe.fd);
                self.finished.push((pipe.done, end.map(|()| pipe.lines)));
            }
        }
    }

    /// Formats the complete lines of `data` (all of it with `eof`) as output of `id`,
    /// hands them to the log writer (and `data[raw..]` for `id`'s own log), keeps them in
    /// its tail and offers them to subscribers. Returns the bytes used and the number of
    /// lines.
    fn emit(&mut self, id: usize, data: &[u8], raw: Option<usize>, eof: bool) -> (usize, u64) {
        let width = match self.width {
            Some(width) => width,
            None => *self.width.insert(lock(&self.shared.names).fix_width()),
        };
        let color = self.color;
        let proc = &mut self.procs[id];
        let prefix = match &mut proc.prefix {
            Some(prefix) => prefix,
            slot @ None => {
                let prefix = Prefix::new(&proc.name, Names::color(id), width, color);
                if let Some(logs) = &mut self.logs {
                    logs.prefix(id, prefix.log().to_vec());
                }
                slot.insert(prefix)
            }
        };
        let ranges = &mut self.ranges;
        ranges.clear();
        let used = split_lines(data, eof, |range| ranges.push(range));
        self.batch.push(prefix, data, ranges);
        if let Some(logs) = &mut self.logs {
            logs.lines(id, self.now, data, ranges, raw);
        }
        let first_seq = self.seq;
        let lines = ranges.len() as u64;
        self.seq += lines;
        {
            // The tail before the feed: a line a subscriber gets is in the tail already.
            let mut tails = lock(&self.shared.tails);
            tails.push(id, first_seq, self.now, data, ranges);
            if self.shared.feed.receiver_count() > 0 {
                for (seq, range) in (first_seq..).zip(ranges.iter()) {
                    let _ = self.shared.feed.send(LogLine {
                        seq,
                        time: self.now,
                        name: Arc::clone(&proc.name),
                        text: data[range.clone()].into(),
                    });
                }
            }
        }
        let pending = self.batch.len() + self.logs.as_ref().map_or(0, Writer::len);
        if pending >= WRITE_AT {
            self.write_out();
        }
        (used, lines)
    }

    /// Writes the terminal's lines and hands the rest to the log writer; captures that
    /// ended and flushes are answered once their bytes are written.
    fn write_out(&mut self) {
        // The logs first: a terminal that takes nothing must not hold them back.
        if let Some(logs) = &mut self.logs {
            if logs.len() > 0 {
                logs.ship();
            }
        }
        self.terminal.write_lines(&self.batch.term);
        self.batch.clear();
        match &mut self.logs {
            Some(logs) => {
                if !self.finished.is_empty() || !self.flushed.is_empty() {
                    logs.current.finished.append(&mut self.finished);
                    logs.current.flushed.append(&mut self.flushed);
                    logs.ship();
                }
            }
            None => {
                for (done, result) in self.finished.drain(..) {
                    let _ = done.send(result);
                }
                for (reply, result) in self.flushed.drain(..) {
                    let _ = reply.send(result);
                }
            }
        }
    }
}
