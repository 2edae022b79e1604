//! The loader's first stage for `procman.yaml`: text → one [`Draft`] per process, reporting
//! every problem with `file:line:col`.
//!
//! The YAML is loaded with marked-yaml (which keeps positions) and then walked by hand, so that
//! one pass can report unknown keys and wrong types together. Nothing is read from the
//! filesystem or the environment here: that is the mutators' work.

mod dependency;
mod fields;
mod process;
mod yaml;

use std::collections::BTreeMap;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{Node, Span};

use super::draft::{Ctx, Draft};
use super::model::*;
pub(super) use fields::is_env_name;
pub(crate) use fields::suggest;
pub(super) use process::process_name;
pub(super) use yaml::within;
use yaml::{load_yaml, loc};

/// The processes of `procman.yaml` text, as written, in file order, with every top-level
/// key (the names other processes may refer to, including those whose entry is broken).
pub(super) fn yaml(text: &str, cx: &mut Ctx) -> (Vec<Draft>, Vec<String>) {
    let Some(root) = load_yaml(text, cx) else {
        return (Vec::new(), Vec::new());
    };
    let Some(top) = root.as_mapping() else {
        cx.err(
            loc(&root),
            "the top level must be a mapping of process names to definitions",
        );
        return (Vec::new(), Vec::new());
    };
    let drafts = top
        .iter()
        .filter_map(|(key, value)| cx.process(key, value))
        .collect();
    let names = top.keys().map(|k| k.as_str().to_owned()).collect();
    (drafts, names)
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
        let mut refs = Refs::default();
        if let Some((mut dep, expansion)) = cx.dependency(&node, &owner, None, &mut refs) {
            match expansion.map(|x| (x, super::mutate::expand_dependency(&mut dep.kind, env))) {
                Some((x, Err(e))) => errors.push(format!("{e} in {}", x.context)),
                _ => deps.push(dep),
            }
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

/// The references one process makes to others, collected while it is parsed.
#[derive(Default)]
pub(super) struct Refs {
    exited: Vec<super::draft::ExitedRef>,
    outputs: Vec<(String, Location)>,
    spawns: Vec<(String, Location, String)>,
}
