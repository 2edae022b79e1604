//! `procman stop`: shut the server down (0.12), or stop single processes with `-p`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{client_reference, paths_for, print_line, request_each, send};
use crate::control::ServerInfo;
use crate::protocol::Message;

/// How long `stop` waits for the server to be gone after it accepted the shutdown.
const SERVER_EXIT_WAIT: Duration = Duration::from_secs(60);

/// With no `processes`: asks the server to shut down and returns once it is gone, so
/// `procman stop && procman serve` just works. Otherwise stops each named process and
/// leaves the server running.
pub fn stop(config: &Path, processes: &[String]) -> Result<i32> {
    if processes.is_empty() && !config.exists() && config.components().count() == 1 {
        let name = config.display();
        bail!(
            "no config file at {name}; to stop the process {name} and keep the server \
             running, use `procman stop -p {name}`"
        );
    }
    let paths = paths_for(config)?;
    if !processes.is_empty() {
        let _reference = client_reference(&paths);
        return request_each(&paths, processes, |name| Message::StopProcess {
            name: name.to_owned(),
        });
    }
    let server = ServerInfo::read(&paths.discovery).filter(ServerInfo::is_live);
    let message = Message::Shutdown {
        user: std::env::var("USER").ok(),
        message: Some("User-initiated via CLI".into()),
    };
    match send(&paths, &message) {
        Ok(Some(crate::protocol::Reply::Error { message })) => {
            bail!("the server refused: {message}")
        }
        Ok(_) => {}
        // The server may close the connection as it leaves; its exit is the answer.
        Err(_) if server.is_some() => {}
        Err(e) => return Err(e),
    }
    if let Some(server) = server {
        if let Ok(process) = procref::process::Process::open(server.pid) {
            if !process.wait_exit(Some(SERVER_EXIT_WAIT)) {
                bail!(
                    "the server (pid {}) is still shutting down after {}s",
                    server.pid,
                    SERVER_EXIT_WAIT.as_secs()
                );
            }
        }
        print_line(&format!("stopped the server (pid {})", server.pid));
    }
    Ok(0)
}
