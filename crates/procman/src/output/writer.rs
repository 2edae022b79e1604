//! The log writer thread: writes `procman.log` and every `<name>.log`.
//!
//! Writing to a file costs the kernel about as much per byte as everything else the
//! output does, so it runs beside the output thread, one batch behind it. The queue
//! between them is short: a slow disk makes the output thread wait, which makes the
//! children wait; nothing is dropped.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use tokio::sync::oneshot;

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
    /// Lines for `procman.log`, formatted.
    pub(crate) combined: Vec<u8>,
    /// Bytes for the processes' own logs, back to back…
    raw: Vec<u8>,
    /// …and whose they are: (name id, range in `raw`).
    pieces: Vec<(usize, Range<usize>)>,
    pub(crate) finished: Vec<Finished>,
    pub(crate) flushed: Vec<Flushed>,
}

enum Work {
    Register(usize, Option<LogFile>),
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

    /// Appends bytes of `id`'s own log.
    pub(crate) fn raw(&mut self, id: usize, bytes: &[u8]) {
        let batch = &mut self.current;
        let start = batch.raw.len();
        batch.raw.extend_from_slice(bytes);
        match batch.pieces.last_mut() {
            Some((last, range)) if *last == id && range.end == start => range.end = batch.raw.len(),
            _ => batch.pieces.push((id, start..batch.raw.len())),
        }
    }

    /// Bytes waiting in the current batch.
    pub(crate) fn len(&self) -> usize {
        self.current.raw.len() + self.current.combined.len()
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

fn write_all(
    mut combined: LogFile,
    work: mpsc::Receiver<Work>,
    recycle: mpsc::Sender<Box<LogBatch>>,
    progress: &AtomicU64,
) {
    let mut logs: Vec<Option<LogFile>> = Vec::new();
    for item in work {
        match item {
            Work::Register(id, log) => {
                if logs.len() <= id {
                    logs.resize_with(id + 1, || None);
                }
                logs[id] = log;
            }
            Work::Write(mut batch) => {
                for (id, range) in batch.pieces.drain(..) {
                    if let Some(Some(log)) = logs.get_mut(id) {
                        log.write(&batch.raw[range]);
                    }
                }
                combined.write(&batch.combined);
                progress.fetch_add(1, Ordering::Relaxed);
                for (done, result) in batch.finished.drain(..) {
                    let _ = done.send(result);
                }
                for (reply, result) in batch.flushed.drain(..) {
                    let _ = reply.send(result);
                }
                for buf in [&mut batch.raw, &mut batch.combined] {
                    buf.clear();
                    buf.shrink_to(KEEP);
                }
                let _ = recycle.send(batch);
            }
        }
    }
}
