//! The command line: `run`, `serve`, `start`, `stop`, `status`, `check`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config;
use crate::control::{self, Listener, Message, Reply, RunRequest, RuntimePaths, ServerInfo};
use crate::lifecycle::{self, IdlePolicy};
use crate::output::{ColorChoice, Output, OutputConfig};
use crate::supervisor::{self, Lifeline};

/// A process supervisor driven by procman.yaml.
#[derive(Debug, Parser)]
#[command(
    name = "procman",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "With no subcommand, `procman [CONFIG]` is `procman run [CONFIG]`.\n\
                  On SIGINT or SIGTERM every process group gets SIGTERM, then SIGKILL after its \
                  stop_timeout (default 2s); a second Ctrl-C kills at once."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every process in the config and supervise them until they finish or fail.
    Run(RunArgs),
    /// Like run, and also accept processes at runtime (FIFO and socket) until stopped.
    Serve(ServeArgs),
    /// Run COMMAND while holding a reference on the config's shared server, starting
    /// the server if none runs; the server stops itself once no client is left.
    Attach {
        /// Config file of the server.
        #[arg(default_value = "procman.yaml")]
        config: PathBuf,
        /// For a server this attach starts: shut down once no client has been left this
        /// long (humantime like 30s, or never).
        #[arg(long, env = "PROCMAN_DISCONNECT_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
        disconnect_timeout: Timeout,
        /// For a server this attach starts: shut down if no client ever arrives this long.
        #[arg(long, env = "PROCMAN_NO_CLIENT_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
        no_client_timeout: Timeout,
        /// Bound on starting the server and waiting for its processes and dependencies.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        startup_timeout: Duration,
        /// The command to run, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Send a process to a running `procman serve`.
    Start {
        /// The command line to run; the name defaults to its first word's basename.
        command: String,
        /// Config file of the server to talk to.
        #[arg(long, default_value = "procman.yaml")]
        config: PathBuf,
        /// Name for the process (deduplicated as name, name.1, name.2, …).
        #[arg(long)]
        name: Option<String>,
        /// Environment for the process (repeatable), on top of the server's.
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
        env: Vec<(String, String)>,
        /// Run to completion: exit 0 does not shut the server down.
        #[arg(long)]
        once: bool,
    },
    /// Ask a running `procman serve` to shut down gracefully.
    Stop {
        /// Config file of the server.
        #[arg(default_value = "procman.yaml")]
        config: PathBuf,
    },
    /// Show what a running `procman serve` supervises.
    Status {
        /// Config file of the server.
        #[arg(default_value = "procman.yaml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config: prints every error as file:line:col, silent and 0 when valid.
    Check {
        /// Path to the config file.
        #[arg(default_value = "procman.yaml")]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Shut down if no client holds a reference this long after listening (default never).
    #[arg(long, env = "PROCMAN_NO_CLIENT_TIMEOUT", default_value = "never", value_parser = parse_timeout)]
    no_client_timeout: Timeout,
    /// Shut down once no client has held a reference this long (default never).
    #[arg(long, env = "PROCMAN_DISCONNECT_TIMEOUT", default_value = "never", value_parser = parse_timeout)]
    disconnect_timeout: Timeout,
}

/// A timeout flag: a duration, or `never`.
#[derive(Debug, Clone, Copy)]
struct Timeout(Option<Duration>);

fn parse_timeout(text: &str) -> Result<Timeout, String> {
    lifecycle::parse_timeout(text).map(Timeout)
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Path to the config file.
    #[arg(default_value = "procman.yaml")]
    config: PathBuf,
    /// Extra environment variable for every process (repeatable). Precedence:
    /// system env < -e < a process's `env`.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    env: Vec<(String, String)>,
    /// When a process fails, pause before shutting down (needs an interactive terminal).
    #[arg(long)]
    debug: bool,
    /// Directory for per-process logs, the combined log and $PROCMAN_OUTPUT files.
    #[arg(long, value_name = "DIR", default_value = "procman-logs")]
    log_dir: PathBuf,
}

fn parse_env_pair(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {arg:?}"))?;
    if key.is_empty() || key.contains('\0') || value.contains('\0') {
        return Err(format!(
            "invalid environment variable {arg:?}: the key must be non-empty"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Entry point of the `procman` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Run(args)) => run(args, None),
        Some(Command::Serve(args)) => {
            let idle = IdlePolicy {
                no_client: args.no_client_timeout.0,
                disconnect: args.disconnect_timeout.0,
            };
            run(args.run, Some(idle))
        }
        Some(Command::Attach {
            config,
            disconnect_timeout,
            no_client_timeout,
            startup_timeout,
            command,
        }) => {
            let options = lifecycle::AttachOptions {
                disconnect_timeout: disconnect_timeout.0,
                no_client_timeout: no_client_timeout.0,
                startup_timeout,
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("starting the async runtime")
                .and_then(|rt| rt.block_on(lifecycle::attach(&config, &options, &command)))
        }
        Some(Command::Start {
            command,
            config,
            name,
            env,
            once,
        }) => start(&config, &command, name, env, once),
        Some(Command::Stop { config }) => stop(&config),
        Some(Command::Status { config, json }) => status(&config, json),
        None => run(cli.run, None),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("procman: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &std::path::Path) -> Result<i32> {
    match config::load(path, &BTreeMap::new()) {
        Ok(_) => Ok(0),
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

/// `run`, or `serve` when an idle policy is given.
fn run(args: RunArgs, serve: Option<IdlePolicy>) -> Result<i32> {
    // Before any thread exists (so taking it out of the environment is sound).
    let ready = serve.and_then(|_| take_ready_pipe());
    if args.debug && !std::io::stdin().is_terminal() {
        bail!("--debug needs an interactive terminal (stdin is not a TTY)");
    }
    let extra_env: BTreeMap<String, String> = args.env.into_iter().collect();
    let config = match config::load(&args.config, &extra_env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    if config.processes.is_empty() && serve.is_none() {
        bail!(
            "{} defines no processes; add one, e.g.\n  web:\n    run: python3 -m http.server 8000",
            args.config.display()
        );
    }
    raise_open_file_limit();
    // Before any thread exists: the guardian is forked from a single-threaded process.
    let lifeline = Arc::new(Lifeline::start().context("starting the lifeline guardian")?);
    let output = Output::stdout(OutputConfig {
        log_dir: Some(args.log_dir.clone()),
        color: ColorChoice::Auto,
    })
    .with_context(|| format!("preparing the log directory {}", args.log_dir.display()))?;
    for process in &config.processes {
        output.register(&process.name).ok();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let options = supervisor::Options {
        extra_env,
        log_dir: args.log_dir,
        debug: args.debug,
    };
    runtime.block_on(async move {
        let serve = match serve {
            Some(idle) => {
                let paths = RuntimePaths::for_config(&config.path)?;
                let listener = Listener::bind(&paths).await?;
                Some(supervisor::Serve {
                    listener,
                    paths,
                    idle,
                    ready,
                })
            }
            None => None,
        };
        Ok(supervisor::run(config, options, output, lifeline, serve).await)
    })
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

/// Paths of the server for `config`, with a one-line error if the config does not exist.
fn paths_for(config: &Path) -> Result<RuntimePaths> {
    Ok(RuntimePaths::for_config(config)?)
}

/// Sends over the socket when the server has one (and gets its reply), else over the
/// FIFO (a procman 0.12 server, or a socket that cannot be reached).
fn send(paths: &RuntimePaths, message: &Message) -> Result<Option<Reply>> {
    if let Some(server) = ServerInfo::read(&paths.discovery).filter(ServerInfo::is_live) {
        lifecycle::warn_on_version_skew(&server);
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

fn start(
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
    let paths = paths_for(config)?;
    let _reference = lifecycle::client_reference(&paths);
    let run = RunRequest {
        name,
        run: command.to_owned(),
        env: env.into_iter().collect(),
        depends: None,
        once,
    };
    match send(&paths, &Message::Run(run))? {
        Some(Reply::Started {
            name,
            pid: Some(pid),
            ..
        }) => println!("started {name} (pid {pid})"),
        Some(Reply::Started {
            name,
            pid: None,
            state,
        }) => println!("added {name} ({state})"),
        Some(Reply::Error { message }) => bail!("the server refused: {message}"),
        Some(other) => println!("{}", serde_json::to_string(&other)?),
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

fn stop(config: &Path) -> Result<i32> {
    let paths = paths_for(config)?;
    let server = ServerInfo::read(&paths.discovery).filter(ServerInfo::is_live);
    let message = Message::Shutdown {
        user: std::env::var("USER").ok(),
        message: Some("User-initiated via CLI".into()),
    };
    match send(&paths, &message) {
        Ok(Some(Reply::Error { message })) => bail!("the server refused: {message}"),
        Ok(_) => {}
        // The server may close the connection as it leaves; its exit is the answer.
        Err(_) if server.is_some() => {}
        Err(e) => return Err(e),
    }
    // Return once the server is gone, so `procman stop && procman serve` just works.
    if let Some(server) = server {
        if let Ok(process) = procref::process::Process::open(server.pid) {
            if !process.wait_exit(Some(Duration::from_secs(60))) {
                bail!(
                    "the server (pid {}) is still shutting down after 60s",
                    server.pid
                );
            }
        }
    }
    Ok(0)
}

fn status(config: &Path, json: bool) -> Result<i32> {
    let paths = paths_for(config)?;
    let _reference = lifecycle::client_reference(&paths);
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
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!("server pid {pid} for {served}");
    let width = processes
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:width$}  {:>7}  {:8}  {:>4}  {:>9}  {:>8}  WAITING FOR",
        "NAME", "PID", "STATE", "EXIT", "UPTIME", "RESTARTS"
    );
    for p in processes {
        let dash = || "-".to_owned();
        let pid = p.pid.map_or_else(dash, |v| v.to_string());
        let exit = p.exit_code.map_or_else(dash, |v| v.to_string());
        let uptime = p.uptime_secs.map_or_else(dash, |v| {
            humantime::format_duration(Duration::from_secs(v as u64)).to_string()
        });
        let waiting = p.waiting_for.unwrap_or_default();
        println!(
            "{:width$}  {pid:>7}  {:8}  {exit:>4}  {uptime:>9}  {:>8}  {waiting}",
            p.name, p.state, p.restarts
        );
    }
    Ok(0)
}
