//! The command line: `run`, `serve`, `start`, `stop`, `status`, `check`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config;
use crate::control::{self, Listener, Message, Reply, RunRequest, RuntimePaths, ServerInfo};
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
    Serve(RunArgs),
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
        Some(Command::Run(args)) => run(args, false),
        Some(Command::Serve(args)) => run(args, true),
        Some(Command::Start { command, config, name, env, once }) => start(&config, &command, name, env, once),
        Some(Command::Stop { config }) => stop(&config),
        Some(Command::Status { config, json }) => status(&config, json),
        None => run(cli.run, false),
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

fn run(args: RunArgs, serve: bool) -> Result<i32> {
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
    if config.processes.is_empty() && !serve {
        bail!(
            "{} defines no processes; add one, e.g.\n  web:\n    run: python3 -m http.server 8000",
            args.config.display()
        );
    }
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
    Ok(runtime.block_on(supervisor::run(config, options, output, lifeline)))
}
