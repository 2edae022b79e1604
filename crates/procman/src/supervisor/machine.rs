//! The supervisor's state machine: the process table, and for each event the new states and
//! the effects to perform.
//!
//! Pure: no system calls, no clock reads, no awaiting. The runner (the parent module) reads
//! the clock into [`Now`], performs the [`Effect`]s (spawning, signalling, arming timers,
//! replying) and feeds what happens back as [`Event`]s. A stop is a signal, a deadline timer
//! and an exit event; nothing here waits for a process.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{self, Location, OnFail, ProcessSpec, Restart, RestartPolicy};
use crate::deps::ExitState;
use crate::duration::human;
use crate::protocol::{
    Exit, Message, ProcessName, ProcessState, ProcessStatus, Reply, RunRequest, StopReason,
    Timestamp, signal_name,
};

/// How long a process may take to disappear after SIGKILL before we stop waiting for it
/// (it is stuck in the kernel; nothing more can be done).
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// The clock, read once per event by the runner.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for durations.
    pub mono: Instant,
    /// Wall-clock time, for what the protocol shows.
    pub wall: Timestamp,
}

impl Now {
    /// The current time.
    pub fn read() -> Now {
        Now {
            mono: Instant::now(),
            wall: Timestamp::now(),
        }
    }
}

/// Identifies a request whose reply the runner holds until the machine answers it.
pub type RequestId = u64;

/// A signal the machine asks to send to a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM: please stop.
    Term,
    /// SIGKILL: stop now.
    Kill,
}

/// The timers a process can have armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The restart delay is over.
    Restart,
    /// The stop timeout is over: SIGKILL.
    StopDeadline,
    /// [`KILL_GRACE`] after SIGKILL is over: stop waiting.
    KillDeadline,
}

/// Something that happened.
#[derive(Debug)]
pub enum Event {
    /// A dependency became the one a waiting process waits for.
    Waiting {
        /// The waiting process.
        name: ProcessName,
        /// The dependency, described.
        dependency: String,
    },
    /// All dependencies hold; `env` carries what `file_contains` extracted.
    DependenciesMet {
        /// The process.
        name: ProcessName,
        /// Values for its environment.
        env: BTreeMap<String, String>,
    },
    /// A dependency will not hold.
    DependencyFailed {
        /// The process.
        name: ProcessName,
        /// Why, in one line.
        message: String,
    },
    /// The runner spawned the process ([`Effect::Spawn`]).
    Spawned {
        /// The process.
        name: ProcessName,
        /// Its pid and process group.
        pid: u32,
    },
    /// The runner could not spawn it.
    SpawnFailed {
        /// The process.
        name: ProcessName,
        /// Why.
        error: String,
    },
    /// The group leader exited; `group_alive` when other members of its group remain.
    Exited {
        /// The process.
        name: ProcessName,
        /// The leader's pid.
        pid: u32,
        /// How it ended.
        exit: Exit,
        /// Whether anything else is left in its process group.
        group_alive: bool,
        /// Whether its output was read to the end; if not, [`Event::Drained`] follows.
        drained: bool,
    },
    /// The output of a run that exited with `drained: false` was read to the end, or the
    /// output thread keeps up while a process beyond containment holds the pipe.
    Drained {
        /// The process.
        name: ProcessName,
        /// The run's leader.
        pid: u32,
    },
    /// Nothing is left of a group whose leader had exited with `group_alive`.
    GroupGone {
        /// The process.
        name: ProcessName,
        /// The leader's pid.
        pid: u32,
    },
    /// A timer armed by [`Effect::Arm`] fired.
    Timer {
        /// The process.
        name: ProcessName,
        /// The epoch it was armed in; a stale timer is ignored.
        epoch: u64,
        /// Which timer.
        timer: Timer,
    },
    /// A watch failed `failures` times in a row.
    WatchFailed {
        /// The watched process.
        name: ProcessName,
        /// The watch's name.
        watch: String,
        /// What to do.
        action: OnFail,
        /// Consecutive failures.
        failures: u32,
        /// The check, described.
        check: String,
    },
    /// A control request (FIFO or socket).
    Request {
        /// Where the runner keeps its reply channel.
        id: RequestId,
        /// The request.
        message: Message,
        /// `FIFO` or `socket`, for log lines.
        via: &'static str,
    },
    /// SIGINT or SIGTERM reached the supervisor.
    Interrupt(i32),
    /// No client for long enough (serve mode).
    Idle(String),
    /// The supervisor cannot go on safely (its guardian died and no new one could be
    /// started): stop everything and exit 1.
    Fatal(String),
    /// The `--debug` pause ended.
    Resume,
}

/// Something the runner must do.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// A supervisor line.
    Log(String),
    /// Start the task that waits for the process's dependencies.
    WaitForDependencies(ProcessName),
    /// Spawn the process with these extra environment variables; answer with
    /// [`Event::Spawned`] or [`Event::SpawnFailed`] before any other event.
    Spawn {
        /// The process.
        name: ProcessName,
        /// Environment on top of its own.
        env: BTreeMap<String, String>,
    },
    /// Start the process's watches.
    StartWatches(ProcessName),
    /// Stop the process's dependency waiter and watches.
    CancelTasks(ProcessName),
    /// Send a signal to the process's group.
    Signal {
        /// The process.
        name: ProcessName,
        /// Its process group.
        pid: u32,
        /// Which signal.
        signal: Sig,
    },
    /// Send [`Event::Timer`] after `after`.
    Arm {
        /// The process.
        name: ProcessName,
        /// Its current epoch.
        epoch: u64,
        /// Which timer.
        timer: Timer,
        /// When.
        after: Duration,
    },
    /// Answer a request.
    Reply {
        /// Which.
        id: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// Tell `process_exited` dependencies how a process (or a whole `for_each` group) ended.
    PublishExit {
        /// Process or group name.
        name: String,
        /// How it ended.
        state: ExitState,
    },
    /// A process's state changed.
    Changed(ProcessName),
    /// Shutdown began: stop being discoverable.
    StopListening,
    /// Wait for Enter (`--debug`), then send [`Event::Resume`].
    DebugPause,
    /// Everything is stopped: exit with `code`.
    Finish {
        /// The exit code.
        code: i32,
    },
}

/// Where a process came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The config file.
    Config,
    /// A `run` request.
    Runtime,
}

/// One row of the table.
struct Proc {
    spec: Arc<ProcessSpec>,
    origin: Origin,
    state: ProcessState,
    /// Times it was started again, for any reason.
    restarts: u32,
    /// Consecutive automatic restarts; reset by a run that lasts `max_restart_delay`.
    streak: u32,
    /// Order of its first start, for the shutdown order.
    first_start: Option<u64>,
    /// When the current run was spawned (monotonic).
    run_started: Option<Instant>,
    /// Bumped whenever a timer is armed or becomes meaningless; stale timers are ignored.
    epoch: u64,
    /// A spawn was requested and its result is due.
    spawning: bool,
    /// The leader of its last run while that run's output is still being read (a stuck
    /// terminal stops the output thread): automatic restarts wait for it, so that a
    /// crash loop cannot pile up one unread pipe per run.
    undrained: Option<u32>,
    /// Environment on top of its own (dependency values, a request's or a watch's env),
    /// kept for restarts.
    env: BTreeMap<String, String>,
    /// Requests answered once it runs (start, restart).
    on_started: Vec<RequestId>,
    /// Requests answered once it is stopped.
    on_stopped: Vec<RequestId>,
}

impl Proc {
    fn new(spec: ProcessSpec, origin: Origin) -> Proc {
        Proc {
            spec: Arc::new(spec),
            origin,
            state: ProcessState::Dormant,
            restarts: 0,
            streak: 0,
            first_start: None,
            run_started: None,
            epoch: 0,
            spawning: false,
            undrained: None,
            env: BTreeMap::new(),
            on_started: Vec::new(),
            on_stopped: Vec::new(),
        }
    }

    fn name(&self) -> &ProcessName {
        &self.spec.name
    }

    /// Running, stopping, backing off, waiting or about to be spawned.
    fn is_busy(&self) -> bool {
        self.spawning
            || matches!(
                self.state,
                ProcessState::Waiting { .. }
                    | ProcessState::Running { .. }
                    | ProcessState::Stopping { .. }
                    | ProcessState::BackingOff { .. }
            )
    }

    fn ran_for(&self, now: Now) -> Duration {
        self.run_started
            .map_or(Duration::ZERO, |started| now.mono.duration_since(started))
    }

    fn status(&self) -> ProcessStatus {
        ProcessStatus {
            name: self.spec.name.clone(),
            state: self.state.clone(),
            restarts: self.restarts,
            group: self.spec.group.clone(),
        }
    }
}

/// Why the stack is stopping.
#[derive(Debug, Clone)]
enum Stop {
    /// A process failed or ended the run; exit with `code`.
    Failure { reason: String, code: i32 },
    /// A signal or a request: exit 0.
    Requested { reason: String },
    /// Run mode with nothing left to do.
    Finished,
}

#[derive(Debug)]
enum Phase {
    Running,
    ShuttingDown {
        code: i32,
        /// Stop order: dependents before what they depend on.
        order: Vec<usize>,
        /// A second interrupt: everything got SIGKILL.
        kill_now: bool,
        /// `--debug`: waiting for Enter before stopping anything.
        paused: bool,
    },
    Finished,
}

/// The dependency a process in `state` waits for, if it names one.
fn waiting_for(state: &ProcessState) -> Option<&str> {
    match state {
        ProcessState::Waiting {
            waiting_for: Some(what),
        } => Some(what),
        _ => None,
    }
}

/// The process table and what the whole stack is doing.
pub struct Machine {
    procs: Vec<Proc>,
    index: HashMap<ProcessName, usize>,
    phase: Phase,
    /// `serve`: accepts `run` requests and never ends by itself.
    serve: bool,
    /// `--debug`: pause before a failure-triggered shutdown.
    debug: bool,
    config_path: String,
    starts: u64,
    /// How often each base name was used by `run` requests (`name`, `name.1`, …).
    name_uses: HashMap<ProcessName, u32>,
    ready_waiters: Vec<RequestId>,
    /// Requests that named a group, answered once every member has been.
    joint: HashMap<RequestId, Joint>,
    /// How many processes wait for a named dependency, so that [`Machine::waiting`] costs
    /// nothing when none does.
    waiting: usize,
    effects: Vec<Effect>,
}

/// The answers so far to a request that named a whole group.
struct Joint {
    remaining: usize,
    done: Vec<String>,
    failed: Vec<String>,
}

impl Machine {
    /// A table of `processes` (config order), all dormant until [`Machine::start`].
    pub fn new(
        processes: Vec<ProcessSpec>,
        config_path: String,
        serve: bool,
        debug: bool,
    ) -> Machine {
        let mut machine = Machine {
            procs: Vec::new(),
            index: HashMap::new(),
            phase: Phase::Running,
            serve,
            debug,
            config_path,
            starts: 0,
            name_uses: HashMap::new(),
            ready_waiters: Vec::new(),
            joint: HashMap::new(),
            waiting: 0,
            effects: Vec::new(),
        };
        for spec in processes {
            machine.insert(spec, Origin::Config);
        }
        machine
    }

    fn insert(&mut self, spec: ProcessSpec, origin: Origin) -> usize {
        let index = self.procs.len();
        self.name_uses.entry(spec.name.clone()).or_insert(1);
        self.index.insert(spec.name.clone(), index);
        self.procs.push(Proc::new(spec, origin));
        index
    }

    /// Starts every autostart process (or its dependency wait).
    pub fn start(&mut self, now: Now) -> Vec<Effect> {
        for i in 0..self.procs.len() {
            if self.procs[i].spec.autostart && matches!(self.phase, Phase::Running) {
                self.start_process(i, BTreeMap::new(), now);
            }
        }
        self.settle(now);
        std::mem::take(&mut self.effects)
    }

    /// Handles one event; returns what to do.
    pub fn handle(&mut self, now: Now, event: Event) -> Vec<Effect> {
        match event {
            Event::Waiting { name, dependency } => {
                if let Some(i) = self.find(&name)
                    && let ProcessState::Waiting { .. } = self.procs[i].state
                {
                    self.log(format!("{name}: waiting for {dependency}"));
                    self.set_state(
                        i,
                        ProcessState::Waiting {
                            waiting_for: Some(dependency),
                        },
                    );
                }
            }
            Event::DependenciesMet { name, env } => {
                if let Some(i) = self.find(&name)
                    && let ProcessState::Waiting { .. } = self.procs[i].state
                {
                    self.log(format!("{name}: all dependencies satisfied, starting"));
                    self.procs[i].env.extend(env);
                    self.spawn(i);
                }
            }
            Event::DependencyFailed { name, message } => {
                if let Some(i) = self.find(&name)
                    && let ProcessState::Waiting { .. } = self.procs[i].state
                {
                    self.log(message.clone());
                    self.set_state(
                        i,
                        ProcessState::Failed {
                            exit: None,
                            reason: message.clone(),
                        },
                    );
                    self.publish(i, ExitState::Failed { code: 1 });
                    self.shutdown(
                        Stop::Failure {
                            reason: message,
                            code: 1,
                        },
                        now,
                    );
                }
            }
            Event::Spawned { name, pid } => self.on_spawned(&name, pid, now),
            Event::SpawnFailed { name, error } => {
                if let Some(i) = self.find(&name)
                    && std::mem::take(&mut self.procs[i].spawning)
                {
                    let reason = format!("{name}: cannot start: {error}");
                    self.log(reason.clone());
                    self.answer_started(i, Err(reason.clone()));
                    self.run_ended(i, None, now);
                }
            }
            Event::Exited {
                name,
                pid,
                exit,
                group_alive,
                drained,
            } => {
                if !drained && let Some(i) = self.find(&name) {
                    self.procs[i].undrained = Some(pid);
                }
                self.on_exited(&name, pid, exit, group_alive, now);
            }
            Event::Drained { name, pid } => self.on_drained(&name, pid),
            Event::GroupGone { name, pid } => {
                if let Some(i) = self.find(&name)
                    && let ProcessState::Stopping {
                        pid: current,
                        exit: Some(exit),
                        ..
                    } = self.procs[i].state
                    && current == pid
                {
                    self.stopped(i, exit, now);
                }
            }
            Event::Timer { name, epoch, timer } => self.on_timer(&name, epoch, timer, now),
            Event::WatchFailed {
                name,
                watch,
                action,
                failures,
                check,
            } => self.on_watch_failed(&name, &watch, action, failures, &check, now),
            Event::Request { id, message, via } => self.on_request(id, message, via, now),
            Event::Interrupt(signal) => {
                if let Phase::ShuttingDown { paused: true, .. } = self.phase {
                    self.resume(now);
                } else if matches!(self.phase, Phase::ShuttingDown { .. }) {
                    if signal == libc::SIGINT {
                        self.kill_everything(now);
                    }
                } else {
                    let reason = format!("received {}", signal_name(signal));
                    self.shutdown(Stop::Requested { reason }, now);
                }
            }
            Event::Idle(reason) => {
                self.log(reason.clone());
                self.shutdown(Stop::Requested { reason }, now);
            }
            Event::Fatal(reason) => self.shutdown(Stop::Failure { reason, code: 1 }, now),
            Event::Resume => self.resume(now),
        }
        self.settle(now);
        std::mem::take(&mut self.effects)
    }

    /// The spec of a process, for the runner's spawning and watches.
    pub fn spec(&self, name: &str) -> Option<&Arc<ProcessSpec>> {
        self.find(name).map(|i| &self.procs[i].spec)
    }

    /// One process's row.
    pub fn status(&self, name: &str) -> Option<ProcessStatus> {
        self.find(name).map(|i| self.procs[i].status())
    }

    /// Every row, in table order.
    pub fn statuses(&self) -> Vec<ProcessStatus> {
        self.procs.iter().map(Proc::status).collect()
    }

    /// Processes waiting for a dependency, and for which one.
    pub fn waiting(&self) -> impl Iterator<Item = (&ProcessName, &str)> {
        let procs = if self.waiting == 0 {
            &[][..]
        } else {
            &self.procs[..]
        };
        procs
            .iter()
            .filter_map(|p| waiting_for(&p.state).map(|what| (p.name(), what)))
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn log(&mut self, line: String) {
        self.effects.push(Effect::Log(line));
    }

    fn set_state(&mut self, i: usize, state: ProcessState) {
        let proc = &mut self.procs[i];
        if proc.state != state {
            self.waiting -= usize::from(waiting_for(&proc.state).is_some());
            self.waiting += usize::from(waiting_for(&state).is_some());
            proc.state = state;
            self.effects.push(Effect::Changed(proc.name().clone()));
        }
    }

    /// Invalidates the process's armed timers and returns the new epoch.
    fn next_epoch(&mut self, i: usize) -> u64 {
        self.procs[i].epoch += 1;
        self.procs[i].epoch
    }

    fn arm(&mut self, i: usize, timer: Timer, after: Duration) {
        let epoch = self.next_epoch(i);
        self.effects.push(Effect::Arm {
            name: self.procs[i].name().clone(),
            epoch,
            timer,
            after,
        });
    }

    /// Starts a process that is not running: waits for its dependencies, or spawns it.
    fn start_process(&mut self, i: usize, env: BTreeMap<String, String>, _now: Now) {
        self.procs[i].env = env;
        if self.procs[i].spec.depends.is_empty() {
            self.spawn(i);
        } else {
            self.set_state(i, ProcessState::Waiting { waiting_for: None });
            self.effects
                .push(Effect::WaitForDependencies(self.procs[i].name().clone()));
            self.answer_started(i, Ok(()));
        }
    }

    fn spawn(&mut self, i: usize) {
        let proc = &mut self.procs[i];
        proc.spawning = true;
        self.effects.push(Effect::Spawn {
            name: proc.name().clone(),
            env: proc.env.clone(),
        });
    }

    fn on_spawned(&mut self, name: &str, pid: u32, now: Now) {
        let Some(i) = self.find(name) else { return };
        if !std::mem::take(&mut self.procs[i].spawning) {
            return;
        }
        self.starts += 1;
        let proc = &mut self.procs[i];
        proc.first_start.get_or_insert(self.starts);
        proc.run_started = Some(now.mono);
        let line = match proc.restarts {
            0 => format!("{name} [{pid}] started"),
            n => format!("{name} [{pid}] started (restart {n})"),
        };
        self.next_epoch(i);
        self.set_state(
            i,
            ProcessState::Running {
                pid,
                since: now.wall,
            },
        );
        self.log(line);
        if !self.procs[i].spec.watch.is_empty() {
            self.effects
                .push(Effect::StartWatches(self.procs[i].name().clone()));
        }
        self.answer_started(i, Ok(()));
        if !matches!(self.phase, Phase::Running) {
            // Spawned as shutdown began: it is stopped like the rest.
            self.stop_next(now);
        }
    }

    fn on_exited(&mut self, name: &str, pid: u32, exit: Exit, group_alive: bool, now: Now) {
        let Some(i) = self.find(name) else { return };
        if self.procs[i].state.pid() != Some(pid) {
            return;
        }
        let name = self.procs[i].name().clone();
        match self.procs[i].state.clone() {
            ProcessState::Running { since, .. } => {
                if group_alive {
                    // What it left in its group is stopped before anything else happens,
                    // as systemd does with a service's remaining processes.
                    let timeout = self.procs[i].spec.stop_timeout;
                    self.log(format!(
                        "{name} [{pid}] {exit}; stopping what it left running (SIGTERM, SIGKILL after {})",
                        human(timeout)
                    ));
                    self.effects.push(Effect::CancelTasks(name.clone()));
                    self.effects.push(Effect::Signal {
                        name,
                        pid,
                        signal: Sig::Term,
                    });
                    self.set_state(
                        i,
                        ProcessState::Stopping {
                            pid,
                            since,
                            deadline: now.wall.after(timeout),
                            reason: StopReason::Leftovers,
                            exit: Some(exit),
                        },
                    );
                    self.arm(i, Timer::StopDeadline, timeout);
                } else {
                    self.effects.push(Effect::CancelTasks(name));
                    self.run_ended(i, Some(exit), now);
                }
            }
            ProcessState::Stopping {
                since,
                deadline,
                reason,
                ..
            } => {
                if group_alive {
                    self.set_state(
                        i,
                        ProcessState::Stopping {
                            pid,
                            since,
                            deadline,
                            reason,
                            exit: Some(exit),
                        },
                    );
                } else {
                    self.stopped(i, exit, now);
                }
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, name: &str, epoch: u64, timer: Timer, now: Now) {
        let Some(i) = self.find(name) else { return };
        if self.procs[i].epoch != epoch {
            return;
        }
        let name = self.procs[i].name().clone();
        match (timer, self.procs[i].state.clone()) {
            (
                Timer::Restart,
                ProcessState::BackingOff {
                    until,
                    attempt,
                    exit,
                    ..
                },
            ) => {
                if let Some(pid) = self.procs[i].undrained {
                    self.log(format!(
                        "{name}: restart {attempt} waits until the output of [{pid}] is read to its end"
                    ));
                    self.set_state(
                        i,
                        ProcessState::BackingOff {
                            until,
                            attempt,
                            exit,
                            waiting_for_output: true,
                        },
                    );
                } else {
                    self.restart(i);
                }
            }
            (Timer::StopDeadline, ProcessState::Stopping { pid, .. }) => {
                let timeout = self.procs[i].spec.stop_timeout;
                self.log(format!(
                    "{name} [{pid}] did not stop within {}: sending SIGKILL",
                    human(timeout)
                ));
                self.effects.push(Effect::Signal {
                    name,
                    pid,
                    signal: Sig::Kill,
                });
                self.arm(i, Timer::KillDeadline, KILL_GRACE);
            }
            (Timer::KillDeadline, ProcessState::Stopping { pid, exit, .. }) => {
                self.log(format!(
                    "{name} [{pid}] is still there {} after SIGKILL; no longer waiting for it",
                    human(KILL_GRACE)
                ));
                self.stopped(i, exit.unwrap_or(Exit::Signal(libc::SIGKILL)), now);
            }
            _ => {}
        }
    }

    /// The output of run `pid` is read ([`Event::Drained`]): a restart held for it goes ahead.
    fn on_drained(&mut self, name: &str, pid: u32) {
        let Some(i) = self.find(name) else { return };
        let proc = &mut self.procs[i];
        if proc.undrained != Some(pid) {
            return;
        }
        proc.undrained = None;
        if let ProcessState::BackingOff {
            waiting_for_output: true,
            ..
        } = proc.state
        {
            self.restart(i);
        }
    }

    /// A restart's delay is over: the next run is spawned.
    fn restart(&mut self, i: usize) {
        self.procs[i].restarts += 1;
        self.spawn(i);
    }

    /// Sends SIGTERM and arms the stop deadline; a process already stopping keeps its
    /// deadline and takes the new reason (a shutdown is never overridden).
    fn begin_stop(&mut self, i: usize, reason: StopReason, now: Now) {
        let name = self.procs[i].name().clone();
        match self.procs[i].state.clone() {
            ProcessState::Running { pid, since } => {
                let timeout = self.procs[i].spec.stop_timeout;
                self.effects.push(Effect::CancelTasks(name.clone()));
                self.effects.push(Effect::Signal {
                    name,
                    pid,
                    signal: Sig::Term,
                });
                self.set_state(
                    i,
                    ProcessState::Stopping {
                        pid,
                        since,
                        deadline: now.wall.after(timeout),
                        reason,
                        exit: None,
                    },
                );
                self.arm(i, Timer::StopDeadline, timeout);
            }
            ProcessState::Stopping {
                pid,
                since,
                deadline,
                reason: current,
                exit,
            } if current != StopReason::Shutdown => {
                self.set_state(
                    i,
                    ProcessState::Stopping {
                        pid,
                        since,
                        deadline,
                        reason,
                        exit,
                    },
                );
            }
            _ => {}
        }
    }

    /// A stopping process is gone (its group is empty): what follows depends on why it
    /// was stopped.
    fn stopped(&mut self, i: usize, exit: Exit, now: Now) {
        let ProcessState::Stopping { pid, reason, .. } = self.procs[i].state else {
            return;
        };
        self.next_epoch(i);
        let name = self.procs[i].name().clone();
        let ran = human(self.procs[i].ran_for(now));
        let how = match exit {
            Exit::Signal(signal) => format!("by {}", signal_name(signal)),
            Exit::Code(_) => format!("({exit})"),
        };
        match reason {
            StopReason::Leftovers => {
                self.run_ended(i, Some(exit), now);
                return;
            }
            StopReason::Requested | StopReason::Shutdown => {
                self.log(format!("{name} [{pid}] stopped {how} after running {ran}"));
                self.set_state(i, ProcessState::Stopped { exit: Some(exit) });
            }
            StopReason::Restart => {
                self.log(format!(
                    "{name} [{pid}] stopped {how} after running {ran}; restarting"
                ));
                let proc = &mut self.procs[i];
                proc.restarts += 1;
                proc.streak = 0;
                self.set_state(i, ProcessState::Stopped { exit: Some(exit) });
                self.spawn(i);
            }
            StopReason::Watch => {
                self.log(format!("{name} [{pid}] stopped {how} after running {ran}"));
                self.restart_or_fail(i, Some(exit), true, now);
            }
        }
        for id in std::mem::take(&mut self.procs[i].on_stopped) {
            let message = format!("stopped {name}");
            self.answer(id, Reply::Ok { message });
        }
        if let Phase::ShuttingDown { .. } = self.phase {
            self.stop_next(now);
        }
    }

    /// A run ended by itself (or could not start: `exit` is `None`): the restart policy
    /// decides what follows.
    fn run_ended(&mut self, i: usize, exit: Option<Exit>, now: Now) {
        let name = self.procs[i].name().clone();
        if let Phase::ShuttingDown { .. } | Phase::Finished = self.phase {
            if let Some(exit) = exit {
                let pid = self.procs[i].state.pid().unwrap_or_default();
                self.log(format!("{name} [{pid}] {exit} during shutdown"));
            }
            self.set_state(i, ProcessState::Stopped { exit });
            self.stop_next(now);
            return;
        }
        let proc = &self.procs[i];
        let success = exit.is_some_and(Exit::success);
        let completed = proc.spec.once && success;
        if let Some(exit) = exit {
            let pid = proc.state.pid().unwrap_or_default();
            let ran = human(proc.ran_for(now));
            self.log(if completed {
                format!("{name} [{pid}] completed after running {ran}")
            } else {
                format!("{name} [{pid}] {exit} after running {ran}")
            });
        }
        if completed {
            self.set_state(
                i,
                ProcessState::Exited {
                    exit: Exit::Code(0),
                },
            );
            self.publish(i, ExitState::Succeeded);
            return;
        }
        self.restart_or_fail(i, exit, false, now);
    }

    /// Backs off for a restart if the policy (or, with `forced`, a watch) wants one and the
    /// streak allows it; otherwise the process has ended for good and so does the run.
    fn restart_or_fail(&mut self, i: usize, exit: Option<Exit>, forced: bool, now: Now) {
        let proc = &mut self.procs[i];
        let name = proc.name().clone();
        let policy: RestartPolicy = proc.spec.restart;
        let success = exit.is_some_and(Exit::success);
        let wanted = forced
            || match policy.when {
                Restart::No => false,
                Restart::OnFailure => !success,
                Restart::Always => true,
            };
        if proc.ran_for(now) >= policy.max_delay {
            proc.streak = 0;
        }
        let allowed = policy.max_restarts.is_none_or(|max| proc.streak < max);
        if wanted && allowed {
            proc.streak += 1;
            let attempt = proc.streak;
            let delay = policy.delay_before(attempt);
            let of = policy
                .max_restarts
                .map(|max| format!(" of {max}"))
                .unwrap_or_default();
            self.log(format!("{name}: restart {attempt}{of} in {}", human(delay)));
            self.set_state(
                i,
                ProcessState::BackingOff {
                    until: now.wall.after(delay),
                    attempt,
                    exit,
                    waiting_for_output: false,
                },
            );
            self.arm(i, Timer::Restart, delay);
            return;
        }
        let code = exit.map_or(1, Exit::code);
        let reason = match (wanted, exit) {
            (true, _) => format!(
                "{name}: no restart left after {} in a row (max_restarts: {})",
                proc.streak,
                policy.max_restarts.unwrap_or_default()
            ),
            (false, Some(exit)) => format!("{name} {exit}"),
            (false, None) => format!("{name} could not be started"),
        };
        if wanted {
            self.log(reason.clone());
        }
        match exit {
            Some(exit) if success => {
                // A long-running process that exits ends the run, as in procman 0.12.
                self.set_state(i, ProcessState::Exited { exit });
                self.publish(i, ExitState::Succeeded);
                self.shutdown(Stop::Failure { reason, code }, now);
            }
            _ => {
                self.set_state(
                    i,
                    ProcessState::Failed {
                        exit,
                        reason: reason.clone(),
                    },
                );
                self.publish(i, ExitState::Failed { code });
                if self.procs[i].origin == Origin::Runtime && exit.is_none() {
                    // A runtime process that cannot even be spawned fails its own request only.
                    return;
                }
                self.shutdown(Stop::Failure { reason, code }, now);
            }
        }
    }

    /// Tells `process_exited` dependencies of a final exit; a `for_each` group counts once
    /// every instance has succeeded, or as soon as one has failed.
    fn publish(&mut self, i: usize, state: ExitState) {
        let proc = &self.procs[i];
        self.effects.push(Effect::PublishExit {
            name: proc.name().to_string(),
            state,
        });
        let Some(group) = proc.spec.group.clone() else {
            return;
        };
        let members = self
            .procs
            .iter()
            .filter(|p| p.spec.group.as_ref() == Some(&group));
        let done = match state {
            ExitState::Failed { .. } => Some(state),
            ExitState::Succeeded => members
                .clone()
                .all(|p| matches!(p.state, ProcessState::Exited { exit } if exit.success()))
                .then_some(ExitState::Succeeded),
        };
        if let Some(state) = done {
            self.effects.push(Effect::PublishExit {
                name: group.to_string(),
                state,
            });
        }
    }

    fn answer_started(&mut self, i: usize, result: Result<(), String>) {
        let waiters = std::mem::take(&mut self.procs[i].on_started);
        for id in waiters {
            let reply = match &result {
                Ok(()) => Reply::Started {
                    process: self.procs[i].status(),
                },
                Err(message) => Reply::Error {
                    message: message.clone(),
                },
            };
            self.answer(id, reply);
        }
    }

    fn on_watch_failed(
        &mut self,
        name: &str,
        watch: &str,
        action: OnFail,
        failures: u32,
        check: &str,
        now: Now,
    ) {
        let Some(i) = self.find(name) else { return };
        if !matches!(self.phase, Phase::Running) {
            return;
        }
        let what = format!("{name}: watch {watch} failed {failures} time(s) in a row: {check}");
        match action {
            OnFail::Shutdown => {
                self.log(what.clone());
                self.shutdown(
                    Stop::Failure {
                        reason: what,
                        code: 1,
                    },
                    now,
                );
            }
            OnFail::Log => self.log(what),
            OnFail::Restart => {
                if let ProcessState::Running { .. } = self.procs[i].state {
                    self.log(format!("{what}; restarting it"));
                    self.begin_stop(i, StopReason::Watch, now);
                }
            }
            OnFail::Spawn(target) => {
                let targets = self.members(&target);
                if targets.iter().any(|&t| self.procs[t].is_busy()) {
                    self.log(format!(
                        "{what}; {target} is already running, not starting another"
                    ));
                    return;
                }
                self.log(format!("{what}; starting {target}"));
                let env = BTreeMap::from([
                    ("PROCMAN_WATCH_NAME".to_owned(), watch.to_owned()),
                    ("PROCMAN_WATCH_PROCESS".to_owned(), name.to_owned()),
                    ("PROCMAN_WATCH_CHECK".to_owned(), check.to_owned()),
                    ("PROCMAN_WATCH_FAILURES".to_owned(), failures.to_string()),
                ]);
                for t in targets {
                    self.rerun(t, env.clone(), now);
                }
            }
        }
    }

    /// Starts an ended or dormant process again (counting a restart if it ran before).
    fn rerun(&mut self, i: usize, env: BTreeMap<String, String>, now: Now) {
        let proc = &mut self.procs[i];
        if proc.first_start.is_some() {
            proc.restarts += 1;
        }
        proc.streak = 0;
        self.start_process(i, env, now);
    }

    fn on_request(&mut self, id: RequestId, message: Message, via: &str, now: Now) {
        let shutting_down = !matches!(self.phase, Phase::Running);
        match message {
            Message::Status => {
                let reply = Reply::Status {
                    pid: std::process::id(),
                    config: self.config_path.clone(),
                    processes: self.statuses(),
                };
                self.answer(id, reply);
            }
            Message::Shutdown { user, message } => {
                self.answer(
                    id,
                    Reply::Ok {
                        message: "shutting down".into(),
                    },
                );
                let who = user.unwrap_or_else(|| "unknown user".into());
                let why = message.unwrap_or_else(|| "no reason given".into());
                let reason = format!("shutdown via {via}: {who}: {why}");
                self.shutdown(Stop::Requested { reason }, now);
            }
            _ if shutting_down => self.answer(
                id,
                Reply::Error {
                    message: "the server is shutting down".into(),
                },
            ),
            Message::Ready => self.ready_waiters.push(id),
            // The runner keeps subscriptions and output streams; it never hands one to
            // the machine.
            Message::Subscribe { .. } | Message::Logs(_) => self.answer(
                id,
                Reply::Error {
                    message: "subscriptions are not handled here".into(),
                },
            ),
            Message::Run(run) => self.on_run(id, run, now),
            Message::StopProcess { name } => {
                for i in self.targets(id, &name) {
                    self.stop_requested(id, i, now);
                }
            }
            Message::RestartProcess { name } => {
                for i in self.targets(id, &name) {
                    self.restart_requested(id, i, now);
                }
            }
        }
    }

    /// `stop_process` for one process; `id` is answered once it is gone.
    fn stop_requested(&mut self, id: RequestId, i: usize, now: Now) {
        let name = self.procs[i].name().clone();
        match self.procs[i].state.clone() {
            ProcessState::Running { .. } | ProcessState::Stopping { .. } => {
                self.procs[i].on_stopped.push(id);
                self.begin_stop(i, StopReason::Requested, now);
            }
            ProcessState::Waiting { .. } | ProcessState::BackingOff { .. } => {
                self.next_epoch(i);
                self.effects.push(Effect::CancelTasks(name.clone()));
                let exit = self.procs[i].state.exit();
                self.log(format!("{name}: stopped before it ran again"));
                self.set_state(i, ProcessState::Stopped { exit });
                let message = format!("stopped {name}");
                self.answer(id, Reply::Ok { message });
            }
            _ => {
                let message = format!("{name} is not running");
                self.answer(id, Reply::Ok { message });
            }
        }
    }

    /// `restart_process` for one process; `id` is answered once it runs again.
    fn restart_requested(&mut self, id: RequestId, i: usize, now: Now) {
        self.procs[i].on_started.push(id);
        match self.procs[i].state.clone() {
            ProcessState::Running { .. } | ProcessState::Stopping { .. } => {
                self.log(format!("{}: restart requested", self.procs[i].name()));
                self.begin_stop(i, StopReason::Restart, now);
            }
            ProcessState::BackingOff { .. } => {
                self.next_epoch(i);
                self.procs[i].restarts += 1;
                self.procs[i].streak = 0;
                self.spawn(i);
            }
            ProcessState::Waiting { .. } => {
                self.effects
                    .push(Effect::CancelTasks(self.procs[i].name().clone()));
                let env = self.procs[i].env.clone();
                self.start_process(i, env, now);
            }
            _ => {
                let env = self.procs[i].env.clone();
                self.rerun(i, env, now);
            }
        }
    }

    /// The processes a request names: one process, or every instance of a `for_each` or
    /// `replicas` group (then `id` is answered once, when all of them have answered). An
    /// unknown name is answered at once with an error listing the known names.
    fn targets(&mut self, id: RequestId, name: &str) -> Vec<usize> {
        let found = self.members(name);
        match found.len() {
            0 => {
                let known: Vec<&str> = self.procs.iter().map(|p| p.name().as_str()).collect();
                let known = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                let message = format!("no process named {name:?}; known: {known}");
                self.answer(id, Reply::Error { message });
            }
            1 => {}
            n => {
                self.joint.insert(
                    id,
                    Joint {
                        remaining: n,
                        done: Vec::new(),
                        failed: Vec::new(),
                    },
                );
            }
        }
        found
    }

    /// `name` itself, or the instances of the group `name`, in table order.
    fn members(&self, name: &str) -> Vec<usize> {
        match self.find(name) {
            Some(i) => vec![i],
            None => (0..self.procs.len())
                .filter(|&i| self.procs[i].spec.group.as_deref() == Some(name))
                .collect(),
        }
    }

    /// Sends `reply` to request `id`, or, for a request that named a group, counts it
    /// towards the one reply that follows the last member's.
    fn answer(&mut self, id: RequestId, reply: Reply) {
        let Some(joint) = self.joint.get_mut(&id) else {
            self.effects.push(Effect::Reply { id, reply });
            return;
        };
        match reply {
            Reply::Error { message } => joint.failed.push(message),
            Reply::Ok { message } => joint.done.push(message),
            Reply::Started { process } => joint.done.push(match process.state.pid() {
                Some(pid) => format!("started {} (pid {pid})", process.name),
                None => format!("{} is {}", process.name, process.state.label()),
            }),
            other => joint.done.push(format!("{other:?}")),
        }
        joint.remaining -= 1;
        if joint.remaining > 0 {
            return;
        }
        let Some(joint) = self.joint.remove(&id) else {
            return;
        };
        let reply = if joint.failed.is_empty() {
            Reply::Ok {
                message: joint.done.join("\n"),
            }
        } else {
            Reply::Error {
                message: joint.failed.join("; "),
            }
        };
        self.effects.push(Effect::Reply { id, reply });
    }

    /// A `run` request: starts a configured process that is not running by its name (in
    /// either mode), or adds a new process under a unique name (serve mode).
    fn on_run(&mut self, id: RequestId, run: RunRequest, now: Now) {
        let configured = self.members(&run.name);
        if !configured.is_empty()
            && configured
                .iter()
                .all(|&i| self.procs[i].origin == Origin::Config && !self.procs[i].is_busy())
        {
            for i in self.targets(id, &run.name) {
                self.procs[i].on_started.push(id);
                self.rerun(i, run.env.clone(), now);
            }
            return;
        }
        if !self.serve {
            let message = "`procman run` does not take new processes; use `procman serve` \
                           (`procman start NAME` starts a stopped process of the config)";
            self.answer(
                id,
                Reply::Error {
                    message: message.into(),
                },
            );
            return;
        }
        let depends = match &run.depends {
            None => Vec::new(),
            Some(value) => {
                let mut env: BTreeMap<String, String> = std::env::vars().collect();
                env.extend(run.env.clone());
                match config::parse_dependencies_json(value, &env) {
                    Ok(depends) => depends,
                    Err(problem) => {
                        let message = format!("{}: bad depends: {problem}", run.name);
                        self.log(format!("ignored a run request: {message}"));
                        self.answer(id, Reply::Error { message });
                        return;
                    }
                }
            }
        };
        let name = self.unique_name(&run.name);
        let spec = ProcessSpec {
            env: run.env,
            once: run.once,
            depends,
            ..ProcessSpec::with_defaults(name.clone(), run.run, Location::default())
        };
        self.log(format!("{name}: added at runtime"));
        let i = self.insert(spec, Origin::Runtime);
        self.procs[i].on_started.push(id);
        self.start_process(i, BTreeMap::new(), now);
    }

    /// `name`, then `name.1`, `name.2`, …; the first use is never suffixed.
    fn unique_name(&mut self, base: &ProcessName) -> ProcessName {
        loop {
            let uses = self.name_uses.entry(base.clone()).or_insert(0);
            let name = match *uses {
                0 => base.clone(),
                n => base.with_suffix('.', n),
            };
            *uses += 1;
            if self.find(&name).is_none() {
                return name;
            }
        }
    }

    /// After every event: run mode ends when nothing is left to do; `ready` waiters are
    /// answered once everything runs.
    fn settle(&mut self, now: Now) {
        if matches!(self.phase, Phase::Running)
            && !self.serve
            && !self.procs.iter().any(Proc::is_busy)
        {
            self.shutdown(Stop::Finished, now);
        }
        if !self.ready_waiters.is_empty() {
            let answer = match self.phase {
                Phase::Running if self.is_ready() => Some(Reply::Ok {
                    message: "ready".into(),
                }),
                Phase::Running => None,
                _ => Some(Reply::Error {
                    message: "the server is shutting down".into(),
                }),
            };
            if let Some(reply) = answer {
                for id in std::mem::take(&mut self.ready_waiters) {
                    self.effects.push(Effect::Reply {
                        id,
                        reply: reply.clone(),
                    });
                }
            }
        }
    }

    /// Every autostart long-running process runs (or was stopped on request), and nothing
    /// waits, backs off or restarts.
    fn is_ready(&self) -> bool {
        self.procs.iter().all(|p| {
            !p.spawning
                && match &p.state {
                    ProcessState::Waiting { .. } | ProcessState::BackingOff { .. } => false,
                    ProcessState::Stopping { reason, .. } => *reason == StopReason::Requested,
                    ProcessState::Running { .. }
                    | ProcessState::Dormant
                    | ProcessState::Stopped { .. } => true,
                    ProcessState::Exited { .. } => p.spec.once || !p.spec.autostart,
                    ProcessState::Failed { .. } => !p.spec.autostart,
                }
        })
    }

    /// The one way the stack stops, whatever the trigger.
    fn shutdown(&mut self, stop: Stop, now: Now) {
        if !matches!(self.phase, Phase::Running) {
            return;
        }
        let code = match &stop {
            Stop::Failure { reason, code } => {
                self.log(format!("shutting down: {reason}"));
                *code
            }
            Stop::Requested { reason } => {
                self.log(format!("shutting down: {reason}"));
                0
            }
            Stop::Finished => 0,
        };
        self.effects.push(Effect::StopListening);
        for i in 0..self.procs.len() {
            let name = self.procs[i].name().clone();
            match self.procs[i].state.clone() {
                ProcessState::Waiting { .. } => {
                    self.effects.push(Effect::CancelTasks(name));
                    self.set_state(i, ProcessState::Dormant);
                }
                ProcessState::BackingOff { exit, .. } => {
                    self.next_epoch(i);
                    self.log(format!("{name}: restart cancelled by the shutdown"));
                    self.set_state(i, ProcessState::Stopped { exit });
                }
                ProcessState::Running { .. } => self.effects.push(Effect::CancelTasks(name)),
                _ => {}
            }
            self.answer_started(i, Err("the server is shutting down".into()));
        }
        let paused = self.debug && matches!(stop, Stop::Failure { .. }) && self.any_alive();
        self.phase = Phase::ShuttingDown {
            code,
            order: self.shutdown_order(),
            kill_now: false,
            paused,
        };
        if paused {
            self.log("debug mode: shutdown paused; still running:".into());
            let alive: Vec<String> = self
                .procs
                .iter()
                .filter_map(|p| {
                    p.state
                        .pid()
                        .map(|pid| format!("  - {} [pid {pid}]", p.name()))
                })
                .collect();
            for line in alive {
                self.log(line);
            }
            self.log("press ENTER to continue shutdown (or Ctrl-C)".into());
            self.effects.push(Effect::DebugPause);
            return;
        }
        self.stop_next(now);
    }

    fn resume(&mut self, now: Now) {
        if let Phase::ShuttingDown { paused, .. } = &mut self.phase
            && std::mem::take(paused)
        {
            self.stop_next(now);
        }
    }

    fn any_alive(&self) -> bool {
        self.procs.iter().any(|p| p.state.is_alive() || p.spawning)
    }

    /// Stops the next process in shutdown order, one at a time; finishes when none is left.
    fn stop_next(&mut self, now: Now) {
        let Phase::ShuttingDown {
            code,
            order,
            kill_now,
            paused,
        } = &self.phase
        else {
            return;
        };
        if *paused {
            return;
        }
        let (code, kill_now) = (*code, *kill_now);
        let next = order
            .iter()
            .copied()
            .find(|&i| self.procs[i].state.is_alive() || self.procs[i].spawning);
        match next {
            None => {
                self.phase = Phase::Finished;
                self.effects.push(Effect::Finish { code });
            }
            Some(i) if self.procs[i].spawning => {}
            Some(i) if kill_now => {
                if let ProcessState::Running { .. } = self.procs[i].state {
                    self.begin_stop(i, StopReason::Shutdown, now);
                }
            }
            Some(i) => self.begin_stop(i, StopReason::Shutdown, now),
        }
    }

    /// A second Ctrl-C during shutdown: SIGKILL to every group that is left.
    fn kill_everything(&mut self, now: Now) {
        let Phase::ShuttingDown {
            kill_now, paused, ..
        } = &mut self.phase
        else {
            return;
        };
        if std::mem::replace(kill_now, true) {
            return;
        }
        *paused = false;
        self.log("second interrupt: killing everything now".into());
        for i in 0..self.procs.len() {
            if let ProcessState::Running { .. } = self.procs[i].state {
                self.begin_stop(i, StopReason::Shutdown, now);
            }
            if let ProcessState::Stopping { pid, .. } = self.procs[i].state {
                self.effects.push(Effect::Signal {
                    name: self.procs[i].name().clone(),
                    pid,
                    signal: Sig::Kill,
                });
                self.arm(i, Timer::KillDeadline, KILL_GRACE);
            }
        }
        self.stop_next(now);
    }

    /// Reverse order of first start (which follows the dependencies), adjusted so that a
    /// process named by another's dependency stops after that other process.
    fn shutdown_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.procs.len()).collect();
        order.sort_by_key(|&i| Reverse(self.procs[i].first_start.unwrap_or(0)));
        let names_it = |dependent: usize, target: usize| {
            let target = &self.procs[target].spec;
            self.procs[dependent].spec.depends.iter().any(|d| {
                d.process().is_some_and(|named| {
                    *target.name == *named || target.group.as_deref() == Some(named)
                })
            })
        };
        // Each pass moves one process behind its last dependent; bounded against cycles.
        for _ in 0..order.len() * order.len() {
            let moved = (0..order.len()).find_map(|pos| {
                let last = (pos + 1..order.len())
                    .rev()
                    .find(|&later| names_it(order[later], order[pos]))?;
                Some((pos, last))
            });
            let Some((pos, last)) = moved else { break };
            let target = order.remove(pos);
            order.insert(last, target);
        }
        order
    }
}

#[cfg(test)]
mod tests;
