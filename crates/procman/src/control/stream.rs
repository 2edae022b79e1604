//! A long-lived connection to the server (`subscribe`, `logs` with `follow`): connect to
//! its socket, make sure the server runs as this user, send one request and read the
//! replies it streams back. (One-off requests go through [`super::request`].)

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{ClientError, RuntimePaths};
use crate::protocol::{MAX_REPLY, Message, Reply, encode, parse_reply};

/// A connection that streams replies.
pub struct Stream {
    reader: BufReader<UnixStream>,
    line: Vec<u8>,
    paths: RuntimePaths,
}

impl Stream {
    /// Connects to the server of `paths` and sends `request`.
    pub async fn open(paths: &RuntimePaths, request: &Message) -> Result<Stream, ClientError> {
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
        stream
            .write_all(encode(request).as_bytes())
            .await
            .map_err(|e| io_err("sending to", e))?;
        Ok(Stream {
            reader: BufReader::new(stream),
            line: Vec::new(),
            paths: paths.clone(),
        })
    }

    /// Whether replies have arrived that [`Stream::next`] has not returned yet.
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// The next reply; `None` once the server closed the connection.
    pub async fn next(&mut self) -> Result<Option<Reply>, ClientError> {
        self.line.clear();
        (&mut self.reader)
            .take(MAX_REPLY as u64 + 1)
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
            return Err(bad(if self.line.len() > MAX_REPLY {
                format!("a reply is longer than {MAX_REPLY} bytes")
            } else {
                "the last reply ended before its newline".into()
            }));
        }
        parse_reply(&self.line).map(Some).map_err(bad)
    }
}
