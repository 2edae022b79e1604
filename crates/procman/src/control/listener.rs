//! The server side: one stream of requests from both the FIFO and the socket.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::checks;
use super::discovery::ServerInfo;
use super::{ControlError, RuntimePaths, fifo, socket};
use crate::protocol::{Message, Reply};

/// How long a socket connection may stay silent before it is dropped.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests buffered between the readers and the server; readers wait when it is full,
/// so nothing is dropped.
const QUEUE: usize = 1024;

/// What is found at a runtime path before binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Missing,
    Stale,
    Live,
}

/// Which channel a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The one-way FIFO (`procman start`/`stop`, procman 0.12 clients).
    Fifo,
    /// The request/reply socket.
    Socket,
}

/// Replies a socket connection buffers for a streaming request before the server treats
/// its client as too slow and ends the stream.
pub(crate) const STREAM_BUFFER: usize = 4096;

/// Output lines a follow feed may have waiting for its connection; past that, the feed
/// itself falls behind (and says how much it skipped) rather than the server buffering.
pub const FOLLOW_BUFFER: usize = 64;

/// What the server hands a socket connection.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// One reply line.
    Reply(Reply),
    /// A second source of replies, written as they come until it ends (output lines).
    Follow(mpsc::Receiver<Reply>),
}

/// One request, or the error that took its place (bad line, refused peer, read failure),
/// so that nothing goes unreported.
#[derive(Debug)]
pub struct Incoming {
    /// The parsed request, or why the line could not be used.
    pub request: Result<Message, String>,
    /// Where it came from.
    pub via: Channel,
    replies: Option<mpsc::Sender<Outgoing>>,
}

impl Incoming {
    pub(crate) fn new(
        request: Result<Message, String>,
        via: Channel,
        replies: Option<mpsc::Sender<Outgoing>>,
    ) -> Incoming {
        Incoming {
            request,
            via,
            replies,
        }
    }

    /// Whether [`Incoming::reply`] reaches a client (socket requests only).
    pub fn wants_reply(&self) -> bool {
        self.replies.is_some()
    }

    /// Answers the request: one JSON line back on its socket connection; a no-op for
    /// FIFO requests, which are one-way. Dropping an unanswered socket request sends the
    /// client an error reply.
    pub fn reply(self, reply: Reply) {
        if let Some(tx) = self.replies {
            let _ = tx.try_send(Outgoing::Reply(reply));
        }
    }

    /// Keeps the connection open for a stream of replies (a subscription); `None` for a
    /// FIFO request, which cannot be answered.
    pub fn into_stream(self) -> Option<ReplyStream> {
        self.replies.map(ReplyStream)
    }
}

/// The open end of a streaming request: each [`ReplyStream::send`] is one line to the
/// client. Dropping it (every clone) ends the stream, after what a follow feed had
/// waiting is written.
#[derive(Debug, Clone)]
pub struct ReplyStream(mpsc::Sender<Outgoing>);

impl ReplyStream {
    /// Queues one reply without waiting; false when the client is gone or so far behind
    /// that [`STREAM_BUFFER`] replies are waiting (the caller then drops the stream, and
    /// the client, whose stream ended, can subscribe again for a fresh snapshot).
    pub fn send(&self, reply: Reply) -> bool {
        self.0.try_send(Outgoing::Reply(reply)).is_ok()
    }

    /// Adds a feed of replies to the stream, written in between the others as they come,
    /// for as long as the stream lasts: the feed's sender waits while
    /// [`FOLLOW_BUFFER`] of its replies are unwritten, so a slow client holds back only
    /// the feed. Returns the sender; false when the client is gone.
    pub fn follow(&self) -> Option<mpsc::Sender<Reply>> {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        self.0.try_send(Outgoing::Follow(rx)).ok().map(|()| tx)
    }

    /// Whether the client has gone (its connection closed).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The server's endpoints for one config: the FIFO and the socket, merged into one stream.
#[derive(Debug)]
pub struct Listener {
    paths: RuntimePaths,
    rx: mpsc::Receiver<Incoming>,
    /// Kept so that `next` waits rather than ends if a reader task stops.
    keep_open: Option<mpsc::Sender<Incoming>>,
    tasks: Vec<JoinHandle<()>>,
    fifo_id: (u64, u64),
    socket_id: (u64, u64),
    closed: bool,
}

impl Listener {
    /// Creates the FIFO (mode 0600) and binds the socket (mode 0600) after checking what
    /// is already there: unsafe files are refused untouched, a live server is refused by
    /// pid, files left by a dead server are replaced.
    pub async fn bind(paths: &RuntimePaths) -> Result<Listener, ControlError> {
        Self::bind_with_idle_timeout(paths, DEFAULT_IDLE_TIMEOUT).await
    }

    /// [`Listener::bind`] with a custom limit on silent socket connections.
    pub async fn bind_with_idle_timeout(
        paths: &RuntimePaths,
        idle: Duration,
    ) -> Result<Listener, ControlError> {
        socket::check_length(&paths.socket)?;
        ensure_runtime_dir(&paths.fifo)?;
        let fifo_state = fifo::probe(&paths.fifo)?;
        let socket_state = socket::probe(&paths.socket)?;
        if fifo_state == Probe::Live || socket_state == Probe::Live {
            return Err(ControlError::AlreadyRunning {
                config: paths.config.clone(),
                pid: ServerInfo::read(&paths.discovery)
                    .filter(ServerInfo::is_live)
                    .map(|info| info.pid),
            });
        }
        for (state, path) in [(fifo_state, &paths.fifo), (socket_state, &paths.socket)] {
            if state == Probe::Stale {
                remove_stale(path)?;
            }
        }
        let (receiver, fifo_id) = fifo::create(&paths.fifo)?;
        let (listener, socket_id) = match socket::bind(&paths.socket) {
            Ok(bound) => bound,
            Err(e) => {
                remove_if_same(&paths.fifo, fifo_id);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let tasks = vec![
            tokio::spawn(fifo::read_loop(receiver, tx.clone())),
            tokio::spawn(socket::accept_loop(listener, tx.clone(), idle)),
        ];
        Ok(Listener {
            paths: paths.clone(),
            rx,
            keep_open: Some(tx),
            tasks,
            fifo_id,
            socket_id,
            closed: false,
        })
    }

    /// The paths this listener serves.
    pub fn paths(&self) -> &RuntimePaths {
        &self.paths
    }

    /// The next request; `None` only after [`Listener::close`]. Writers closing the FIFO
    /// never end the stream.
    pub async fn next(&mut self) -> Option<Incoming> {
        if self.closed {
            return None;
        }
        self.rx.recv().await
    }

    /// Stops reading and removes the FIFO and the socket (only if they are still the
    /// files this listener created), and the discovery file if it names this process.
    /// Idempotent; also run on drop.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.keep_open = None;
        self.rx.close();
        remove_if_same(&self.paths.fifo, self.fifo_id);
        remove_if_same(&self.paths.socket, self.socket_id);
        if ServerInfo::read(&self.paths.discovery).is_some_and(|i| i.pid == std::process::id()) {
            let _ = procref::discovery::remove(&self.paths.discovery);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Creates a missing runtime directory privately; an existing one (such as `/tmp`) is
/// used as is, since each file in it is checked on its own.
fn ensure_runtime_dir(fifo: &Path) -> Result<(), ControlError> {
    let Some(dir) = fifo.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    procref::discovery::ensure_private_dir(dir).map_err(|e| ControlError::RuntimeDir {
        path: dir.to_owned(),
        message: e.to_string(),
    })
}

fn remove_stale(path: &Path) -> Result<(), ControlError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ControlError::Io {
            context: "removing stale",
            path: path.to_owned(),
            source,
        }),
    }
}

fn remove_if_same(path: &Path, id: (u64, u64)) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if checks::identity(&meta) == id {
            let _ = std::fs::remove_file(path);
        }
    }
}
