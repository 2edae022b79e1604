//! `procman start`: send a process to a running `procman serve`, or start a stopped one.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{client_reference, paths_for, print_line, send};
use crate::protocol::{Message, ProcessName, Reply, RunRequest};

/// Sends `command` as a `run` request (0.12's protocol); prints the final name and pid.
pub fn start(
    config: &Path,
    command: &str,
    name: Option<String>,
    env: Vec<(String, String)>,
    once: bool,
) -> Result<i32> {
    let name = match name {
        Some(name) => name,
        None => default_name(command).context("the command is empty")?,
    };
    let name = ProcessName::new(&name).with_context(|| format!("cannot use the name {name:?}"))?;
    let paths = paths_for(config)?;
    let _reference = client_reference(&paths);
    let run = RunRequest {
        name,
        run: command.to_owned(),
        env: env.into_iter().collect(),
        depends: None,
        once,
    };
    match send(&paths, &Message::Run(run))? {
        Some(Reply::Started { process }) => match process.state.pid() {
            Some(pid) => print_line(&format!("started {} (pid {pid})", process.name)),
            None => print_line(&format!(
                "added {} ({})",
                process.name,
                process.state.label()
            )),
        },
        Some(Reply::Error { message }) => bail!("the server refused: {message}"),
        Some(other) => print_line(&serde_json::to_string(&other)?),
        None => {}
    }
    Ok(0)
}

/// `redis-server --port 6380` → `redis-server`; `/usr/bin/python3 x.py` → `python3`.
fn default_name(command: &str) -> Option<String> {
    let first = command.split_whitespace().next()?.trim_matches(['"', '\'']);
    Path::new(first)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}
