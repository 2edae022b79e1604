//! The server's Unix socket: requests with replies (status, stop/restart one process),
//! only from the same user (checked with `SO_PEERCRED`), each connection bounded in time.

use std::collections::VecDeque;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::ControlError;
use super::checks::{self, Kind};
use super::fifo::refusal;
use super::lines::{LineSplitter, Piece};
use super::listener::{Channel, Incoming, Outgoing, Probe, STREAM_BUFFER};
use crate::protocol::{MAX_LINE, Reply, encode_reply, parse_line};

/// Requests a connection may queue while a stream is being answered; beyond them the
/// server stops reading, so a client that floods requests waits in its own writes.
const MAX_QUEUED: usize = 64;

/// Room in `sockaddr_un.sun_path` for a path and its terminating NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Is a server accepting on this socket? `ECONNREFUSED` means it was left by a dead server.
pub(crate) fn probe(path: &Path) -> Result<Probe, ControlError> {
    if checks::inspect(path, Kind::Socket)
        .map_err(|r| refusal(path, r))?
        .is_none()
    {
        return Ok(Probe::Missing);
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Ok(Probe::Live),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Probe::Stale),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Probe::Missing),
        Err(source) => Err(ControlError::Io {
            context: "probing",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Fails early (before anything is created) when the path cannot be bound.
pub(crate) fn check_length(path: &Path) -> Result<(), ControlError> {
    let len = path.as_os_str().as_bytes().len();
    if len > MAX_SOCKET_PATH {
        return Err(ControlError::PathTooLong {
            path: path.to_owned(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(())
}

/// Binds the socket and restricts it to mode 0600.
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, (u64, u64)), ControlError> {
    let io_err = |context, source| ControlError::Io {
        context,
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            ControlError::Insecure {
                path: path.to_owned(),
                reason: "it appeared while this server was starting (another `procman serve` starting at the same time?)".into(),
            }
        } else {
            io_err("binding socket", e)
        }
    })?;
    let meta = std::fs::symlink_metadata(path)
        .and_then(|meta| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Ok(meta)
        })
        .map_err(|e| io_err("securing socket", e))?;
    checks::check(&meta, Kind::Socket).map_err(|r| refusal(path, r))?;
    Ok((listener, checks::identity(&meta)))
}

/// Accepts connections for ever; each is served by its own task, all dropped with this one.
pub(crate) async fn accept_loop(
    listener: UnixListener,
    tx: mpsc::Sender<Incoming>,
    idle: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, tx.clone(), idle));
                }
                Err(e) => {
                    let message = format!("accepting a control connection failed: {e}");
                    if tx.send(Incoming::new(Err(message), Channel::Socket, None)).await.is_err() {
                        return;
                    }
                    // Typically EMFILE: give finishing connections a moment to free descriptors.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one connection: each line is a request, answered with one reply line. A peer
/// of another user is refused before anything is read (and reported as an error
/// [`Incoming`]); a peer silent for `idle` is dropped without report, since it sent nothing.
async fn serve(stream: UnixStream, tx: mpsc::Sender<Incoming>, idle: Duration) {
    let euid = rustix::process::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == euid => {}
        Ok(cred) => {
            let pid = cred
                .pid()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            let message = format!(
                "refused a control connection from uid {}{pid}: only uid {euid} may control this server",
                cred.uid()
            );
            let _ = tx
                .send(Incoming::new(Err(message), Channel::Socket, None))
                .await;
            return;
        }
        Err(e) => {
            let message =
                format!("refused a control connection whose peer cannot be identified: {e}");
            let _ = tx
                .send(Incoming::new(Err(message), Channel::Socket, None))
                .await;
            return;
        }
    }
    let (mut reader, mut writer) = stream.into_split();
    let mut connection = Connection {
        splitter: LineSplitter::default(),
        buf: vec![0u8; 8 * 1024],
        pieces: VecDeque::new(),
        eof: false,
    };
    loop {
        if connection.pieces.is_empty() {
            if connection.eof {
                return;
            }
            match tokio::time::timeout(idle, connection.read(&mut reader)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            continue;
        }
        let Some(piece) = connection.pieces.pop_front() else {
            continue;
        };
        match piece {
            Piece::Line(line) => {
                if !answer(&line, &tx, &mut connection, &mut reader, &mut writer).await {
                    return;
                }
            }
            Piece::TooLong => {
                let message = format!(
                    "request is longer than {MAX_LINE} bytes; requests are limited to {MAX_LINE} bytes per line"
                );
                let _ = writer
                    .write_all(encode_reply(&Reply::Error { message }).as_bytes())
                    .await;
                return;
            }
        }
    }
}

/// The reading side of one connection: requests split into lines, in arrival order.
struct Connection {
    splitter: LineSplitter,
    buf: Vec<u8>,
    pieces: VecDeque<Piece>,
    eof: bool,
}

impl Connection {
    /// Reads once; queues the complete lines (and, at EOF, an unterminated last one).
    async fn read(&mut self, reader: &mut OwnedReadHalf) -> io::Result<()> {
        let n = reader.read(&mut self.buf).await?;
        let mut pieces = Vec::new();
        if n == 0 {
            self.eof = true;
            if let Some(line) = self.splitter.take_partial() {
                pieces.push(Piece::Line(line));
            }
        } else {
            self.splitter.push(&self.buf[..n], &mut pieces);
        }
        self.pieces.extend(pieces);
        Ok(())
    }
}

/// Hands one request to the server and writes its replies, one line each, until the
/// server is done with it: one reply for most requests, a stream for subscriptions (with
/// a follow feed of output lines written in between, until the stream ends). A request
/// the server drops unanswered still gets an error reply. While replies stream, what the
/// client sends is queued (up to [`MAX_QUEUED`] requests), and its EOF ends the stream.
/// Returns whether the connection goes on.
async fn answer(
    line: &[u8],
    tx: &mpsc::Sender<Incoming>,
    connection: &mut Connection,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
) -> bool {
    let request = parse_line(line);
    let fallback = match &request {
        Err(message) => message.clone(),
        Ok(_) => "the server dropped the request without answering".to_owned(),
    };
    let (reply_tx, mut replies) = mpsc::channel(STREAM_BUFFER);
    if tx
        .send(Incoming::new(request, Channel::Socket, Some(reply_tx)))
        .await
        .is_err()
    {
        return false;
    }
    let mut answered = false;
    let mut feed: Option<mpsc::Receiver<Reply>> = None;
    loop {
        tokio::select! {
            outgoing = replies.recv() => match outgoing {
                Some(Outgoing::Reply(reply)) => {
                    answered = true;
                    if !write(writer, &reply).await {
                        return false;
                    }
                }
                Some(Outgoing::Follow(rx)) => {
                    answered = true;
                    feed = Some(rx);
                }
                None => {
                    // The stream ended: what the feed already has is still written.
                    if let Some(feed) = &mut feed {
                        feed.close();
                    }
                    while let Some(reply) = feed.as_mut().and_then(|f| f.try_recv().ok()) {
                        if !write(writer, &reply).await {
                            return false;
                        }
                    }
                    break;
                }
            },
            reply = next(&mut feed), if feed.is_some() => match reply {
                Some(reply) => {
                    if !write(writer, &reply).await {
                        return false;
                    }
                }
                None => feed = None,
            },
            read = connection.read(reader),
                if answered && !connection.eof && connection.pieces.len() < MAX_QUEUED =>
            {
                if read.is_err() || connection.eof {
                    return false;
                }
            }
        }
    }
    if !answered {
        return write(writer, &Reply::Error { message: fallback }).await;
    }
    true
}

/// Writes one reply line; false once the client is gone.
async fn write(writer: &mut OwnedWriteHalf, reply: &Reply) -> bool {
    writer
        .write_all(encode_reply(reply).as_bytes())
        .await
        .is_ok()
}

async fn next(feed: &mut Option<mpsc::Receiver<Reply>>) -> Option<Reply> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}
