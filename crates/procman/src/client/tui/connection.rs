//! The TUI's long-lived connection to the server: connect to its socket, make sure the
//! server runs as this user, send one request and read the replies it streams back.
//! (One-off requests go through [`crate::control::request`].)

use std::io;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::control::{ClientError, RuntimePaths};
use crate::protocol::{MAX_LINE, Reply, Timestamp, parse_reply};

/// One output line of a process (`procman` for the supervisor's own lines).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LogLine {
    /// Whose line it is.
    pub name: String,
    /// When it was read.
    pub time: Timestamp,
    /// The line, with its escape sequences.
    pub line: String,
}

/// What the server streams to the TUI.
#[derive(Debug, Clone, PartialEq)]
pub enum FromServer {
    /// A reply of the protocol: the `status` snapshot, `event`s, an `error`.
    Reply(Reply),
    /// One output line (a subscription with `"logs": true`).
    Log(LogLine),
    /// The answer to a `logs` request: the kept tail, oldest first.
    Logs(Vec<LogLine>),
}

/// Replies the [`Reply`] type does not carry yet.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Output {
    Log(LogLine),
    Logs { lines: Vec<LogLine> },
}

/// A connection that streams replies.
pub struct Stream {
    reader: BufReader<UnixStream>,
    line: Vec<u8>,
    paths: RuntimePaths,
}

impl Stream {
    /// Connects to the server of `paths` and sends `request` (one JSON object).
    pub async fn open(
        paths: &RuntimePaths,
        request: &serde_json::Value,
    ) -> Result<Stream, ClientError> {
        let socket = &paths.socket;
        let io_err = |context, source| ClientError::Io {
            context,
            path: socket.clone(),
            source,
        };
        let mut stream = match UnixStream::connect(socket).await {
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
                path: socket.clone(),
                reason: format!(
                    "it is served by uid {}, not by this user (uid {euid})",
                    cred.uid()
                ),
            });
        }
        let mut line = request.to_string();
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .await
            .map_err(|e| io_err("sending to", e))?;
        Ok(Stream {
            reader: BufReader::new(stream),
            line: Vec::new(),
            paths: paths.clone(),
        })
    }

    /// The next reply; `None` once the server closed the connection.
    pub async fn next(&mut self) -> Result<Option<FromServer>, ClientError> {
        self.line.clear();
        (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(|source| ClientError::Io {
                context: "reading from",
                path: self.paths.socket.clone(),
                source,
            })?;
        if self.line.is_empty() {
            return Ok(None);
        }
        let bad = |message: String| ClientError::BadReply {
            config: self.paths.config.clone(),
            message,
        };
        if !self.line.ends_with(b"\n") {
            return Err(bad(if self.line.len() > MAX_LINE {
                format!("a reply is longer than {MAX_LINE} bytes")
            } else {
                "the last reply ended before its newline".into()
            }));
        }
        if let Ok(output) = serde_json::from_slice::<Output>(&self.line) {
            return Ok(Some(match output {
                Output::Log(line) => FromServer::Log(line),
                Output::Logs { lines } => FromServer::Logs(lines),
            }));
        }
        parse_reply(&self.line)
            .map(|r| Some(FromServer::Reply(r)))
            .map_err(bad)
    }
}
