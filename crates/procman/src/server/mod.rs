//! The server side of `procman run` and `procman serve`: bootstrap and then the supervisor
//! until it is done.
//!
//! Bootstrap order: config (read only), the instance lock on the config ([`lock`]),
//! containment (subreaper, procman's cgroup) and the guardian (both before any thread
//! exists), the listener (refuses a live server for the same config), the lock on the log
//! directory, the output (which prepares the log directory), then the supervisor. So a
//! refused second instance has created, truncated and spawned nothing. Once the
//! supervisor first waits, the code only start-up ran leaves its RSS ([`footprint`]).
//!
//! Both modes listen on the config's FIFO and socket, so `status`, `stop`, `restart` and
//! `stop --process` work against either; only `serve` accepts new processes (`start`) and
//! may leave by itself when idle ([`idle`]).

mod footprint;
pub mod idle;
mod lock;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::config;
use crate::control::{Listener, RuntimePaths};
use crate::output::{ColorChoice, Output, OutputConfig};
use crate::supervisor::{self, Containment, Lifeline};
pub use idle::{ATTACH_DEFAULT, IdlePolicy, IdleWatch};
use lock::InstanceLock;
pub use lock::holder_of as instance_holder;

/// How long the end of the run waits for reader threads still blocked on a pipe that a
/// process stuck in the kernel holds open.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// How `run` or `serve` was invoked.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The config file.
    pub config: PathBuf,
    /// `-e`, `--env-file`, `--no-dotenv`, and whether an empty config is valid (`serve`).
    pub load: config::LoadOptions,
    /// Pause before a failure-triggered shutdown.
    pub debug: bool,
    /// Where logs and `$PROCMAN_OUTPUT` files go.
    pub log_dir: PathBuf,
    /// `Some` for `serve`: accept new processes, and when to leave for lack of clients.
    pub serve: Option<IdlePolicy>,
}

/// Runs `procman run` / `procman serve` to the end; returns the exit code.
pub fn run(invocation: Invocation) -> Result<i32> {
    // Before any thread exists (so taking it out of the environment is sound).
    let ready = invocation.serve.and_then(|_| take_ready_pipe());
    if invocation.debug && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("--debug needs an interactive terminal (stdin is not a TTY)");
    }
    let config = match config::load(&invocation.config, &invocation.load) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    // The instance check comes before anything is created or truncated: a second
    // procman for this config is refused with the first one's pid.
    let lock = InstanceLock::config(&config.path)?;
    raise_open_file_limit();
    // Before any thread exists: becoming a subreaper, and forking the guardian.
    let containment = Containment::init();
    let lifeline = Arc::new(
        Lifeline::start(containment.instance(), containment.cgroup_dir())
            .context("starting the lifeline guardian")?,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(async move {
        let paths = RuntimePaths::for_config(&config.path)?;
        let listener = Listener::bind(&paths).await?;
        let _lock = lock.log_dir(&invocation.log_dir)?;
        let output = Output::stdout(OutputConfig {
            log_dir: Some(invocation.log_dir.clone()),
            color: ColorChoice::Auto,
        })
        .with_context(|| {
            format!(
                "preparing the log directory {}",
                invocation.log_dir.display()
            )
        })?;
        for process in &config.processes {
            output.register(&process.name).ok();
        }
        let options = supervisor::Options {
            extra_env: invocation.load.env,
            log_dir: invocation.log_dir,
            debug: invocation.debug,
        };
        let listening = supervisor::Listening {
            listener,
            paths,
            serve: invocation.serve,
            ready,
        };
        // Runs when the supervisor first waits, once it has started what it can start:
        // code only start-up ran (clap, the config loader, this bootstrap) leaves the RSS.
        tokio::spawn(async { footprint::release_startup_pages() });
        Ok(supervisor::run(config, options, output, containment, lifeline, listening).await)
    });
    // Reader threads have reached EOF unless a process stuck in the kernel holds a pipe;
    // do not wait for ever on those.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// Each child costs the supervisor a few descriptors (output pipe, pidfd, log file) while
/// it runs; the default soft limit of 1024 would cap a busy server far below what the
/// hard limit allows.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// The pipe on which a server started by `attach` reports that it listens (fd 3, named by
/// `PROCMAN_READY_FD`), taken out of the environment so children do not inherit it.
fn take_ready_pipe() -> Option<std::fs::File> {
    let fd: i32 = std::env::var("PROCMAN_READY_FD").ok()?.parse().ok()?;
    // SAFETY: called first thing in main, while the process is single-threaded.
    unsafe { std::env::remove_var("PROCMAN_READY_FD") };
    if fd < 3 {
        return None;
    }
    // SAFETY: `attach` placed the pipe's write end at this descriptor for us alone.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // Our children must not hold it open (attach waits for "ready" or EOF).
    let _ = rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::CLOEXEC);
    Some(file)
}
