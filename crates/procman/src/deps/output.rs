//! `output_matches`: waiting for a line of a supervised process's output.
//!
//! Event-driven: a matcher reads the supervisor's live feed of lines ([`Output::subscribe`])
//! and is woken by the supervisor's [`RunBoard`] when a process starts or ends; nothing polls.
//! What counts is a line of the target's *current run*: the run it is in when the line is
//! examined, or its last run once it has ended for good. A line that run printed before the
//! wait began counts too (found in the bounded in-memory tail), so a process that prints its
//! "ready" line quickly cannot race its dependent. Lines are matched as `procman.log` shows
//! them: escape sequences (colours) removed, invalid UTF-8 replaced, without the line end.
//!
//! A group (`for_each`/`replicas` template) is ready once every instance printed a
//! matching line. A target that ends for good before matching fails the wait with how it
//! ended; one that exited and may run again (a restart, a `start` request) is waited for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use regex::Regex;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::output::{LogLine, Output, TAIL_BYTES, TAIL_LINES};

/// Where a process's current run stands, as the supervisor publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Every line of this run has a `seq` at or above this ([`Output::next_seq`] when the
    /// run's output began to be read).
    pub first_seq: u64,
    /// Running, between runs, or done.
    pub state: RunState,
}

/// The state of a process's current run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Running (its output may still be draining after its exit).
    Running,
    /// It exited and may be started again (a restart, a `start` request): its lines no
    /// longer count; `how` says how it ended (`exited with code 1`).
    Exited {
        /// How it ended, as a phrase after the name.
        how: String,
    },
    /// It ended for good; `how` says how (`exited with code 1`, `failed to start`).
    Ended {
        /// How it ended, as a phrase after the name.
        how: String,
    },
}

/// The supervisor's live view of each process's current run, by process name.
pub type RunBoard = watch::Receiver<BTreeMap<String, Run>>;

/// What `output_matches` needs from a running supervisor.
#[derive(Clone)]
pub struct OutputSource {
    /// The multiplexed output: live feed and bounded tail.
    pub output: Output,
    /// Where each process's current run stands.
    pub runs: RunBoard,
    /// The instances of each `for_each`/`replicas` group, by group name.
    pub groups: Arc<BTreeMap<String, Vec<String>>>,
}

/// A matcher running since the wait began; aborted when dropped.
pub(super) struct Matcher {
    task: JoinHandle<Result<(), String>>,
}

impl Drop for Matcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Matcher {
    /// Starts reading the output now, so that lines printed while earlier dependencies
    /// are awaited count.
    pub(super) fn start(source: &OutputSource, process: &str, regex: &Regex) -> Matcher {
        let feed = source.output.subscribe();
        let state = State::new(source, process, regex);
        Matcher {
            task: tokio::spawn(state.run(feed)),
        }
    }

    /// Waits for the outcome: `Err` says why it cannot hold.
    pub(super) async fn finished(&mut self) -> Result<(), String> {
        match (&mut self.task).await {
            Ok(outcome) => outcome,
            Err(e) => Err(format!("the output matcher ended: {e}")),
        }
    }
}

/// One look at what is kept of the output, without waiting (for `retry: false`): `None`
/// when no matching line has been printed yet.
pub(super) fn check_now(
    source: &OutputSource,
    process: &str,
    regex: &Regex,
) -> Option<Result<(), String>> {
    let mut state = State::new(source, process, regex);
    state.scan_tails(None);
    if state.pending.is_empty() {
        return Some(Ok(()));
    }
    state.ended().map(Err)
}

/// Why `output_matches` does not hold yet, for logs and timeouts.
pub(super) fn not_matched(process: &str) -> String {
    format!("no line of `{process}` matched yet")
}

/// A matcher's progress.
struct State {
    source: OutputSource,
    regex: Regex,
    /// Targets that have not printed a matching line yet.
    pending: BTreeSet<String>,
    /// The `seq` of the newest line examined, to find what a lagging feed skipped.
    last_seq: Option<u64>,
}

impl State {
    fn new(source: &OutputSource, process: &str, regex: &Regex) -> State {
        let pending = match source.groups.get(process) {
            Some(members) => members.iter().cloned().collect(),
            None => BTreeSet::from([process.to_owned()]),
        };
        State {
            source: source.clone(),
            regex: regex.clone(),
            pending,
            last_seq: None,
        }
    }

    async fn run(mut self, mut feed: broadcast::Receiver<LogLine>) -> Result<(), String> {
        let mut runs = self.source.runs.clone();
        runs.mark_changed();
        loop {
            tokio::select! {
                changed = runs.changed() => {
                    if changed.is_err() {
                        return Err("the supervisor stopped reporting its processes".into());
                    }
                    // Runs started or ended: what their tails hold may count now.
                    self.scan_tails(None);
                    if let Some(why) = self.ended() {
                        return Err(why);
                    }
                }
                line = feed.recv() => match line {
                    Ok(line) => self.examine(&line),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let after = self.last_seq;
                        self.scan_tails(after);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err("the supervisor's output ended".into());
                    }
                },
            }
            if self.pending.is_empty() {
                return Ok(());
            }
        }
    }

    /// Whether `line` is a matching line of a pending target's current run.
    fn examine(&mut self, line: &LogLine) {
        self.last_seq = Some(line.seq);
        if self.pending.contains(&*line.name)
            && counts(&self.source.runs.borrow(), &line.name, line.seq)
            && self.regex.is_match(&line.plain_text())
        {
            self.pending.remove(&*line.name);
        }
    }

    /// Looks through the kept tail of every pending target (only at lines after `after`,
    /// when given). Says so when lines a lagging feed skipped are no longer kept.
    fn scan_tails(&mut self, after: Option<u64>) {
        let targets: Vec<String> = self.pending.iter().cloned().collect();
        let runs = self.source.runs.borrow().clone();
        for target in targets {
            let lines = self.source.output.tail(&[&target], TAIL_LINES, None);
            if let (Some(after), Some(oldest)) = (after, lines.first())
                && oldest.seq > after + 1
                && is_full(&lines)
            {
                self.source.output.procman(&format!(
                    "fell behind the output of {target} while waiting for a line matching `{}`; lines older than the last {} it kept were not examined",
                    self.regex,
                    lines.len()
                ));
            }
            let found = lines.iter().any(|line| {
                after.is_none_or(|after| line.seq > after)
                    && counts(&runs, &target, line.seq)
                    && self.regex.is_match(&line.plain_text())
            });
            if found {
                self.pending.remove(&target);
            }
        }
    }

    /// Why the wait fails: a pending target ended for good.
    fn ended(&self) -> Option<String> {
        let runs = self.source.runs.borrow();
        self.pending
            .iter()
            .find_map(|target| match runs.get(target) {
                Some(Run {
                    state: RunState::Ended { how },
                    ..
                }) => Some(format!(
                    "`{target}` {how} before printing a line matching `{}`",
                    self.regex
                )),
                _ => None,
            })
    }
}

/// Whether a line `seq` of `name` belongs to its current run: a running one, or the last
/// one once it ended for good.
fn counts(runs: &BTreeMap<String, Run>, name: &str, seq: u64) -> bool {
    runs.get(name)
        .is_some_and(|run| seq >= run.first_seq && !matches!(run.state, RunState::Exited { .. }))
}

/// Whether a tail is at its bounds, so older lines may have been dropped (a line is at
/// most a quarter of the byte bound).
fn is_full(lines: &[LogLine]) -> bool {
    let bytes: usize = lines.iter().map(|l| l.text.len() + 1).sum();
    lines.len() >= TAIL_LINES || bytes + TAIL_BYTES / 4 > TAIL_BYTES
}
