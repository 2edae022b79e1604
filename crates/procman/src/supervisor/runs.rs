//! Each process's current run, published for `output_matches` waits ([`OutputSource`]):
//! where its output begins, and whether it exited or ended for good.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::deps::{ExitState, OutputSource, Run, RunState};
use crate::output::Output;
use crate::protocol::Exit;

/// The runner's side of the run board.
pub(super) struct Runs {
    board: watch::Sender<BTreeMap<String, Run>>,
    /// The instances of each `for_each`/`replicas` group, by group name.
    groups: Arc<BTreeMap<String, Vec<String>>>,
}

impl Runs {
    pub(super) fn new(config: &Config) -> Runs {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for spec in &config.processes {
            if let Some(group) = &spec.group {
                groups
                    .entry(group.to_string())
                    .or_default()
                    .push(spec.name.to_string());
            }
        }
        Runs {
            board: watch::channel(BTreeMap::new()).0,
            groups: Arc::new(groups),
        }
    }

    /// What a dependency waiter reads `output_matches` from.
    pub(super) fn source(&self, output: &Output) -> OutputSource {
        OutputSource {
            output: output.clone(),
            runs: self.board.subscribe(),
            groups: Arc::clone(&self.groups),
        }
    }

    /// A run of `name` whose output is about to be captured: its lines come from now on.
    pub(super) fn started(&self, name: &str, output: &Output) {
        let first_seq = output.next_seq();
        self.board.send_modify(|runs| {
            let state = RunState::Running;
            runs.insert(name.to_owned(), Run { first_seq, state });
        });
    }

    /// The leader of `name`'s run exited; the machine decides whether another run follows.
    pub(super) fn exited(&self, name: &str, exit: Exit) {
        self.board.send_modify(|runs| {
            if let Some(run) = runs.get_mut(name) {
                run.state = RunState::Exited {
                    how: exit.to_string(),
                };
            }
        });
    }

    /// `name` ended for good (the machine published its final exit): its current run, if
    /// it had one, is its last. Group names are not runs and are ignored.
    pub(super) fn ended(&self, name: &str, state: ExitState, output: &Output) {
        if self.groups.contains_key(name) {
            return;
        }
        let first_seq = output.next_seq();
        self.board.send_modify(|runs| {
            let run = runs.entry(name.to_owned()).or_insert(Run {
                first_seq,
                state: RunState::Running,
            });
            let how = match (&run.state, state) {
                (RunState::Exited { how } | RunState::Ended { how }, _) => how.clone(),
                (RunState::Running, ExitState::Succeeded) => "exited with code 0".to_owned(),
                (RunState::Running, ExitState::Failed { .. }) => "failed to start".to_owned(),
            };
            run.state = RunState::Ended { how };
        });
    }
}
