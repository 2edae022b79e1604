//! The error type shared by every part of procref.

use std::path::PathBuf;
use std::time::Duration;

/// Result type of procref operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each variant saying what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service name cannot be used (empty, too long, or bad characters).
    #[error("invalid service name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A semaphore set exists under this name's key but is not one we may trust.
    #[error(
        "refusing the semaphore set for {name:?} (key {key:#010x}): {reason}; \
         it was not created by procref for this user. Inspect it with `ipcs -s -i ID` and \
         remove it with `ipcrm -S {key:#010x}` if it is stale"
    )]
    ForeignSet {
        /// Service name.
        name: String,
        /// System V key.
        key: i32,
        /// Which check failed.
        reason: String,
    },

    /// A semaphore system call failed.
    #[error("{call} on the semaphore set for {name:?} failed: {source}")]
    Semaphore {
        /// Service name.
        name: String,
        /// The call and operation, e.g. `semop(acquire)`.
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// `release` or `unlock` was called without a matching `acquire` or lock.
    #[error("{what} for {name:?}, but this counter holds none")]
    NotHeld {
        /// Service name.
        name: String,
        /// `release` or `unlock`.
        what: &'static str,
    },

    /// Waiting for another process to start (or stop) the service took too long.
    #[error(
        "timed out after {timeout:?} waiting for another process to finish starting or \
         stopping service {name:?}; raise startup_timeout or check that process"
    )]
    StartupTimeout {
        /// Service name.
        name: String,
        /// The bound that ran out.
        timeout: Duration,
    },

    /// `acquire` found no running service and no `on_first_acquire` to start one.
    #[error("service {name:?} is not running and no on_first_acquire callback is set to start it")]
    NoStarter {
        /// Service name.
        name: String,
    },

    /// Starting the service failed.
    #[error("starting service {name:?} failed: {reason}")]
    ServiceStart {
        /// Service name.
        name: String,
        /// Why.
        reason: String,
    },

    /// Recovering an unhealthy service failed.
    #[error("recovering service {name:?} failed: {reason}")]
    ServiceRecovery {
        /// Service name.
        name: String,
        /// Why.
        reason: String,
    },

    /// The builder was given settings that contradict each other.
    #[error("invalid configuration for service {name:?}: {reason}")]
    Config {
        /// Service name.
        name: String,
        /// What conflicts.
        reason: String,
    },

    /// A path that procref would trust (directory or file) is not private to this user.
    #[error("refusing {path}: {reason}")]
    InsecurePath {
        /// The path.
        path: PathBuf,
        /// Which check failed, and what to do.
        reason: String,
    },

    /// The keeper process could not be started.
    #[error("could not start the keeper for service {name:?}: {reason}")]
    Keeper {
        /// Service name.
        name: String,
        /// Why.
        reason: String,
    },

    /// A process id that must not be signalled (0, 1, or out of range).
    #[error("refusing to signal pid {0}: not a valid target")]
    InvalidPid(u32),

    /// An I/O error with the path or action it concerns.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// An error from a user callback (`on_first_acquire` etc.), kept as text.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Lets callbacks use `?` on I/O calls, as with procref 0.1.
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            context: "I/O error".into(),
            source,
        }
    }
}

/// Lets callbacks return `Err("message".into())`, as with procref 0.1.
impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Other(message)
    }
}

/// Lets callbacks return `Err("message".into())`, as with procref 0.1.
impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Other(message.to_owned())
    }
}
