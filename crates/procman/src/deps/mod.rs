//! Dependency conditions and waiting for them.
//!
//! [`check_once`] evaluates one condition (shared by start-up dependencies and runtime watches),
//! [`describe`] names it for humans, and [`wait_for_all`] walks a process's `depends` list in
//! order, polling each condition (or, for `process_exited`, waiting on the [`ExitBoard`], and
//! for `output_matches`, on the supervisor's output: [`OutputSource`]).

mod checks;
mod describe;
mod output;
mod wait;

use std::collections::BTreeMap;
use std::time::Duration;

pub use checks::check_once;
pub use describe::describe;
pub use output::{OutputSource, Run, RunBoard, RunState};
pub use wait::wait_for_all;

/// What the supervisor publishes about finished processes (for `process_exited`), keyed by
/// process name; for a `for_each` group the template name appears once every instance has
/// finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitState {
    /// Exited with code 0.
    Succeeded,
    /// Exited non-zero (or was killed; the supervisor chooses the code it reports).
    Failed {
        /// The exit code.
        code: i32,
    },
}

/// The supervisor's live view of finished processes; `process_exited` waits on its changes.
pub type ExitBoard = tokio::sync::watch::Receiver<BTreeMap<String, ExitState>>;

/// The outcome of one check of one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The condition holds; `value` is what `file_contains` extracted (None for other kinds).
    Holds {
        /// Extracted value, for `file_contains`.
        value: Option<String>,
    },
    /// The condition does not hold (yet), and why, for logs and failure messages.
    NotYet {
        /// Human-readable cause, e.g. "connection refused".
        reason: String,
    },
}

/// Events of [`wait_for_all`], so the caller can log progress the way it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// This dependency became the active one (its timeout starts now).
    Waiting {
        /// The dependency's [`describe`] text.
        dependency: &'a str,
    },
    /// The first check of this dependency failed; reported once per dependency to avoid noise.
    NotReady {
        /// The dependency's [`describe`] text.
        dependency: &'a str,
        /// Why the first check failed.
        reason: &'a str,
    },
    /// The dependency holds; `remaining` dependencies are still to come.
    Satisfied {
        /// The dependency's [`describe`] text.
        dependency: &'a str,
        /// How many dependencies follow this one.
        remaining: usize,
    },
}

/// A dependency of `process` that will not be satisfied, so the process must not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct DepFailure {
    /// The process whose dependency failed.
    pub process: String,
    /// The dependency's [`describe`] text.
    pub dependency: String,
    /// Why it failed.
    pub reason: FailReason,
    /// The reason the last check did not hold, when there was one (for timeouts).
    pub last: Option<String>,
}

impl DepFailure {
    fn message(&self) -> String {
        let Self {
            process,
            dependency,
            reason,
            last,
        } = self;
        let last = last
            .as_deref()
            .map(|l| format!(" (last: {l})"))
            .unwrap_or_default();
        match reason {
            FailReason::TimedOut(after) => format!(
                "{process}: dependency timed out after {}: {dependency}{last}",
                humantime::format_duration(*after)
            ),
            FailReason::RetryDisabled { reason } => {
                format!("{process}: dependency failed (retry disabled): {dependency} ({reason})")
            }
            FailReason::ProcessFailed { code } => format!(
                "{process}: dependency cannot be satisfied: {dependency} (it exited with code {code})"
            ),
            FailReason::Unsatisfiable { reason } => {
                format!("{process}: dependency cannot be satisfied: {dependency} ({reason})")
            }
        }
    }
}

/// Why a dependency failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// It did not hold within its timeout (counted from when it became active).
    TimedOut(Duration),
    /// `retry: false` and the first check did not hold.
    RetryDisabled {
        /// Why the check did not hold.
        reason: String,
    },
    /// `process_exited` named a process that exited non-zero.
    ProcessFailed {
        /// Its exit code.
        code: i32,
    },
    /// It can never hold: e.g. an `https://` URL in a build without TLS, an invalid JSONPath,
    /// or the supervisor stopped publishing process exits.
    Unsatisfiable {
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
