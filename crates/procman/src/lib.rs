//! procman: a `procman.yaml` process supervisor.
//!
//! The binary is a thin shell over this library; each module is one concept:
//!
//! - [`config`]: `procman.yaml` → typed [`config::Config`], with `file:line:col` errors.
//! - [`deps`]: dependency conditions (HTTP, TCP, files, processes) and waiting for them.
//! - [`output`]: multiplexed, prefixed, coloured output and the log directory.
//! - [`supervisor`]: spawning, the process table, shutdown.

pub mod cli;
pub mod config;
pub mod control;
pub mod deps;
pub mod lifecycle;
pub mod output;
pub mod supervisor;
