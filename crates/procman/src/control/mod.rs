//! The control layer: how clients reach a running `procman serve`.
//!
//! Two channels lead to one server, both at paths derived from the config
//! ([`RuntimePaths`]):
//! - a FIFO taking procman 0.12's newline-delimited JSON `run`/`shutdown` messages
//!   (one-way; [`send_fifo`] fails at once when no server reads it);
//! - a Unix socket for requests that need an answer ([`request`] → [`Reply`]).
//!
//! The server sees both as one stream of [`Incoming`] requests from a [`Listener`], and
//! advertises itself in a discovery file ([`ServerInfo`]). Every runtime file is private
//! (mode 0600, owned by the user, never a symlink) and checked before it is trusted; files
//! left by a killed server are recognised as stale and replaced.

mod checks;
mod client;
mod discovery;
mod error;
pub(crate) mod fifo;
pub(crate) mod lines;
mod listener;
mod paths;
mod socket;
mod stream;
#[cfg(test)]
mod tests;

pub use client::{PIPE_BUF, request, send_fifo};
pub use discovery::ServerInfo;
pub use error::{ClientError, ControlError};
pub use listener::{Channel, DEFAULT_IDLE_TIMEOUT, FOLLOW_BUFFER, Incoming, Listener, ReplyStream};
pub(crate) use paths::sanitize;
pub use paths::{RUNTIME_DIR_ENV, RuntimePaths};
pub use stream::Stream;
