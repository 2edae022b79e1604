//! One check of one condition.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use serde_json_path::JsonPath;
use tokio::net::TcpStream;
use tokio::process::Command;

use super::{Check, ExitBoard, ExitState};
use crate::config::{DependencyKind, FileFormat};

/// Per-request limit for HTTP checks.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit for resolving and connecting in TCP checks.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks `kind` once. Never panics and never blocks the runtime; every kind is bounded in time
/// (HTTP 5 s, TCP 1 s, the rest are local).
pub async fn check_once(kind: &DependencyKind, exits: &ExitBoard) -> Check {
    match kind {
        DependencyKind::Http { url, code } => check_http(url, *code).await,
        DependencyKind::Tcp { address } => match connect(address).await {
            Ok(()) => holds(),
            Err(reason) => not_yet(reason),
        },
        DependencyKind::NotListening { address } => match connect(address).await {
            Ok(()) => not_yet(format!("something is listening on {address}")),
            Err(_) => holds(),
        },
        DependencyKind::PathExists { path } => match path_exists(path).await {
            true => holds(),
            false => not_yet(format!("{} does not exist", path.display())),
        },
        DependencyKind::NotExists { path } => match path_exists(path).await {
            true => not_yet(format!("{} exists", path.display())),
            false => holds(),
        },
        DependencyKind::FileContains {
            path, format, key, ..
        } => match JsonPath::parse(key) {
            Ok(key) => check_file_contains(path, *format, &key).await,
            Err(e) => not_yet(format!("invalid JSONPath `{key}`: {e}")),
        },
        DependencyKind::ProcessExited { name } => exit_check(name, exits.borrow().get(name)),
        DependencyKind::NotRunning { pattern } => check_not_running(pattern).await,
        // Waited for on the output ([`super::wait_for_all`]), never polled; the config
        // rejects it as a watch check.
        DependencyKind::OutputMatches { .. } => {
            not_yet("output_matches is waited for on the output, not checked")
        }
    }
}

fn holds() -> Check {
    Check::Holds { value: None }
}

fn not_yet(reason: impl Into<String>) -> Check {
    Check::NotYet {
        reason: reason.into(),
    }
}

/// The verdict for `process_exited` given what the board says about `name`.
fn exit_check(name: &str, state: Option<&ExitState>) -> Check {
    match state {
        Some(ExitState::Succeeded) => holds(),
        Some(ExitState::Failed { code }) => not_yet(format!("`{name}` exited with code {code}")),
        None => not_yet(not_exited(name)),
    }
}

/// Why `process_exited` does not hold while `name` is still running (or not started).
pub(super) fn not_exited(name: &str) -> String {
    format!("`{name}` has not exited yet")
}

/// Why `url` can never be checked by this build, if so (ureq is built without TLS).
pub(super) fn unsupported_url(url: &str) -> Option<&'static str> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") => None,
        Some("https") => Some("https is not supported by this build; use http"),
        _ => Some("only http:// URLs are supported"),
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .new_agent()
    })
}

async fn check_http(url: &str, code: u16) -> Check {
    if let Some(reason) = unsupported_url(url) {
        return not_yet(reason);
    }
    let owned = url.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        agent()
            .get(&owned)
            .call()
            .map(|response| response.status().as_u16())
    })
    .await;
    match status {
        Ok(Ok(status)) if status == code => holds(),
        Ok(Ok(status)) => not_yet(format!("status {status}")),
        Ok(Err(e)) => not_yet(e.to_string()),
        Err(e) => not_yet(format!("HTTP check did not finish: {e}")),
    }
}

/// Resolves `address` and connects to it within [`CONNECT_TIMEOUT`]; the error is the reason.
async fn connect(address: &str) -> Result<(), String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no connection within {}",
            humantime::format_duration(CONNECT_TIMEOUT)
        )),
    }
}

async fn path_exists(path: &Path) -> bool {
    tokio::fs::try_exists(path).await.unwrap_or(false)
}

/// Reads and parses the file and evaluates `key` against it.
pub(super) async fn check_file_contains(path: &Path, format: FileFormat, key: &JsonPath) -> Check {
    let text = match read_checked_file(path).await {
        Ok(text) => text,
        Err(e) => return not_yet(format!("cannot read {}: {e}", path.display())),
    };
    let root: Result<Value, String> = match format {
        FileFormat::Json => serde_json::from_str(&text).map_err(|e| e.to_string()),
        FileFormat::Yaml => serde_norway::from_str(&text).map_err(|e| e.to_string()),
    };
    let root = match root {
        Ok(root) => root,
        Err(e) => return not_yet(format!("cannot parse {}: {e}", path.display())),
    };
    match key.query(&root).first().and_then(scalar_text) {
        Some(value) => Check::Holds { value: Some(value) },
        None => not_yet(format!("{key} not found in {}", path.display())),
    }
}

/// The text of the regular file at `path`, read off the runtime: a FIFO or a device put
/// there must not hold the check (and the wait's timeout) for good, nor fill memory.
async fn read_checked_file(path: &Path) -> Result<String, String> {
    let owned = path.to_owned();
    match tokio::task::spawn_blocking(move || crate::config::read_text(&owned)).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The text exported for a matched value: scalars as text, containers as compact JSON,
/// null as missing.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(_) | Value::Object(_) => serde_json::to_string(value).ok(),
    }
}

/// `pgrep -f PATTERN`, ignoring procman itself (pgrep already ignores itself).
async fn check_not_running(pattern: &str) -> Check {
    let output = Command::new("pgrep")
        .arg("-f")
        .arg("--")
        .arg(pattern)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(e) => return not_yet(format!("cannot run pgrep: {e}")),
    };
    match output.status.code() {
        Some(1) => holds(),
        Some(0) => {
            let me = std::process::id();
            let pids: Vec<&str> = std::str::from_utf8(&output.stdout)
                .unwrap_or_default()
                .split_whitespace()
                .filter(|pid| pid.parse::<u32>().ok() != Some(me))
                .collect();
            if pids.is_empty() {
                holds()
            } else {
                not_yet(format!("running: pid {}", pids.join(", ")))
            }
        }
        _ => not_yet(format!(
            "pgrep failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}
