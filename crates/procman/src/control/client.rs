//! The client side: `procman start`/`stop` write to the FIFO (no server → immediate error),
//! `procman status` and other request/reply commands use the socket.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::checks::{self, Kind, Refusal};
use super::{ClientError, RuntimePaths};
use crate::protocol::{MAX_LINE, Message, Reply, encode, parse_reply};

/// Largest write the kernel guarantees not to interleave with other writers.
pub const PIPE_BUF: usize = 4096;

/// How long `send_fifo` waits for room in a full FIFO (a live but busy server).
const FULL_FIFO_WAIT: Duration = Duration::from_secs(5);

fn refused(path: &Path, refusal: Refusal) -> ClientError {
    match refusal {
        Refusal::Insecure(reason) => ClientError::Insecure {
            path: path.to_owned(),
            reason,
        },
        Refusal::Io(source) => ClientError::Io {
            context: "checking",
            path: path.to_owned(),
            source,
        },
    }
}

/// Writes one message to the server's FIFO with a single `write(2)`, so concurrent
/// clients never interleave. Checks the FIFO (type, owner, mode, no symlink) before and
/// after opening it without blocking: no server → [`ClientError::NoServer`] at once.
pub fn send_fifo(paths: &RuntimePaths, message: &Message) -> Result<(), ClientError> {
    let line = encode(message);
    if line.len() > PIPE_BUF {
        return Err(ClientError::TooLarge {
            len: line.len(),
            max: PIPE_BUF,
        });
    }
    let path = &paths.fifo;
    let no_server = || ClientError::NoServer {
        config: paths.config.clone(),
    };
    if checks::inspect(path, Kind::Fifo)
        .map_err(|r| refused(path, r))?
        .is_none()
    {
        return Err(no_server());
    }
    let file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::ENOENT)) => {
            return Err(no_server());
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused(
                path,
                Refusal::Insecure("it is a symbolic link".into()),
            ));
        }
        Err(source) => {
            return Err(ClientError::Io {
                context: "opening",
                path: path.clone(),
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| ClientError::Io {
        context: "checking",
        path: path.clone(),
        source,
    })?;
    checks::check(&meta, Kind::Fifo).map_err(|r| refused(path, r))?;

    let deadline = Instant::now() + FULL_FIFO_WAIT;
    loop {
        match rustix::io::write(&file, line.as_bytes()) {
            Ok(n) if n == line.len() => return Ok(()),
            Ok(n) => {
                return Err(ClientError::Io {
                    context: "writing",
                    path: path.clone(),
                    source: io::Error::other(format!("short write of {n} of {} bytes", line.len())),
                });
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::PIPE) => return Err(no_server()),
            Err(rustix::io::Errno::AGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Timeout {
                        config: paths.config.clone(),
                        after: FULL_FIFO_WAIT,
                    });
                }
                let timeout = Timespec {
                    tv_sec: left.as_secs() as _,
                    tv_nsec: left.subsec_nanos() as _,
                };
                let mut fds = [PollFd::new(&file, PollFlags::OUT)];
                let _ = rustix::event::poll(&mut fds, Some(&timeout));
            }
            Err(e) => {
                return Err(ClientError::Io {
                    context: "writing",
                    path: path.clone(),
                    source: e.into(),
                });
            }
        }
    }
}

/// Sends one request over the socket and waits at most `timeout` for its one-line reply.
/// The socket must be ours and the server must run as this user.
pub async fn request(
    paths: &RuntimePaths,
    message: &Message,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let path = &paths.socket;
    if checks::inspect(path, Kind::Socket)
        .map_err(|r| refused(path, r))?
        .is_none()
    {
        return Err(ClientError::NoServer {
            config: paths.config.clone(),
        });
    }
    match tokio::time::timeout(timeout, exchange(paths, message)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout {
            config: paths.config.clone(),
            after: timeout,
        }),
    }
}

async fn exchange(paths: &RuntimePaths, message: &Message) -> Result<Reply, ClientError> {
    let path = &paths.socket;
    let io_err = |context, source| ClientError::Io {
        context,
        path: path.clone(),
        source,
    };
    let mut stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            return Err(ClientError::NoServer {
                config: paths.config.clone(),
            });
        }
        Err(e) => return Err(io_err("connecting to", e)),
    };
    let euid = rustix::process::geteuid().as_raw();
    let cred = stream
        .peer_cred()
        .map_err(|e| io_err("identifying the server on", e))?;
    if cred.uid() != euid {
        return Err(ClientError::Insecure {
            path: path.clone(),
            reason: format!(
                "it is served by uid {}, not by this user (uid {euid})",
                cred.uid()
            ),
        });
    }
    stream
        .write_all(encode(message).as_bytes())
        .await
        .map_err(|e| io_err("sending to", e))?;
    let mut line = Vec::new();
    BufReader::new(stream)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| io_err("reading the reply from", e))?;
    let bad = |message: String| ClientError::BadReply {
        config: paths.config.clone(),
        message,
    };
    if line.is_empty() {
        return Err(bad("it closed the connection without replying".into()));
    }
    if !line.ends_with(b"\n") {
        return Err(bad(if line.len() > MAX_LINE {
            format!("the reply is longer than {MAX_LINE} bytes")
        } else {
            "the reply ended before its newline".into()
        }));
    }
    parse_reply(&line).map_err(bad)
}
