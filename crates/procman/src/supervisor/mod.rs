//! Spawning, the process table, and shutdown.
//!
//! The supervisor is one task on a single-threaded tokio runtime. Everything that can
//! happen arrives as an [`Event`] on one channel: a child exited (its pidfd became
//! readable), a process's dependencies were met or failed, a watch fired, a signal came.
//! Between events the process sleeps in the kernel: an idle supervisor never wakes up.

mod child;
pub mod lifeline;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::config::{self, Config, Location, OnFail, ProcessSpec, template};
use crate::control::{
    Channel, Incoming, Listener, Message, ProcessStatus, Reply, RunRequest, RuntimePaths,
    ServerInfo,
};
use crate::deps::{self, ExitState, Progress};
use crate::lifecycle::{IdlePolicy, IdleWatch};
use crate::output::Output;
pub use child::Shell;
use child::{Child, ExitSignal, Launch, describe_exit};
pub use lifeline::Lifeline;

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-e KEY=VALUE` flags: above the system environment, below a process's `env`.
    pub extra_env: BTreeMap<String, String>,
    /// Directory for logs and `$PROCMAN_OUTPUT` files.
    pub log_dir: PathBuf,
    /// Pause before a failure-triggered shutdown until Enter is pressed.
    pub debug: bool,
}

/// What `procman serve` adds to a run: the control channels and the discovery file.
pub struct Serve {
    /// FIFO and socket, already bound.
    pub listener: Listener,
    /// Where they and the discovery file live.
    pub paths: RuntimePaths,
    /// When to shut down for lack of clients.
    pub idle: IdlePolicy,
    /// Told "ready" once the server listens (by `attach`, which started it).
    pub ready: Option<std::fs::File>,
}

/// Why the supervisor is shutting down.
#[derive(Debug, Clone)]
enum Stop {
    /// A process failed, exited, or could not start; exit with `code`.
    Failure { reason: String, code: i32 },
    /// SIGINT/SIGTERM or a request: exit 0 unless something failed before.
    Requested { reason: String },
    /// Every process finished its work.
    Finished,
}

enum Event {
    Exited {
        name: String,
    },
    Ready {
        name: String,
        env: BTreeMap<String, String>,
    },
    DependencyFailed {
        name: String,
        message: String,
    },
    Waiting {
        name: String,
        dependency: String,
    },
    WatchFailed {
        process: String,
        watch: String,
        action: OnFail,
        failures: u32,
        check: String,
    },
    Signal(i32),
    Control(Incoming),
    /// No client for long enough (the idle watch holds the startup lock).
    Idle(String),
}

enum State {
    Dormant,
    Waiting,
    Running(Child),
    Exited,
}

struct Proc {
    spec: ProcessSpec,
    /// The `for_each` template this instance came from.
    group: Option<String>,
    state: State,
    tasks: Vec<AbortHandle>,
    /// Position in start order, for stopping in reverse.
    started_seq: u64,
    /// How its last run ended.
    exit_code: Option<i32>,
    /// Restarts requested through the control socket.
    restarts: u32,
    /// Its last run was ended on request (`stop_process`), so its exit is not a failure.
    stopped_on_request: bool,
}

impl Proc {
    fn new(spec: ProcessSpec, group: Option<String>, state: State) -> Proc {
        Proc {
            spec,
            group,
            state,
            tasks: vec![],
            started_seq: 0,
            exit_code: None,
            restarts: 0,
            stopped_on_request: false,
        }
    }
}

/// Runs `config` until every process is done or a shutdown is triggered; returns the
/// exit code.
pub async fn run(
    config: Config,
    options: Options,
    output: Output,
    lifeline: Arc<Lifeline>,
    serve: Option<Serve>,
) -> i32 {
    let (events, inbox) = mpsc::unbounded_channel();
    let name_uses = config
        .processes
        .iter()
        .map(|p| (p.name.clone(), 1))
        .collect();
    let (board, _) = watch::channel(BTreeMap::new());
    let mut base_env: BTreeMap<String, String> = std::env::vars().collect();
    base_env.extend(options.extra_env.clone());
    let mut supervisor = Supervisor {
        config: Arc::new(config),
        options,
        output,
        lifeline,
        shell: Shell::detect(),
        base_env,
        procs: Vec::new(),
        events,
        board,
        seq: 0,
        waiting: BTreeMap::new(),
        name_uses,
        serve: None,
        ready_waiters: Vec::new(),
    };
    supervisor.main(inbox, serve).await
}

struct Supervisor {
    config: Arc<Config>,
    options: Options,
    output: Output,
    lifeline: Arc<Lifeline>,
    shell: Shell,
    base_env: BTreeMap<String, String>,
    procs: Vec<Proc>,
    events: mpsc::UnboundedSender<Event>,
    board: watch::Sender<BTreeMap<String, ExitState>>,
    seq: u64,
    waiting: BTreeMap<String, String>,
    /// How often each name was used, for `name`, `name.1`, `name.2`, … of runtime processes.
    name_uses: BTreeMap<String, u32>,
    /// In serve mode: the task forwarding control requests, and where the runtime files are.
    serve: Option<Serving>,
    /// `ready` requests waiting for every long-running process to run.
    ready_waiters: Vec<Incoming>,
}

struct Serving {
    forward: AbortHandle,
    paths: RuntimePaths,
    idle: Option<IdleWatch>,
    /// Started by `attach`, with stdout in a log beside the runtime files: on a clean exit
    /// that log repeats `procman.log` and goes too.
    started_by_attach: bool,
}

impl Supervisor {
    async fn main(
        &mut self,
        mut inbox: mpsc::UnboundedReceiver<Event>,
        serve: Option<Serve>,
    ) -> i32 {
        self.forward_signals();
        let count = self.config.processes.iter().filter(|p| p.autostart).count();
        let mode = if serve.is_some() { "serve" } else { "run" };
        self.output
            .procman(&format!("started with {count} process(es), mode={mode}"));
        if let Some(serve) = serve {
            self.start_serving(serve);
        }
        let stop = match self.start_all() {
            Err(stop) => stop,
            Ok(()) => loop {
                if let Some(stop) = self.finished() {
                    break stop;
                }
                let Some(event) = inbox.recv().await else {
                    break Stop::Finished;
                };
                let stop = match event {
                    Event::Control(incoming) => self.control(incoming).await,
                    event => self.handle(event),
                };
                if let Some(stop) = stop {
                    break stop;
                }
                self.answer_ready_waiters();
            },
        };
        self.shutdown(stop, &mut inbox).await
    }

    /// Forwards control requests into the event loop, publishes the discovery file, starts
    /// the idle watch, and tells `attach` (if it started us) that we listen.
    fn start_serving(&mut self, serve: Serve) {
        let Serve {
            mut listener,
            paths,
            idle,
            ready,
        } = serve;
        let events = self.events.clone();
        let forward = tokio::spawn(async move {
            while let Some(incoming) = listener.next().await {
                if events.send(Event::Control(incoming)).is_err() {
                    break;
                }
            }
        });
        if let Err(e) = ServerInfo::current(&paths).write(&paths.discovery) {
            self.output
                .procman(&format!("cannot write {}: {e}", paths.discovery.display()));
        }
        self.output.procman(&format!(
            "listening on {} and {}",
            paths.fifo.display(),
            paths.socket.display()
        ));
        let watch = match IdleWatch::new(&paths) {
            Ok(watch) => {
                let events = self.events.clone();
                watch.spawn(idle, move |reason| {
                    let _ = events.send(Event::Idle(reason));
                });
                Some(watch)
            }
            Err(e) => {
                self.output.procman(&format!(
                    "cannot watch for clients, idle shutdown is off: {e:#}"
                ));
                None
            }
        };
        if !idle.is_never() {
            self.output.procman(&format!(
                "idle shutdown: no-client timeout {}, disconnect timeout {}",
                crate::lifecycle::format_timeout(idle.no_client),
                crate::lifecycle::format_timeout(idle.disconnect)
            ));
        }
        let started_by_attach = ready.is_some();
        if let Some(mut ready) = ready {
            use std::io::Write;
            let _ = ready.write_all(b"ready\n");
        }
        self.serve = Some(Serving {
            forward: forward.abort_handle(),
            paths,
            idle: watch,
            started_by_attach,
        });
    }

    /// Answers one control request (FIFO or socket).
    async fn control(&mut self, incoming: Incoming) -> Option<Stop> {
        let request = match &incoming.request {
            Ok(request) => request.clone(),
            Err(problem) => {
                self.output
                    .procman(&format!("ignored a bad control message: {problem}"));
                let message = problem.clone();
                incoming.reply(Reply::Error { message });
                return None;
            }
        };
        let via = match incoming.via {
            Channel::Fifo => "FIFO",
            Channel::Socket => "socket",
        };
        let (reply, stop) = match request {
            Message::Run(run) => (self.run_request(run), None),
            Message::Shutdown { user, message } => {
                let who = user.unwrap_or_else(|| "unknown user".into());
                let why = message.unwrap_or_else(|| "no reason given".into());
                let reason = format!("shutdown via {via}: {who}: {why}");
                let reply = Reply::Ok {
                    message: "shutting down".into(),
                };
                (reply, Some(Stop::Requested { reason }))
            }
            Message::Status => (self.status(), None),
            Message::Ready => {
                self.ready_waiters.push(incoming);
                self.answer_ready_waiters();
                return None;
            }
            Message::StopProcess { name } => (self.stop_request(&name, false).await, None),
            Message::RestartProcess { name } => (self.stop_request(&name, true).await, None),
        };
        incoming.reply(reply);
        stop
    }

    /// Whether every autostart long-running process runs and nothing waits for a dependency.
    fn is_ready(&self) -> bool {
        self.procs.iter().all(|p| match p.state {
            State::Waiting => false,
            State::Running(_) | State::Dormant => true,
            State::Exited => p.spec.once || !p.spec.autostart,
        })
    }

    fn answer_ready_waiters(&mut self) {
        if !self.ready_waiters.is_empty() && self.is_ready() {
            for waiter in self.ready_waiters.drain(..) {
                waiter.reply(Reply::Ok {
                    message: "ready".into(),
                });
            }
        }
    }

    /// Adds a process sent by `procman start` (or any writer of the protocol).
    fn run_request(&mut self, run: RunRequest) -> Reply {
        // A dormant configured process is started by name, with the request's env on top.
        if let Some(index) = self.index_of(&run.name) {
            if matches!(self.procs[index].state, State::Dormant) {
                let mut spec = self.procs[index].spec.clone();
                spec.env.extend(run.env);
                self.procs.remove(index);
                let _ = self.add(spec, None, BTreeMap::new());
                return self.started_reply(&run.name);
            }
        }
        let mut env = self.base_env.clone();
        env.extend(run.env.clone());
        let depends = match &run.depends {
            None => Vec::new(),
            Some(value) => match config::parse_dependencies_json(value, &env) {
                Ok(depends) => depends,
                Err(problem) => {
                    let message = format!("{}: bad depends: {problem}", run.name);
                    self.output
                        .procman(&format!("ignored a run request: {message}"));
                    return Reply::Error { message };
                }
            },
        };
        let name = self.unique_name(&run.name);
        let spec = ProcessSpec {
            name: name.clone(),
            run: run.run,
            env: run.env,
            once: run.once,
            autostart: true,
            depends,
            for_each: None,
            watch: Vec::new(),
            cwd: None,
            stop_timeout: Duration::from_secs(2),
            location: Location::default(),
        };
        self.output.procman(&format!("{name}: added at runtime"));
        // A process that cannot even be spawned fails this request, not the whole server.
        let _ = self.add(spec, None, BTreeMap::new());
        self.started_reply(&name)
    }

    fn started_reply(&self, name: &str) -> Reply {
        let Some(index) = self.index_of(name) else {
            return Reply::Error {
                message: format!("{name} vanished"),
            };
        };
        let name = name.to_owned();
        match &self.procs[index].state {
            State::Running(child) => Reply::Started {
                name,
                pid: Some(child.pid()),
                state: "running".into(),
            },
            State::Waiting => Reply::Started {
                name,
                pid: None,
                state: "waiting".into(),
            },
            _ => Reply::Error {
                message: format!("{name} could not be started; see the server's log"),
            },
        }
    }

    /// `name`, then `name.1`, `name.2`, …; the first use is never suffixed.
    fn unique_name(&mut self, base: &str) -> String {
        loop {
            let uses = self.name_uses.entry(base.to_owned()).or_insert(0);
            let name = if *uses == 0 {
                base.to_owned()
            } else {
                format!("{base}.{uses}")
            };
            *uses += 1;
            if self.index_of(&name).is_none() {
                return name;
            }
        }
    }

    fn status(&self) -> Reply {
        let processes = self
            .procs
            .iter()
            .map(|p| {
                let (state, pid, uptime) = match &p.state {
                    State::Dormant => ("dormant", None, None),
                    State::Waiting => ("waiting", None, None),
                    State::Running(child) => {
                        let uptime = child.started.elapsed().as_secs_f64();
                        ("running", Some(child.pid()), Some(uptime))
                    }
                    State::Exited
                        if !p.stopped_on_request && p.exit_code.is_some_and(|c| c != 0) =>
                    {
                        ("failed", None, None)
                    }
                    State::Exited => ("exited", None, None),
                };
                ProcessStatus {
                    name: p.spec.name.clone(),
                    pid,
                    state: state.into(),
                    waiting_for: self.waiting.get(&p.spec.name).cloned(),
                    exit_code: p.exit_code,
                    uptime_secs: uptime,
                    restarts: p.restarts,
                }
            })
            .collect();
        Reply::Status {
            pid: std::process::id(),
            config: self.config.path.display().to_string(),
            processes,
        }
    }

    /// Stops one process without shutting the server down; with `restart`, starts it again.
    async fn stop_request(&mut self, name: &str, restart: bool) -> Reply {
        let Some(index) = self.index_of(name) else {
            return Reply::Error {
                message: format!("no process named {name}"),
            };
        };
        self.procs[index].tasks.drain(..).for_each(|t| t.abort());
        self.clear_waiting(name);
        match self.procs[index].state {
            State::Running(_) => {
                self.stop_one(index, false, None).await;
                self.procs[index].stopped_on_request = true;
            }
            State::Waiting => self.procs[index].state = State::Exited,
            State::Dormant | State::Exited => {}
        }
        if !restart {
            return Reply::Ok {
                message: format!("stopped {name}"),
            };
        }
        self.procs[index].restarts += 1;
        self.procs[index].stopped_on_request = false;
        self.procs[index].state = State::Waiting;
        if let Some(stop) = self.launch(index, BTreeMap::new()) {
            let message = match stop {
                Stop::Failure { reason, .. } | Stop::Requested { reason } => reason,
                Stop::Finished => String::new(),
            };
            return Reply::Error { message };
        }
        self.started_reply(name)
    }

    fn forward_signals(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
            let Ok(mut stream) = signal(kind) else {
                continue;
            };
            let events = self.events.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if events.send(Event::Signal(kind.as_raw_value())).is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// Queues every autostart process: started now, or waiting for its dependencies.
    fn start_all(&mut self) -> Result<(), Stop> {
        for spec in self.config.processes.clone() {
            // Stale outputs of a previous run must not satisfy this run's templates.
            let _ = std::fs::remove_file(self.output_file(&spec.name));
            if !spec.autostart {
                self.procs.push(Proc::new(spec, None, State::Dormant));
                continue;
            }
            for (instance, group) in self.expand(&spec)? {
                if let Some(stop) = self.add(instance, group, BTreeMap::new()) {
                    return Err(stop);
                }
            }
        }
        Ok(())
    }

    /// Expands `for_each` into instances `name-0`, `name-1`, … (sorted glob matches).
    fn expand(&self, spec: &ProcessSpec) -> Result<Vec<(ProcessSpec, Option<String>)>, Stop> {
        let Some(for_each) = &spec.for_each else {
            return Ok(vec![(spec.clone(), None)]);
        };
        let pattern = if std::path::Path::new(&for_each.glob).is_absolute() {
            for_each.glob.clone()
        } else {
            self.config
                .dir
                .join(&for_each.glob)
                .to_string_lossy()
                .into_owned()
        };
        let fail = |reason: String| Stop::Failure { reason, code: 1 };
        let mut matches: Vec<String> = glob::glob(&pattern)
            .map_err(|e| {
                fail(format!(
                    "{}: invalid for_each glob {pattern:?}: {e}",
                    spec.name
                ))
            })?
            .filter_map(Result::ok)
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        matches.sort();
        if matches.is_empty() {
            return Err(fail(format!(
                "{}: for_each glob {pattern:?} matched no files",
                spec.name
            )));
        }
        let var = &for_each.var;
        Ok(matches
            .into_iter()
            .enumerate()
            .map(|(i, path)| {
                let mut instance = spec.clone();
                instance.name = format!("{}-{i}", spec.name);
                instance.for_each = None;
                instance.run = substitute_var(&instance.run, var, &path);
                for dependency in instance
                    .depends
                    .iter_mut()
                    .chain(instance.watch.iter_mut().map(|w| &mut w.check))
                {
                    substitute_in(&mut dependency.kind, var, &path);
                }
                instance.env.insert(var.clone(), path.clone());
                (instance, Some(spec.name.clone()))
            })
            .collect())
    }

    /// Adds a process: spawns it now if it has no dependencies, else starts its waiter.
    fn add(
        &mut self,
        spec: ProcessSpec,
        group: Option<String>,
        extra_env: BTreeMap<String, String>,
    ) -> Option<Stop> {
        let _ = self.output.register(&spec.name);
        let index = self.procs.len();
        let has_deps = !spec.depends.is_empty();
        self.procs.push(Proc::new(spec, group, State::Waiting));
        if has_deps {
            self.start_waiter(index);
            None
        } else {
            self.launch(index, extra_env)
        }
    }

    fn start_waiter(&mut self, index: usize) {
        let spec = self.procs[index].spec.clone();
        let events = self.events.clone();
        let board = self.board.subscribe();
        let output = self.output.clone();
        let task = tokio::spawn(async move {
            let name = spec.name.clone();
            let report = {
                let events = events.clone();
                let output = output.clone();
                let name = name.clone();
                move |progress: Progress<'_>| match progress {
                    Progress::Waiting { dependency } => {
                        let _ = events.send(Event::Waiting {
                            name: name.clone(),
                            dependency: dependency.to_owned(),
                        });
                    }
                    Progress::NotReady { dependency, reason } => {
                        output.procman(&format!(
                            "{name}: dependency not ready: {dependency} ({reason})"
                        ));
                    }
                    Progress::Satisfied {
                        dependency,
                        remaining,
                    } => {
                        output.procman(&format!(
                            "{name}: dependency satisfied: {dependency} ({remaining} remaining)"
                        ));
                    }
                }
            };
            let event = match deps::wait_for_all(&name, &spec.depends, board, &report).await {
                Ok(env) => Event::Ready { name, env },
                Err(failure) => Event::DependencyFailed {
                    name,
                    message: failure.to_string(),
                },
            };
            let _ = events.send(event);
        });
        self.procs[index].tasks.push(task.abort_handle());
    }

    /// Spawns process `index` (its dependencies hold). Failure to start is a failure of
    /// the process, reported and treated like a non-zero exit.
    fn launch(&mut self, index: usize, extra_env: BTreeMap<String, String>) -> Option<Stop> {
        let spec = self.procs[index].spec.clone();
        let name = spec.name.clone();
        let prepared = self.prepare(&spec, extra_env);
        let spawned = prepared.and_then(|(script, env)| {
            let launch = Launch {
                script: &script,
                env: &env,
                cwd: spec.cwd.as_deref(),
            };
            Child::spawn(&self.shell, &launch).map_err(|e| format!("cannot start: {e}"))
        });
        let (child, pipe) = match spawned {
            Ok(spawned) => spawned,
            Err(reason) => {
                self.procs[index].state = State::Exited;
                let reason = format!("{name}: {reason}");
                self.output.procman(&reason);
                return Some(Stop::Failure { reason, code: 1 });
            }
        };
        let pid = child.pid();
        self.lifeline.watch(pid);
        let capture = self.output.capture(&name, pipe);
        self.output.procman(&format!("{name} [{pid}] started"));
        let exited = child.exit_signal();
        let events = self.events.clone();
        let waiter = tokio::spawn({
            let name = name.clone();
            async move {
                exited.wait().await;
                // Let the capture drain what the process wrote before we report its exit,
                // without waiting on descendants that keep the pipe open.
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    tokio::task::spawn_blocking(move || capture.join()),
                )
                .await;
                let _ = events.send(Event::Exited { name });
            }
        });
        self.seq += 1;
        let proc = &mut self.procs[index];
        proc.started_seq = self.seq;
        proc.state = State::Running(child);
        proc.tasks.push(waiter.abort_handle());
        for watch in spec.watch.clone() {
            let handle = self.start_watch(&name, watch);
            self.procs[index].tasks.push(handle);
        }
        None
    }

    /// The script and environment of a process, with templates resolved.
    fn prepare(
        &self,
        spec: &ProcessSpec,
        extra_env: BTreeMap<String, String>,
    ) -> Result<(String, BTreeMap<String, String>), String> {
        let lookup = |process: &str, key: &str| {
            std::fs::read_to_string(self.output_file(process))
                .ok()
                .and_then(|text| template::parse_output_file(&text).remove(key))
        };
        let mut env = self.base_env.clone();
        for (key, value) in &spec.env {
            env.insert(key.clone(), template::resolve(value, lookup)?);
        }
        env.extend(extra_env);
        env.insert(
            "PROCMAN_OUTPUT".into(),
            self.output_file(&spec.name).to_string_lossy().into_owned(),
        );
        let script = template::resolve(&spec.run, lookup)?;
        Ok((script, env))
    }

    fn output_file(&self, name: &str) -> PathBuf {
        let dir = std::path::absolute(&self.options.log_dir)
            .unwrap_or_else(|_| self.options.log_dir.clone());
        dir.join(format!("{name}.output"))
    }

    fn start_watch(&self, process: &str, watch: config::Watch) -> AbortHandle {
        let events = self.events.clone();
        let board = self.board.subscribe();
        let process = process.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(watch.initial_delay).await;
            let mut failures = 0u32;
            loop {
                match deps::check_once(&watch.check.kind, &board).await {
                    deps::Check::Holds { .. } => failures = 0,
                    deps::Check::NotYet { .. } => {
                        failures += 1;
                        if failures >= watch.failure_threshold {
                            let _ = events.send(Event::WatchFailed {
                                process: process.clone(),
                                watch: watch.name.clone(),
                                action: watch.on_fail.clone(),
                                failures,
                                check: deps::describe(&watch.check.kind),
                            });
                            if watch.on_fail != OnFail::Log {
                                return;
                            }
                            failures = 0;
                        }
                    }
                }
                tokio::time::sleep(watch.poll_interval).await;
            }
        })
        .abort_handle()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.spec.name == name)
    }

    fn handle(&mut self, event: Event) -> Option<Stop> {
        match event {
            Event::Exited { name } => self.on_exit(&name),
            Event::Ready { name, env } => {
                self.clear_waiting(&name);
                let index = self.index_of(&name)?;
                if !matches!(self.procs[index].state, State::Waiting) {
                    return None;
                }
                self.output
                    .procman(&format!("{name}: all dependencies satisfied, starting"));
                self.launch(index, env)
            }
            Event::DependencyFailed { name, message } => {
                self.clear_waiting(&name);
                if let Some(index) = self.index_of(&name) {
                    self.procs[index].state = State::Exited;
                }
                self.output.procman(&message);
                Some(Stop::Failure {
                    reason: message,
                    code: 1,
                })
            }
            Event::Waiting { name, dependency } => {
                self.output
                    .procman(&format!("{name}: waiting for {dependency}"));
                self.waiting.insert(name, dependency);
                self.show_waiting();
                None
            }
            Event::WatchFailed {
                process,
                watch,
                action,
                failures,
                check,
            } => {
                let what =
                    format!("{process}: watch {watch} failed {failures} time(s) in a row: {check}");
                match action {
                    OnFail::Shutdown => {
                        self.output.procman(&what);
                        Some(Stop::Failure {
                            reason: what,
                            code: 1,
                        })
                    }
                    OnFail::Log => {
                        self.output.procman(&what);
                        None
                    }
                    OnFail::Spawn(target) => {
                        self.output.procman(&format!("{what}; starting {target}"));
                        let env = BTreeMap::from([
                            ("PROCMAN_WATCH_NAME".to_owned(), watch),
                            ("PROCMAN_WATCH_PROCESS".to_owned(), process),
                            ("PROCMAN_WATCH_CHECK".to_owned(), check),
                            ("PROCMAN_WATCH_FAILURES".to_owned(), failures.to_string()),
                        ]);
                        self.spawn_dormant(&target, env)
                    }
                }
            }
            // Control requests are async and answered by `control`, from the main loop.
            Event::Control(incoming) => {
                incoming.reply(Reply::Error {
                    message: "not accepted at this point".into(),
                });
                None
            }
            Event::Idle(reason) => {
                self.output.procman(&reason);
                Some(Stop::Requested { reason })
            }
            Event::Signal(sig) => {
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                Some(Stop::Requested {
                    reason: format!("received {name}"),
                })
            }
        }
    }

    /// Starts a dormant (`autostart: false`) process, unless it is already running.
    fn spawn_dormant(&mut self, name: &str, env: BTreeMap<String, String>) -> Option<Stop> {
        let index = self.index_of(name)?;
        match self.procs[index].state {
            State::Running(_) | State::Waiting => {
                self.output
                    .procman(&format!("{name}: already running, not starting another"));
                None
            }
            State::Dormant | State::Exited => {
                let mut spec = self.procs[index].spec.clone();
                spec.env.extend(env);
                self.procs.remove(index);
                self.add(spec, None, BTreeMap::new())
            }
        }
    }

    fn clear_waiting(&mut self, name: &str) {
        if self.waiting.remove(name).is_some() {
            self.show_waiting();
        }
    }

    fn show_waiting(&self) {
        if self.waiting.is_empty() {
            self.output.set_status(None);
        } else {
            let list: Vec<String> = self
                .waiting
                .iter()
                .map(|(n, d)| format!("{n} → {d}"))
                .collect();
            self.output
                .set_status(Some(format!("waiting: {}", list.join(", "))));
        }
    }

    fn on_exit(&mut self, name: &str) -> Option<Stop> {
        let index = self.index_of(name)?;
        let proc = &mut self.procs[index];
        let State::Running(child) = &mut proc.state else {
            return None;
        };
        let status = child.try_reap()?;
        let pid = child.pid();
        let elapsed = child.started.elapsed().as_secs_f64();
        self.lifeline.forget(pid);
        proc.state = State::Exited;
        proc.tasks.drain(..).for_each(|t| t.abort());
        let (how, code) = describe_exit(status);
        proc.exit_code = Some(code);
        let once = proc.spec.once;
        let group = proc.group.clone();
        if once && status.success() {
            self.output
                .procman(&format!("{name} [{pid}] completed after {elapsed:.1}s"));
            self.publish_exit(name, group, ExitState::Succeeded);
            return None;
        }
        let line = format!("{name} [{pid}] {how} after {elapsed:.1}s");
        self.output.procman(&line);
        self.publish_exit(name, group, ExitState::Failed { code });
        Some(Stop::Failure { reason: line, code })
    }

    /// Tells `process_exited` dependencies; a `for_each` group counts once all its
    /// instances are done.
    fn publish_exit(&mut self, name: &str, group: Option<String>, state: ExitState) {
        let group_state = group.and_then(|g| {
            let mut members = self
                .procs
                .iter()
                .filter(|p| p.group.as_deref() == Some(g.as_str()));
            let done = if state != ExitState::Succeeded {
                Some(state)
            } else if members.all(|p| matches!(p.state, State::Exited)) {
                Some(ExitState::Succeeded)
            } else {
                None
            };
            done.map(|s| (g, s))
        });
        self.board.send_modify(|board| {
            board.insert(name.to_owned(), state);
            if let Some((g, s)) = group_state {
                // A group that already failed stays failed.
                if !matches!(board.get(&g), Some(ExitState::Failed { .. })) {
                    board.insert(g, s);
                }
            }
        });
    }

    /// Run mode ends by itself when nothing runs and nothing waits.
    fn finished(&self) -> Option<Stop> {
        if self.serve.is_some() {
            return None;
        }
        let busy = self
            .procs
            .iter()
            .any(|p| matches!(p.state, State::Running(_) | State::Waiting));
        (!busy).then_some(Stop::Finished)
    }

    async fn shutdown(&mut self, stop: Stop, inbox: &mut mpsc::UnboundedReceiver<Event>) -> i32 {
        let code = match &stop {
            Stop::Failure { reason, code } => {
                self.output.procman(&format!("shutting down: {reason}"));
                *code
            }
            Stop::Requested { reason } => {
                self.output.procman(&format!("shutting down: {reason}"));
                0
            }
            Stop::Finished => 0,
        };
        // New requests now get "no server" instead of being ignored.
        if let Some(serving) = &self.serve {
            // No longer discoverable: new clients get "no server" or start a fresh one
            // instead of talking to one that is leaving. Connections already accepted
            // stay open until the end, so replies in flight (to `stop`) are delivered.
            let paths = &serving.paths;
            for path in [&paths.discovery, &paths.fifo, &paths.socket] {
                let _ = procref::discovery::remove(path);
            }
            if let Some(idle) = &serving.idle {
                idle.unlock();
            }
        }
        self.waiting.clear();
        self.output.set_status(None);
        if self.options.debug && matches!(stop, Stop::Failure { .. }) {
            self.debug_pause(inbox).await;
        }
        for proc in &mut self.procs {
            proc.tasks.drain(..).for_each(|t| t.abort());
        }
        // Stop in reverse start order: dependents before what they depend on.
        let mut order: Vec<usize> = (0..self.procs.len())
            .filter(|&i| matches!(self.procs[i].state, State::Running(_)))
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.procs[i].started_seq));
        let mut kill_now = false;
        for index in order {
            kill_now = self.stop_one(index, kill_now, Some(&mut *inbox)).await;
        }
        if let Some(serving) = &self.serve {
            // Let connection tasks write the replies already handed to them.
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            serving.forward.abort();
            if let Some(idle) = &serving.idle {
                idle.remove_if_unused();
            }
            if serving.started_by_attach {
                let _ = procref::discovery::remove(&serving.paths.discovery.with_extension("log"));
            }
        }
        self.output.procman(&format!("exiting with code {code}"));
        let _ = self.output.flush();
        code
    }

    /// SIGTERM to the group, up to `stop_timeout`, then SIGKILL. A second SIGINT turns
    /// every remaining stop into an immediate SIGKILL. Returns whether that happened.
    async fn stop_one(
        &mut self,
        index: usize,
        mut kill_now: bool,
        mut inbox: Option<&mut mpsc::UnboundedReceiver<Event>>,
    ) -> bool {
        let proc = &mut self.procs[index];
        let name = proc.spec.name.clone();
        let timeout = proc.spec.stop_timeout;
        let State::Running(child) = &mut proc.state else {
            return kill_now;
        };
        let exited: ExitSignal = child.exit_signal();
        let pid = child.pid();
        if !kill_now {
            child.signal_group(Signal::TERM);
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                tokio::select! {
                    _ = exited.wait() => break,
                    _ = tokio::time::sleep_until(deadline) => {
                        self.output.procman(&format!("{name} [{pid}] did not stop within {timeout:?}: SIGKILL"));
                        break;
                    }
                    Some(event) = async { match inbox.as_mut() { Some(inbox) => inbox.recv().await, None => std::future::pending().await } } => {
                        if let Event::Signal(libc::SIGINT) = event {
                            self.output.procman("second interrupt: killing everything now");
                            kill_now = true;
                            break;
                        }
                    }
                }
            }
        }
        let State::Running(child) = &mut self.procs[index].state else {
            return kill_now;
        };
        // Whatever is left of the group (the leader, or descendants that ignored SIGTERM).
        if child.group_alive() {
            child.signal_group(Signal::KILL);
        }
        exited.wait_timeout(Duration::from_secs(5)).await;
        let status = child.try_reap();
        let elapsed = child.started.elapsed().as_secs_f64();
        self.lifeline.forget(pid);
        if let Some(status) = status {
            let (how, code) = describe_exit(status);
            self.procs[index].exit_code = Some(code);
            self.output
                .procman(&format!("{name} [{pid}] {how} after {elapsed:.1}s"));
        }
        self.procs[index].state = State::Exited;
        kill_now
    }

    async fn debug_pause(&mut self, inbox: &mut mpsc::UnboundedReceiver<Event>) {
        self.output
            .procman("debug mode: shutdown paused; still running:");
        for proc in &self.procs {
            if let State::Running(child) = &proc.state {
                self.output
                    .procman(&format!("  - {} [pid {}]", proc.spec.name, child.pid()));
            }
        }
        self.output
            .procman("press ENTER to continue shutdown (or Ctrl-C)");
        let enter = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        });
        tokio::select! {
            _ = enter => {}
            _ = async { while !matches!(inbox.recv().await, Some(Event::Signal(_)) | None) {} } => {}
        }
    }
}

/// Replaces `$var` and `${var}` in `text` with `value`.
fn substitute_var(text: &str, var: &str, value: &str) -> String {
    text.replace(&format!("${{{var}}}"), value)
        .replace(&format!("${var}"), value)
}

/// Substitutes `var` in every text field of a dependency (for `for_each` instances,
/// whose dependencies may name the instance's file as `${VAR}`).
fn substitute_in(kind: &mut config::DependencyKind, var: &str, value: &str) {
    use config::DependencyKind::*;
    let substitute = |text: &str| substitute_var(text, var, value);
    let path = |p: &mut PathBuf| *p = PathBuf::from(substitute(&p.to_string_lossy()));
    match kind {
        Http { url, .. } => *url = substitute(url),
        Tcp { address } | NotListening { address } => *address = substitute(address),
        PathExists { path: p } | NotExists { path: p } | FileContains { path: p, .. } => path(p),
        NotRunning { pattern } => *pattern = substitute(pattern),
        ProcessExited { .. } => {}
    }
}
