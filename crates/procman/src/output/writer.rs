//! The log writer thread: formats `procman.log` and writes it and every `<name>.log`.
//!
//! Writing to a file costs the kernel about as much per byte as everything else the
//! output does, and so does formatting `procman.log` (time stamp, name column, escape
//! sequences removed), so both run beside the output thread, one batch behind it: the
//! output thread only copies the bytes it read and the positions of their lines. The
//! queue between them is short: a slow disk makes the output thread wait, which makes
//! the children wait; nothing is dropped.

use std::fmt::Write as _;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::ansi::{clean, has_controls};
use super::logdir::LogFile;

/// Batches queued for the writer before the output thread waits.
const QUEUE: usize = 2;
/// Capacity a batch's buffers keep between uses.
const KEEP: usize = 1024 * 1024;

/// A capture that reached end of file, and what to answer once its bytes are written.
pub(crate) type Finished = (oneshot::Sender<io::Result<u64>>, io::Result<u64>);
/// A flush request, and what to answer once everything before it is written.
pub(crate) type Flushed = (mpsc::SyncSender<io::Result<()>>, io::Result<()>);

/// What one write-out of the output thread gives the log files.
#[derive(Default)]
pub(crate) struct LogBatch {
    /// Bytes read from the pipes and the supervisor's lines, back to back.
    bytes: Vec<u8>,
    /// Line ranges of the [`Piece::Lines`], relative to the start of the piece's bytes.
    lines: Vec<Range<usize>>,
    /// What to write, in output order.
    pieces: Vec<Piece>,
    pub(crate) finished: Vec<Finished>,
    pub(crate) flushed: Vec<Flushed>,
}

enum Piece {
    /// `bytes` (a range of [`LogBatch::bytes`]) for the own log of name `id`.
    Raw { id: usize, bytes: Range<usize> },
    /// Lines of name `id` read at `time` for `procman.log`: `lines` (a range of
    /// [`LogBatch::lines`]) cut from `bytes`.
    Lines {
        id: usize,
        time: SystemTime,
        bytes: Range<usize>,
        lines: Range<usize>,
    },
}

enum Work {
    Register(usize, Option<LogFile>),
    /// The name column of `id` in `procman.log`, sent before its first line.
    Prefix(usize, Vec<u8>),
    Write(Box<LogBatch>),
}

/// The output thread's end of the log writer.
pub(crate) struct Writer {
    queue: mpsc::SyncSender<Work>,
    spare: mpsc::Receiver<Box<LogBatch>>,
    /// The batch being filled.
    pub(crate) current: Box<LogBatch>,
}

impl Writer {
    /// Starts the writer thread for `combined` (`procman.log`); it counts the batches it
    /// writes in `progress`.
    pub(crate) fn start(combined: LogFile, progress: Arc<AtomicU64>) -> io::Result<Writer> {
        let (queue, work) = mpsc::sync_channel(QUEUE);
        let (recycle, spare) = mpsc::channel();
        thread::Builder::new()
            .name("procman-logs".into())
            .spawn(move || write_all(combined, work, recycle, &progress))?;
        Ok(Writer {
            queue,
            spare,
            current: Box::default(),
        })
    }

    /// The own log of name `id` (in registration order).
    pub(crate) fn register(&mut self, id: usize, log: Option<LogFile>) {
        let _ = self.queue.send(Work::Register(id, log));
    }

    /// The name column of `id` in `procman.log` (`{name:>width} | `), before its first line.
    pub(crate) fn prefix(&mut self, id: usize, prefix: Vec<u8>) {
        let _ = self.queue.send(Work::Prefix(id, prefix));
    }

    /// Appends bytes of `id`'s own log.
    pub(crate) fn raw(&mut self, id: usize, bytes: &[u8]) {
        let range = self.current.push_bytes(bytes);
        self.current.push_raw(id, range);
    }

    /// Appends the lines `ranges` of `data`, read at `time`, for `procman.log`; with
    /// `raw`, the bytes of `data` from `raw` on also go to `id`'s own log.
    pub(crate) fn lines(
        &mut self,
        id: usize,
        time: SystemTime,
        data: &[u8],
        ranges: &[Range<usize>],
        raw: Option<usize>,
    ) {
        let batch = &mut self.current;
        let bytes = batch.push_bytes(data);
        if let Some(from) = raw {
            batch.push_raw(id, bytes.start + from..bytes.end);
        }
        let first = batch.lines.len();
        batch.lines.extend_from_slice(ranges);
        batch.pieces.push(Piece::Lines {
            id,
            time,
            bytes,
            lines: first..batch.lines.len(),
        });
    }

    /// Bytes waiting in the current batch.
    pub(crate) fn len(&self) -> usize {
        self.current.bytes.len()
    }

    /// Hands the current batch to the writer thread (waiting while the queue is full).
    pub(crate) fn ship(&mut self) {
        let next = self.spare.try_recv().unwrap_or_default();
        let batch = std::mem::replace(&mut self.current, next);
        // Fails only if the writer thread is gone; its answers are then dropped, which
        // the waiting sides see as the output having ended.
        let _ = self.queue.send(Work::Write(batch));
    }
}

impl LogBatch {
    fn push_bytes(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    /// Adds `range` to `id`'s own log, joined to the previous piece when it continues it.
    fn push_raw(&mut self, id: usize, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        match self.pieces.last_mut() {
            Some(Piece::Raw { id: last, bytes }) if *last == id && bytes.end == range.start => {
                bytes.end = range.end;
            }
            _ => self.pieces.push(Piece::Raw { id, bytes: range }),
        }
    }
}

/// The writer thread's state.
struct Files {
    combined: LogFile,
    /// Own logs and `procman.log` name columns, by name id.
    logs: Vec<Option<LogFile>>,
    prefixes: Vec<Vec<u8>>,
    /// `procman.log`'s lines of the batch being written.
    text: Vec<u8>,
    /// The time of the last stamp made, and the stamp with the name column of a piece.
    stamped: Option<SystemTime>,
    stamp: String,
    head: Vec<u8>,
}

fn write_all(
    combined: LogFile,
    work: mpsc::Receiver<Work>,
    recycle: mpsc::Sender<Box<LogBatch>>,
    progress: &AtomicU64,
) {
    let mut files = Files {
        combined,
        logs: Vec::new(),
        prefixes: Vec::new(),
        text: Vec::new(),
        stamped: None,
        stamp: String::new(),
        head: Vec::new(),
    };
    for item in work {
        match item {
            Work::Register(id, log) => {
                if files.logs.len() <= id {
                    files.logs.resize_with(id + 1, || None);
                }
                files.logs[id] = log;
            }
            Work::Prefix(id, prefix) => {
                if files.prefixes.len() <= id {
                    files.prefixes.resize_with(id + 1, Vec::new);
                }
                files.prefixes[id] = prefix;
            }
            Work::Write(mut batch) => {
                files.write(&batch);
                progress.fetch_add(1, Ordering::Relaxed);
                for (done, result) in batch.finished.drain(..) {
                    let _ = done.send(result);
                }
                for (reply, result) in batch.flushed.drain(..) {
                    let _ = reply.send(result);
                }
                batch.pieces.clear();
                batch.lines.clear();
                batch.lines.shrink_to(KEEP / 16);
                batch.bytes.clear();
                batch.bytes.shrink_to(KEEP);
                let _ = recycle.send(batch);
            }
        }
    }
}

impl Files {
    /// Writes the own logs' bytes, then `procman.log`'s lines, of `batch`.
    fn write(&mut self, batch: &LogBatch) {
        self.text.clear();
        for piece in &batch.pieces {
            match piece {
                Piece::Raw { id, bytes } => {
                    if let Some(Some(log)) = self.logs.get_mut(*id) {
                        log.write(&batch.bytes[bytes.clone()]);
                    }
                }
                Piece::Lines {
                    id,
                    time,
                    bytes,
                    lines,
                } => self.format(
                    *id,
                    *time,
                    &batch.bytes[bytes.clone()],
                    &batch.lines[lines.clone()],
                ),
            }
        }
        self.combined.write(&self.text);
        self.text.shrink_to(KEEP);
    }

    /// Appends `{stamp} {name:>width} | {line}` for each of the lines `ranges` of `data`,
    /// escape sequences removed and other controls in caret notation (see [`clean`]).
    fn format(&mut self, id: usize, time: SystemTime, data: &[u8], ranges: &[Range<usize>]) {
        if self.stamped != Some(time) {
            self.stamped = Some(time);
            self.stamp.clear();
            let _ = write!(self.stamp, "{} ", humantime::format_rfc3339_millis(time));
        }
        self.head.clear();
        self.head.extend_from_slice(self.stamp.as_bytes());
        self.head
            .extend_from_slice(self.prefixes.get(id).map_or(&[][..], Vec::as_slice));
        let controls = has_controls(data);
        let text = &mut self.text;
        text.reserve(data.len() + ranges.len() * (self.head.len() + 1));
        for range in ranges {
            text.extend_from_slice(&self.head);
            if controls {
                clean(&data[range.clone()], text);
            } else {
                text.extend_from_slice(&data[range.clone()]);
            }
            text.push(b'\n');
        }
    }
}
