//! The server's FIFO: procman 0.12's one-way channel, made safe against stale and foreign
//! files, and read so that writers coming and going never end the stream.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::ControlError;
use super::checks::{self, Kind, Refusal};
use super::lines::{LineSplitter, Piece};
use super::listener::{Channel, Incoming, Probe};
use crate::protocol::{MAX_LINE, Message, is_json, parse_line};

/// How many `{` positions of a broken line are tried as the start of a real message.
const MAX_RECOVERY_TRIES: usize = 256;

pub(crate) fn refusal(path: &Path, refusal: Refusal) -> ControlError {
    match refusal {
        Refusal::Insecure(reason) => ControlError::Insecure {
            path: path.to_owned(),
            reason,
        },
        Refusal::Io(source) => ControlError::Io {
            context: "checking",
            path: path.to_owned(),
            source,
        },
    }
}

/// Is a server reading this FIFO? Opening for writing without blocking succeeds only if
/// some process has it open for reading; `ENXIO` means it was left by a dead server.
pub(crate) fn probe(path: &Path) -> Result<Probe, ControlError> {
    if checks::inspect(path, Kind::Fifo)
        .map_err(|r| refusal(path, r))?
        .is_none()
    {
        return Ok(Probe::Missing);
    }
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(_) => Ok(Probe::Live),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(Probe::Stale),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Probe::Missing),
        Err(source) => Err(ControlError::Io {
            context: "probing",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates the FIFO with mode 0600 and opens it read-write, so that the open itself
/// never blocks and reads never see end-of-file while we hold a writer ourselves.
pub(crate) fn create(path: &Path) -> Result<(pipe::Receiver, (u64, u64)), ControlError> {
    let io_err = |context, source| ControlError::Io {
        context,
        path: path.to_owned(),
        source,
    };
    let mode = rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR;
    rustix::fs::mkfifoat(rustix::fs::CWD, path, mode).map_err(|e| {
        if e == rustix::io::Errno::EXIST {
            ControlError::Insecure {
                path: path.to_owned(),
                reason: "it appeared while this server was starting (another `procman serve` starting at the same time?)".into(),
            }
        } else {
            io_err("creating FIFO", e.into())
        }
    })?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err("opening FIFO", e))?;
    let meta = file.metadata().map_err(|e| io_err("checking FIFO", e))?;
    checks::check(&meta, Kind::Fifo).map_err(|r| refusal(path, r))?;
    let id = checks::identity(&meta);
    let opened = file
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| pipe::Receiver::from_file(file));
    match opened {
        Ok(receiver) => Ok((receiver, id)),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(io_err("opening FIFO", e))
        }
    }
}

/// Reads the FIFO for ever, delivering every line (or the error it contains).
pub(crate) async fn read_loop(mut receiver: pipe::Receiver, tx: mpsc::Sender<Incoming>) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match receiver.read(&mut buf).await {
            Ok(0) => {
                let _ = tx
                    .send(fifo_incoming(Err(
                        "the control FIFO reported end-of-file; FIFO requests are no longer read (restart the server)".into(),
                    )))
                    .await;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx
                    .send(fifo_incoming(Err(format!(
                        "reading the control FIFO failed: {e}; FIFO requests are no longer read (restart the server)"
                    ))))
                    .await;
                return;
            }
        };
        for request in requests(&mut splitter, &buf[..n]) {
            if tx.send(fifo_incoming(request)).await.is_err() {
                return;
            }
        }
    }
}

/// The requests (or the errors in their place) that one read of the FIFO completes.
pub(crate) fn requests(splitter: &mut LineSplitter, chunk: &[u8]) -> Vec<Result<Message, String>> {
    let mut pieces = Vec::new();
    splitter.push(chunk, &mut pieces);
    // We hold the FIFO open ourselves, so a writer's close is never seen: a complete
    // message that its writer did not end with a newline is taken as it stands.
    if let Some(line) = splitter.take_if_complete(is_json) {
        pieces.push(Piece::Line(line));
    }
    pieces
        .into_iter()
        .flat_map(|piece| match piece {
            Piece::Line(line) => recover(&line),
            Piece::TooLong => vec![Err(format!(
                "discarded a message longer than {MAX_LINE} bytes; messages are limited to {MAX_LINE} bytes per line"
            ))],
        })
        .collect()
}

fn fifo_incoming(request: Result<Message, String>) -> Incoming {
    Incoming::new(request, Channel::Fifo, None)
}

/// Parses a line; if it is not JSON, looks for a later `{` where a valid JSON message
/// starts — the tail of a line onto which a dead writer's fragment was glued — and
/// returns an error for the fragment followed by that message.
pub(crate) fn recover(line: &[u8]) -> Vec<Result<Message, String>> {
    let error = match parse_line(line) {
        Ok(message) => return vec![Ok(message)],
        Err(error) => error,
    };
    if !is_json(line) {
        let starts = line
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, b)| **b == b'{')
            .map(|(i, _)| i)
            .take(MAX_RECOVERY_TRIES);
        for start in starts {
            if is_json(&line[start..]) {
                let fragment = String::from_utf8_lossy(&line[..start.min(80)]);
                let ellipsis = if start > 80 { "…" } else { "" };
                return vec![
                    Err(format!(
                        "discarded {start} bytes of an incomplete message (a writer that stopped mid-message?): {fragment:?}{ellipsis}"
                    )),
                    parse_line(&line[start..]),
                ];
            }
        }
    }
    vec![Err(error)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_glued_fragment() {
        let line = br#"{"type":"run","na{"type":"run","name":"b","run":"true","env":{"A":"1"}}"#;
        let out = recover(line);
        assert_eq!(out.len(), 2);
        assert!(out[0].as_ref().unwrap_err().contains("discarded 17 bytes"));
        assert!(matches!(&out[1], Ok(Message::Run(r)) if r.name == "b"));
        let out = recover(b"{{{{ nothing here");
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
    }
}
