//! Spawning, the process table, and shutdown.
//!
//! The supervisor is one task on a single-threaded tokio runtime. Everything that can
//! happen arrives as an [`Event`] on one channel: a child exited (its pidfd became
//! readable), a process's dependencies were met or failed, a watch fired, a signal came.
//! Between events the process sleeps in the kernel: an idle supervisor never wakes up.
//!
//! `child` spawns one process, `lifeline` kills every group if the supervisor dies,
//! `serve` answers control requests, `shutdown` stops everything.

mod child;
pub mod lifeline;
mod serve;
mod shutdown;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::config::{self, Config, OnFail, ProcessSpec, template};
use crate::control::{Incoming, Listener, Reply, RuntimePaths};
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

    /// Turns SIGINT and SIGTERM into events.
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
