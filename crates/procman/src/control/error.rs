//! Errors of the control layer, each worded to say what went wrong, where, and what to do.

use std::path::PathBuf;
use std::time::Duration;

/// Why the server side (paths, [`super::Listener::bind`]) could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The config file does not exist or cannot be resolved.
    #[error("cannot use config {}: {source}; pass the path of an existing procman.yaml", path.display())]
    Config {
        /// The path as given.
        path: PathBuf,
        /// Why canonicalization failed.
        source: std::io::Error,
    },
    /// A runtime path exists but is not safe to use; nothing was written to it.
    #[error("refusing to use {}: {reason}; remove it (`rm {}`) if it is a leftover, or set PROCMAN_RUNTIME_DIR to a private directory", path.display(), path.display())]
    Insecure {
        /// The refused path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another server is listening for the same config.
    #[error("a procman server{} is already serving {}; stop it with `procman stop {}`", pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), config.display(), config.display())]
    AlreadyRunning {
        /// The config both servers would serve.
        config: PathBuf,
        /// The running server's pid, from its discovery file when that is valid.
        pid: Option<u32>,
    },
    /// The runtime directory is missing and cannot be created, or is not private.
    #[error("cannot use runtime directory {}: {message}; set PROCMAN_RUNTIME_DIR to a directory you own", path.display())]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The socket path does not fit in `sockaddr_un`.
    #[error("socket path {} is {len} bytes, longer than the system limit of {max}; set PROCMAN_RUNTIME_DIR to a shorter directory", path.display())]
    PathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A system call failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why a client (`procman start`, `stop`, `status`) could not talk to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server is listening for this config.
    #[error("no `procman serve` is running for {}; start one with `procman serve {} &`", config.display(), config.display())]
    NoServer {
        /// The config whose server was looked for.
        config: PathBuf,
    },
    /// A runtime path exists but is not safe to write to.
    #[error("refusing to use {}: {reason}; remove it (`rm {}`) if it is a leftover", path.display(), path.display())]
    Insecure {
        /// The refused path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The encoded message is too big to be written atomically.
    #[error(
        "message is {len} bytes; the FIFO accepts at most {max} bytes per message (larger writes could interleave with other clients); shorten the command or environment"
    )]
    TooLarge {
        /// Encoded length, newline included.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The server did not take or answer the message in time.
    #[error("the procman server for {} did not respond within {}; it may be overloaded or stuck", config.display(), humantime::format_duration(*after))]
    Timeout {
        /// The config whose server was asked.
        config: PathBuf,
        /// How long we waited.
        after: Duration,
    },
    /// The server's answer was not a valid reply.
    #[error("the procman server for {} sent an invalid reply: {message}", config.display())]
    BadReply {
        /// The config whose server answered.
        config: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A system call failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
