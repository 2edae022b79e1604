//! The supervisor: a state machine over the process table ([`machine`]) and the thin async
//! layer that performs its effects.
//!
//! Everything that can happen arrives as an [`Input`] on one channel: a child's group
//! leader exited (its pidfd became readable), something of a process that outlived its
//! leader may be gone (SIGCHLD, `cgroup.events`, a stray's pidfd), the guardian died, a
//! timer fired, a dependency waiter or a watch reported, a control request or a signal
//! came. The runner turns each into a machine [`Event`], and performs the [`Effect`]s the
//! machine returns: it spawns, signals, arms timers, replies. No handler awaits a process.
//! Between inputs the supervisor sleeps in the kernel: an idle supervisor never wakes up.
//!
//! `child` spawns one process (`spawn` creates it, `command` skips the shell when it cannot
//! matter), `containment` holds each process with everything it starts
//! (cgroup or process group, subreaper), `lifeline` kills all of it if the supervisor dies,
//! `tasks` runs dependency waiters and watches, `listening` is the control side.

mod child;
mod command;
pub mod containment;
pub mod lifeline;
mod listening;
mod logs;
pub mod machine;
mod output_files;
mod runs;
mod spawn;
mod tasks;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::config::{Config, ProcessSpec, template};
use crate::control::{Incoming, ReplyStream};
use crate::deps::ExitState;
use crate::output::Output;
use crate::protocol::{Exit, Message, ProcessName, Reply};
pub use child::{ALWAYS_SHELL_ENV, Shell};
use child::{Child, ExitSignal, Launch, Spawner};
pub use containment::Containment;
use containment::{Unit, Watcher};
pub use lifeline::Lifeline;
use listening::Listener;
pub use listening::Listening;
use machine::{Effect, Event, Machine, Now, RequestId, Sig};
use output_files::OutputFiles;
use runs::Runs;

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-e KEY=VALUE` flags: above the system environment and the config's environment
    /// files, below a process's own `env_file` and `env`.
    pub extra_env: BTreeMap<String, String>,
    /// Directory for logs and `$PROCMAN_OUTPUT` files.
    pub log_dir: PathBuf,
    /// Pause before a failure-triggered shutdown until Enter is pressed.
    pub debug: bool,
}

/// What reaches the runner.
enum Input {
    /// Straight to the machine.
    Event(Event),
    /// A group leader's pidfd became readable; `drained` when its output reached EOF
    /// (nothing else holds the pipe).
    LeaderExited {
        name: ProcessName,
        pid: u32,
        drained: bool,
    },
    /// A child of ours exited (SIGCHLD), a watched `cgroup.events` changed or a stray
    /// exited: reap orphans and look which processes that outlived their leader are gone.
    Contained,
    /// The guardian's pidfd became readable.
    GuardianExited,
    /// A control request.
    Control(Incoming),
}

/// A unit (a process run and what it started) from spawn until nothing of it is left.
struct Tracked {
    name: ProcessName,
    unit: Unit,
    /// Inode of its output pipe, to find descendants that left the group but hold it.
    pipe_inode: u64,
    /// The leader exited; the rest is being waited for.
    leader_gone: bool,
}

/// How long after a leader's exit its output may still drain before the exit is handled,
/// so that descendants holding the pipe cannot delay it.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Runs `config` until every process is done or a shutdown is triggered; returns the
/// exit code.
pub async fn run(
    config: Config,
    options: Options,
    output: Output,
    containment: Containment,
    lifeline: Arc<Lifeline>,
    listening: Listening,
) -> i32 {
    let (inputs, inbox) = mpsc::unbounded_channel();
    let (board, _) = watch::channel(BTreeMap::new());
    let mut base_env: BTreeMap<String, String> = std::env::vars().collect();
    base_env.extend(config.file_env.clone());
    base_env.extend(options.extra_env.clone());
    let serve = listening.serve.is_some();
    let runs = Runs::new(&config);
    let config = Arc::new(config);
    for spec in &config.processes {
        let _ = output.register(&spec.name);
    }
    let machine = Machine::new(
        config.processes.clone(),
        config.path.display().to_string(),
        serve,
        options.debug,
    );
    let spawner = match Spawner::new() {
        Ok(spawner) => spawner,
        Err(e) => {
            output.procman(&format!("cannot prepare spawning processes: {e}"));
            return 1;
        }
    };
    let mut runner = Runner {
        machine,
        config,
        output,
        containment,
        watcher: None,
        units: HashMap::new(),
        lingering: HashSet::new(),
        lifeline,
        spawner,
        base_env,
        inputs,
        local: VecDeque::new(),
        uncaptured: Vec::new(),
        children: HashMap::new(),
        tasks: HashMap::new(),
        pending: HashMap::new(),
        next_request: 0,
        board,
        output_files: OutputFiles::new(&options.log_dir),
        runs,
        status_line: None,
        listener: None,
        subscribers: Vec::new(),
    };
    runner.main(inbox, listening).await
}

/// A process just spawned whose output is not read yet.
struct Uncaptured {
    name: ProcessName,
    pid: u32,
    pipe: OwnedFd,
    exited: ExitSignal,
}

struct Runner {
    machine: Machine,
    config: Arc<Config>,
    output: Output,
    containment: Containment,
    /// Wakes the runner when a watched `cgroup.events` changes (cgroup mode).
    watcher: Option<Arc<Watcher>>,
    /// Every unit with something left, by leader pid.
    units: HashMap<u32, Tracked>,
    /// The units whose leader is gone while the rest is not, the only ones a SIGCHLD or a
    /// `cgroup.events` change can end (so that looking costs nothing per running process).
    lingering: HashSet<u32>,
    lifeline: Arc<Lifeline>,
    spawner: Spawner,
    base_env: BTreeMap<String, String>,
    inputs: mpsc::UnboundedSender<Input>,
    /// Results of effects performed synchronously (spawns), handled before the inbox.
    local: VecDeque<Event>,
    /// Output pipes of processes just spawned, read from once their `started` line is out.
    uncaptured: Vec<Uncaptured>,
    /// The live group leaders.
    children: HashMap<ProcessName, Child>,
    /// Dependency waiters and watches, per process.
    tasks: HashMap<ProcessName, Vec<AbortHandle>>,
    /// Requests the machine has not answered yet.
    pending: HashMap<RequestId, Incoming>,
    next_request: RequestId,
    /// Final exits, for `process_exited` dependencies.
    board: watch::Sender<BTreeMap<String, ExitState>>,
    /// `$PROCMAN_OUTPUT` files, for `${{ name.KEY }}` templates.
    output_files: OutputFiles,
    /// Each process's current run, for `output_matches` dependencies.
    runs: Runs,
    /// What the terminal's status line shows.
    status_line: Option<String>,
    listener: Option<Listener>,
    /// Open subscriptions (`subscribe` requests), told every state change.
    subscribers: Vec<ReplyStream>,
}

impl Runner {
    async fn main(
        &mut self,
        mut inbox: mpsc::UnboundedReceiver<Input>,
        listening: Listening,
    ) -> i32 {
        self.forward_signals();
        self.watch_containment();
        self.watch_guardian();
        let count = self.config.processes.iter().filter(|p| p.autostart).count();
        let mode = if listening.serve.is_some() {
            "serve"
        } else {
            "run"
        };
        self.output
            .procman(&format!("started with {count} process(es), mode={mode}"));
        self.output.procman(&format!(
            "{}; guardian [{}]",
            self.containment.describe(),
            self.lifeline.guardian()
        ));
        self.listener = Some(Listener::start(listening, &self.output, &self.inputs));
        let mut effects = self.machine.start(Now::read());
        loop {
            let finished = self.perform(effects);
            // Once the `Spawned` events are handled, so that each process's `started`
            // line comes before its first line of output.
            if self.local.is_empty() || finished.is_some() {
                self.capture_spawned();
            }
            if let Some(code) = finished {
                self.finish(code).await;
                return code;
            }
            effects = match self.local.pop_front() {
                Some(event) => self.machine.handle(Now::read(), event),
                None => match inbox.recv().await {
                    Some(input) => self.handle(input),
                    None => self
                        .machine
                        .handle(Now::read(), Event::Idle("the event channel closed".into())),
                },
            };
        }
    }

    /// Handles one input: the system-level part first, then the machine.
    fn handle(&mut self, input: Input) -> Vec<Effect> {
        if let Input::GuardianExited = input {
            return self.replace_guardian();
        }
        match self.translate(input) {
            Some(event) => self.machine.handle(Now::read(), event),
            None => Vec::new(),
        }
    }

    /// Turns an input into a machine event, doing the system-level part first (reaping,
    /// containment checks, parking a request's reply channel).
    fn translate(&mut self, input: Input) -> Option<Event> {
        match input {
            Input::Event(event) => Some(event),
            Input::LeaderExited { name, pid, drained } => {
                let child = self.children.get_mut(&name).filter(|c| c.pid() == pid)?;
                let status = child.try_reap()?;
                self.children.remove(&name);
                self.runs.exited(&name, Exit::from_status(status));
                // The leader may have hidden exited orphans from the reaper.
                self.reap_orphans();
                let group_alive = self.leader_gone(pid, drained);
                Some(Event::Exited {
                    name,
                    pid,
                    exit: Exit::from_status(status),
                    group_alive,
                    drained,
                })
            }
            Input::Contained => {
                self.reap_orphans();
                let gone: Vec<u32> = self
                    .lingering
                    .iter()
                    .copied()
                    .filter(|pid| self.units.get(pid).is_none_or(|t| !t.unit.alive()))
                    .collect();
                for pid in gone {
                    if let Some(name) = self.release(pid) {
                        self.local.push_back(Event::GroupGone { name, pid });
                    }
                }
                None
            }
            Input::GuardianExited => None,
            Input::Control(incoming)
                if matches!(
                    incoming.request,
                    Ok(Message::Subscribe { .. } | Message::Logs(_))
                ) =>
            {
                self.subscribe(incoming);
                None
            }
            Input::Control(incoming) => {
                let message = match &incoming.request {
                    Ok(message) => message.clone(),
                    Err(problem) => {
                        self.output
                            .procman(&format!("ignored a bad control message: {problem}"));
                        let message = problem.clone();
                        incoming.reply(Reply::Error { message });
                        return None;
                    }
                };
                let via = match incoming.via {
                    crate::control::Channel::Fifo => "FIFO",
                    crate::control::Channel::Socket => "socket",
                };
                self.next_request += 1;
                let id = self.next_request;
                self.pending.insert(id, incoming);
                Some(Event::Request { id, message, via })
            }
        }
    }

    /// Performs effects in order; returns the exit code once the machine says to finish.
    fn perform(&mut self, effects: Vec<Effect>) -> Option<i32> {
        let mut finish = None;
        for effect in effects {
            match effect {
                Effect::Log(line) => self.output.procman(&line),
                Effect::WaitForDependencies(name) => {
                    if let Some(spec) = self.machine.spec(&name) {
                        let task = tasks::wait_for_dependencies(
                            spec,
                            self.board.subscribe(),
                            self.runs.source(&self.output),
                            self.inputs.clone(),
                        );
                        self.tasks.entry(name).or_default().push(task);
                    }
                }
                Effect::Spawn { name, env } => {
                    let event = self.spawn(&name, env);
                    self.local.push_back(event);
                }
                Effect::StartWatches(name) => {
                    if let Some(spec) = self.machine.spec(&name) {
                        let started: Vec<AbortHandle> = spec
                            .watch
                            .iter()
                            .map(|w| {
                                tasks::watch(
                                    name.clone(),
                                    w.clone(),
                                    self.board.subscribe(),
                                    self.inputs.clone(),
                                )
                            })
                            .collect();
                        self.tasks.entry(name).or_default().extend(started);
                    }
                }
                Effect::CancelTasks(name) => {
                    for task in self.tasks.remove(&name).into_iter().flatten() {
                        task.abort();
                    }
                }
                Effect::Signal { pid, signal, .. } => {
                    let signal = match signal {
                        Sig::Term => rustix::process::Signal::TERM,
                        Sig::Kill => rustix::process::Signal::KILL,
                    };
                    if let Some(tracked) = self.units.get(&pid) {
                        tracked.unit.signal(signal);
                    }
                }
                Effect::Arm {
                    name,
                    epoch,
                    timer,
                    after,
                } => {
                    let inputs = self.inputs.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = inputs.send(Input::Event(Event::Timer { name, epoch, timer }));
                    });
                }
                Effect::Reply { id, reply } => {
                    if let Some(incoming) = self.pending.remove(&id) {
                        incoming.reply(reply);
                    }
                }
                Effect::PublishExit { name, state } => {
                    self.runs.ended(&name, state, &self.output);
                    self.board.send_modify(|board| {
                        // A group that already failed stays failed.
                        if !matches!(board.get(&name), Some(ExitState::Failed { .. })) {
                            board.insert(name, state);
                        }
                    });
                }
                Effect::Changed(name) => self.publish_change(&name),
                Effect::StopListening => {
                    if let Some(listener) = &self.listener {
                        listener.stop_listening();
                    }
                }
                Effect::DebugPause => {
                    let inputs = self.inputs.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut line = String::new();
                        let _ = std::io::stdin().read_line(&mut line);
                        let _ = inputs.send(Input::Event(Event::Resume));
                    });
                }
                Effect::Finish { code } => finish = Some(code),
            }
        }
        self.show_waiting();
        finish
    }

    /// Answers a subscription with the table, then keeps its connection for changes (and
    /// output lines with `logs`); answers a `logs` request with the output tail.
    fn subscribe(&mut self, incoming: Incoming) {
        let request = incoming.request.clone();
        let Some(stream) = incoming.into_stream() else {
            self.output
                .procman("ignored a subscribe or logs message on the FIFO: they need the socket");
            return;
        };
        match request {
            Ok(Message::Logs(request)) => {
                logs::answer(&self.output, &request, &self.machine.statuses(), stream);
            }
            Ok(Message::Subscribe { logs }) => {
                let snapshot = Reply::Status {
                    pid: std::process::id(),
                    config: self.config.path.display().to_string(),
                    processes: self.machine.statuses(),
                };
                if stream.send(snapshot) {
                    if logs {
                        logs::subscribe(&self.output, &stream);
                    }
                    self.subscribers.push(stream);
                }
            }
            _ => {}
        }
    }

    /// Sends a process's new row to every subscriber; a subscriber that is gone or too
    /// far behind is dropped (its stream ends, and it may subscribe again).
    fn publish_change(&mut self, name: &ProcessName) {
        if self.subscribers.is_empty() {
            return;
        }
        let Some(process) = self.machine.status(name) else {
            return;
        };
        self.subscribers.retain(|stream| {
            stream.send(Reply::Event {
                process: process.clone(),
            })
        });
    }

    /// Spawns a process; the result is the machine's next event.
    fn spawn(&mut self, name: &ProcessName, env: BTreeMap<String, String>) -> Event {
        let Some(spec) = self.machine.spec(name).cloned() else {
            return Event::SpawnFailed {
                name: name.clone(),
                error: "no such process".into(),
            };
        };
        let leaf = match self.containment.prepare(name) {
            Ok(leaf) => leaf,
            Err(e) => {
                return Event::SpawnFailed {
                    name: name.clone(),
                    error: format!("cannot create its cgroup: {e}"),
                };
            }
        };
        self.output_files.prepare(name, &self.output);
        let spawned = self.prepare(&spec, env).and_then(|(script, env)| {
            let launch = Launch {
                name: name.as_str(),
                script: &script,
                env: &env,
                cwd: spec.cwd.as_deref(),
                cgroup: leaf.as_ref().and_then(containment::cgroup::Leaf::handle),
            };
            Child::spawn(&mut self.spawner, &launch).map_err(|e| e.to_string())
        });
        let (child, pipe) = match spawned {
            Ok(spawned) => spawned,
            Err(error) => {
                if let Some(leaf) = leaf {
                    leaf.remove();
                }
                return Event::SpawnFailed {
                    name: name.clone(),
                    error,
                };
            }
        };
        let pid = child.pid();
        self.lifeline.watch(pid);
        let leaf = leaf.map(|mut leaf| {
            leaf.placed();
            leaf
        });
        self.units.insert(
            pid,
            Tracked {
                name: name.clone(),
                unit: Unit::new(pid, leaf),
                pipe_inode: pipe_inode(&pipe),
                leader_gone: false,
            },
        );
        self.runs.started(name, &self.output);
        self.uncaptured.push(Uncaptured {
            name: name.clone(),
            pid,
            pipe,
            exited: child.exit_signal(),
        });
        self.children.insert(name.clone(), child);
        Event::Spawned {
            name: name.clone(),
            pid,
        }
    }

    /// Reads the output of the processes spawned since the last call, and reports each
    /// one's exit once its output is drained.
    fn capture_spawned(&mut self) {
        for spawned in self.uncaptured.drain(..) {
            let Uncaptured {
                name,
                pid,
                pipe,
                exited,
            } = spawned;
            let capture = self.output.capture(&name, pipe);
            let output = self.output.clone();
            let inputs = self.inputs.clone();
            tokio::spawn(async move {
                exited.wait().await;
                // Let the capture drain what the process wrote before its exit is handled,
                // without waiting on descendants that keep the pipe open (or a terminal
                // that takes nothing).
                let mut finished = Box::pin(capture.finished());
                let drained = tokio::time::timeout(DRAIN_GRACE, &mut finished)
                    .await
                    .is_ok();
                let _ = inputs.send(Input::LeaderExited {
                    name: name.clone(),
                    pid,
                    drained,
                });
                if !drained {
                    // Its restart waits while the output thread is held by the terminal,
                    // but not for a process that escaped containment and keeps the pipe
                    // open: the output thread keeping up tells the two apart.
                    tokio::select! {
                        _ = finished => {}
                        () = output.caught_up() => {}
                    }
                    let _ = inputs.send(Input::Event(Event::Drained { name, pid }));
                }
            });
        }
    }

    /// The script and environment of a process, with templates resolved.
    fn prepare(
        &self,
        spec: &ProcessSpec,
        extra_env: BTreeMap<String, String>,
    ) -> Result<(String, BTreeMap<String, String>), String> {
        let lookup = |process: &str, key: &str| match self.output_files.read(process) {
            Ok(text) => template::parse_output_file(&text?).remove(key),
            Err(why) => {
                self.output.procman(&why);
                None
            }
        };
        let mut env = self.base_env.clone();
        env.extend(spec.file_env.clone());
        for (key, value) in &spec.env {
            env.insert(key.clone(), template::resolve(value, lookup)?);
        }
        env.extend(spec.instance_env.clone());
        env.extend(extra_env);
        env.insert(
            containment::INSTANCE_ENV.into(),
            self.containment.instance().to_owned(),
        );
        match self.output_files.path(&spec.name) {
            Some(file) => env.insert("PROCMAN_OUTPUT".into(), file.to_string_lossy().into()),
            // Not an inherited one either: it is no file of this run.
            None => env.remove("PROCMAN_OUTPUT"),
        };
        let (script, values) = template::resolve_script(&spec.run, lookup)?;
        env.extend(values);
        Ok((script, env))
    }

    /// A leader exited and was reaped: whether anything of its unit is left. If so, the
    /// unit is watched until it is gone ([`Input::Contained`]); if not, it is released.
    fn leader_gone(&mut self, pid: u32, drained: bool) -> bool {
        let groups_mode = self.containment.cgroup_dir().is_none();
        if !drained && groups_mode {
            let own = |p: u32| self.is_own_child(p);
            let strays = self.units.get(&pid).map(|tracked| {
                self.containment
                    .strays(tracked.unit.pgid(), tracked.pipe_inode, own)
            });
            if let (Some(strays), Some(tracked)) = (strays, self.units.get_mut(&pid)) {
                for stray in strays {
                    tracked.unit.add_stray(stray);
                }
            }
        }
        let Some(tracked) = self.units.get_mut(&pid) else {
            return false;
        };
        tracked.leader_gone = true;
        for stray in tracked.unit.strays() {
            self.lifeline.watch_stray(stray.pid, stray.start);
            let exited = Arc::clone(&stray.exited);
            let inputs = self.inputs.clone();
            tokio::spawn(async move {
                let _ = exited.readable().await;
                let _ = inputs.send(Input::Contained);
            });
        }
        let mut alive = tracked.unit.alive();
        // Usually nothing is left; otherwise watch its `cgroup.events`, then look again, so
        // that a change before the watch is not missed.
        if alive && let (Some(events), Some(watcher)) = (tracked.unit.events(), &self.watcher) {
            let _ = watcher.watch(&events);
            alive = tracked.unit.alive();
        }
        // Its children became ours; those still holding its output are worth a scan
        // (the others carry PROCMAN_INSTANCE for the guardian).
        if groups_mode && !drained {
            self.guard_adopted();
        }
        if alive {
            self.lingering.insert(pid);
        } else {
            self.release(pid);
        }
        alive
    }

    /// Nothing of unit `pid` is left: removes its cgroup, tells the guardian to forget it,
    /// and returns its process name.
    fn release(&mut self, pid: u32) -> Option<ProcessName> {
        self.lingering.remove(&pid);
        let tracked = self.units.remove(&pid)?;
        self.lifeline.forget(pid);
        for stray in tracked.unit.strays() {
            self.lifeline.forget_stray(stray.pid);
        }
        tracked.unit.remove();
        Some(tracked.name)
    }

    /// Whether `pid` is a child that others reap: a leader not reaped yet, or the guardian.
    fn is_own_child(&self, pid: u32) -> bool {
        pid == self.lifeline.guardian() || self.units.get(&pid).is_some_and(|t| !t.leader_gone)
    }

    /// Reaps exited orphans (procman is their subreaper); adopted processes it reaped
    /// need no guarding any more, and their children are adopted in turn.
    fn reap_orphans(&mut self) {
        let reaped = containment::reaper::reap_orphans(|pid| self.is_own_child(pid));
        for pid in &reaped.orphans {
            self.lifeline.forget_stray(*pid);
        }
        if !reaped.orphans.is_empty() && self.containment.cgroup_dir().is_none() {
            self.guard_adopted();
        }
    }

    /// Process-group mode: tells the guardian about every orphan procman adopted, which no
    /// process group of ours may hold any more.
    fn guard_adopted(&self) {
        for p in self.containment.adopted(|pid| self.is_own_child(pid)) {
            self.lifeline.watch_stray(p.pid, p.start);
        }
    }

    /// The guardian died: start another one, or shut down if none can be started.
    fn replace_guardian(&mut self) -> Vec<Effect> {
        let old = self.lifeline.guardian();
        match self.lifeline.replace() {
            Ok(new) => {
                self.output.procman(&format!(
                    "the guardian [{old}] exited; started a new one [{new}] to kill every process if procman dies"
                ));
                self.watch_guardian();
                self.reap_orphans();
                Vec::new()
            }
            Err(e) => self.machine.handle(
                Now::read(),
                Event::Fatal(format!(
                    "the guardian [{old}] exited and a new one cannot be started ({e}): nothing would stop the processes if procman died"
                )),
            ),
        }
    }

    /// Sends [`Input::GuardianExited`] when the guardian exits.
    fn watch_guardian(&self) {
        let exited = self
            .lifeline
            .guardian_pidfd()
            .and_then(containment::readable_fd);
        let exited = match exited {
            Ok(exited) => exited,
            Err(e) => {
                self.output
                    .procman(&format!("cannot watch the guardian: {e}"));
                return;
            }
        };
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            if exited.readable().await.is_ok() {
                let _ = inputs.send(Input::GuardianExited);
            }
        });
    }

    /// Turns SIGCHLD and `cgroup.events` changes into [`Input::Contained`].
    fn watch_containment(&mut self) {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::child()) {
            Ok(mut stream) => {
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if inputs.send(Input::Contained).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => self.output.procman(&format!(
                "cannot watch for SIGCHLD, orphans stay unreaped: {e}"
            )),
        }
        match self.containment.start_watching() {
            Ok(Some(watcher)) => {
                self.watcher = Some(Arc::clone(&watcher));
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    while watcher.changed().await.is_ok() {
                        if inputs.send(Input::Contained).is_err() {
                            break;
                        }
                    }
                });
            }
            Ok(None) => {}
            Err(e) => self
                .output
                .procman(&format!("cannot watch cgroup.events: {e}")),
        }
    }

    /// Turns SIGINT and SIGTERM into events.
    fn forward_signals(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
            let Ok(mut stream) = signal(kind) else {
                continue;
            };
            let inputs = self.inputs.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    let event = Event::Interrupt(kind.as_raw_value());
                    if inputs.send(Input::Event(event)).is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// The terminal's status line: what is still waiting, and for what.
    fn show_waiting(&mut self) {
        let list: Vec<String> = self
            .machine
            .waiting()
            .map(|(name, what)| format!("{name} → {what}"))
            .collect();
        let line = (!list.is_empty()).then(|| format!("waiting: {}", list.join(", ")));
        if line != self.status_line {
            self.output.set_status(line.clone());
            self.status_line = line;
        }
    }

    /// Every process is gone: deliver the last replies, remove what is ours, say goodbye.
    async fn finish(&mut self, code: i32) {
        self.subscribers.clear();
        for task in self.tasks.drain().flat_map(|(_, tasks)| tasks) {
            task.abort();
        }
        for (_, incoming) in self.pending.drain() {
            incoming.reply(Reply::Error {
                message: "the server is shutting down".into(),
            });
        }
        if let Some(listener) = self.listener.take() {
            listener.close().await;
        }
        // Whatever is left (descendants that escaped their group, or a process stuck
        // after SIGKILL) goes now, so that every output pipe reaches EOF.
        let killed = self.containment.end(&[self.lifeline.guardian()]);
        if !killed.is_empty() {
            let list: Vec<String> = killed
                .iter()
                .map(|k| format!("{} [{}]", k.comm, k.pid))
                .collect();
            self.output.procman(&format!(
                "killed {} process(es) left behind: {}",
                killed.len(),
                list.join(", ")
            ));
        }
        self.reap_orphans();
        self.output_files.keep(&self.output);
        self.output.procman(&format!("exiting with code {code}"));
        if let Err(e) = self.output.flush() {
            eprintln!("procman: {e}");
        }
    }
}

/// The inode of a pipe, as `/proc/PID/fd` links name it (`pipe:[INODE]`).
fn pipe_inode(pipe: &OwnedFd) -> u64 {
    rustix::fs::fstat(pipe).map_or(0, |st| st.st_ino)
}
