//! Serve mode: control requests (FIFO and socket), the discovery file, idle shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Event, Serve, Serving, State, Stop, Supervisor};
use crate::config::{self, Location, ProcessSpec};
use crate::control::{Channel, Incoming, Message, ProcessStatus, Reply, RunRequest, ServerInfo};
use crate::lifecycle::{self, IdleWatch};

impl Supervisor {
    /// Forwards control requests into the event loop, publishes the discovery file, starts
    /// the idle watch, and tells `attach` (if it started us) that we listen.
    pub(super) fn start_serving(&mut self, serve: Serve) {
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
                lifecycle::format_timeout(idle.no_client),
                lifecycle::format_timeout(idle.disconnect)
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
    pub(super) async fn control(&mut self, incoming: Incoming) -> Option<Stop> {
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

    pub(super) fn answer_ready_waiters(&mut self) {
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
}
