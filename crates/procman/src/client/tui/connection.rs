//! What the TUI's connections deliver to the view: the replies of its subscription, and
//! the kept output tail assembled from the `logs` replies it comes in.

pub use crate::protocol::LogLine;
use crate::protocol::Reply;

/// What the server streams to the TUI.
#[derive(Debug, Clone, PartialEq)]
pub enum FromServer {
    /// A reply of the protocol: the `status` snapshot, `event`s, `log_gap`, an `error`.
    Reply(Reply),
    /// One output line (a subscription with `"logs": true`).
    Log(LogLine),
    /// The whole answer to a `logs` request: the kept tail, oldest first.
    Logs(Vec<LogLine>),
}

impl From<Reply> for FromServer {
    fn from(reply: Reply) -> FromServer {
        match reply {
            Reply::Log(line) => FromServer::Log(line),
            other => FromServer::Reply(other),
        }
    }
}
