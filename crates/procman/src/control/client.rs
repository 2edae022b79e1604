//! The client side: `procman start`/`stop` write to the FIFO (no server → immediate error),
//! `procman status` and other request/reply commands use the socket.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use super::checks::{self, Kind, Refusal};
use super::{ClientError, RuntimePaths};
use crate::protocol::{Message, Reply, encode};

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
    match super::Stream::open(paths, message).await?.next().await? {
        Some(reply) => Ok(reply),
        None => Err(ClientError::BadReply {
            config: paths.config.clone(),
            message: "it closed the connection without replying".into(),
        }),
    }
}
