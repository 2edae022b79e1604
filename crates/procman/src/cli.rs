//! The command line: parsing and dispatch only. Server commands live in [`crate::server`],
//! client commands in [`crate::client`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::client;
use crate::config::{self, default_path};
use crate::duration;
use crate::export;
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
    /// Print the last lines of processes' output (all processes when none is named),
    /// merged in time order; with -f, then follow new lines until Ctrl-C or the server
    /// stops. Without a running server, reads procman.log from the log directory.
    Logs {
        /// Config file of the server.
        #[arg(long, default_value_os_t = default_path())]
        config: PathBuf,
        /// Keep printing new lines as the processes print them.
        #[arg(short, long)]
        follow: bool,
        /// How many of the newest lines to print, of all named processes together.
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = crate::protocol::DEFAULT_LOG_LINES)]
        lines: usize,
        /// Only lines printed at most this long ago (humantime like 30s, 5m, 1h).
        #[arg(long, value_name = "DUR", value_parser = parse_since)]
        since: Option<Duration>,
        /// Where procman.log is when no server runs (the --log-dir given to run or serve).
        #[arg(long, value_name = "DIR", default_value = "procman-logs")]
        log_dir: PathBuf,
        /// Processes, group names (for_each, replicas: every instance), or `procman` for
        /// the supervisor's own lines.
        #[arg(value_name = "NAME")]
        names: Vec<String>,
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
    /// A live terminal view of a running stack: its processes, their output, and keys to
    /// restart, stop and start them. Offers to start a server when none runs.
    Tui {
        /// Config file of the server.
        #[arg(default_value_os_t = default_path())]
        config: PathBuf,
        /// For a server this view starts: shut down once no client has been left this long.
        #[arg(long, env = "PROCMAN_DISCONNECT_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
        disconnect_timeout: Timeout,
        /// For a server this view starts: shut down if no client ever arrives this long.
        #[arg(long, env = "PROCMAN_NO_CLIENT_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
        no_client_timeout: Timeout,
    },
    /// Print the JSON Schema of procman.yaml (for editors: `# yaml-language-server: $schema=…`).
    Schema,
    /// Wait for one condition, written as a dependency in procman.yaml: exit 0 once it
    /// holds, 1 with one line when it timed out. `-- COMMAND` runs COMMAND then.
    Wait(WaitArgs),
    /// Write the config as systemd units, a Docker Compose file or Kubernetes objects.
    #[command(subcommand)]
    Export(ExportCommand),
}

/// `procman wait`: one condition, its settings, and what to run after.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("condition").required(true).multiple(false)))]
struct WaitArgs {
    /// A procman.yaml whose directory relative paths resolve against (default: the
    /// working directory).
    config: Option<PathBuf>,
    /// Something accepts TCP connections at HOST:PORT.
    #[arg(long, group = "condition", value_name = "HOST:PORT")]
    tcp: Option<String>,
    /// A GET of URL answers with status --code.
    #[arg(long, group = "condition")]
    url: Option<String>,
    /// The HTTP status --url must answer with.
    #[arg(long, requires = "url", default_value_t = 200)]
    code: u16,
    /// PATH exists.
    #[arg(long, group = "condition")]
    path: Option<String>,
    /// FILE parses as --format and JSONPath --key matches a non-null value (printed).
    #[arg(long, group = "condition", value_name = "FILE", requires_all = ["format", "key"])]
    file_contains: Option<String>,
    /// Format of the --file-contains file.
    #[arg(long, value_parser = ["json", "yaml"], requires = "file_contains")]
    format: Option<String>,
    /// JSONPath into the --file-contains file, e.g. '$.database.url'.
    #[arg(long, value_name = "JSONPATH", requires = "file_contains")]
    key: Option<String>,
    /// Nothing accepts TCP connections at HOST:PORT.
    #[arg(long, group = "condition", value_name = "HOST:PORT")]
    not_listening: Option<String>,
    /// PATH does not exist.
    #[arg(long, group = "condition", value_name = "PATH")]
    not_exists: Option<String>,
    /// No process command line matches PATTERN (as `pgrep -f`).
    #[arg(long, group = "condition", value_name = "PATTERN")]
    not_running: Option<String>,
    /// Accepted only to be refused clearly: a process's output exists inside a running
    /// stack, which `procman wait` is not.
    #[arg(long, group = "condition", value_name = "REGEX", hide = true)]
    output_matches: Option<String>,
    /// The process whose output --output-matches means.
    #[arg(long, requires = "output_matches", hide = true)]
    process: Option<String>,
    /// Time between checks.
    #[arg(long, value_name = "DUR", default_value = "1s")]
    poll_interval: String,
    /// Give up after this long (humantime, or never).
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_timeout)]
    timeout: Timeout,
    /// Check once: fail at once if the condition does not hold.
    #[arg(long)]
    no_retry: bool,
    /// Command to run (replacing procman) once the condition holds.
    #[arg(last = true, value_name = "COMMAND")]
    then: Vec<std::ffi::OsString>,
}

impl WaitArgs {
    /// The condition as a `depends` entry of procman.yaml.
    fn request(self) -> client::WaitRequest {
        use serde_json::{Value, json};
        let text = |s: String| Value::String(s);
        let (kind, value) = if let Some(address) = self.tcp {
            ("tcp", text(address))
        } else if let Some(url) = self.url {
            ("url", text(url))
        } else if let Some(path) = self.path {
            ("path", text(path))
        } else if let Some(path) = self.file_contains {
            let value = json!({
                "path": path,
                "format": self.format,
                "key": self.key,
                "env": client::WAIT_VALUE_VAR,
            });
            ("file_contains", value)
        } else if let Some(address) = self.not_listening {
            ("not_listening", text(address))
        } else if let Some(path) = self.not_exists {
            ("not_exists", text(path))
        } else if let Some(regex) = self.output_matches {
            ("output_matches", text(regex))
        } else {
            ("not_running", text(self.not_running.unwrap_or_default()))
        };
        // `never` (and anything longer) is a century: a deadline must stay representable.
        let century = Duration::from_secs(100 * 365 * 86_400);
        let timeout = self.timeout.0.map_or(century, |t| t.min(century));
        let mut dependency = json!({
            kind: value,
            "poll_interval": self.poll_interval,
            "timeout_seconds": timeout.as_secs_f64(),
            "retry": !self.no_retry,
        });
        if kind == "url" {
            dependency["code"] = json!(self.code);
        }
        if kind == "output_matches" {
            dependency["process"] = json!(self.process.unwrap_or_default());
        }
        client::WaitRequest {
            dependency,
            config: self.config,
            then: self.then,
        }
    }
}

/// `procman export FORMAT`.
#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// One systemd unit per process and a target that starts them.
    Systemd {
        #[command(flatten)]
        common: ExportArgs,
        /// Units for the user's manager (`systemctl --user`).
        #[arg(long)]
        user: bool,
        /// The systemd version the units are for (default: the local one, else 252);
        /// 254 and later get RestartSteps= for procman's doubling restart delay.
        #[arg(long, value_name = "N")]
        systemd_version: Option<u32>,
        /// The procman binary ExecStartPre= runs for `procman wait` (default: this one).
        #[arg(long, value_name = "PATH")]
        procman: Option<PathBuf>,
        /// The shell for `run` (default: bash from PATH, else /bin/sh, as procman does).
        #[arg(long, value_name = "PATH")]
        shell: Option<PathBuf>,
    },
    /// A Docker Compose file: one service per process.
    #[command(alias = "docker-compose")]
    Compose {
        #[command(flatten)]
        common: ExportArgs,
        #[command(flatten)]
        containers: ContainerArgs,
        /// Bind-mount the config's directory at --workdir (for a stock image).
        #[arg(long)]
        mount: bool,
    },
    /// Kubernetes objects (Deployments, Jobs, Services, ConfigMaps) for `kubectl apply -f DIR`.
    #[command(alias = "k8s")]
    Kubernetes {
        #[command(flatten)]
        common: ExportArgs,
        #[command(flatten)]
        containers: ContainerArgs,
        /// Image with kubectl, for init containers that wait for Jobs (process_exited).
        #[arg(long, value_name = "IMAGE", default_value = "bitnami/kubectl")]
        kubectl_image: String,
    },
}

/// What every format takes.
#[derive(Debug, Args)]
struct ExportArgs {
    /// Path to the config file (procman.yaml or a Procfile).
    #[arg(default_value_os_t = default_path())]
    config: PathBuf,
    #[command(flatten)]
    env: EnvArgs,
    /// Directory to write into (default: procman-export/FORMAT).
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Application name (default: the config's directory name).
    #[arg(long, value_name = "NAME")]
    app: Option<String>,
    /// Fail (and write nothing) when anything cannot be expressed, instead of warning.
    #[arg(long)]
    strict: bool,
}

/// Options of the container formats.
#[derive(Debug, Args)]
struct ContainerArgs {
    /// Image of every process (IMAGE), or of one process or group (NAME=IMAGE); repeatable.
    #[arg(long = "image", value_name = "[NAME=]IMAGE")]
    images: Vec<String>,
    /// Where the config's directory is inside the images.
    #[arg(long, value_name = "DIR", default_value = "/app")]
    workdir: String,
    /// NAME serves PORT (for url and tcp dependencies; default: the process that mentions
    /// the port in its env or run); repeatable.
    #[arg(long = "port", value_name = "NAME=PORT", value_parser = parse_port)]
    ports: Vec<(String, u16)>,
    /// The shell for `run` inside the images.
    #[arg(long, value_name = "SHELL", default_value = "bash")]
    shell: String,
    /// The procman binary inside the images (for `procman wait`).
    #[arg(long, value_name = "PATH", default_value = "procman")]
    procman: String,
}

impl ContainerArgs {
    fn options(self) -> export::Containers {
        let mut image = None;
        let mut images = std::collections::BTreeMap::new();
        for arg in self.images {
            match arg.split_once('=') {
                Some((name, value)) => {
                    images.insert(name.to_owned(), value.to_owned());
                }
                None => image = Some(arg),
            }
        }
        export::Containers {
            image,
            images,
            workdir: self.workdir,
            ports: self.ports,
            shell: self.shell,
            procman: self.procman,
        }
    }
}

fn parse_port(arg: &str) -> Result<(String, u16), String> {
    let (name, port) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PORT, got {arg:?}"))?;
    let port = port
        .parse()
        .map_err(|_| format!("invalid port in {arg:?}: expected 1-65535"))?;
    Ok((name.to_owned(), port))
}

impl ExportCommand {
    fn run(self) -> anyhow::Result<i32> {
        let (common, format) = match self {
            ExportCommand::Systemd {
                common,
                user,
                systemd_version,
                procman,
                shell,
            } => {
                let procman = match procman {
                    Some(path) => path,
                    None => std::env::current_exe().context("finding the procman binary")?,
                };
                let options = export::systemd::Options {
                    user,
                    version: systemd_version
                        .or_else(export::systemd::local_version)
                        .unwrap_or(export::systemd::DEFAULT_VERSION),
                    procman,
                    shell: shell.unwrap_or_else(|| {
                        crate::supervisor::Shell::detect().program().to_path_buf()
                    }),
                };
                (common, export::Format::Systemd(options))
            }
            ExportCommand::Compose {
                common,
                containers,
                mount,
            } => {
                let options = export::compose::Options {
                    containers: containers.options(),
                    mount,
                };
                (common, export::Format::Compose(options))
            }
            ExportCommand::Kubernetes {
                common,
                containers,
                kubectl_image,
            } => {
                let options = export::kubernetes::Options {
                    containers: containers.options(),
                    kubectl_image,
                };
                (common, export::Format::Kubernetes(options))
            }
        };
        export::export(&export::Request {
            load: common.env.load_options(false),
            config: common.config,
            output: common.output,
            app: common.app,
            strict: common.strict,
            format,
        })
    }
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

/// `--since`: a duration; `never` would mean "no line", which is not a useful question.
fn parse_since(text: &str) -> Result<Duration, String> {
    duration::parse_timeout(text)?
        .ok_or_else(|| "--since needs a duration such as 30s, 5m or 1h".to_owned())
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
    crate::supervisor::lifeline::guardian_main();
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
        Some(Command::Logs {
            config,
            follow,
            lines,
            since,
            log_dir,
            names,
        }) => client::logs(
            &config,
            &client::LogsOptions {
                names,
                lines,
                since,
                follow,
                log_dir,
            },
        ),
        Some(Command::Tui {
            config,
            disconnect_timeout,
            no_client_timeout,
        }) => client::tui(&config, disconnect_timeout.0, no_client_timeout.0),
        Some(Command::Wait(args)) => client::wait(&args.request()),
        Some(Command::Export(command)) => command.run(),
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
