//! `procman.yaml` → [`Config`], reporting every problem with `file:line:col`.
//!
//! The YAML is loaded with marked-yaml (which keeps positions) and then walked by hand, so that
//! one pass can report unknown keys, wrong types and cross-process mistakes together.

mod dependency;
mod fields;
mod process;
mod references;
mod yaml;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{Node, Span};

use super::error::{ConfigError, Diagnostic};
use super::model::*;
use references::check_cross_references;
use yaml::{load_yaml, loc};

/// Reads, canonicalizes and parses the config at `path`.
///
/// `extra_env` holds the `-e KEY=VALUE` flags; they override the system environment (and are
/// overridden by a process's own `env`) when expanding `$VAR` in dependency fields.
/// Messages show `path` as given; [`Config::path`] is canonical.
pub fn load(path: &Path, extra_env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(ConfigError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let unreadable = |e: std::io::Error| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    let canonical = std::fs::canonicalize(path).map_err(unreadable)?;
    let dir = canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut config = parse_str(&text, path, &dir, extra_env)?;
    config.path = canonical;
    Ok(config)
}

/// Parses config `text` without touching the filesystem (except reading the process
/// environment for `$VAR` expansion).
///
/// `display_path` prefixes every message and becomes [`Config::path`]; `dir` is what relative
/// `cwd`s resolve against and becomes [`Config::dir`].
pub fn parse_str(
    text: &str,
    display_path: &Path,
    dir: &Path,
    extra_env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut base_env: BTreeMap<String, String> = std::env::vars().collect();
    base_env.extend(extra_env.iter().map(|(k, v)| (k.clone(), v.clone())));

    let mut cx = Ctx::default();
    let processes = match load_yaml(text, &mut cx) {
        Some(root) => parse_processes(&root, dir, &base_env, &mut cx),
        None => Vec::new(),
    };
    if !cx.diags.is_empty() {
        let mut diagnostics = cx.diags;
        diagnostics.sort_by_key(|d| (d.line, d.column));
        diagnostics.dedup();
        return Err(ConfigError::Invalid {
            display_path: display_path.to_path_buf(),
            diagnostics,
        });
    }
    Ok(Config {
        path: display_path.to_path_buf(),
        dir: dir.to_path_buf(),
        processes,
    })
}

/// Parses a `depends` list that arrived as JSON (a FIFO `run` message), with the same rules as
/// the YAML form. `env` is the complete environment used for `$VAR` expansion.
/// `process_exited` names cannot be checked here and are accepted as given.
pub fn parse_dependencies_json(
    value: &serde_json::Value,
    env: &BTreeMap<String, String>,
) -> Result<Vec<Dependency>, String> {
    let serde_json::Value::Array(items) = value else {
        return Err(format!(
            "`depends` must be a list of dependency objects, got {}",
            json_kind(value)
        ));
    };
    let mut deps = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let node = json_to_node(item);
        let mut cx = Ctx::default();
        let owner = format!("`depends[{i}]`");
        let mut refs = Vec::new();
        if let Some(dep) = cx.dependency(&node, &owner, env, None, &mut refs) {
            deps.push(dep);
        }
        errors.extend(cx.diags.into_iter().map(|d| d.message));
    }
    if errors.is_empty() {
        Ok(deps)
    } else {
        Err(errors.join("; "))
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// JSON strings become quoted scalars (no coercion), everything else plain ones, matching how
/// the same text would load as YAML.
fn json_to_node(v: &serde_json::Value) -> Node {
    let scalar = |s: String, coerce: bool| {
        let mut n = MarkedScalarNode::new(Span::new_blank(), s);
        n.set_coerce(coerce);
        Node::Scalar(n)
    };
    match v {
        serde_json::Value::Null => scalar("null".into(), true),
        serde_json::Value::Bool(b) => scalar(b.to_string(), true),
        serde_json::Value::Number(n) => scalar(n.to_string(), true),
        serde_json::Value::String(s) => scalar(s.clone(), false),
        serde_json::Value::Array(items) => Node::Sequence(MarkedSequenceNode::new(
            Span::new_blank(),
            items.iter().map(json_to_node).collect(),
        )),
        serde_json::Value::Object(map) => {
            let mapping: MarkedMappingNode = map
                .iter()
                .map(|(k, v)| {
                    let mut key = MarkedScalarNode::new(Span::new_blank(), k.clone());
                    key.set_coerce(false);
                    (key, json_to_node(v))
                })
                .collect();
            Node::Mapping(mapping)
        }
    }
}

/// A `process_exited` reference, kept for cross-process checks.
struct ExitedRef {
    name: String,
    at_value: Location,
    at_entry: Location,
    in_depends: bool,
}

/// What the cross-process checks need beyond the spec itself.
struct Parsed {
    spec: ProcessSpec,
    /// False when `once`/`autostart` were malformed, so their values are unknown.
    flags_known: bool,
    /// False when some `depends` entry could not be parsed (a `process_exited` may be missing).
    deps_complete: bool,
    exited: Vec<ExitedRef>,
    spawns: Vec<(String, Location, String)>,
    templates: Vec<(String, String, Location)>,
}

fn parse_processes(
    root: &Node,
    dir: &Path,
    base_env: &BTreeMap<String, String>,
    cx: &mut Ctx,
) -> Vec<ProcessSpec> {
    let Some(top) = root.as_mapping() else {
        cx.err(
            loc(root),
            "the top level must be a mapping of process names to definitions",
        );
        return Vec::new();
    };
    let mut parsed = Vec::new();
    for (key, value) in top.iter() {
        if let Some(p) = cx.process(key, value, dir, base_env) {
            parsed.push(p);
        }
    }
    let names: BTreeSet<&str> = top.keys().map(|k| k.as_str()).collect();
    check_cross_references(&parsed, &names, cx);
    parsed.into_iter().map(|p| p.spec).collect()
}

/// Collects diagnostics while walking the tree.
#[derive(Default)]
struct Ctx {
    diags: Vec<Diagnostic>,
}

impl Ctx {
    fn err(&mut self, at: Location, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            line: at.line,
            column: at.column,
            message: message.into(),
        });
    }
}
