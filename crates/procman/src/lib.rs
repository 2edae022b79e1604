//! procman: a `procman.yaml` process supervisor.
//!
//! The binary is a thin shell over this library; each module is one concept:
//!
//! - [`config`]: `procman.yaml` → typed [`config::Config`], with `file:line:col` errors.
//! - [`deps`]: dependency conditions (HTTP, TCP, files, processes) and waiting for them.
//! - [`output`]: multiplexed, prefixed, coloured output and the log directory.
//! - [`protocol`]: the wire types shared by server and clients, with [`protocol::ProcessName`]
//!   and the process-state enum [`protocol::ProcessState`].
//! - [`control`]: how clients reach a server: runtime paths, FIFO, socket, discovery file.
//! - [`server`]: `run` and `serve`: bootstrap, listening, idle shutdown.
//! - [`supervisor`]: the process table as a state machine, and the effects it asks for
//!   (spawning, signals, timers).
//! - [`client`]: one module per client command (`start`, `stop`, `restart`, `status`, `attach`,
//!   `wait`, …).
//! - [`export`]: the config as systemd units, a Docker Compose file or Kubernetes objects.
//! - [`cli`]: parses the command line and dispatches.

pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod deps;
pub mod duration;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod output;
pub mod protocol;
pub mod server;
pub mod supervisor;
