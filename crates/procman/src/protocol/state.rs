//! The process-state enum: what the supervisor's state machine holds for each process and,
//! serialised, what `status --json`, the TUI and every protocol client see.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::ProcessName;

/// Wall-clock time as milliseconds since the Unix epoch: how the protocol carries times.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// `self + duration`.
    pub fn after(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration.as_millis() as u64))
    }

    /// How long from `self` to `later` (zero if `later` is earlier).
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Timestamp {
        Timestamp(
            time.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    }
}

/// How a process (the leader of its group) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal (this number) killed it.
    Signal(i32),
}

impl Exit {
    /// From a reaped child's status.
    pub fn from_status(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(1),
        }
    }

    /// Exit code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// The code procman exits with when this exit ends the run: the code, or 1 for a signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(_) => 1,
        }
    }
}

impl fmt::Display for Exit {
    /// `exited with code 3`, `killed by SIGKILL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(signal) => write!(f, "killed by {}", signal_name(*signal)),
        }
    }
}

/// `SIGTERM` for 15, `signal 64` for a number without a common name.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// Why a process is being stopped, which also says what happens once it is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `stop --process`: it stays stopped.
    Requested,
    /// `restart`: it starts again at once.
    Restart,
    /// A watch with `on_fail: restart`: it starts again through its restart policy's delay.
    Watch,
    /// The whole stack is shutting down.
    Shutdown,
    /// It exited by itself; what it left running in its process group is being stopped
    /// before its restart policy decides.
    Leftovers,
}

/// The state of one process. The supervisor's state machine holds exactly this; the
/// protocol sends it flattened into [`ProcessStatus`] as `"state": "running", …`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProcessState {
    /// Not started: `autostart: false`, or never reached its start before a shutdown.
    Dormant,
    /// Waiting for its dependencies; `waiting_for` names the one being checked.
    Waiting {
        /// The dependency being waited for, as `procman check` would describe it.
        #[serde(default)]
        waiting_for: Option<String>,
    },
    /// Running.
    Running {
        /// Its pid (and process group id).
        pid: u32,
        /// When it was spawned.
        since: Timestamp,
    },
    /// SIGTERM sent; SIGKILL at `deadline` unless its whole group is gone by then.
    Stopping {
        /// Its pid (and process group id).
        pid: u32,
        /// When this run was spawned.
        since: Timestamp,
        /// When SIGKILL follows.
        deadline: Timestamp,
        /// Why, and so what follows.
        reason: StopReason,
        /// How the leader ended, once it has.
        #[serde(default)]
        exit: Option<Exit>,
    },
    /// Exited and waiting `until` before restart number `attempt` of the current streak.
    BackingOff {
        /// When it starts again.
        until: Timestamp,
        /// Which consecutive restart this will be (1-based).
        attempt: u32,
        /// How the last run ended (none if it could not be spawned).
        #[serde(default)]
        exit: Option<Exit>,
        /// The delay is over, but the last run's output is not read to its end yet (the
        /// terminal takes nothing): the restart follows once it is.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        waiting_for_output: bool,
    },
    /// Ended by itself and will not be restarted (a finished `once` job, or a long-running
    /// process whose exit ended the run).
    Exited {
        /// How it ended.
        exit: Exit,
    },
    /// Stopped on request, or by a shutdown.
    Stopped {
        /// How its last run ended, if it ran.
        #[serde(default)]
        exit: Option<Exit>,
    },
    /// Failed for good: a failing exit with no restart left, a dependency that cannot be
    /// met, or a spawn that did not work.
    Failed {
        /// How its last run ended, if it ran.
        #[serde(default)]
        exit: Option<Exit>,
        /// What went wrong, in one sentence.
        reason: String,
    },
}

impl ProcessState {
    /// The state's name as the wire form spells it (`running`, `backing_off`, …).
    pub fn label(&self) -> &'static str {
        match self {
            ProcessState::Dormant => "dormant",
            ProcessState::Waiting { .. } => "waiting",
            ProcessState::Running { .. } => "running",
            ProcessState::Stopping { .. } => "stopping",
            ProcessState::BackingOff { .. } => "backing_off",
            ProcessState::Exited { .. } => "exited",
            ProcessState::Stopped { .. } => "stopped",
            ProcessState::Failed { .. } => "failed",
        }
    }

    /// The pid while a process exists.
    pub fn pid(&self) -> Option<u32> {
        match self {
            ProcessState::Running { pid, .. } | ProcessState::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// When the current run was spawned, while it exists.
    pub fn since(&self) -> Option<Timestamp> {
        match self {
            ProcessState::Running { since, .. } | ProcessState::Stopping { since, .. } => {
                Some(*since)
            }
            _ => None,
        }
    }

    /// How the current (or last) run ended, once it has.
    pub fn exit(&self) -> Option<Exit> {
        match self {
            ProcessState::Stopping { exit, .. }
            | ProcessState::BackingOff { exit, .. }
            | ProcessState::Stopped { exit }
            | ProcessState::Failed { exit, .. } => *exit,
            ProcessState::Exited { exit } => Some(*exit),
            _ => None,
        }
    }

    /// Whether a process group of this process may exist (running or being stopped).
    pub fn is_alive(&self) -> bool {
        self.pid().is_some()
    }

    /// Whether the process is ended and nothing is scheduled for it.
    pub fn is_ended(&self) -> bool {
        matches!(
            self,
            ProcessState::Exited { .. }
                | ProcessState::Stopped { .. }
                | ProcessState::Failed { .. }
        )
    }
}

/// One row of the process table, as `status` and subscriptions send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// The process's name.
    pub name: ProcessName,
    /// Its state, flattened: `"state": "running", "pid": 12, "since": …`.
    #[serde(flatten)]
    pub state: ProcessState,
    /// How many times it was started again (by its policy, a watch or a request).
    #[serde(default)]
    pub restarts: u32,
    /// For an instance of a `for_each` or `replicas` template: the template's name, which
    /// requests may use to address every instance at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<ProcessName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_flat_and_round_trips() {
        let row = ProcessStatus {
            name: ProcessName::new("web").unwrap(),
            state: ProcessState::Running {
                pid: 42,
                since: Timestamp(1_700_000_000_000),
            },
            restarts: 2,
            group: None,
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name":"web","state":"running","pid":42,"since":1_700_000_000_000u64,"restarts":2})
        );
        assert_eq!(serde_json::from_value::<ProcessStatus>(json).unwrap(), row);

        for state in [
            ProcessState::Dormant,
            ProcessState::Waiting {
                waiting_for: Some("tcp 127.0.0.1:1".into()),
            },
            ProcessState::Stopping {
                pid: 1,
                since: Timestamp(1),
                deadline: Timestamp(2),
                reason: StopReason::Leftovers,
                exit: Some(Exit::Code(3)),
            },
            ProcessState::BackingOff {
                until: Timestamp(5),
                attempt: 2,
                exit: None,
                waiting_for_output: true,
            },
            ProcessState::Exited {
                exit: Exit::Signal(9),
            },
            ProcessState::Stopped { exit: None },
            ProcessState::Failed {
                exit: Some(Exit::Code(1)),
                reason: "no restart left".into(),
            },
        ] {
            let row = ProcessStatus {
                name: ProcessName::new("a").unwrap(),
                state,
                restarts: 0,
                group: Some(ProcessName::new("g").unwrap()),
            };
            let text = serde_json::to_string(&row).unwrap();
            assert!(
                text.contains(&format!("\"state\":\"{}\"", row.state.label())),
                "{text}"
            );
            assert_eq!(
                serde_json::from_str::<ProcessStatus>(&text).unwrap(),
                row,
                "{text}"
            );
        }
    }

    #[test]
    fn exits_read_as_sentences() {
        assert_eq!(Exit::Code(3).to_string(), "exited with code 3");
        assert_eq!(Exit::Signal(libc::SIGKILL).to_string(), "killed by SIGKILL");
        assert_eq!(Exit::Signal(64).to_string(), "killed by signal 64");
        assert_eq!(Exit::Signal(9).code(), 1);
        assert!(Exit::Code(0).success() && !Exit::Signal(0).success());
        assert_eq!(
            serde_json::to_string(&Exit::Code(3)).unwrap(),
            r#"{"code":3}"#
        );
    }
}
