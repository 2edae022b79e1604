//! Every transition of the state machine, driven by hand: no process is forked, no clock
//! is read, no timer runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::protocol::Timestamp;

fn name(text: &str) -> ProcessName {
    ProcessName::new(text).unwrap()
}

/// A machine over a config, with a hand-driven clock.
struct Harness {
    machine: Machine,
    now: Now,
    next_request: RequestId,
}

impl Harness {
    fn new(yaml: &str) -> Harness {
        Harness::with_mode(yaml, false, false)
    }

    fn serve(yaml: &str) -> Harness {
        Harness::with_mode(yaml, true, false)
    }

    fn with_mode(yaml: &str, serve: bool, debug: bool) -> Harness {
        let config = crate::config::parse_str(
            yaml,
            Path::new("procman.yaml"),
            Path::new("/"),
            &BTreeMap::new(),
        )
        .unwrap();
        Harness {
            machine: Machine::new(config.processes, "procman.yaml".into(), serve, debug),
            now: Now {
                mono: Instant::now(),
                wall: Timestamp(1_000_000),
            },
            next_request: 0,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now.mono += by;
        self.now.wall = self.now.wall.after(by);
    }

    fn start(&mut self) -> Vec<Effect> {
        self.machine.start(self.now)
    }

    fn event(&mut self, event: Event) -> Vec<Effect> {
        self.machine.handle(self.now, event)
    }

    fn spawned(&mut self, process: &str, pid: u32) -> Vec<Effect> {
        self.event(Event::Spawned {
            name: name(process),
            pid,
        })
    }

    fn exited(&mut self, process: &str, pid: u32, exit: Exit) -> Vec<Effect> {
        self.event(Event::Exited {
            name: name(process),
            pid,
            exit,
            group_alive: false,
            drained: true,
        })
    }

    /// Exit 1 of `pid`, its output not read to the end yet.
    fn exited_unread(&mut self, process: &str, pid: u32) -> Vec<Effect> {
        self.event(Event::Exited {
            name: name(process),
            pid,
            exit: Exit::Code(1),
            group_alive: false,
            drained: false,
        })
    }

    fn fire(&mut self, process: &str, timer: Timer) -> Vec<Effect> {
        let epoch = self.machine.procs[self.machine.find(process).unwrap()].epoch;
        self.event(Event::Timer {
            name: name(process),
            epoch,
            timer,
        })
    }

    fn request(&mut self, message: Message) -> (RequestId, Vec<Effect>) {
        self.next_request += 1;
        let id = self.next_request;
        let effects = self.event(Event::Request {
            id,
            message,
            via: "socket",
        });
        (id, effects)
    }

    fn state(&self, process: &str) -> ProcessState {
        self.machine.status(process).unwrap().state
    }

    fn restarts(&self, process: &str) -> u32 {
        self.machine.status(process).unwrap().restarts
    }
}

fn spawns(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn { name, .. } => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

fn signals(effects: &[Effect]) -> Vec<(String, Sig)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Signal { name, signal, .. } => Some((name.to_string(), *signal)),
            _ => None,
        })
        .collect()
}

fn timers(effects: &[Effect]) -> Vec<(Timer, Duration)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Arm { timer, after, .. } => Some((*timer, *after)),
            _ => None,
        })
        .collect()
}

fn logs(effects: &[Effect]) -> String {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Log(line) => Some(line.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn finish(effects: &[Effect]) -> Option<i32> {
    effects.iter().find_map(|e| match e {
        Effect::Finish { code } => Some(*code),
        _ => None,
    })
}

fn reply(effects: &[Effect], id: RequestId) -> Option<&Reply> {
    effects.iter().find_map(|e| match e {
        Effect::Reply { id: to, reply } if *to == id => Some(reply),
        _ => None,
    })
}

#[test]
fn a_process_without_dependencies_is_spawned_and_runs() {
    let mut h = Harness::new("web:\n  run: serve\n  watch:\n    - check: {tcp: \"127.0.0.1:1\"}\n");
    let effects = h.start();
    assert_eq!(spawns(&effects), ["web"]);
    let effects = h.spawned("web", 10);
    assert_eq!(
        h.state("web"),
        ProcessState::Running {
            pid: 10,
            since: h.now.wall
        }
    );
    assert!(logs(&effects).contains("web [10] started"));
    assert!(effects.contains(&Effect::StartWatches(name("web"))));
}

#[test]
fn dependencies_are_waited_for_then_the_process_spawns_with_their_values() {
    let mut h =
        Harness::new("db:\n  run: d\napi:\n  run: a\n  depends:\n    - tcp: \"127.0.0.1:5432\"\n");
    let effects = h.start();
    assert_eq!(spawns(&effects), ["db"]);
    assert!(effects.contains(&Effect::WaitForDependencies(name("api"))));
    assert_eq!(h.state("api"), ProcessState::Waiting { waiting_for: None });
    h.event(Event::Waiting {
        name: name("api"),
        dependency: "tcp 127.0.0.1:5432".into(),
    });
    assert_eq!(
        h.machine
            .waiting()
            .map(|(n, w)| (n.to_string(), w.to_owned()))
            .collect::<Vec<_>>(),
        [("api".to_owned(), "tcp 127.0.0.1:5432".to_owned())]
    );
    let env = BTreeMap::from([("TOKEN".to_owned(), "t".to_owned())]);
    let effects = h.event(Event::DependenciesMet {
        name: name("api"),
        env: env.clone(),
    });
    assert!(effects.contains(&Effect::Spawn {
        name: name("api"),
        env
    }));
}

#[test]
fn a_failed_dependency_fails_the_process_and_ends_the_run() {
    let mut h =
        Harness::new("db:\n  run: d\napi:\n  run: a\n  depends:\n    - tcp: \"127.0.0.1:5432\"\n");
    h.start();
    h.spawned("db", 10);
    let effects = h.event(Event::DependencyFailed {
        name: name("api"),
        message: "api: dependency timed out".into(),
    });
    assert!(matches!(
        h.state("api"),
        ProcessState::Failed { exit: None, .. }
    ));
    assert!(effects.contains(&Effect::StopListening));
    assert_eq!(signals(&effects), [("db".to_owned(), Sig::Term)]);
    let effects = h.exited("db", 10, Exit::Signal(libc::SIGTERM));
    assert_eq!(finish(&effects), Some(1));
    assert_eq!(
        h.state("db"),
        ProcessState::Stopped {
            exit: Some(Exit::Signal(libc::SIGTERM))
        }
    );
}

#[test]
fn dormant_processes_wait_and_run_mode_with_nothing_to_do_finishes() {
    let mut h = Harness::new("rec:\n  run: r\n  autostart: false\n");
    let effects = h.start();
    assert_eq!(h.state("rec"), ProcessState::Dormant);
    assert_eq!(finish(&effects), Some(0));
    assert!(spawns(&effects).is_empty());
}

#[test]
fn once_jobs_succeed_without_ending_the_run_and_publish_their_exit() {
    let mut h = Harness::new("setup:\n  run: s\n  once: true\nweb:\n  run: w\n");
    h.start();
    h.spawned("setup", 10);
    h.spawned("web", 11);
    let effects = h.exited("setup", 10, Exit::Code(0));
    assert_eq!(
        h.state("setup"),
        ProcessState::Exited {
            exit: Exit::Code(0)
        }
    );
    assert!(effects.contains(&Effect::PublishExit {
        name: "setup".into(),
        state: ExitState::Succeeded
    }));
    assert!(logs(&effects).contains("setup [10] completed after running"));
    assert!(!effects.contains(&Effect::StopListening));
}

#[test]
fn without_a_policy_an_exit_ends_the_run_with_its_code() {
    let mut h = Harness::new("a:\n  run: a\nb:\n  run: b\n");
    h.start();
    h.spawned("a", 10);
    h.spawned("b", 11);
    let effects = h.exited("a", 10, Exit::Code(3));
    assert!(matches!(
        h.state("a"),
        ProcessState::Failed {
            exit: Some(Exit::Code(3)),
            ..
        }
    ));
    assert!(logs(&effects).contains("shutting down: a exited with code 3"));
    assert!(effects.contains(&Effect::PublishExit {
        name: "a".into(),
        state: ExitState::Failed { code: 3 }
    }));
    assert_eq!(signals(&effects), [("b".to_owned(), Sig::Term)]);
    let effects = h.exited("b", 11, Exit::Signal(libc::SIGTERM));
    assert!(logs(&effects).contains("b [11] stopped by SIGTERM after running"));
    assert_eq!(finish(&effects), Some(3));
}

#[test]
fn on_failure_backs_off_doubling_then_fails_after_max_restarts() {
    let mut h = Harness::new(
        "w:\n  run: w\n  restart: on-failure\n  max_restarts: 2\n  restart_delay: 100ms\nother:\n  run: o\n",
    );
    h.start();
    h.spawned("other", 20);
    let mut pid = 10;
    h.spawned("w", pid);
    for (attempt, delay) in [(1, 100), (2, 200)] {
        let effects = h.exited("w", pid, Exit::Code(7));
        assert_eq!(
            h.state("w"),
            ProcessState::BackingOff {
                until: h.now.wall.after(Duration::from_millis(delay)),
                attempt,
                exit: Some(Exit::Code(7)),
                waiting_for_output: false,
            }
        );
        assert_eq!(
            timers(&effects),
            [(Timer::Restart, Duration::from_millis(delay))]
        );
        assert!(
            logs(&effects).contains(&format!("w: restart {attempt} of 2 in {delay}ms")),
            "{}",
            logs(&effects)
        );
        assert!(signals(&effects).is_empty(), "the rest keeps running");
        h.advance(Duration::from_millis(delay));
        let effects = h.fire("w", Timer::Restart);
        assert_eq!(spawns(&effects), ["w"]);
        pid += 1;
        h.spawned("w", pid);
        assert_eq!(h.restarts("w"), attempt);
    }
    let effects = h.exited("w", pid, Exit::Code(7));
    let ProcessState::Failed { reason, .. } = h.state("w") else {
        panic!("{:?}", h.state("w"))
    };
    assert!(
        reason.contains("no restart left after 2 in a row"),
        "{reason}"
    );
    assert_eq!(signals(&effects), [("other".to_owned(), Sig::Term)]);
    let effects = h.exited("other", 20, Exit::Signal(libc::SIGTERM));
    assert_eq!(finish(&effects), Some(7));
}

/// A stuck terminal stops the output thread: a crash loop's restart waits until the last
/// run's output is read, instead of leaving one unread pipe behind per run.
#[test]
fn a_restart_waits_for_the_last_runs_output_to_be_read() {
    let mut h = Harness::new("w:\n  run: w\n  restart: always\n  restart_delay: 0s\n");
    h.start();
    h.spawned("w", 10);
    h.exited_unread("w", 10);
    let effects = h.fire("w", Timer::Restart);
    assert!(spawns(&effects).is_empty(), "restarted with unread output");
    assert!(
        logs(&effects).contains("w: restart 1 waits until the output of [10] is read to its end"),
        "{}",
        logs(&effects)
    );
    assert!(matches!(
        h.state("w"),
        ProcessState::BackingOff {
            attempt: 1,
            waiting_for_output: true,
            ..
        }
    ));
    let stale = h.event(Event::Drained {
        name: name("w"),
        pid: 9,
    });
    assert!(
        spawns(&stale).is_empty(),
        "another run's output released it"
    );
    let effects = h.event(Event::Drained {
        name: name("w"),
        pid: 10,
    });
    assert_eq!(spawns(&effects), ["w"]);
    h.spawned("w", 11);
    assert_eq!(h.restarts("w"), 1);
    // Read before the delay is over: the restart is not held.
    h.exited_unread("w", 11);
    h.event(Event::Drained {
        name: name("w"),
        pid: 11,
    });
    assert_eq!(spawns(&h.fire("w", Timer::Restart)), ["w"]);
}

/// A process stopped while its restart waits for output is not started by the output's end.
#[test]
fn a_held_restart_is_cancelled_by_a_stop() {
    let mut h = Harness::serve("w:\n  run: w\n  restart: always\n  restart_delay: 0s\n");
    h.start();
    h.spawned("w", 10);
    h.exited_unread("w", 10);
    h.fire("w", Timer::Restart);
    h.request(Message::StopProcess { name: "w".into() });
    let effects = h.event(Event::Drained {
        name: name("w"),
        pid: 10,
    });
    assert!(
        spawns(&effects).is_empty(),
        "a stopped process was restarted"
    );
    assert!(matches!(h.state("w"), ProcessState::Stopped { .. }));
}

#[test]
fn on_failure_restarts_signal_deaths_but_not_a_clean_exit() {
    let mut h = Harness::new("w:\n  run: w\n  restart: on-failure\n");
    h.start();
    h.spawned("w", 10);
    h.exited("w", 10, Exit::Signal(libc::SIGKILL));
    assert!(matches!(
        h.state("w"),
        ProcessState::BackingOff { attempt: 1, .. }
    ));
    h.fire("w", Timer::Restart);
    h.spawned("w", 11);
    let effects = h.exited("w", 11, Exit::Code(0));
    assert_eq!(
        h.state("w"),
        ProcessState::Exited {
            exit: Exit::Code(0)
        }
    );
    assert_eq!(finish(&effects), Some(0));
}

#[test]
fn always_restarts_a_clean_exit_and_delays_are_capped() {
    let mut h = Harness::new(
        "w:\n  run: w\n  restart: always\n  restart_delay: 1s\n  max_restart_delay: 3s\n",
    );
    h.start();
    let mut pid = 10;
    h.spawned("w", pid);
    for expected in [1, 2, 3, 3] {
        let effects = h.exited("w", pid, Exit::Code(0));
        assert_eq!(
            timers(&effects),
            [(Timer::Restart, Duration::from_secs(expected))]
        );
        h.fire("w", Timer::Restart);
        pid += 1;
        h.spawned("w", pid);
    }
}

#[test]
fn a_run_that_lasts_max_restart_delay_resets_the_streak() {
    let mut h = Harness::new(
        "w:\n  run: w\n  restart: on-failure\n  max_restarts: 1\n  restart_delay: 1s\n  max_restart_delay: 5s\n",
    );
    h.start();
    h.spawned("w", 10);
    h.exited("w", 10, Exit::Code(1));
    h.fire("w", Timer::Restart);
    h.spawned("w", 11);
    h.advance(Duration::from_secs(5));
    let effects = h.exited("w", 11, Exit::Code(1));
    assert_eq!(timers(&effects), [(Timer::Restart, Duration::from_secs(1))]);
    assert!(matches!(
        h.state("w"),
        ProcessState::BackingOff { attempt: 1, .. }
    ));
}

#[test]
fn stale_timers_and_exits_of_other_pids_are_ignored() {
    let mut h = Harness::new("w:\n  run: w\n  restart: on-failure\n");
    h.start();
    h.spawned("w", 10);
    h.exited("w", 10, Exit::Code(1));
    let stale = h.machine.procs[0].epoch - 1;
    let effects = h.event(Event::Timer {
        name: name("w"),
        epoch: stale,
        timer: Timer::Restart,
    });
    assert!(spawns(&effects).is_empty());
    h.fire("w", Timer::Restart);
    h.spawned("w", 11);
    let effects = h.exited("w", 10, Exit::Code(1));
    assert!(effects.is_empty(), "{effects:?}");
    assert!(matches!(
        h.state("w"),
        ProcessState::Running { pid: 11, .. }
    ));
}

#[test]
fn a_requested_stop_signals_waits_for_the_exit_and_is_not_restarted() {
    let mut h =
        Harness::new("w:\n  run: w\n  restart: always\n  stop_timeout: 5s\nother:\n  run: o\n");
    h.start();
    h.spawned("w", 10);
    h.spawned("other", 11);
    let (id, effects) = h.request(Message::StopProcess { name: "w".into() });
    assert_eq!(signals(&effects), [("w".to_owned(), Sig::Term)]);
    assert_eq!(
        timers(&effects),
        [(Timer::StopDeadline, Duration::from_secs(5))]
    );
    assert!(effects.contains(&Effect::CancelTasks(name("w"))));
    assert!(reply(&effects, id).is_none(), "answered once it is gone");
    assert!(matches!(
        h.state("w"),
        ProcessState::Stopping {
            reason: StopReason::Requested,
            ..
        }
    ));
    // Status is answered at once while the stop is in progress.
    let (status, effects) = h.request(Message::Status);
    assert!(matches!(
        reply(&effects, status),
        Some(Reply::Status { .. })
    ));
    let effects = h.exited("w", 10, Exit::Signal(libc::SIGTERM));
    assert_eq!(
        reply(&effects, id),
        Some(&Reply::Ok {
            message: "stopped w".into()
        })
    );
    assert_eq!(
        h.state("w"),
        ProcessState::Stopped {
            exit: Some(Exit::Signal(libc::SIGTERM))
        }
    );
    assert!(spawns(&effects).is_empty() && finish(&effects).is_none());
}

#[test]
fn the_stop_deadline_sends_sigkill_and_a_stuck_process_is_given_up() {
    let mut h = Harness::new("w:\n  run: w\n  stop_timeout: 5s\n");
    h.start();
    h.spawned("w", 10);
    let (id, _) = h.request(Message::StopProcess { name: "w".into() });
    h.advance(Duration::from_secs(5));
    let effects = h.fire("w", Timer::StopDeadline);
    assert_eq!(signals(&effects), [("w".to_owned(), Sig::Kill)]);
    assert_eq!(timers(&effects), [(Timer::KillDeadline, KILL_GRACE)]);
    assert!(logs(&effects).contains("did not stop within 5s: sending SIGKILL"));
    let effects = h.fire("w", Timer::KillDeadline);
    assert!(reply(&effects, id).is_some());
    assert_eq!(
        h.state("w"),
        ProcessState::Stopped {
            exit: Some(Exit::Signal(libc::SIGKILL))
        }
    );
    // Run mode: the only process is stopped, so the run is over.
    assert_eq!(finish(&effects), Some(0));
}

#[test]
fn a_restart_request_stops_then_spawns_and_answers_with_the_new_pid() {
    let mut h = Harness::new("w:\n  run: w\n");
    h.start();
    h.spawned("w", 10);
    let (id, effects) = h.request(Message::RestartProcess { name: "w".into() });
    assert_eq!(signals(&effects), [("w".to_owned(), Sig::Term)]);
    let effects = h.exited("w", 10, Exit::Signal(libc::SIGTERM));
    assert_eq!(spawns(&effects), ["w"]);
    assert!(
        finish(&effects).is_none(),
        "a restart is not the end of the run"
    );
    let effects = h.spawned("w", 11);
    let Some(Reply::Started { process }) = reply(&effects, id) else {
        panic!("{effects:?}")
    };
    assert_eq!(process.state.pid(), Some(11));
    assert_eq!(h.restarts("w"), 1);
    assert!(logs(&effects).contains("w [11] started (restart 1)"));
}

#[test]
fn restart_and_stop_of_waiting_backing_off_and_ended_processes() {
    let mut h = Harness::serve(
        "w:\n  run: w\n  restart: on-failure\n  restart_delay: 10s\nlate:\n  run: l\n  depends:\n    - path: /nonexistent\n",
    );
    h.start();
    h.spawned("w", 10);
    h.exited("w", 10, Exit::Code(1));
    // A restart during the back-off starts at once.
    let (_, effects) = h.request(Message::RestartProcess { name: "w".into() });
    assert_eq!(spawns(&effects), ["w"]);
    h.spawned("w", 11);
    assert_eq!(h.restarts("w"), 1);
    // Stopping during a back-off cancels it.
    h.exited("w", 11, Exit::Code(1));
    let (stop, effects) = h.request(Message::StopProcess { name: "w".into() });
    assert!(matches!(reply(&effects, stop), Some(Reply::Ok { .. })));
    assert_eq!(
        h.state("w"),
        ProcessState::Stopped {
            exit: Some(Exit::Code(1))
        }
    );
    let effects = h.fire("w", Timer::Restart);
    assert!(spawns(&effects).is_empty());
    // A stopped process starts again on request.
    let (again, effects) = h.request(Message::RestartProcess { name: "w".into() });
    assert_eq!(spawns(&effects), ["w"]);
    let effects = h.spawned("w", 12);
    assert!(matches!(
        reply(&effects, again),
        Some(Reply::Started { .. })
    ));
    // Stopping a waiting process cancels its wait.
    let (waiting, effects) = h.request(Message::StopProcess {
        name: "late".into(),
    });
    assert!(effects.contains(&Effect::CancelTasks(name("late"))));
    assert!(matches!(reply(&effects, waiting), Some(Reply::Ok { .. })));
    assert_eq!(h.state("late"), ProcessState::Stopped { exit: None });
    // Unknown names are refused with the known ones.
    let (unknown, effects) = h.request(Message::StopProcess {
        name: "nope".into(),
    });
    let Some(Reply::Error { message }) = reply(&effects, unknown) else {
        panic!()
    };
    assert!(message.contains("known: w, late"), "{message}");
}

#[test]
fn a_fatal_condition_stops_everything_and_exits_1() {
    let mut h = Harness::new("w:\n  run: w\n");
    h.start();
    h.spawned("w", 10);
    let effects = h.event(Event::Fatal("no guardian".into()));
    assert!(logs(&effects).contains("shutting down: no guardian"));
    assert_eq!(signals(&effects), [("w".to_owned(), Sig::Term)]);
    let effects = h.exited("w", 10, Exit::Signal(libc::SIGTERM));
    assert_eq!(finish(&effects), Some(1));
}

#[test]
fn shutdown_during_backoff_cancels_the_restart() {
    let mut h = Harness::new("w:\n  run: w\n  restart: always\n");
    h.start();
    h.spawned("w", 10);
    h.exited("w", 10, Exit::Code(0));
    let effects = h.event(Event::Interrupt(libc::SIGTERM));
    assert!(logs(&effects).contains("shutting down: received SIGTERM"));
    assert!(logs(&effects).contains("restart cancelled"));
    assert_eq!(finish(&effects), Some(0));
    assert_eq!(
        h.state("w"),
        ProcessState::Stopped {
            exit: Some(Exit::Code(0))
        }
    );
    let effects = h.fire("w", Timer::Restart);
    assert!(effects.is_empty(), "{effects:?}");
}

#[test]
fn shutdown_stops_in_reverse_first_start_order_named_targets_last() {
    // `db` starts first, `api` waits on it; `cache` is started after both but is
    // named by `api`'s process_exited... so it must stop after `api`.
    let mut h = Harness::new(
        "db:\n  run: d\nseed:\n  run: s\n  once: true\napi:\n  run: a\n  depends:\n    - process_exited: seed\nlast:\n  run: l\n",
    );
    h.start();
    h.spawned("db", 1);
    h.spawned("seed", 2);
    h.spawned("last", 4);
    h.exited("seed", 2, Exit::Code(0));
    h.event(Event::DependenciesMet {
        name: name("api"),
        env: BTreeMap::new(),
    });
    h.spawned("api", 3);
    // Restarting `db` does not move it in the order.
    h.request(Message::RestartProcess { name: "db".into() });
    h.exited("db", 1, Exit::Signal(libc::SIGTERM));
    h.spawned("db", 5);
    let mut order = Vec::new();
    let mut effects = h.event(Event::Interrupt(libc::SIGINT));
    let pids = BTreeMap::from([("db", 5), ("api", 3), ("last", 4)]);
    loop {
        let stopped = signals(&effects);
        let Some((next, Sig::Term)) = stopped.first().cloned() else {
            break;
        };
        order.push(next.clone());
        effects = h.exited(&next, pids[next.as_str()], Exit::Signal(libc::SIGTERM));
    }
    assert_eq!(order, ["api", "last", "db"]);
    assert_eq!(finish(&effects), Some(0));
}

#[test]
fn a_named_dependency_stops_after_its_dependent_whatever_the_start_order() {
    // `watcher` names `job` (process_exited) although `job` first started after it
    // (e.g. started later by hand): `watcher` still stops first.
    let mut h = Harness::new("db:\n  run: d\nwatcher:\n  run: w\njob:\n  run: j\n");
    h.start();
    h.spawned("db", 1);
    h.spawned("watcher", 2);
    h.spawned("job", 3);
    let i = h.machine.find("watcher").unwrap();
    Arc::make_mut(&mut h.machine.procs[i].spec).depends = crate::config::parse_dependencies_json(
        &serde_json::json!([{"process_exited": "job"}]),
        &BTreeMap::new(),
    )
    .unwrap();
    let order: Vec<String> = h
        .machine
        .shutdown_order()
        .into_iter()
        .map(|i| h.machine.procs[i].name().to_string())
        .collect();
    assert_eq!(order, ["watcher", "job", "db"]);
}

#[test]
fn what_a_process_leaves_in_its_group_is_stopped_before_the_policy_decides() {
    let mut h = Harness::new("w:\n  run: w\n  restart: on-failure\n  stop_timeout: 3s\n");
    h.start();
    h.spawned("w", 10);
    let effects = h.event(Event::Exited {
        name: name("w"),
        pid: 10,
        exit: Exit::Code(2),
        group_alive: true,
        drained: true,
    });
    assert_eq!(signals(&effects), [("w".to_owned(), Sig::Term)]);
    assert_eq!(
        timers(&effects),
        [(Timer::StopDeadline, Duration::from_secs(3))]
    );
    assert!(matches!(
        h.state("w"),
        ProcessState::Stopping {
            reason: StopReason::Leftovers,
            exit: Some(Exit::Code(2)),
            ..
        }
    ));
    let effects = h.event(Event::GroupGone {
        name: name("w"),
        pid: 10,
    });
    assert!(matches!(
        h.state("w"),
        ProcessState::BackingOff { attempt: 1, .. }
    ));
    assert!(logs(&effects).contains("w [10] exited with code 2"));
}

#[test]
fn a_second_interrupt_kills_everything_at_once() {
    let mut h = Harness::new("a:\n  run: a\nb:\n  run: b\n");
    h.start();
    h.spawned("a", 1);
    h.spawned("b", 2);
    let effects = h.event(Event::Interrupt(libc::SIGINT));
    assert_eq!(signals(&effects), [("b".to_owned(), Sig::Term)]);
    let effects = h.event(Event::Interrupt(libc::SIGINT));
    let killed = signals(&effects);
    assert!(killed.contains(&("a".to_owned(), Sig::Kill)));
    assert!(killed.contains(&("b".to_owned(), Sig::Kill)));
    assert!(logs(&effects).contains("second interrupt"));
    h.exited("b", 2, Exit::Signal(libc::SIGKILL));
    let effects = h.exited("a", 1, Exit::Signal(libc::SIGKILL));
    assert_eq!(finish(&effects), Some(0));
}

#[test]
fn requests_during_shutdown_are_refused_but_status_answers() {
    let mut h = Harness::serve("a:\n  run: a\n");
    h.start();
    h.spawned("a", 1);
    let (shutdown, effects) = h.request(Message::Shutdown {
        user: Some("alice".into()),
        message: Some("bye".into()),
    });
    assert!(matches!(reply(&effects, shutdown), Some(Reply::Ok { .. })));
    assert!(logs(&effects).contains("shutdown via socket: alice: bye"));
    let (restart, effects) = h.request(Message::RestartProcess { name: "a".into() });
    assert_eq!(
        reply(&effects, restart),
        Some(&Reply::Error {
            message: "the server is shutting down".into()
        })
    );
    let (status, effects) = h.request(Message::Status);
    assert!(matches!(
        reply(&effects, status),
        Some(Reply::Status { .. })
    ));
}

#[test]
fn run_requests_add_uniquely_named_processes_in_serve_mode_only() {
    let run = |text: &str| {
        Message::Run(RunRequest {
            name: ProcessName::new("job").unwrap(),
            run: text.into(),
            env: BTreeMap::new(),
            depends: None,
            once: true,
        })
    };
    let mut h = Harness::new("a:\n  run: a\n");
    h.start();
    h.spawned("a", 1);
    let (id, effects) = h.request(run("x"));
    assert!(
        matches!(reply(&effects, id), Some(Reply::Error { message }) if message.contains("procman serve"))
    );

    let mut h = Harness::serve("a:\n  run: a\n");
    h.start();
    let (first, effects) = h.request(run("x"));
    assert_eq!(spawns(&effects), ["job"]);
    let effects = h.spawned("job", 5);
    assert!(
        matches!(reply(&effects, first), Some(Reply::Started { process }) if process.name == "job")
    );
    let (_, effects) = h.request(run("y"));
    assert_eq!(spawns(&effects), ["job.1"]);
    // A runtime process that cannot be spawned fails its request, not the server.
    let (failed, effects) = h.request(run("z"));
    assert_eq!(spawns(&effects), ["job.2"]);
    let effects = h.event(Event::SpawnFailed {
        name: name("job.2"),
        error: "no such file".into(),
    });
    assert!(matches!(reply(&effects, failed), Some(Reply::Error { .. })));
    assert!(!effects.contains(&Effect::StopListening));
}

#[test]
fn a_config_process_that_cannot_spawn_ends_the_run() {
    let mut h = Harness::new("a:\n  run: a\n");
    let effects = h.start();
    assert_eq!(spawns(&effects), ["a"]);
    let effects = h.event(Event::SpawnFailed {
        name: name("a"),
        error: "cwd missing".into(),
    });
    assert!(logs(&effects).contains("a: cannot start: cwd missing"));
    assert_eq!(finish(&effects), Some(1));
}

#[test]
fn a_watch_restart_goes_through_the_policy_delay() {
    let mut h = Harness::new(
        "w:\n  run: w\n  restart_delay: 2s\n  restart: on-failure\n  watch:\n    - check: {tcp: \"127.0.0.1:1\"}\n      on_fail: restart\n",
    );
    h.start();
    h.spawned("w", 10);
    let effects = h.event(Event::WatchFailed {
        name: name("w"),
        watch: "w.watch-0".into(),
        action: OnFail::Restart,
        failures: 3,
        check: "tcp 127.0.0.1:1".into(),
    });
    assert_eq!(signals(&effects), [("w".to_owned(), Sig::Term)]);
    let effects = h.exited("w", 10, Exit::Signal(libc::SIGTERM));
    assert_eq!(timers(&effects), [(Timer::Restart, Duration::from_secs(2))]);
    let effects = h.fire("w", Timer::Restart);
    assert_eq!(spawns(&effects), ["w"]);
}

#[test]
fn ready_is_answered_once_everything_runs() {
    let mut h = Harness::serve("a:\n  run: a\nb:\n  run: b\n  depends:\n    - path: /x\n");
    h.start();
    h.spawned("a", 1);
    let (id, effects) = h.request(Message::Ready);
    assert!(reply(&effects, id).is_none());
    h.event(Event::DependenciesMet {
        name: name("b"),
        env: BTreeMap::new(),
    });
    let effects = h.spawned("b", 2);
    assert_eq!(
        reply(&effects, id),
        Some(&Reply::Ok {
            message: "ready".into()
        })
    );
}

#[test]
fn debug_pauses_a_failure_shutdown_until_resumed() {
    let mut h = Harness::with_mode("a:\n  run: a\nb:\n  run: b\n", false, true);
    h.start();
    h.spawned("a", 1);
    h.spawned("b", 2);
    let effects = h.exited("a", 1, Exit::Code(1));
    assert!(effects.contains(&Effect::DebugPause));
    assert!(signals(&effects).is_empty());
    assert!(logs(&effects).contains("b [pid 2]"));
    let effects = h.event(Event::Resume);
    assert_eq!(signals(&effects), [("b".to_owned(), Sig::Term)]);
}

/// A machine whose `job` template expanded into `job-0` and `job-1`, beside `web`.
fn with_group(template_yaml: &str, serve: bool) -> Harness {
    let mut h = Harness::with_mode(template_yaml, serve, false);
    let template = h.machine.procs[0].spec.as_ref().clone();
    let mut specs: Vec<ProcessSpec> = (0..2)
        .map(|i| {
            let mut instance = template.clone();
            instance.name = template.name.with_suffix('-', i);
            instance.group = Some(template.name.clone());
            instance
        })
        .collect();
    specs.extend(h.machine.procs[1..].iter().map(|p| p.spec.as_ref().clone()));
    h.machine = Machine::new(specs, "p".into(), serve, false);
    h
}

#[test]
fn requests_naming_a_group_address_every_instance_and_answer_once() {
    let mut h = with_group("job:\n  run: j\nweb:\n  run: w\n", true);
    h.start();
    h.spawned("job-0", 1);
    h.spawned("job-1", 2);
    h.spawned("web", 3);
    assert_eq!(
        h.machine.status("job-1").unwrap().group.as_deref(),
        Some("job")
    );
    let (id, effects) = h.request(Message::StopProcess { name: "job".into() });
    assert_eq!(
        signals(&effects),
        [
            ("job-0".to_owned(), Sig::Term),
            ("job-1".to_owned(), Sig::Term)
        ]
    );
    let effects = h.exited("job-0", 1, Exit::Signal(libc::SIGTERM));
    assert!(
        reply(&effects, id).is_none(),
        "one reply, after the last member"
    );
    let effects = h.exited("job-1", 2, Exit::Signal(libc::SIGTERM));
    assert_eq!(
        reply(&effects, id),
        Some(&Reply::Ok {
            message: "stopped job-0\nstopped job-1".into()
        })
    );
    // `start job` starts the stopped group again.
    let (id, effects) = h.request(Message::Run(RunRequest {
        name: name("job"),
        run: "job".into(),
        env: BTreeMap::new(),
        depends: None,
        once: false,
    }));
    assert_eq!(spawns(&effects), ["job-0", "job-1"]);
    h.spawned("job-0", 4);
    let effects = h.spawned("job-1", 5);
    assert_eq!(
        reply(&effects, id),
        Some(&Reply::Ok {
            message: "started job-0 (pid 4)\nstarted job-1 (pid 5)".into()
        })
    );
}

#[test]
fn a_watch_spawns_a_dormant_group() {
    let mut h = with_group(
        "rec:\n  run: r\n  autostart: false\nweb:\n  run: w\n  watch:\n    - check: {path: /x}\n      on_fail: {spawn: rec}\n",
        false,
    );
    h.start();
    h.spawned("web", 1);
    let effects = h.event(Event::WatchFailed {
        name: name("web"),
        watch: "w".into(),
        action: OnFail::Spawn("rec".into()),
        failures: 3,
        check: "path /x".into(),
    });
    assert_eq!(spawns(&effects), ["rec-0", "rec-1"]);
}

#[test]
fn for_each_groups_publish_once_every_instance_succeeded() {
    let mut h = Harness::new("job:\n  run: j\n  once: true\nweb:\n  run: w\n");
    // Pretend `job` expanded into two instances.
    let template = h.machine.procs[0].spec.as_ref().clone();
    let mut instances = Vec::new();
    for i in 0..2 {
        let mut instance = template.clone();
        instance.name = template.name.with_suffix('-', i);
        instance.group = Some(template.name.clone());
        instances.push(instance);
    }
    let web = h.machine.procs[1].spec.as_ref().clone();
    instances.push(web);
    h.machine = Machine::new(instances, "p".into(), false, false);
    h.start();
    h.spawned("job-0", 1);
    h.spawned("job-1", 2);
    h.spawned("web", 3);
    let effects = h.exited("job-0", 1, Exit::Code(0));
    assert!(!effects.contains(&Effect::PublishExit {
        name: "job".into(),
        state: ExitState::Succeeded
    }));
    let effects = h.exited("job-1", 2, Exit::Code(0));
    assert!(effects.contains(&Effect::PublishExit {
        name: "job".into(),
        state: ExitState::Succeeded
    }));
}

#[test]
fn every_state_change_is_announced() {
    let mut h = Harness::new("w:\n  run: w\n");
    h.start();
    let effects = h.spawned("w", 1);
    assert!(effects.contains(&Effect::Changed(name("w"))));
}
