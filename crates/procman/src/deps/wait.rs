//! Waiting for a process's dependencies, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json_path::JsonPath;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::checks::{check_file_contains, check_once, not_exited, unsupported_url};
use super::output::{Matcher, OutputSource, check_now, not_matched};
use super::{Check, DepFailure, ExitBoard, ExitState, FailReason, Progress, describe};
use crate::config::{Dependency, DependencyKind};

/// Floor for `poll_interval`, so a zero interval cannot turn into a busy loop.
const MIN_POLL: Duration = Duration::from_millis(10);

/// Waits for every dependency of `process` in order; each timeout starts when that dependency
/// becomes active. Returns the env values extracted by `file_contains` entries that set `env`.
///
/// Polled kinds are checked at once and then every `poll_interval`; `process_exited` waits on
/// `exits` and `output_matches` on the supervisor's `outputs` instead of polling (without
/// `outputs`, `output_matches` cannot hold). Every `output_matches` starts reading the output
/// at once, so a line printed while an earlier dependency is awaited counts. Progress goes
/// to `report`; the first failure ends the wait.
pub async fn wait_for_all(
    process: &str,
    deps: &[Dependency],
    mut exits: ExitBoard,
    outputs: Option<&OutputSource>,
    report: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<BTreeMap<String, String>, DepFailure> {
    let mut env = BTreeMap::new();
    let mut matchers: Vec<Option<Matcher>> = deps
        .iter()
        .map(|dep| match (&dep.kind, outputs) {
            (DependencyKind::OutputMatches { process, regex }, Some(source)) if dep.retry => {
                Some(Matcher::start(source, process, regex))
            }
            _ => None,
        })
        .collect();
    for (index, dep) in deps.iter().enumerate() {
        let dependency = describe(&dep.kind);
        report(Progress::Waiting {
            dependency: &dependency,
        });
        let fail = |reason, last| DepFailure {
            process: process.to_owned(),
            dependency: dependency.clone(),
            reason,
            last,
        };
        let outcome = match &dep.kind {
            DependencyKind::ProcessExited { name } => {
                wait_exited(name, dep, &mut exits, &dependency, report).await
            }
            DependencyKind::OutputMatches { process, regex } => {
                let waiting = OutputWait {
                    dep,
                    source: outputs,
                    matcher: matchers[index].as_mut(),
                };
                waiting.wait(process, regex, &dependency, report).await
            }
            _ => poll(dep, &exits, &dependency, report).await,
        };
        let value = outcome.map_err(|(reason, last)| fail(reason, last))?;
        if let (DependencyKind::FileContains { env: Some(var), .. }, Some(value)) =
            (&dep.kind, value)
        {
            env.insert(var.clone(), value);
        }
        report(Progress::Satisfied {
            dependency: &dependency,
            remaining: deps.len() - index - 1,
        });
    }
    Ok(env)
}

/// A failed wait: why, and the last reason a check gave.
type Failed = (FailReason, Option<String>);

/// A condition prepared once per wait rather than once per poll.
enum Prepared {
    FileContains(JsonPath),
    Other,
}

fn prepare(kind: &DependencyKind) -> Result<Prepared, FailReason> {
    match kind {
        DependencyKind::Http { url, .. } => match unsupported_url(url) {
            Some(reason) => Err(FailReason::Unsatisfiable {
                reason: reason.to_owned(),
            }),
            None => Ok(Prepared::Other),
        },
        DependencyKind::FileContains { key, .. } => JsonPath::parse(key)
            .map(Prepared::FileContains)
            .map_err(|e| FailReason::Unsatisfiable {
                reason: format!("invalid JSONPath `{key}`: {e}"),
            }),
        _ => Ok(Prepared::Other),
    }
}

async fn check(dep: &Dependency, prepared: &Prepared, exits: &ExitBoard) -> Check {
    match (&dep.kind, prepared) {
        (DependencyKind::FileContains { path, format, .. }, Prepared::FileContains(key)) => {
            check_file_contains(path, *format, key).await
        }
        _ => check_once(&dep.kind, exits).await,
    }
}

/// Polls one dependency until it holds, its timeout passes, or (with `retry: false`) the first
/// check fails. Checks start at least `poll_interval` apart; a check still running at the
/// deadline is abandoned.
async fn poll(
    dep: &Dependency,
    exits: &ExitBoard,
    dependency: &str,
    report: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<Option<String>, Failed> {
    let prepared = prepare(&dep.kind).map_err(|reason| (reason, None))?;
    let started = Instant::now();
    let deadline = started + dep.timeout;
    let interval = dep.poll_interval.max(MIN_POLL);
    let mut last: Option<String> = None;
    loop {
        let checked_at = Instant::now();
        let result = if last.is_none() {
            Some(check(dep, &prepared, exits).await)
        } else {
            timeout_at(deadline, check(dep, &prepared, exits))
                .await
                .ok()
        };
        match result {
            Some(Check::Holds { value }) => return Ok(value),
            Some(Check::NotYet { reason }) => {
                if last.is_none() {
                    if !dep.retry {
                        return Err((FailReason::RetryDisabled { reason }, None));
                    }
                    report(Progress::NotReady {
                        dependency,
                        reason: &reason,
                    });
                }
                last = Some(reason);
            }
            None => return Err((FailReason::TimedOut(dep.timeout), last)),
        }
        let next = checked_at + interval;
        if next >= deadline || Instant::now() >= deadline {
            sleep_until(deadline).await;
            return Err((FailReason::TimedOut(dep.timeout), last));
        }
        sleep_until(next).await;
    }
}

/// Waits for `name` to appear on the exit board: event-driven, bounded by the timeout.
async fn wait_exited(
    name: &str,
    dep: &Dependency,
    exits: &mut ExitBoard,
    dependency: &str,
    report: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<Option<String>, Failed> {
    let deadline = Instant::now() + dep.timeout;
    let verdict = |state: Option<&ExitState>| -> Option<Result<Option<String>, Failed>> {
        match state? {
            ExitState::Succeeded => Some(Ok(None)),
            ExitState::Failed { code } => {
                Some(Err((FailReason::ProcessFailed { code: *code }, None)))
            }
        }
    };
    let current = exits.borrow_and_update().get(name).copied();
    if let Some(done) = verdict(current.as_ref()) {
        return done;
    }
    let reason = not_exited(name);
    if !dep.retry {
        return Err((FailReason::RetryDisabled { reason }, None));
    }
    report(Progress::NotReady {
        dependency,
        reason: &reason,
    });
    match timeout_at(deadline, exits.wait_for(|board| board.contains_key(name))).await {
        Ok(Ok(board)) => {
            let state = board.get(name).copied();
            drop(board);
            verdict(state.as_ref()).unwrap_or(Ok(None))
        }
        Ok(Err(_)) => Err((
            FailReason::Unsatisfiable {
                reason: "the supervisor stopped reporting process exits".to_owned(),
            },
            Some(reason),
        )),
        Err(_) => Err((FailReason::TimedOut(dep.timeout), Some(reason))),
    }
}

/// Why `output_matches` cannot hold outside a supervisor.
const OUTPUT_NEEDS_SUPERVISOR: &str =
    "output_matches waits on a supervised process's output and needs a running procman";

/// An `output_matches` dependency that became active.
struct OutputWait<'a> {
    dep: &'a Dependency,
    source: Option<&'a OutputSource>,
    /// Started when the wait began (for `retry: true`).
    matcher: Option<&'a mut Matcher>,
}

impl OutputWait<'_> {
    /// Holds at once if a matching line was printed already; otherwise waits for the
    /// matcher, bounded by the timeout. A target that ended first fails it with how.
    async fn wait(
        self,
        process: &str,
        regex: &regex::Regex,
        dependency: &str,
        report: &(dyn Fn(Progress<'_>) + Send + Sync),
    ) -> Result<Option<String>, Failed> {
        let unsatisfiable = |reason: String| (FailReason::Unsatisfiable { reason }, None);
        let Some(source) = self.source else {
            return Err(unsatisfiable(OUTPUT_NEEDS_SUPERVISOR.to_owned()));
        };
        let deadline = Instant::now() + self.dep.timeout;
        match check_now(source, process, regex) {
            Some(Ok(())) => return Ok(None),
            Some(Err(why)) => return Err(unsatisfiable(why)),
            None => {}
        }
        let reason = not_matched(process);
        let Some(matcher) = self.matcher.filter(|_| self.dep.retry) else {
            return Err((FailReason::RetryDisabled { reason }, None));
        };
        report(Progress::NotReady {
            dependency,
            reason: &reason,
        });
        match timeout_at(deadline, matcher.finished()).await {
            Ok(Ok(())) => Ok(None),
            Ok(Err(why)) => Err(unsatisfiable(why)),
            Err(_) => Err((FailReason::TimedOut(self.dep.timeout), Some(reason))),
        }
    }
}
