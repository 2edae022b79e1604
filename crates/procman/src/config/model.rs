//! The typed configuration that every other module works from.
//!
//! The loader ([`super::load`]) turns `procman.yaml` or a Procfile into these types;
//! nothing downstream sees YAML. A loaded [`Config`] is final: `for_each` and `replicas`
//! are expanded into the instances the supervisor runs, environment files are read, and
//! `${VAR}` in `env` values and `$VAR` in dependency fields are expanded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::ProcessName;

/// How long a SIGTERM'd process group gets before SIGKILL, unless `stop_timeout` says.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A whole `procman.yaml` (or Procfile): processes in file order.
#[derive(Debug, Clone)]
pub struct Config {
    /// Canonical path of the config file.
    pub path: PathBuf,
    /// Directory of the config file; relative `cwd`s are resolved against it.
    pub dir: PathBuf,
    /// The environment files every process reads, in the order applied (a later one wins):
    /// `.env` beside the config when it exists (unless `--no-dotenv`), then each `--env-file`.
    pub env_files: Vec<PathBuf>,
    /// What `env_files` define: above the inherited environment, below `-e` flags.
    pub file_env: BTreeMap<String, String>,
    /// Processes in the order they appear in the file; a `for_each` or `replicas` template
    /// is replaced by its instances, in order.
    pub processes: Vec<ProcessSpec>,
}

impl Config {
    /// Looks a process up by name.
    pub fn process(&self, name: &str) -> Option<&ProcessSpec> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// One process: a top-level key of `procman.yaml`, a Procfile line, or one instance of a
/// `for_each` or `replicas` template.
///
/// The environment a process gets, lowest first: the inherited one, [`Config::file_env`],
/// `-e` flags, [`ProcessSpec::file_env`], [`ProcessSpec::env`], [`ProcessSpec::instance_env`].
///
/// An instance keeps what export needs to rebuild its template: `group` is the template's
/// name, and `for_each` (the template's, for every instance) or `replicas` (the count).
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The top-level key, or the instance name `key-N` of a `for_each` or `replicas`.
    pub name: ProcessName,
    /// Shell script to run, as written (may contain `${{ proc.KEY }}` templates). Nothing
    /// is substituted into it: instance values reach it through the environment.
    pub run: String,
    /// `env`, with `${VAR}` expanded at load time (values may contain `${{ proc.KEY }}`
    /// templates, resolved at spawn).
    pub env: BTreeMap<String, String>,
    /// `env_file` paths (resolved against the config's directory), in order; export writes
    /// them as `EnvironmentFile=`.
    pub env_files: Vec<PathBuf>,
    /// What `env_files` define (a later file wins): above `-e`, below `env`.
    pub file_env: BTreeMap<String, String>,
    /// Set last and verbatim (never template-resolved): a `for_each` instance's variable
    /// (`as`: its path) or a replica's `PROCMAN_REPLICA`.
    pub instance_env: BTreeMap<String, String>,
    /// Runs to completion; exit 0 does not shut the supervisor down.
    pub once: bool,
    /// When false, the process is dormant until spawned by a watch or `procman start`.
    pub autostart: bool,
    /// Conditions that must all hold, in order, before the process starts.
    pub depends: Vec<Dependency>,
    /// On an instance of a `for_each` template: that template's `for_each` (the glob and
    /// variable it was expanded from). `None` everywhere else.
    pub for_each: Option<ForEach>,
    /// On an instance of a `replicas: N` template: N. `None` everywhere else.
    pub replicas: Option<u32>,
    /// Runtime health checks.
    pub watch: Vec<Watch>,
    /// Working directory (already resolved against the config's directory).
    pub cwd: Option<PathBuf>,
    /// How long a SIGTERM'd process group gets before SIGKILL (default 2 s).
    pub stop_timeout: Duration,
    /// Whether and how it is started again after it exits.
    pub restart: RestartPolicy,
    /// For an instance of a `for_each` or `replicas` template: the template's name.
    /// `process_exited` on that name waits for every instance.
    pub group: Option<ProcessName>,
    /// Where this process was defined (`line`, `column`, 1-based) for messages.
    pub location: Location,
}

impl ProcessSpec {
    /// A long-running process with every default (what a Procfile line means).
    pub fn with_defaults(name: ProcessName, run: String, location: Location) -> ProcessSpec {
        ProcessSpec {
            name,
            run,
            env: BTreeMap::new(),
            env_files: Vec::new(),
            file_env: BTreeMap::new(),
            instance_env: BTreeMap::new(),
            once: false,
            autostart: true,
            depends: Vec::new(),
            for_each: None,
            replicas: None,
            watch: Vec::new(),
            cwd: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            restart: RestartPolicy::default(),
            group: None,
            location,
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForEach {
    /// Glob pattern, as written (relative patterns resolve against the config's directory).
    pub glob: String,
    /// Environment variable that receives each matched path.
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
    /// The process this dependency names, if it waits on one (`process_exited`,
    /// `output_matches`).
    pub fn process(&self) -> Option<&str> {
        match &self.kind {
            DependencyKind::ProcessExited { name } => Some(name),
            DependencyKind::OutputMatches { process, .. } => Some(process),
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
    /// `output_matches` with `process`: a line that `process` prints (in this run) matches
    /// `regex`, compiled once at load time.
    OutputMatches {
        process: String,
        regex: regex::Regex,
    },
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
