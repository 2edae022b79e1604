//! The on-demand shared server: clients hold references, the server leaves when idle.
//!
//! A server for a config is the procref reference count named after the config
//! ([`RuntimePaths::service_name`]). Every client (`attach`, `start`, `stop`, `status`)
//! holds one reference while it runs; the kernel drops the reference of a client that
//! dies (`SEM_UNDO`). The server sleeps in the kernel on that count (see ADR-0003):
//!
//! - no-client timeout: if the count never becomes non-zero within it after the server
//!   starts listening, shut down;
//! - disconnect timeout: each time the count falls to 0, if it stays 0 that long, shut down.
//!
//! Before shutting down for idleness the server takes the startup lock and re-checks the
//! count, and it keeps the lock until it is no longer discoverable, so a client that
//! attaches at that moment either keeps the server alive or starts a fresh one: never
//! attaches to one that is leaving.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use procref::{RefCounter, SysvRefCounter};

use crate::control::{self, Message, Reply, RuntimePaths, ServerInfo};

/// When an idle server shuts itself down. `None` means never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Shut down if no client has held a reference this long after listening began.
    pub no_client: Option<Duration>,
    /// Shut down once the count has stayed 0 this long after the last client left.
    pub disconnect: Option<Duration>,
}

impl IdlePolicy {
    /// Whether the server ever shuts down for idleness.
    pub fn is_never(&self) -> bool {
        self.no_client.is_none() && self.disconnect.is_none()
    }
}

/// Default for a server started by `attach` (ADR-0004's 30 s for both timeouts).
pub const ATTACH_DEFAULT: Duration = Duration::from_secs(30);

/// Parses a timeout: humantime (`500ms`, `30s`, `2m`) or `never`.
pub fn parse_timeout(text: &str) -> Result<Option<Duration>, String> {
    if text.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    humantime::parse_duration(text)
        .map(Some)
        .map_err(|e| format!("invalid duration {text:?}: {e} (use e.g. 500ms, 30s, 2m, or never)"))
}

/// Formats a timeout the way it is written on the command line.
pub fn format_timeout(timeout: Option<Duration>) -> String {
    timeout.map_or("never".into(), |d| {
        humantime::format_duration(d).to_string()
    })
}

/// The server's side: watches the count on a dedicated thread and calls `on_idle` with
/// the reason once the server should shut down, holding the startup lock.
pub struct IdleWatch {
    counter: Arc<SysvRefCounter>,
}

impl IdleWatch {
    /// Opens the count for `paths`.
    pub fn new(paths: &RuntimePaths) -> Result<IdleWatch> {
        Ok(IdleWatch {
            counter: Arc::new(SysvRefCounter::new(&paths.service_name())?),
        })
    }

    /// Starts watching. The thread sleeps in `semtimedop`; it never polls.
    pub fn spawn(&self, policy: IdlePolicy, on_idle: impl FnOnce(String) + Send + 'static) {
        if policy.is_never() {
            return;
        }
        let counter = Arc::clone(&self.counter);
        std::thread::Builder::new()
            .name("idle-watch".into())
            .spawn(move || match wait_until_idle(&counter, policy) {
                Ok(reason) => on_idle(reason),
                Err(e) => on_idle(format!(
                    "cannot watch clients any more ({e}); shutting down"
                )),
            })
            .ok();
    }

    /// Lets clients start a new server (called once this one is no longer discoverable).
    pub fn unlock(&self) {
        let _ = self.counter.unlock();
    }

    /// Removes the semaphore set if no client holds it.
    pub fn remove_if_unused(&self) {
        let _ = self.counter.try_remove();
    }
}

fn wait_until_idle(counter: &SysvRefCounter, policy: IdlePolicy) -> procref::Result<String> {
    if !counter.wait_nonzero(policy.no_client)? {
        let d = format_timeout(policy.no_client);
        if confirm_idle(counter)? {
            return Ok(format!("idle: no client for {d}"));
        }
    }
    loop {
        counter.wait_zero(None)?;
        let Some(grace) = policy.disconnect else {
            counter.wait_nonzero(None)?;
            continue;
        };
        if !counter.wait_nonzero(Some(grace))? && confirm_idle(counter)? {
            return Ok(format!(
                "idle: no client for {} after the last one left",
                format_timeout(Some(grace))
            ));
        }
    }
}

/// Takes the startup lock and re-checks that no client arrived; keeps the lock if so.
fn confirm_idle(counter: &SysvRefCounter) -> procref::Result<bool> {
    while !counter.lock_timeout(Duration::from_secs(60))? {}
    if counter.count()? == 0 {
        return Ok(true);
    }
    counter.unlock()?;
    Ok(false)
}

/// A client's reference on a server's count, held while the client runs (`attach` for
/// its command, `start`/`status` for themselves), so a sequence of CLI commands keeps a
/// warm server (ADR-0004). Dropping it releases the reference and, when no live server is
/// left to own the semaphore set, removes the set: clients never leave one behind.
pub struct ClientReference {
    counter: SysvRefCounter,
    discovery: std::path::PathBuf,
}

impl ClientReference {
    /// Takes one reference on the count of `paths`' server.
    pub fn acquire(paths: &RuntimePaths) -> Result<ClientReference> {
        let counter = SysvRefCounter::new(&paths.service_name())?;
        counter
            .acquire()
            .context("taking a reference on the server")?;
        Ok(ClientReference {
            counter,
            discovery: paths.discovery.clone(),
        })
    }

    fn counter(&self) -> &SysvRefCounter {
        &self.counter
    }
}

impl Drop for ClientReference {
    fn drop(&mut self) {
        let _ = self.counter.release();
        if ServerInfo::read(&self.discovery)
            .filter(ServerInfo::is_live)
            .is_none()
        {
            let _ = self.counter.try_remove();
        }
    }
}

/// [`ClientReference::acquire`], for clients that work without one (best effort).
pub fn client_reference(paths: &RuntimePaths) -> Option<ClientReference> {
    ClientReference::acquire(paths).ok()
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
            control::PROTOCOL_VERSION
        );
    }
}

/// Options of `procman attach`.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// Disconnect timeout for a server this attach starts.
    pub disconnect_timeout: Option<Duration>,
    /// No-client timeout for a server this attach starts.
    pub no_client_timeout: Option<Duration>,
    /// Bound on starting the server and waiting for its processes.
    pub startup_timeout: Duration,
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
async fn ensure_server(
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
        spawn_server(paths, options).await
    }
    .await;
    let _ = counter.unlock();
    result
}

/// Starts `procman serve` in its own session, stdio to a log file beside its runtime
/// files, and waits until it reports that it listens.
async fn spawn_server(paths: &RuntimePaths, options: &AttachOptions) -> Result<ServerInfo> {
    let exe = std::env::current_exe().context("locating the procman executable")?;
    let log_path = paths.discovery.with_extension("log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening the server log {}", log_path.display()))?;
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
            .filter(|p| p.state != "running" && p.state != "dormant" && p.state != "exited")
            .map(|p| match &p.waiting_for {
                Some(what) => format!("{} (waiting for {what})", p.name),
                None => format!("{} ({})", p.name, p.state),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => format!("{other:?}"),
    };
    bail!("the server's processes were not ready in time: {pending}")
}
