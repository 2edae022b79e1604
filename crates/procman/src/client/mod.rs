//! Client commands, one file each: they reach a running server through [`crate::control`]
//! and speak [`crate::protocol`].

mod attach;
mod check;
mod logs;
mod reference;
mod restart;
mod server_log;
mod start;
mod status;
mod stop;
mod tui;
mod wait;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

pub use attach::{AttachOptions, attach};
pub use check::check;
pub use logs::{LogsOptions, logs};
pub use reference::{ClientReference, client_reference};
pub use restart::restart;
pub use start::start;
pub use status::status;
pub use stop::stop;
pub use tui::tui;
pub use wait::{NOT_SATISFIED, WAIT_VALUE_VAR, WaitRequest, wait};

use crate::control::{self, RuntimePaths, ServerInfo};
use crate::protocol::{Message, Reply};

/// Paths of the server for `config`, with a one-line error if the config does not exist.
fn paths_for(config: &Path) -> Result<RuntimePaths> {
    Ok(RuntimePaths::for_config(config)?)
}

/// Sends over the socket when the server has one (and gets its reply), else over the
/// FIFO (a procman 0.12 server, or a socket that cannot be reached).
fn send(paths: &RuntimePaths, message: &Message) -> Result<Option<Reply>> {
    if let Some(server) = ServerInfo::read(&paths.discovery).filter(ServerInfo::is_live) {
        warn_on_version_skew(&server);
    }
    if paths.socket.exists() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        if let Ok(reply) =
            runtime.block_on(control::request(paths, message, Duration::from_secs(10)))
        {
            return Ok(Some(reply));
        }
    }
    control::send_fifo(paths, message)?;
    Ok(None)
}

/// Warns (and carries on) when the server runs another procman version than this client:
/// the protocol is versioned in the discovery file, and both sides accept what they know.
pub fn warn_on_version_skew(server: &ServerInfo) {
    let ours = env!("CARGO_PKG_VERSION");
    if server.version != ours {
        eprintln!(
            "procman: warning: the server (pid {}) runs procman {} (protocol {}), this client is \
             procman {ours} (protocol {}); carrying on",
            server.pid,
            server.version,
            server.protocol,
            crate::protocol::PROTOCOL_VERSION
        );
    }
}

/// Prints one line to stdout; a closed stdout (`procman status | head -1`) ends the
/// command quietly instead of panicking.
fn print_line(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("procman: error: writing to stdout: {e}");
        std::process::exit(2);
    }
}

/// Sends one request per process name over the socket, in order, printing each answer;
/// fails (exit 1) if any was refused.
fn request_each(
    paths: &RuntimePaths,
    names: &[String],
    message: impl Fn(&str) -> Message,
) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failed = false;
    for name in names {
        // A stop waits for the process's stop_timeout; allow that and more.
        let reply = runtime.block_on(control::request(
            paths,
            &message(name),
            Duration::from_secs(300),
        ))?;
        match reply {
            Reply::Ok { message } => print_line(&message),
            Reply::Started { process } => match process.state.pid() {
                Some(pid) => print_line(&format!("started {} (pid {pid})", process.name)),
                None => print_line(&format!("{} is {}", process.name, process.state.label())),
            },
            Reply::Error { message } => {
                eprintln!("procman: {message}");
                failed = true;
            }
            other => print_line(&serde_json::to_string(&other)?),
        }
    }
    Ok(i32::from(failed))
}
