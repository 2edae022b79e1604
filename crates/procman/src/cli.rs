//! The command line: parsing and dispatch only. Server commands live in [`crate::server`],
//! client commands in [`crate::client`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::client;
use crate::config::{self, default_path};
use crate::duration;
use crate::server::{self, IdlePolicy, Invocation};

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
        #[arg(default_value_os_t = default_path())]
        config: PathBuf,
        /// For a server this attach starts: its environment (ignored when one runs).
        #[command(flatten)]
        env: EnvArgs,
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
    /// Send a process to a running `procman serve`, or start a stopped one by name.
    Start {
        /// The command line to run (the name defaults to its first word's basename), or
        /// the name of a stopped or dormant process of the config.
        command: String,
        /// Config file of the server to talk to.
        #[arg(long, default_value_os_t = default_path())]
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
    /// Shut the server down gracefully, or stop single processes with -p.
    Stop {
        /// Config file of the server.
        #[arg(default_value_os_t = default_path())]
        config: PathBuf,
        /// Stop this process only (repeatable); the server keeps running.
        #[arg(short = 'p', long = "process", value_name = "NAME")]
        processes: Vec<String>,
    },
    /// Stop processes and start them again; the rest of the stack keeps running.
    Restart {
        /// Config file of the server.
        #[arg(long, default_value_os_t = default_path())]
        config: PathBuf,
        /// The processes to restart.
        #[arg(required = true, value_name = "NAME")]
        processes: Vec<String>,
    },
    /// Show what a running `procman run` or `procman serve` supervises.
    Status {
        /// Config file of the server.
        #[arg(default_value_os_t = default_path())]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config as `run` would: prints every error as file:line:col, silent and
    /// 0 when valid.
    Check {
        /// Path to the config file (procman.yaml or a Procfile).
        #[arg(default_value_os_t = default_path())]
        config: PathBuf,
        #[command(flatten)]
        env: EnvArgs,
    },
    /// Print the JSON Schema of procman.yaml (for editors: `# yaml-language-server: $schema=…`).
    Schema,
}

/// The environment flags of `run`, `serve`, `check` and `attach`.
#[derive(Debug, Args)]
struct EnvArgs {
    /// Extra environment variable for every process (repeatable). Precedence, lowest first:
    /// inherited, .env and --env-file, -e, a process's env_file, a process's env.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    env: Vec<(String, String)>,
    /// Read variables for every process from FILE (repeatable, after .env; a later file wins).
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// Do not read the .env file beside the config.
    #[arg(long)]
    no_dotenv: bool,
}

impl EnvArgs {
    fn load_options(&self, allow_empty: bool) -> config::LoadOptions {
        config::LoadOptions {
            env: self.env.iter().cloned().collect(),
            env_files: self.env_files.clone(),
            no_dotenv: self.no_dotenv,
            allow_empty,
        }
    }

    /// The same flags for a server started elsewhere (paths made absolute).
    fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        for (key, value) in &self.env {
            args.push("-e".into());
            args.push(format!("{key}={value}").into());
        }
        for file in &self.env_files {
            args.push("--env-file".into());
            args.push(std::path::absolute(file).unwrap_or(file.clone()).into());
        }
        if self.no_dotenv {
            args.push("--no-dotenv".into());
        }
        args
    }
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
    duration::parse_timeout(text).map(Timeout)
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Path to the config file: procman.yaml, or a Procfile (named Procfile or *.procfile).
    /// Default: ./procman.yaml, or ./Procfile when there is no procman.yaml.
    #[arg(default_value_os_t = default_path())]
    config: PathBuf,
    #[command(flatten)]
    env: EnvArgs,
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
        Some(Command::Check { config, env }) => client::check(&config, &env.load_options(false)),
        Some(Command::Schema) => config::schema::print()
            .map(|()| 0)
            .context("printing the schema"),
        Some(Command::Run(args)) => server::run(args.invocation(None)),
        Some(Command::Serve(args)) => {
            let idle = IdlePolicy {
                no_client: args.no_client_timeout.0,
                disconnect: args.disconnect_timeout.0,
            };
            server::run(args.run.invocation(Some(idle)))
        }
        Some(Command::Attach {
            config,
            env,
            disconnect_timeout,
            no_client_timeout,
            startup_timeout,
            command,
        }) => {
            let options = client::AttachOptions {
                disconnect_timeout: disconnect_timeout.0,
                no_client_timeout: no_client_timeout.0,
                startup_timeout,
                serve_args: env.to_args(),
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("starting the async runtime")
                .and_then(|rt| rt.block_on(client::attach(&config, &options, &command)))
        }
        Some(Command::Start {
            command,
            config,
            name,
            env,
            once,
        }) => client::start(&config, &command, name, env, once),
        Some(Command::Stop { config, processes }) => client::stop(&config, &processes),
        Some(Command::Restart { config, processes }) => client::restart(&config, &processes),
        Some(Command::Status { config, json }) => client::status(&config, json),
        None => server::run(cli.run.invocation(None)),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("procman: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

impl RunArgs {
    fn invocation(self, serve: Option<IdlePolicy>) -> Invocation {
        Invocation {
            load: self.env.load_options(serve.is_some()),
            config: self.config,
            debug: self.debug,
            log_dir: self.log_dir,
            serve,
        }
    }
}
