//! The typed configuration that every other module works from.
//!
//! `parse` turns `procman.yaml` into these types; nothing downstream sees YAML.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::ProcessName;

/// A whole `procman.yaml`: processes in file order.
#[derive(Debug, Clone)]
pub struct Config {
    /// Canonical path of the config file.
    pub path: PathBuf,
    /// Directory of the config file; relative `cwd`s are resolved against it.
    pub dir: PathBuf,
    /// Processes in the order they appear in the file.
    pub processes: Vec<ProcessSpec>,
}

impl Config {
    /// Looks a process up by name.
    pub fn process(&self, name: &str) -> Option<&ProcessSpec> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// One top-level key of `procman.yaml`.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The top-level key (or the instance name `key-N` of a `for_each`).
    pub name: ProcessName,
    /// Shell script to run (may contain `${{ proc.KEY }}` templates).
    pub run: String,
    /// Extra environment, on top of the system env and `-e` flags (values may contain templates).
    pub env: BTreeMap<String, String>,
    /// Runs to completion; exit 0 does not shut the supervisor down.
    pub once: bool,
    /// When false, the process is dormant until spawned by a watch or `procman start`.
    pub autostart: bool,
    /// Conditions that must all hold, in order, before the process starts.
    pub depends: Vec<Dependency>,
    /// Fan-out over glob matches.
    pub for_each: Option<ForEach>,
    /// Runtime health checks.
    pub watch: Vec<Watch>,
    /// Working directory (already resolved against the config's directory).
    pub cwd: Option<PathBuf>,
    /// How long a SIGTERM'd process group gets before SIGKILL (default 2 s).
    pub stop_timeout: Duration,
    /// Whether and how it is started again after it exits.
    pub restart: RestartPolicy,
    /// For an instance of a `for_each` template: the template's name. `process_exited`
    /// on that name waits for every instance.
    pub group: Option<ProcessName>,
    /// Where this process was defined (`line`, `column`, 1-based) for messages.
    pub location: Location,
}

/// `restart`, `max_restarts`, `restart_delay`, `max_restart_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// When to restart.
    pub when: Restart,
    /// Consecutive restarts allowed before the process counts as failed (`None`: no limit).
    pub max_restarts: Option<u32>,
    /// Delay before the first restart of a streak; doubled for each further one.
    pub delay: Duration,
    /// Cap on the delay; a run that lasts this long ends the streak.
    pub max_delay: Duration,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            when: Restart::No,
            max_restarts: None,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// The delay before consecutive restart number `attempt` (1-based): `delay` doubled
    /// for each restart before it, capped at `max_delay`.
    pub fn delay_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// `restart: no | on-failure | always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Never (procman 0.12's behaviour): an exit ends the run as before.
    #[default]
    No,
    /// After a non-zero exit or a death by a signal procman did not send.
    OnFailure,
    /// After every exit, 0 included.
    Always,
}

/// A position in the config file (1-based).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// `for_each: { glob, as }`.
#[derive(Debug, Clone)]
pub struct ForEach {
    /// Glob pattern (relative patterns resolve against the config's directory).
    pub glob: String,
    /// Variable that receives each matched path.
    pub var: String,
}

/// One `depends` entry (also the `check` of a watch).
#[derive(Debug, Clone)]
pub struct Dependency {
    /// What to check.
    pub kind: DependencyKind,
    /// Time between checks (default 1 s; `process_exited` is event-driven).
    pub poll_interval: Duration,
    /// Give up after this long from when this dependency became active (default 60 s).
    pub timeout: Duration,
    /// When false, fail at once if the first check does not hold.
    pub retry: bool,
    /// Where the entry was written, for messages.
    pub location: Location,
}

impl Dependency {
    /// The process this dependency names, if it waits on one (`process_exited`).
    pub fn process(&self) -> Option<&str> {
        match &self.kind {
            DependencyKind::ProcessExited { name } => Some(name),
            _ => None,
        }
    }
}

/// The condition a dependency waits for.
#[derive(Debug, Clone)]
pub enum DependencyKind {
    /// `url` answers with status `code`.
    Http { url: String, code: u16 },
    /// `tcp`: something accepts connections at `host:port`.
    Tcp { address: String },
    /// `path` exists.
    PathExists { path: PathBuf },
    /// `file_contains`: `path` parses as `format` and `key` (JSONPath) matches a non-null value;
    /// when `env` is set the value is exported to the dependent process under that name.
    FileContains {
        path: PathBuf,
        format: FileFormat,
        key: String,
        env: Option<String>,
    },
    /// `process_exited`: the named `once` process (or every instance of a `for_each` group)
    /// exited with code 0.
    ProcessExited { name: String },
    /// `not_listening`: nothing accepts connections at `host:port`.
    NotListening { address: String },
    /// `not_exists`: `path` does not exist.
    NotExists { path: PathBuf },
    /// `not_running`: no process command line matches the pattern (as `pgrep -f`).
    NotRunning { pattern: String },
}

/// Format of a `file_contains` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// A runtime health check on a running process.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Name (default `{process}.watch-{index}`).
    pub name: String,
    /// The condition that must keep holding.
    pub check: Dependency,
    /// Wait before the first check (default 0).
    pub initial_delay: Duration,
    /// Time between checks (default 5 s).
    pub poll_interval: Duration,
    /// Consecutive failures before acting (default 3).
    pub failure_threshold: u32,
    /// What to do then.
    pub on_fail: OnFail,
}

/// What a failing watch does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFail {
    /// Shut the supervisor down (default).
    Shutdown,
    /// Log and keep going.
    Log,
    /// Start the named dormant (`autostart: false`) process.
    Spawn(String),
    /// Restart the watched process through its restart policy's delays.
    Restart,
}
