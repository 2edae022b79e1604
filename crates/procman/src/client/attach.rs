//! `procman attach`: run a command while holding a reference on the config's shared
//! server, starting the server if none runs (ADR-0003).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use procref::{RefCounter, SysvRefCounter};

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
    let server = ensure_server(&paths, reference.counter(), options).await?;
    warn_on_version_skew(&server);
    wait_ready(&paths, deadline).await?;
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
            return Ok(server);
        }
        wait_for_leaving_server(paths, options.startup_timeout)?;
        spawn_server(paths, options).await
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

/// Starts `procman serve` in its own session, stdio to a log file beside its runtime
/// files, and waits until it reports that it listens.
async fn spawn_server(paths: &RuntimePaths, options: &AttachOptions) -> Result<ServerInfo> {
    let exe = std::env::current_exe().context("locating the procman executable")?;
    let log_path = paths.discovery.with_extension("log");
    let log = open_server_log(&log_path)?;
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
    let log_tail = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    };
    if read.is_err() {
        let _ = child.kill();
        bail!(
            "the server did not start listening within {}; its log {}:\n{}",
            format_timeout(Some(options.startup_timeout)),
            log_path.display(),
            log_tail()
        );
    }
    // Reap it in the background if it exits before we do.
    std::thread::spawn(move || child.wait());
    ServerInfo::read(&paths.discovery)
        .filter(ServerInfo::is_live)
        .ok_or_else(|| {
            anyhow!(
                "the server exited while starting; its log {}:\n{}",
                log_path.display(),
                log_tail()
            )
        })
}

/// Opens (creating it, mode 0600) the log of a server this attach starts, appending to the
/// previous servers' output. Never through a symlink, never a file that is not a plain
/// file of ours private to us: such a file is refused, untouched.
fn open_server_log(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        anyhow!(
            "refusing the server log {}: {why}; remove it (`rm {}`) if it is a leftover",
            path.display(),
            path.display()
        )
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // No symlink; no blocking on a planted FIFO.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("it is a symbolic link".into()),
            _ => {
                anyhow::Error::new(e).context(format!("opening the server log {}", path.display()))
            }
        })?;
    let meta = log
        .metadata()
        .with_context(|| format!("checking the server log {}", path.display()))?;
    let euid = rustix::process::geteuid().as_raw();
    if !meta.file_type().is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    if meta.uid() != euid {
        return Err(refuse(format!(
            "it is owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode {:o} lets other users read or write it",
            meta.mode() & 0o7777
        )));
    }
    if meta.nlink() != 1 {
        return Err(refuse(format!("it has {} hard links", meta.nlink())));
    }
    Ok(log)
}

/// Waits until every configured long-running process runs and no dependency is pending:
/// one `ready` request that the server answers when that becomes true (no polling). On
/// timeout, one `status` request names what is still pending.
async fn wait_ready(paths: &RuntimePaths, deadline: Instant) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    match control::request(paths, &Message::Ready, left).await {
        Ok(Reply::Ok { .. }) => return Ok(()),
        Ok(Reply::Error { message }) => bail!("the server is not ready: {message}"),
        Ok(other) => bail!("unexpected reply from the server: {other:?}"),
        Err(control::ClientError::Timeout { .. }) => {}
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
