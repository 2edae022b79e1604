//! The tasks that feed the machine from outside: dependency waiters and watches. Each
//! only sends events; the machine decides.

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::Input;
use super::machine::Event;
use crate::config::{OnFail, ProcessSpec, Watch};
use crate::deps::{self, ExitBoard, OutputSource, Progress};
use crate::protocol::ProcessName;

/// Waits for `spec`'s dependencies in order, reporting progress and the outcome.
pub(super) fn wait_for_dependencies(
    spec: &ProcessSpec,
    board: ExitBoard,
    outputs: OutputSource,
    inputs: mpsc::UnboundedSender<Input>,
) -> AbortHandle {
    let name = spec.name.clone();
    let depends = spec.depends.clone();
    tokio::spawn(async move {
        let output = &outputs.output;
        let report = |progress: Progress<'_>| match progress {
            Progress::Waiting { dependency } => {
                let _ = inputs.send(Input::Event(Event::Waiting {
                    name: name.clone(),
                    dependency: dependency.to_owned(),
                }));
            }
            Progress::NotReady { dependency, reason } => output.procman(&format!(
                "{name}: dependency not ready: {dependency} ({reason})"
            )),
            Progress::Satisfied {
                dependency,
                remaining,
            } => output.procman(&format!(
                "{name}: dependency satisfied: {dependency} ({remaining} remaining)"
            )),
        };
        let event = match deps::wait_for_all(&name, &depends, board, Some(&outputs), &report).await
        {
            Ok(env) => Event::DependenciesMet {
                name: name.clone(),
                env,
            },
            Err(failure) => Event::DependencyFailed {
                name: name.clone(),
                message: failure.to_string(),
            },
        };
        let _ = inputs.send(Input::Event(event));
    })
    .abort_handle()
}

/// Checks `watch` every `poll_interval` after `initial_delay`; reports each streak of
/// `failure_threshold` failures. Only `log` keeps watching after reporting.
pub(super) fn watch(
    process: ProcessName,
    watch: Watch,
    board: ExitBoard,
    inputs: mpsc::UnboundedSender<Input>,
) -> AbortHandle {
    tokio::spawn(async move {
        tokio::time::sleep(watch.initial_delay).await;
        let mut failures = 0u32;
        loop {
            match deps::check_once(&watch.check.kind, &board).await {
                deps::Check::Holds { .. } => failures = 0,
                deps::Check::NotYet { .. } => {
                    failures += 1;
                    if failures >= watch.failure_threshold {
                        let _ = inputs.send(Input::Event(Event::WatchFailed {
                            name: process.clone(),
                            watch: watch.name.clone(),
                            action: watch.on_fail.clone(),
                            failures,
                            check: deps::describe(&watch.check.kind),
                        }));
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
