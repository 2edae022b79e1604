//! `procman attach`: run a command while holding a reference on the config's shared
//! server, starting the server if none runs (ADR-0003).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use procref::{RefCounter, SysvRefCounter};

use super::server_log::{SHOWN_LINES, ServerLog, shutdown_reason};
use super::{ClientReference, warn_on_version_skew};
use crate::control::{self, RuntimePaths, ServerInfo};
use crate::duration::format_timeout;
use crate::protocol::{Message, ProcessState, Reply};

/// Options of `procman attach`.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// Disconnect timeout for a server this attach starts.
    pub disconnect_timeout: Option<Duration>,
    /// No-client timeout for a server this attach starts.
    pub no_client_timeout: Option<Duration>,
    /// Bound on starting the server and waiting for its processes.
    pub startup_timeout: Duration,
    /// Arguments for a server this attach starts: `-e`, `--env-file`, `--no-dotenv`.
    pub serve_args: Vec<std::ffi::OsString>,
}

/// `procman attach CONFIG -- COMMAND…`: holds a reference, starts the server if none runs,
/// waits until it is ready, runs COMMAND, and returns COMMAND's exit code.
pub async fn attach(config: &Path, options: &AttachOptions, command: &[String]) -> Result<i32> {
    let paths = RuntimePaths::for_config(config)?;
    let reference = ClientReference::acquire(&paths)?;
    let deadline = Instant::now() + options.startup_timeout;
    let (server, log) = ensure_server_logged(&paths, reference.counter(), options).await?;
    warn_on_version_skew(&server);
    wait_ready(&paths, deadline, &server, log.as_ref()).await?;
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("no command given after --"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("PROCMAN_CONFIG", &paths.config)
        .env("PROCMAN_SERVER_PID", server.pid.to_string())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    // Like a shell: Ctrl-C goes to the command (same process group); we wait for it.
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = interrupts.recv() => {}
        }
    };
    drop(reference);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The live server for `paths`, started (detached) if there is none. Runs under the
/// startup lock, so concurrent attaches start exactly one.
pub(super) async fn ensure_server(
    paths: &RuntimePaths,
    counter: &SysvRefCounter,
    options: &AttachOptions,
) -> Result<ServerInfo> {
    Ok(ensure_server_logged(paths, counter, options).await?.0)
}

/// [`ensure_server`], with the client's view of the server's output file (when it has
/// one: a server started by `attach` or the TUI).
async fn ensure_server_logged(
    paths: &RuntimePaths,
    counter: &SysvRefCounter,
    options: &AttachOptions,
) -> Result<(ServerInfo, Option<ServerLog>)> {
    let got = tokio::task::block_in_place(|| counter.lock_timeout(options.startup_timeout))?;
    if !got {
        bail!(
            "timed out after {} waiting for another client that is starting the server for {}",
            format_timeout(Some(options.startup_timeout)),
            paths.config.display()
        );
    }
    let result = async {
        if let Some(server) = ServerInfo::read(&paths.discovery).filter(ServerInfo::is_live) {
            return Ok((server, ServerLog::join(&server_log_path(paths))));
        }
        wait_for_leaving_server(paths, options.startup_timeout)?;
        let (server, log) = spawn_server(paths, options).await?;
        Ok((server, Some(log)))
    }
    .await;
    let _ = counter.unlock();
    result
}

/// A server that stopped listening may still be stopping its processes, holding the
/// config's instance lock: a new one would be refused, so wait (in the kernel, on its
/// pidfd) until it has exited.
fn wait_for_leaving_server(paths: &RuntimePaths, timeout: Duration) -> Result<()> {
    let Some(pid) = crate::server::instance_holder(&paths.config) else {
        return Ok(());
    };
    let Ok(process) = procref::process::Process::open(pid) else {
        return Ok(());
    };
    if tokio::task::block_in_place(|| process.wait_exit(Some(timeout))) {
        return Ok(());
    }
    bail!(
        "another procman (pid {pid}) holds {} without serving it and did not exit within {}",
        paths.config.display(),
        format_timeout(Some(timeout))
    )
}

/// Where a server started by a client writes its output: beside its runtime files.
fn server_log_path(paths: &RuntimePaths) -> std::path::PathBuf {
    paths.discovery.with_extension("log")
}

/// Starts `procman serve` in its own session, stdio to a log file beside its runtime
/// files, and waits until it reports that it listens.
async fn spawn_server(
    paths: &RuntimePaths,
    options: &AttachOptions,
) -> Result<(ServerInfo, ServerLog)> {
    let exe = std::env::current_exe().context("locating the procman executable")?;
    let (log, server_log) = ServerLog::create(&server_log_path(paths))?;
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let ready_fd = {
        use std::os::fd::AsRawFd;
        ready_write.as_raw_fd()
    };
    let dir = paths.config.parent().unwrap_or(Path::new("/"));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve")
        .arg(&paths.config)
        .args([
            "--no-client-timeout",
            &format_timeout(options.no_client_timeout),
        ])
        .args([
            "--disconnect-timeout",
            &format_timeout(options.disconnect_timeout),
        ])
        .args(&options.serve_args)
        .current_dir(dir)
        .env("PROCMAN_READY_FD", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    // SAFETY: between fork and exec only async-signal-safe calls: setsid, dup2.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::setsid() < 0 || libc::dup2(ready_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting procman serve")?;
    drop(ready_write);
    let mut ready = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_read)?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        options.startup_timeout,
        tokio::io::AsyncReadExt::read_to_end(&mut ready, &mut buf),
    )
    .await;
    if read.is_err() {
        let _ = child.kill();
        bail!(
            "the server did not start listening within {}{}",
            format_timeout(Some(options.startup_timeout)),
            last_lines(&server_log)
        );
    }
    let pid = child.id();
    // Reaped in the background, where it may exit before we do.
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(child.wait()));
    match ServerInfo::read(&paths.discovery).filter(ServerInfo::is_live) {
        Some(server) => Ok((server, server_log)),
        None => {
            // It left after saying it listens (a process failing at once ends it that
            // fast) or before: once it is gone, its output says which.
            let _ = tokio::task::block_in_place(|| exit.recv_timeout(LEAVING));
            match explained(pid, &server_log) {
                Some(error) => Err(error),
                None => bail!(
                    "the server exited while starting{}",
                    last_lines(&server_log)
                ),
            }
        }
    }
}

/// How long a server that stopped before its processes were ready is waited for, so
/// that its last lines are written.
const LEAVING: Duration = Duration::from_secs(5);

/// `the server (pid N) stopped before its processes were ready: REASON` and its last
/// lines, if its output says why it shut down.
fn explained(pid: u32, log: &ServerLog) -> Option<anyhow::Error> {
    let lines = log.last_lines(SHOWN_LINES);
    let reason = shutdown_reason(&lines)?;
    Some(anyhow!(
        "the server (pid {pid}) stopped before its processes were ready: {reason}{}",
        last_lines(log)
    ))
}

/// The server left before its processes were ready: why, as its output says, and the
/// output's last lines. Waits (in the kernel, on its pidfd, at most until `deadline`)
/// for it to finish leaving, so that its last lines are written.
fn server_failed(server: &ServerInfo, log: Option<&ServerLog>, deadline: Instant) -> anyhow::Error {
    if let Some(process) = procref::process::Process::open_verified(server.pid, server.start_time) {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::task::block_in_place(|| process.wait_exit(Some(left)));
    }
    let Some(log) = log else {
        return anyhow!(
            "the server (pid {}) stopped before its processes were ready; it writes no log this client can read (see its terminal)",
            server.pid
        );
    };
    explained(server.pid, log).unwrap_or_else(|| {
        anyhow!(
            "the server (pid {}) stopped before its processes were ready{}",
            server.pid,
            last_lines(log)
        )
    })
}

/// Whether a live server announces itself for `paths` (a leaving one no longer does).
fn is_discoverable(paths: &RuntimePaths) -> bool {
    ServerInfo::read(&paths.discovery)
        .filter(ServerInfo::is_live)
        .is_some()
}

/// `; last lines of its output (PATH):` and those lines, indented; or why there are none.
fn last_lines(log: &ServerLog) -> String {
    let lines = log.last_lines(SHOWN_LINES);
    if lines.is_empty() {
        return format!("; its output ({}) is empty", log.path().display());
    }
    let mut text = format!(
        "\nlast {} line(s) of its output ({}):",
        lines.len(),
        log.path().display()
    );
    for line in lines {
        text.push_str("\n  ");
        text.push_str(&line);
    }
    text
}

/// Waits until every configured long-running process runs and no dependency is pending:
/// one `ready` request that the server answers when that becomes true (no polling). On
/// timeout, one `status` request names what is still pending. A server that leaves
/// instead is explained from its output ([`server_failed`]).
async fn wait_ready(
    paths: &RuntimePaths,
    deadline: Instant,
    server: &ServerInfo,
    log: Option<&ServerLog>,
) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    match control::request(paths, &Message::Ready, left).await {
        Ok(Reply::Ok { .. }) => return Ok(()),
        // The only error a ready request gets: "the server is shutting down".
        Ok(Reply::Error { .. }) => return Err(server_failed(server, log, deadline)),
        Ok(other) => bail!("unexpected reply from the server: {other:?}"),
        Err(control::ClientError::Timeout { .. }) => {}
        // No answer from a server that stopped being discoverable: it is leaving.
        Err(_) if !is_discoverable(paths) => return Err(server_failed(server, log, deadline)),
        Err(e) => return Err(e.into()),
    }
    let status = control::request(paths, &Message::Status, Duration::from_secs(5)).await?;
    let pending = match status {
        Reply::Status { processes, .. } => processes
            .iter()
            .filter_map(|p| match &p.state {
                ProcessState::Running { .. }
                | ProcessState::Dormant
                | ProcessState::Exited { .. }
                | ProcessState::Stopped { .. } => None,
                ProcessState::Waiting {
                    waiting_for: Some(what),
                } => Some(format!("{} (waiting for {what})", p.name)),
                other => Some(format!("{} ({})", p.name, other.label())),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => format!("{other:?}"),
    };
    bail!("the server's processes were not ready in time: {pending}")
}
