//! Human-readable names of conditions, for logs and errors.

use crate::config::DependencyKind;

/// Describes a condition as a short phrase that reads as a claim, e.g.
/// "tcp 127.0.0.1:5432 accepts connections", so logs can say "satisfied: …" / "timed out: …".
pub fn describe(kind: &DependencyKind) -> String {
    match kind {
        DependencyKind::Http { url, code } => format!("{url} returns {code}"),
        DependencyKind::Tcp { address } => format!("tcp {address} accepts connections"),
        DependencyKind::PathExists { path } => format!("{} exists", path.display()),
        DependencyKind::FileContains { path, key, env, .. } => match env {
            Some(env) => format!("{key} in {} (as ${env})", path.display()),
            None => format!("{key} in {}", path.display()),
        },
        DependencyKind::ProcessExited { name } => format!("process `{name}` exited successfully"),
        DependencyKind::NotListening { address } => format!("nothing listens on tcp {address}"),
        DependencyKind::NotExists { path } => format!("{} does not exist", path.display()),
        DependencyKind::NotRunning { pattern } => format!("no process matches `{pattern}`"),
        DependencyKind::OutputMatches { process, regex } => {
            format!("output of `{process}` matches `{regex}`")
        }
    }
}
