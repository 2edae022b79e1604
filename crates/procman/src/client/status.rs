//! `procman status`: the process table of a running `run` or `serve`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{client_reference, paths_for, print_line, send};
use crate::duration::human;
use crate::protocol::{Message, ProcessState, ProcessStatus, Reply, Timestamp};

/// Prints the table (or, with `json`, the reply's fields as JSON).
pub fn status(config: &Path, json: bool) -> Result<i32> {
    let paths = paths_for(config)?;
    let _reference = client_reference(&paths);
    let Some(reply) = send(&paths, &Message::Status)? else {
        bail!(
            "the server for {} has no status socket (is it procman 0.12?)",
            config.display()
        );
    };
    let Reply::Status {
        pid,
        config: served,
        processes,
    } = reply
    else {
        bail!("unexpected reply: {}", serde_json::to_string(&reply)?);
    };
    if json {
        let value = serde_json::json!({ "pid": pid, "config": served, "processes": processes });
        print_line(&serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    print_line(&format!("server pid {pid} for {served}"));
    print_line(&table(&processes, Timestamp::now()));
    Ok(0)
}

/// The table `status` prints: one row per process; EXIT belongs to the current run.
pub fn table(processes: &[ProcessStatus], now: Timestamp) -> String {
    let width = processes
        .iter()
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:width$}  {:>7}  {:11}  {:>4}  {:>9}  {:>8}  DETAIL",
        "NAME", "PID", "STATE", "EXIT", "UPTIME", "RESTARTS"
    );
    for p in processes {
        let dash = || "-".to_owned();
        let state = &p.state;
        let pid = state.pid().map_or_else(dash, |v| v.to_string());
        let exit = match state.exit() {
            Some(crate::protocol::Exit::Code(code)) => code.to_string(),
            Some(crate::protocol::Exit::Signal(signal)) => crate::protocol::signal_name(signal),
            None => dash(),
        };
        let uptime = state
            .since()
            .map_or_else(dash, |since| human(since.until(now)));
        let detail = detail(state, now);
        out.push_str(&format!(
            "\n{:width$}  {pid:>7}  {:11}  {exit:>4}  {uptime:>9}  {:>8}  {detail}",
            p.name,
            state.label(),
            p.restarts
        ));
    }
    out
}

/// The last column: what a state is waiting for or why it is what it is.
fn detail(state: &ProcessState, now: Timestamp) -> String {
    match state {
        ProcessState::Waiting { waiting_for } => waiting_for.clone().unwrap_or_default(),
        ProcessState::Stopping {
            deadline, reason, ..
        } => format!(
            "{} (SIGKILL in {})",
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            human(now.until(*deadline))
        ),
        ProcessState::BackingOff {
            waiting_for_output: true,
            attempt,
            ..
        } => format!("restart {attempt} once its output is read"),
        ProcessState::BackingOff { until, attempt, .. } => format!(
            "restart {attempt} in {}",
            human(now.until(*until).max(Duration::ZERO))
        ),
        ProcessState::Failed { reason, .. } => reason.clone(),
        _ => String::new(),
    }
}
