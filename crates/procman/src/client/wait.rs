//! `procman wait`: waits for one condition, written as a dependency in `procman.yaml`,
//! with the supervisor's own code ([`deps::wait_for_all`]), so a script, a systemd
//! `ExecStartPre=` or a Kubernetes init container waits exactly as `procman run` would.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::{self, DependencyKind};
use crate::deps;

/// What `procman wait` was asked for.
#[derive(Debug, Clone)]
pub struct WaitRequest {
    /// One dependency as `procman.yaml` writes it, e.g. `{"tcp": "127.0.0.1:5432",
    /// "timeout_seconds": "30s"}`; parsed and `$VAR`-expanded by the config's own parser.
    pub dependency: serde_json::Value,
    /// With a config, relative paths are resolved against its directory.
    pub config: Option<PathBuf>,
    /// Run this command (replacing procman) once the condition holds.
    pub then: Vec<OsString>,
}

/// The variable a `file_contains` condition exports; its value is printed on success.
pub const WAIT_VALUE_VAR: &str = "PROCMAN_WAIT_VALUE";

/// Exit code when the condition did not hold in time (or cannot hold).
pub const NOT_SATISFIED: i32 = 1;

/// Waits for the condition: 0 once it holds (printing the value a `file_contains` found),
/// [`NOT_SATISFIED`] with one line on stderr when it timed out or cannot hold.
pub fn wait(request: &WaitRequest) -> Result<i32> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let list = serde_json::Value::Array(vec![request.dependency.clone()]);
    let mut dependencies = config::parse_dependencies_json(&list, &env)
        .map_err(|e| anyhow::anyhow!("invalid condition: {e}"))?;
    let [dependency] = dependencies.as_mut_slice() else {
        bail!("expected exactly one condition");
    };
    if let DependencyKind::ProcessExited { .. } | DependencyKind::OutputMatches { .. } =
        dependency.kind
    {
        bail!(
            "`procman wait` runs outside any stack, where no process runs or prints: process_exited and output_matches each needs a running stack; write it under `depends` in procman.yaml"
        );
    }
    if let Some(config) = &request.config {
        let dir = config_dir(config)?;
        resolve_paths(&mut dependency.kind, &dir);
    }

    let (_board, exits) = tokio::sync::watch::channel(BTreeMap::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(deps::wait_for_all(
        "procman wait",
        &dependencies,
        exits,
        None,
        &|_| {},
    ));
    drop(runtime);
    match outcome {
        Err(failure) => {
            eprintln!("{failure}");
            Ok(NOT_SATISFIED)
        }
        Ok(values) => {
            if let Some(value) = values.get(WAIT_VALUE_VAR) {
                super::print_line(value);
            }
            match request.then.split_first() {
                None => Ok(0),
                Some((program, args)) => {
                    let error = std::process::Command::new(program).args(args).exec();
                    bail!("cannot run {}: {error}", Path::new(program).display())
                }
            }
        }
    }
}

/// The directory of `config` (which must exist), against which relative paths resolve.
fn config_dir(config: &Path) -> Result<PathBuf> {
    let canonical = std::fs::canonicalize(config)
        .with_context(|| format!("cannot use config {}", config.display()))?;
    Ok(canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/")))
}

fn resolve_paths(kind: &mut DependencyKind, dir: &Path) {
    if let DependencyKind::PathExists { path }
    | DependencyKind::NotExists { path }
    | DependencyKind::FileContains { path, .. } = kind
        && path.is_relative()
    {
        *path = dir.join(&*path);
    }
}
