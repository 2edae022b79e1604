//! `procman.yaml` → [`Config`], reporting every problem with `file:line:col`.
//!
//! The YAML is loaded with marked-yaml (which keeps positions) and then walked by hand, so that
//! one pass can report unknown keys, wrong types and cross-process mistakes together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{LoadError, LoaderOptions, Node, Span};

use super::error::{ConfigError, Diagnostic};
use super::expand::expand_vars;
use super::model::*;
use super::template;

const PROCESS_FIELDS: &[&str] = &[
    "run",
    "env",
    "once",
    "autostart",
    "depends",
    "for_each",
    "watch",
    "cwd",
    "stop_timeout",
];
const DEP_KINDS: &[&str] = &[
    "url",
    "tcp",
    "path",
    "file_contains",
    "process_exited",
    "not_listening",
    "not_exists",
    "not_running",
];
const DEP_OPTIONS: &[&str] = &["code", "poll_interval", "timeout_seconds", "retry"];
const FILE_CONTAINS_FIELDS: &[&str] = &[
    "path",
    "format",
    "key",
    "env",
    "poll_interval",
    "timeout_seconds",
    "retry",
];
const WATCH_FIELDS: &[&str] = &[
    "name",
    "check",
    "initial_delay",
    "poll_interval",
    "failure_threshold",
    "on_fail",
];
const FOR_EACH_FIELDS: &[&str] = &["glob", "as"];

const DEFAULT_POLL: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_WATCH_POLL: Duration = Duration::from_secs(5);
const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

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

fn only_comments(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

fn marker_loc(m: &marked_yaml::Marker) -> Location {
    Location {
        line: m.line(),
        column: m.column(),
    }
}

fn span_loc(span: &Span) -> Location {
    span.start().map(marker_loc).unwrap_or_default()
}

/// Where a node starts. A block mapping's own mark points past its first key, so a mapping is
/// located at its first key instead.
fn loc(n: &Node) -> Location {
    match n {
        Node::Mapping(m) => m
            .keys()
            .next()
            .map(|k| span_loc(k.span()))
            .unwrap_or_else(|| span_loc(m.span())),
        other => span_loc(other.span()),
    }
}

/// First private-use character used to mask duplicate keys (see [`load_yaml`]).
const MASK_BASE: u32 = 0xE000;
const MAX_MASKED: u32 = 256;

fn is_mask(c: char) -> bool {
    (MASK_BASE..MASK_BASE + MAX_MASKED).contains(&u32::from(c))
}

/// Loads the YAML tree, reporting every duplicate key.
///
/// marked-yaml stops at the first duplicate, so each one found is reported and then masked in
/// the source (its first character swapped for a private-use one, which keeps every position
/// intact) and the load retried; masked entries are dropped from the final tree, so the first
/// definition of a duplicated key is the one that is checked further.
fn load_yaml(text: &str, cx: &mut Ctx) -> Option<Node> {
    if only_comments(text) {
        return None;
    }
    check_single_document(text, cx);
    let strict = || {
        LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true)
    };
    let mut source: Option<Vec<char>> = None;
    let mut masked = 0;
    loop {
        let current: String = match &source {
            Some(chars) => chars.iter().collect(),
            None => text.to_string(),
        };
        match marked_yaml::parse_yaml_with_options(0, &current, strict()) {
            Ok(mut root) => {
                if masked > 0 {
                    drop_masked(&mut root);
                }
                locate_empty_values(&mut root);
                return Some(root);
            }
            Err(LoadError::DuplicateKey(dup)) if masked < MAX_MASKED => {
                report_duplicate(&current, &dup.prev_key, &dup.key, cx);
                let chars = source.get_or_insert_with(|| text.chars().collect());
                let start = dup.key.span().start().map(|m| m.character());
                let target = start.map(|i| match chars.get(i) {
                    Some('"' | '\'') => i + 1,
                    _ => i,
                });
                match target.and_then(|i| chars.get_mut(i)) {
                    Some(c) if *c != '\\' && *c != '"' && *c != '\'' => {
                        *c = char::from_u32(MASK_BASE + masked).unwrap_or('\u{E000}');
                        masked += 1;
                    }
                    _ => {
                        let lenient = LoaderOptions::default().prevent_coercion(true);
                        return match marked_yaml::parse_yaml_with_options(0, &current, lenient) {
                            Ok(mut root) => {
                                drop_masked(&mut root);
                                locate_empty_values(&mut root);
                                Some(root)
                            }
                            Err(e) => {
                                report_load_error(e, cx);
                                None
                            }
                        };
                    }
                }
            }
            Err(e) => {
                report_load_error(e, cx);
                return None;
            }
        }
    }
}

fn drop_masked(node: &mut Node) {
    match node {
        Node::Mapping(m) => {
            m.retain(|k, _| !k.as_str().starts_with(is_mask));
            m.iter_mut().for_each(|(_, v)| drop_masked(v));
        }
        Node::Sequence(seq) => seq.iter_mut().for_each(drop_masked),
        Node::Scalar(_) => {}
    }
}

/// marked-yaml loads only the first document; anything after a later `---` would be silently
/// ignored, so it is an error.
fn check_single_document(text: &str, cx: &mut Ctx) {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker && seen_content {
            let rest_has_content =
                !only_comments(&text.lines().skip(i + 1).collect::<Vec<_>>().join("\n"));
            if rest_has_content || line.len() > 3 && !line[3..].trim_start().starts_with('#') {
                cx.err(
                    Location { line: i + 1, column: 1 },
                    "a second YAML document starts here; procman.yaml must be a single document (remove this `---`)",
                );
            }
            return;
        }
        let t = line.trim();
        if !(t.is_empty() || t.starts_with('#') || t.starts_with('%') || is_marker) {
            seen_content = true;
        }
    }
}

fn report_duplicate(
    source: &str,
    prev_key: &MarkedScalarNode,
    key: &MarkedScalarNode,
    cx: &mut Ctx,
) {
    let lenient = LoaderOptions::default().prevent_coercion(true);
    let tree = marked_yaml::parse_yaml_with_options(0, source, lenient).ok();
    let top = tree.as_ref().and_then(Node::as_mapping);
    let prev = span_loc(prev_key.span());
    let at = span_loc(key.span());
    let name = key.as_str();
    let top_level = top.is_some_and(|m| {
        m.keys()
            .any(|k| k.as_str() == name && [prev, at].contains(&span_loc(k.span())))
    });
    let owner = top.and_then(|m| {
        m.keys()
            .filter(|k| !k.as_str().starts_with(is_mask))
            .rfind(|k| span_loc(k.span()).line <= at.line)
            .map(|k| k.as_str().to_string())
    });
    let message = match (top_level, owner) {
        (true, _) | (false, None) => format!(
            "duplicate process `{name}` (first defined at line {}:{}); rename one of them",
            prev.line, prev.column
        ),
        (false, Some(owner)) => format!(
            "duplicate key `{name}` in process `{owner}` (first given at line {}:{})",
            prev.line, prev.column
        ),
    };
    cx.err(at, message);
}

/// An empty value's own mark points at whatever follows it (often the next line); point it at
/// its key instead so `run:` with nothing after it is reported where it was written.
fn locate_empty_values(node: &mut Node) {
    match node {
        Node::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                match v {
                    Node::Scalar(s) if s.may_coerce() && s.as_str().is_empty() => {
                        *s.span_mut() = *k.span();
                    }
                    other => locate_empty_values(other),
                }
            }
        }
        Node::Sequence(seq) => seq.iter_mut().for_each(locate_empty_values),
        Node::Scalar(_) => {}
    }
}

fn report_load_error(e: LoadError, cx: &mut Ctx) {
    let (at, message) = match e {
        LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => (
            marker_loc(&m),
            "the top level must be a mapping of process names to definitions, e.g. `web: {run: ./server}`".to_string(),
        ),
        LoadError::UnexpectedAnchor(m) => (
            marker_loc(&m),
            "YAML anchors and aliases (`&name`, `*name`) are not supported".to_string(),
        ),
        LoadError::MappingKeyMustBeScalar(m) => (
            marker_loc(&m),
            "mapping keys must be plain strings".to_string(),
        ),
        LoadError::UnexpectedTag(m) => (
            marker_loc(&m),
            "YAML tags (`!tag`) are not supported".to_string(),
        ),
        LoadError::ScanError(m, se) => (marker_loc(&m), format!("invalid YAML: {}", se.info())),
        LoadError::DuplicateKey(dup) => (
            span_loc(dup.key.span()),
            format!("duplicate key `{}`", dup.key.as_str()),
        ),
    };
    cx.err(at, message);
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

fn check_cross_references(parsed: &[Parsed], names: &BTreeSet<&str>, cx: &mut Ctx) {
    let by_name: HashMap<&str, &Parsed> =
        parsed.iter().map(|p| (p.spec.name.as_str(), p)).collect();
    for p in parsed {
        let me = &p.spec.name;
        for r in &p.exited {
            match by_name.get(r.name.as_str()) {
                None if !names.contains(r.name.as_str()) => cx.err(
                    r.at_value,
                    format!(
                        "process `{me}` depends on unknown process `{}` (process_exited){}",
                        r.name,
                        suggest(&r.name, names.iter().copied())
                    ),
                ),
                Some(t) if t.flags_known && !t.spec.once => cx.err(
                    r.at_value,
                    format!(
                        "process `{me}` waits for `{}` to exit (process_exited), but `{}` is not `once: true` and is expected to keep running",
                        r.name, r.name
                    ),
                ),
                _ => {}
            }
        }
        for (target, at, watch) in &p.spawns {
            match by_name.get(target.as_str()) {
                None if !names.contains(target.as_str()) => cx.err(
                    *at,
                    format!(
                        "watch `{watch}` of process `{me}` spawns unknown process `{target}`{}",
                        suggest(target, names.iter().copied())
                    ),
                ),
                Some(t) if t.flags_known && t.spec.autostart => cx.err(
                    *at,
                    format!(
                        "watch `{watch}` of process `{me}` spawns `{target}`, which must have `autostart: false`"
                    ),
                ),
                _ => {}
            }
        }
        for (target, key, at) in &p.templates {
            let tpl = format!("${{{{ {target}.{key} }}}}");
            match by_name.get(target.as_str()) {
                None if !names.contains(target.as_str()) => cx.err(
                    *at,
                    format!(
                        "process `{me}` references output `{tpl}` but process `{target}` does not exist{}",
                        suggest(target, names.iter().copied())
                    ),
                ),
                None => {}
                Some(t) => {
                    if t.flags_known && !t.spec.once {
                        cx.err(
                            *at,
                            format!(
                                "process `{me}` references output `{tpl}` but process `{target}` is not `once: true`"
                            ),
                        );
                    } else if reaches(p, target, &by_name) == Some(false) {
                        cx.err(
                            *at,
                            format!(
                                "process `{me}` references output `{tpl}` but does not depend on `{target}`; add `- process_exited: {target}` to its `depends` (directly or through another process)"
                            ),
                        );
                    }
                }
            }
        }
    }
    report_cycles(parsed, &by_name, cx);
}

/// Whether `from` reaches `target` through `process_exited` dependencies; `None` when an
/// incompletely parsed process on the way makes the answer unknown.
fn reaches(from: &Parsed, target: &str, by_name: &HashMap<&str, &Parsed>) -> Option<bool> {
    let mut stack = vec![from];
    let mut seen = BTreeSet::new();
    let mut unknown = false;
    while let Some(p) = stack.pop() {
        if !seen.insert(p.spec.name.as_str()) {
            continue;
        }
        if !p.deps_complete {
            unknown = true;
        }
        for r in p.exited.iter().filter(|r| r.in_depends) {
            if r.name == target {
                return Some(true);
            }
            if let Some(next) = by_name.get(r.name.as_str()) {
                stack.push(next);
            }
        }
    }
    if unknown { None } else { Some(false) }
}

fn report_cycles(parsed: &[Parsed], by_name: &HashMap<&str, &Parsed>, cx: &mut Ctx) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'a>(
        p: &'a Parsed,
        by_name: &HashMap<&str, &'a Parsed>,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        cx: &mut Ctx,
    ) {
        let name = p.spec.name.as_str();
        marks.insert(name, Mark::Active);
        path.push(name);
        for r in p.exited.iter().filter(|r| r.in_depends) {
            let Some(next) = by_name.get(r.name.as_str()) else {
                continue;
            };
            let next_name = next.spec.name.as_str();
            match marks.get(next_name).copied().unwrap_or(Mark::New) {
                Mark::Active => {
                    let start = path.iter().position(|n| *n == next_name).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[start..].to_vec();
                    cycle.push(next_name);
                    cx.err(
                        r.at_entry,
                        format!(
                            "circular dependency: {} (process_exited in process `{name}`)",
                            cycle.join(" -> ")
                        ),
                    );
                }
                Mark::New => visit(next, by_name, marks, path, cx),
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    for p in parsed {
        if marks
            .get(p.spec.name.as_str())
            .copied()
            .unwrap_or(Mark::New)
            == Mark::New
        {
            let mut path = Vec::new();
            visit(p, by_name, &mut marks, &mut path, cx);
        }
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let v = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            cur.push(v);
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// `"; did you mean `x`?"` for the closest candidate within a small edit distance, else `""`.
fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let limit = (word.chars().count() / 3).clamp(2, 3);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

fn describe(n: &Node) -> String {
    match n {
        Node::Scalar(s) if is_null(s) => "nothing".to_string(),
        Node::Scalar(s) if !s.may_coerce() => format!("the quoted string `\"{}\"`", s.as_str()),
        Node::Scalar(s) => format!("`{}`", s.as_str()),
        Node::Mapping(_) => "a mapping".to_string(),
        Node::Sequence(_) => "a list".to_string(),
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Collects diagnostics while walking the tree.
#[derive(Default)]
struct Ctx {
    diags: Vec<Diagnostic>,
}

/// The recognised fields of one mapping, by name, with the key's location.
type Fields<'n> = BTreeMap<&'n str, (Location, &'n Node)>;

impl Ctx {
    fn err(&mut self, at: Location, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            line: at.line,
            column: at.column,
            message: message.into(),
        });
    }

    /// Splits a mapping into known fields, reporting unknown ones.
    fn fields<'n>(
        &mut self,
        m: &'n MarkedMappingNode,
        allowed: &[&str],
        place: &str,
    ) -> Fields<'n> {
        let mut out = Fields::new();
        for (k, v) in m.iter() {
            let name = k.as_str();
            if allowed.contains(&name) {
                out.insert(name, (span_loc(k.span()), v));
            } else {
                self.err(
                    span_loc(k.span()),
                    format!(
                        "unknown field `{name}` in {place}; expected one of {}{}",
                        allowed.join(", "),
                        suggest(name, allowed.iter().copied())
                    ),
                );
            }
        }
        out
    }

    fn mapping<'n>(
        &mut self,
        n: &'n Node,
        what: &str,
        example: &str,
    ) -> Option<&'n MarkedMappingNode> {
        match n {
            Node::Mapping(m) => Some(m),
            other => {
                self.err(
                    loc(other),
                    format!("{what} must be a mapping{example}, got {}", describe(other)),
                );
                None
            }
        }
    }

    fn sequence<'n>(&mut self, n: &'n Node, what: &str) -> Option<&'n MarkedSequenceNode> {
        match n {
            Node::Sequence(s) => Some(s),
            other => {
                self.err(
                    loc(other),
                    format!(
                        "{what} must be a list (entries start with `- `), got {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match n {
            Node::Scalar(s) if !is_null(s) => Some(s.as_str().to_string()),
            other => {
                self.err(
                    loc(other),
                    format!("{what} must be a string, got {}", describe(other)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, n: &Node, what: &str) -> Option<bool> {
        if let Node::Scalar(s) = n
            && let Some(b) = s.as_bool()
        {
            return Some(b);
        }
        self.err(
            loc(n),
            format!("{what} must be `true` or `false`, got {}", describe(n)),
        );
        None
    }

    fn integer<T: FromStr>(
        &mut self,
        n: &Node,
        what: &str,
        expected: &str,
        ok: impl Fn(&T) -> bool,
    ) -> Option<T> {
        if let Node::Scalar(s) = n
            && s.may_coerce()
            && let Ok(v) = s.as_str().parse::<T>()
            && ok(&v)
        {
            return Some(v);
        }
        self.err(
            loc(n),
            format!("{what} must be {expected}, got {}", describe(n)),
        );
        None
    }

    /// Seconds as a number (`5`, `0.5`) or a humantime string (`500ms`, `1m 30s`).
    fn duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
        let at = loc(n);
        let Node::Scalar(s) = n else {
            self.err(
                at,
                format!("{what} must be a duration, got {}", describe(n)),
            );
            return None;
        };
        let text = s.as_str().trim();
        if let Ok(secs) = text.parse::<f64>() {
            if !secs.is_finite() {
                self.err(
                    at,
                    format!("{what} must be a finite number of seconds, got `{text}`"),
                );
                return None;
            }
            if secs < 0.0 {
                self.err(at, format!("{what} must not be negative, got `{text}`"));
                return None;
            }
            return match Duration::try_from_secs_f64(secs) {
                Ok(d) => Some(d),
                Err(_) => {
                    self.err(at, format!("{what} is too large: `{text}`"));
                    None
                }
            };
        }
        if text.starts_with('-') {
            self.err(at, format!("{what} must not be negative, got `{text}`"));
            return None;
        }
        match humantime::parse_duration(text) {
            Ok(d) if !is_null(s) => Some(d),
            _ => {
                self.err(
                    at,
                    format!(
                        "{what} must be a duration: seconds (`5`, `0.5`) or a string like `500ms` or `5s`, got {}",
                        describe(n)
                    ),
                );
                None
            }
        }
    }

    fn process(
        &mut self,
        key: &MarkedScalarNode,
        value: &Node,
        dir: &Path,
        base_env: &BTreeMap<String, String>,
    ) -> Option<Parsed> {
        let name = key.as_str().to_string();
        let at = span_loc(key.span());
        if name.trim().is_empty() || name.contains('/') || name.contains('\0') {
            self.err(
                at,
                format!(
                    "invalid process name `{name}`: names must be non-empty and contain no `/`"
                ),
            );
        }
        let owner = format!("process `{name}`");
        let map = match value {
            Node::Mapping(m) => m,
            Node::Scalar(s) if is_null(s) => {
                self.err(
                    at,
                    format!("{owner} is empty; it needs at least `run: COMMAND`"),
                );
                return None;
            }
            other => {
                self.err(
                    loc(other),
                    format!(
                        "{owner} must be a mapping of fields (at least `run: COMMAND`), got {}",
                        describe(other)
                    ),
                );
                return None;
            }
        };
        let f = self.fields(map, PROCESS_FIELDS, &owner);

        let mut templates = Vec::new();
        let run = match f.get("run") {
            None => {
                self.err(at, format!("{owner} has no `run` command"));
                String::new()
            }
            Some((_, n)) => match self.string(n, &format!("`run` in {owner}")) {
                Some(r) if r.trim().is_empty() => {
                    self.err(loc(n), format!("`run` in {owner} is empty"));
                    r
                }
                Some(r) => {
                    self.collect_templates(&r, loc(n), &owner, &mut templates);
                    r
                }
                None => String::new(),
            },
        };

        let mut env = BTreeMap::new();
        if let Some((_, n)) = f.get("env") {
            let what = format!("`env` in {owner}");
            if let Some(m) = self.mapping(n, &what, " of NAME: value") {
                for (k, v) in m.iter() {
                    let var = k.as_str();
                    if !is_env_name(var) {
                        self.err(
                            span_loc(k.span()),
                            format!("invalid environment variable name `{var}` in {what}"),
                        );
                    }
                    match v {
                        Node::Scalar(s) if !is_null(s) => {
                            self.collect_templates(s.as_str(), loc(v), &owner, &mut templates);
                            env.insert(var.to_string(), s.as_str().to_string());
                        }
                        Node::Scalar(_) => self.err(
                            span_loc(k.span()),
                            format!("`{var}` in {what} has no value; write `{var}: \"\"` for an empty string"),
                        ),
                        other => self.err(
                            loc(other),
                            format!("`{var}` in {what} must be a string, number or boolean, got {}", describe(other)),
                        ),
                    }
                }
            }
        }

        let mut flags_known = true;
        let mut flag = |cx: &mut Ctx, field: &str, default: bool| match f.get(field) {
            None => default,
            Some((_, n)) => cx
                .boolean(n, &format!("`{field}` in {owner}"))
                .unwrap_or_else(|| {
                    flags_known = false;
                    default
                }),
        };
        let once = flag(self, "once", false);
        let autostart = flag(self, "autostart", true);

        let cwd = f.get("cwd").and_then(|(_, n)| {
            let c = self.string(n, &format!("`cwd` in {owner}"))?;
            if c.trim().is_empty() {
                self.err(loc(n), format!("`cwd` in {owner} is empty"));
                return None;
            }
            Some(dir.join(c))
        });
        let stop_timeout = f
            .get("stop_timeout")
            .and_then(|(_, n)| self.duration(n, &format!("`stop_timeout` in {owner}")))
            .unwrap_or(DEFAULT_STOP_TIMEOUT);

        let for_each = f
            .get("for_each")
            .and_then(|(_, n)| self.for_each(n, &owner));

        let mut dep_env = base_env.clone();
        dep_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(fe) = &for_each {
            dep_env.insert(fe.var.clone(), format!("${{{}}}", fe.var));
        }

        let mut exited = Vec::new();
        let mut deps_complete = true;
        let mut depends = Vec::new();
        if let Some((_, n)) = f.get("depends") {
            match n {
                Node::Scalar(s) if is_null(s) => {}
                _ => match self.sequence(n, &format!("`depends` in {owner}")) {
                    Some(seq) => {
                        for entry in seq.iter() {
                            match self.dependency(entry, &owner, &dep_env, Some(true), &mut exited)
                            {
                                Some(d) => depends.push(d),
                                None => deps_complete = false,
                            }
                        }
                    }
                    None => deps_complete = false,
                },
            }
        }

        let mut spawns = Vec::new();
        let mut watch = Vec::new();
        if let Some((_, n)) = f.get("watch") {
            let what = format!("`watch` in {owner}");
            let entries = match n {
                Node::Scalar(s) if is_null(s) => None,
                _ => self.sequence(n, &what),
            };
            let mut seen: HashMap<String, Location> = HashMap::new();
            for (i, entry) in entries.into_iter().flat_map(|s| s.iter()).enumerate() {
                if let Some((w, name_at)) =
                    self.watch(entry, i, &name, &owner, &dep_env, &mut exited, &mut spawns)
                {
                    if let Some(first) = seen.get(&w.name) {
                        self.err(
                            name_at,
                            format!(
                                "duplicate watch name `{}` in {owner} (first at line {}:{})",
                                w.name, first.line, first.column
                            ),
                        );
                    } else {
                        seen.insert(w.name.clone(), name_at);
                    }
                    watch.push(w);
                }
            }
        }

        Some(Parsed {
            spec: ProcessSpec {
                name,
                run,
                env,
                once,
                autostart,
                depends,
                for_each,
                watch,
                cwd,
                stop_timeout,
                location: at,
            },
            flags_known,
            deps_complete,
            exited,
            spawns,
            templates,
        })
    }

    fn collect_templates(
        &mut self,
        s: &str,
        at: Location,
        owner: &str,
        out: &mut Vec<(String, String, Location)>,
    ) {
        for m in template::malformed(s) {
            self.err(at, format!("{m} (in {owner})"));
        }
        out.extend(template::references(s).into_iter().map(|(p, k)| (p, k, at)));
    }

    fn for_each(&mut self, n: &Node, owner: &str) -> Option<ForEach> {
        let what = format!("`for_each` in {owner}");
        let m = self.mapping(n, &what, " with `glob` and `as`")?;
        let f = self.fields(m, FOR_EACH_FIELDS, &what);
        let get = |cx: &mut Ctx, field: &str| match f.get(field) {
            None => {
                cx.err(loc(n), format!("{what} needs `{field}`"));
                None
            }
            Some((_, v)) => cx.string(v, &format!("`{field}` in {what}")),
        };
        let glob = get(self, "glob");
        let var = get(self, "as");
        if let (Some(v), Some((_, node))) = (&var, f.get("as"))
            && !is_env_name(v)
        {
            self.err(
                loc(node),
                format!("`as` in {what} must be a variable name (letters, digits, `_`), got `{v}`"),
            );
            return None;
        }
        if let (Some(g), Some((_, node))) = (&glob, f.get("glob"))
            && let Err(e) = glob::Pattern::new(g)
        {
            self.err(loc(node), format!("invalid glob `{g}` in {what}: {e}"));
            return None;
        }
        Some(ForEach {
            glob: glob?,
            var: var?,
        })
    }

    /// Parses one dependency entry. `in_depends` is `Some(true)` for `depends`, `Some(false)`
    /// for a watch check, `None` when there is no config to check `process_exited` against.
    fn dependency(
        &mut self,
        n: &Node,
        owner: &str,
        env: &BTreeMap<String, String>,
        in_depends: Option<bool>,
        exited: &mut Vec<ExitedRef>,
    ) -> Option<Dependency> {
        let at = loc(n);
        let place = format!("a dependency of {owner}");
        let m = match n {
            Node::Mapping(m) => m,
            other => {
                self.err(
                    at,
                    format!(
                        "{place} must be a mapping such as `process_exited: NAME` or `url: ... code: 200`, got {}",
                        describe(other)
                    ),
                );
                return None;
            }
        };
        let mut allowed: Vec<&str> = DEP_KINDS.to_vec();
        allowed.extend_from_slice(DEP_OPTIONS);
        let f = self.fields(m, &allowed, &place);
        let kinds: Vec<(&str, Location, &Node)> = DEP_KINDS
            .iter()
            .filter_map(|k| f.get(k).map(|(l, v)| (*k, *l, *v)))
            .collect();
        let mut kinds_sorted = kinds.clone();
        kinds_sorted.sort_by_key(|(_, l, _)| (l.line, l.column));
        let (kind, kind_at, value) = match kinds_sorted.as_slice() {
            [] => {
                self.err(
                    at,
                    format!(
                        "{place} has no kind; expected one of {}",
                        DEP_KINDS.join(", ")
                    ),
                );
                return None;
            }
            [one] => *one,
            [first, second, ..] => {
                self.err(
                    second.1,
                    format!(
                        "{place} has both `{}` and `{}`; write one kind per `-` entry",
                        first.0, second.0
                    ),
                );
                return None;
            }
        };
        let mut ok = true;
        if kind != "url"
            && let Some((l, _)) = f.get("code")
        {
            self.err(
                *l,
                format!("`code` only applies to `url` dependencies (in {owner})"),
            );
            ok = false;
        }
        let field_what = |field: &str| format!("`{field}` in {place}");
        let expand = |cx: &mut Ctx, field: &str, v: &Node| -> Option<String> {
            let raw = cx.string(v, &field_what(field))?;
            match expand_vars(&raw, env) {
                Ok(s) => Some(s),
                Err(e) => {
                    cx.err(loc(v), format!("{e} in `{field}` of {place}"));
                    None
                }
            }
        };

        let mut inner_opts: Fields = Fields::new();
        let kind_value = match kind {
            "url" => {
                let url = expand(self, "url", value);
                let code = match f.get("code") {
                    None => {
                        self.err(
                            kind_at,
                            format!("`url` {place} needs `code` (the expected HTTP status, e.g. `code: 200`)"),
                        );
                        None
                    }
                    Some((_, c)) => self.integer::<u16>(
                        c,
                        &field_what("code"),
                        "an HTTP status code (100-599)",
                        |v| (100..=599).contains(v),
                    ),
                };
                url.zip(code)
                    .map(|(url, code)| DependencyKind::Http { url, code })
            }
            "tcp" => expand(self, "tcp", value).map(|address| DependencyKind::Tcp { address }),
            "path" => {
                expand(self, "path", value).map(|p| DependencyKind::PathExists { path: p.into() })
            }
            "not_listening" => expand(self, "not_listening", value)
                .map(|address| DependencyKind::NotListening { address }),
            "not_exists" => expand(self, "not_exists", value)
                .map(|p| DependencyKind::NotExists { path: p.into() }),
            "not_running" => expand(self, "not_running", value)
                .map(|pattern| DependencyKind::NotRunning { pattern }),
            "process_exited" => self
                .string(value, &field_what("process_exited"))
                .map(|name| {
                    if let Some(in_depends) = in_depends {
                        exited.push(ExitedRef {
                            name: name.clone(),
                            at_value: loc(value),
                            at_entry: at,
                            in_depends,
                        });
                    }
                    DependencyKind::ProcessExited { name }
                }),
            _ => {
                let what = format!("`file_contains` in {place}");
                let fm = self.mapping(value, &what, " with `path`, `format` and `key`")?;
                let ff = self.fields(fm, FILE_CONTAINS_FIELDS, &what);
                for opt in ["poll_interval", "timeout_seconds", "retry"] {
                    if let Some(entry) = ff.get(opt) {
                        if f.contains_key(opt) {
                            self.err(
                                entry.0,
                                format!("`{opt}` is given both inside `file_contains` and on the entry, in {place}"),
                            );
                            ok = false;
                        }
                        inner_opts.insert(opt, *entry);
                    }
                }
                let required = |cx: &mut Ctx, field: &str| -> Option<&Node> {
                    let got = ff.get(field).map(|(_, v)| *v);
                    if got.is_none() {
                        cx.err(loc(value), format!("{what} needs `{field}`"));
                    }
                    got
                };
                let path =
                    required(self, "path").and_then(|v| expand(self, "file_contains.path", v));
                let format = required(self, "format").and_then(|v| {
                    let s = self.string(v, &format!("`format` in {what}"))?;
                    match s.as_str() {
                        "json" => Some(FileFormat::Json),
                        "yaml" => Some(FileFormat::Yaml),
                        other => {
                            self.err(
                                loc(v),
                                format!("unknown `format` `{other}` in {what}; expected `json` or `yaml`"),
                            );
                            None
                        }
                    }
                });
                let key = required(self, "key").and_then(|v| {
                    let s = self.string(v, &format!("`key` in {what}"))?;
                    match serde_json_path::JsonPath::parse(&s) {
                        Ok(_) => Some(s),
                        Err(e) => {
                            self.err(loc(v), format!("invalid JSONPath `{s}` in {what}: {e}"));
                            None
                        }
                    }
                });
                let env_name = match ff.get("env") {
                    None => Some(None),
                    Some((_, v)) => match self.string(v, &format!("`env` in {what}")) {
                        Some(s) if is_env_name(&s) => Some(Some(s)),
                        Some(s) => {
                            self.err(
                                loc(v),
                                format!("`env` in {what} must be a variable name, got `{s}`"),
                            );
                            None
                        }
                        None => None,
                    },
                };
                match (path, format, key, env_name) {
                    (Some(path), Some(format), Some(key), Some(env)) => {
                        Some(DependencyKind::FileContains {
                            path: path.into(),
                            format,
                            key,
                            env,
                        })
                    }
                    _ => None,
                }
            }
        };

        let opt = |name: &str| {
            inner_opts
                .get(name)
                .or_else(|| f.get(name))
                .map(|(_, v)| *v)
        };
        let mut poll_interval = DEFAULT_POLL;
        if let Some(v) = opt("poll_interval") {
            match self.duration(v, &field_what("poll_interval")) {
                Some(d) if d.is_zero() => {
                    self.err(
                        loc(v),
                        format!("{} must be greater than 0", field_what("poll_interval")),
                    );
                    ok = false;
                }
                Some(d) => poll_interval = d,
                None => ok = false,
            }
        }
        let mut timeout = DEFAULT_TIMEOUT;
        if let Some(v) = opt("timeout_seconds") {
            match self.duration(v, &field_what("timeout_seconds")) {
                Some(d) => timeout = d,
                None => ok = false,
            }
        }
        let mut retry = true;
        if let Some(v) = opt("retry") {
            match self.boolean(v, &field_what("retry")) {
                Some(b) => retry = b,
                None => ok = false,
            }
        }
        let kind = kind_value?;
        ok.then_some(Dependency {
            kind,
            poll_interval,
            timeout,
            retry,
            location: at,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn watch(
        &mut self,
        n: &Node,
        index: usize,
        process: &str,
        owner: &str,
        env: &BTreeMap<String, String>,
        exited: &mut Vec<ExitedRef>,
        spawns: &mut Vec<(String, Location, String)>,
    ) -> Option<(Watch, Location)> {
        let at = loc(n);
        let what = format!("watch #{index} of {owner}");
        let m = self.mapping(n, &what, " with at least `check`")?;
        let f = self.fields(m, WATCH_FIELDS, &what);
        let (name, name_at) = match f.get("name") {
            None => (format!("{process}.watch-{index}"), at),
            Some((_, v)) => (self.string(v, &format!("`name` in {what}"))?, loc(v)),
        };
        let what = format!("watch `{name}` of {owner}");
        let check = match f.get("check") {
            None => {
                self.err(
                    at,
                    format!("{what} needs `check` (a dependency such as `url: ...` + `code: 200`)"),
                );
                None
            }
            Some((_, v)) => self.dependency(v, &what, env, Some(false), exited),
        };
        let mut ok = true;
        let mut dur = |cx: &mut Ctx, field: &str, default: Duration| match f.get(field) {
            None => default,
            Some((_, v)) => cx
                .duration(v, &format!("`{field}` in {what}"))
                .unwrap_or_else(|| {
                    ok = false;
                    default
                }),
        };
        let initial_delay = dur(self, "initial_delay", Duration::ZERO);
        let poll_interval = dur(self, "poll_interval", DEFAULT_WATCH_POLL);
        let failure_threshold = match f.get("failure_threshold") {
            None => DEFAULT_FAILURE_THRESHOLD,
            Some((_, v)) => self
                .integer::<u32>(
                    v,
                    &format!("`failure_threshold` in {what}"),
                    "a whole number of at least 1",
                    |t| *t >= 1,
                )
                .unwrap_or_else(|| {
                    ok = false;
                    DEFAULT_FAILURE_THRESHOLD
                }),
        };
        let expected = "`shutdown`, `log`, `debug` or `spawn: PROCESS`";
        let on_fail = match f.get("on_fail") {
            None => Some(OnFail::Shutdown),
            Some((_, v)) => match v {
                // 0.12's `debug` pauses for an interactive confirmation before shutting down;
                // that pause belongs to the `--debug` flag here, so the action itself is a shutdown.
                Node::Scalar(s) if matches!(s.as_str(), "shutdown" | "debug") => {
                    Some(OnFail::Shutdown)
                }
                Node::Scalar(s) if s.as_str() == "log" => Some(OnFail::Log),
                Node::Mapping(sm) if sm.len() == 1 && sm.get_node("spawn").is_some() => {
                    let target = sm.get_node("spawn")?;
                    let t = self.string(target, &format!("`spawn` in {what}"))?;
                    spawns.push((t.clone(), loc(target), name.clone()));
                    Some(OnFail::Spawn(t))
                }
                other => {
                    let got = match other {
                        Node::Scalar(s) => format!(
                            "`{}`{}",
                            s.as_str(),
                            suggest(s.as_str(), ["shutdown", "log", "debug"])
                        ),
                        other => describe(other),
                    };
                    self.err(
                        loc(other),
                        format!("unknown `on_fail` action in {what}: {got}; expected {expected}"),
                    );
                    None
                }
            },
        };
        let watch = Watch {
            name,
            check: check?,
            initial_delay,
            poll_interval,
            failure_threshold,
            on_fail: on_fail?,
        };
        ok.then_some((watch, name_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("PM_TEST_PORT", "8080"), ("PM_TEST_DIR", "/srv")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new("procman.yaml"), Path::new("/cfg"), &env())
    }

    fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(c) => c,
            Err(e) => panic!("expected Ok, got:\n{e}"),
        }
    }

    fn diags(text: &str) -> Vec<Diagnostic> {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    /// Asserts that the only diagnostic is at `line:col` and contains every `parts`.
    #[track_caller]
    fn only_err(text: &str, line: usize, col: usize, parts: &[&str]) {
        let d = diags(text);
        assert_eq!(d.len(), 1, "expected exactly one diagnostic, got {d:#?}");
        assert_eq!((d[0].line, d[0].column), (line, col), "{d:#?}");
        for p in parts {
            assert!(d[0].message.contains(p), "`{p}` not in {:?}", d[0].message);
        }
    }

    fn dep(text: &str) -> Dependency {
        let c = ok(text);
        c.processes[0].depends[0].clone()
    }

    // ---- successful parses -------------------------------------------------------------

    #[test]
    fn minimal_process_and_defaults() {
        let c = ok("web:\n  run: echo hello\n");
        assert_eq!(c.path, Path::new("procman.yaml"));
        assert_eq!(c.dir, Path::new("/cfg"));
        let p = &c.processes[0];
        assert_eq!(p.name, "web");
        assert_eq!(p.run, "echo hello");
        assert!(!p.once);
        assert!(p.autostart);
        assert!(p.env.is_empty() && p.depends.is_empty() && p.watch.is_empty());
        assert!(p.for_each.is_none() && p.cwd.is_none());
        assert_eq!(p.stop_timeout, Duration::from_secs(2));
        assert_eq!(p.location, Location { line: 1, column: 1 });
    }

    #[test]
    fn empty_file_and_empty_mapping_are_ok() {
        assert!(ok("").processes.is_empty());
        assert!(ok("# just a comment\n\n").processes.is_empty());
        assert!(ok("{}\n").processes.is_empty());
        assert!(ok("---\n").processes.is_empty());
    }

    #[test]
    fn processes_keep_file_order() {
        let c = ok("zeta:\n  run: a\nalpha:\n  run: b\nmid:\n  run: c\n");
        let names: Vec<_> = c.processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        assert_eq!(c.processes[1].location, Location { line: 3, column: 1 });
    }

    #[test]
    fn env_scalars_are_stringified_as_written() {
        let c = ok(
            "w:\n  env:\n    PORT: 3000\n    DEBUG: true\n    RATIO: 0.50\n    S: \"x y\"\n  run: r\n",
        );
        let e = &c.processes[0].env;
        assert_eq!(e["PORT"], "3000");
        assert_eq!(e["DEBUG"], "true");
        assert_eq!(e["RATIO"], "0.50");
        assert_eq!(e["S"], "x y");
    }

    #[test]
    fn multiline_run_once_autostart_cwd_stop_timeout() {
        let c = ok(
            "m:\n  run: |\n    a\n    b\n  once: true\n  autostart: false\n  cwd: sub/dir\n  stop_timeout: 500ms\n\
             n:\n  run: x\n  cwd: /abs\n  stop_timeout: 5\no:\n  run: x\n  stop_timeout: 1.5\n",
        );
        let m = &c.processes[0];
        assert_eq!(m.run, "a\nb\n");
        assert!(m.once && !m.autostart);
        assert_eq!(m.cwd.as_deref(), Some(Path::new("/cfg/sub/dir")));
        assert_eq!(m.stop_timeout, Duration::from_millis(500));
        assert_eq!(c.processes[1].cwd.as_deref(), Some(Path::new("/abs")));
        assert_eq!(c.processes[1].stop_timeout, Duration::from_secs(5));
        assert_eq!(c.processes[2].stop_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn for_each_parses() {
        let c = ok(
            "nodes:\n  for_each:\n    glob: \"configs/*.yaml\"\n    as: CONFIG_PATH\n  run: x $CONFIG_PATH\n  once: true\n",
        );
        let fe = c.processes[0].for_each.as_ref().unwrap();
        assert_eq!(fe.glob, "configs/*.yaml");
        assert_eq!(fe.var, "CONFIG_PATH");
    }

    #[test]
    fn for_each_var_in_dependency_is_kept_for_instances() {
        let c = ok(
            "n:\n  for_each: {glob: \"*.y\", as: CFG}\n  run: x\n  depends:\n    - path: $CFG.ready\n",
        );
        match &c.processes[0].depends[0].kind {
            DependencyKind::PathExists { path } => assert_eq!(path, Path::new("${CFG}.ready")),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn http_dependency_with_defaults() {
        let d = dep(
            "a:\n  run: x\n  depends:\n    - url: http://localhost:8080/health\n      code: 200\n",
        );
        match d.kind {
            DependencyKind::Http { url, code } => {
                assert_eq!(url, "http://localhost:8080/health");
                assert_eq!(code, 200);
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(d.poll_interval, Duration::from_secs(1));
        assert_eq!(d.timeout, Duration::from_secs(60));
        assert!(d.retry);
        assert_eq!(d.location, Location { line: 4, column: 7 });
    }

    #[test]
    fn http_dependency_with_options() {
        let d = dep(
            "a:\n  run: x\n  depends:\n    - url: http://h/\n      code: 204\n      poll_interval: 0.5\n      timeout_seconds: 30\n      retry: false\n",
        );
        assert_eq!(d.poll_interval, Duration::from_millis(500));
        assert_eq!(d.timeout, Duration::from_secs(30));
        assert!(!d.retry);
        let d = dep(
            "a:\n  run: x\n  depends:\n    - url: http://h/\n      code: 200\n      poll_interval: 250ms\n      timeout_seconds: 2.5\n",
        );
        assert_eq!(d.poll_interval, Duration::from_millis(250));
        assert_eq!(d.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn simple_dependency_kinds() {
        let c = ok(
            "a:\n  run: x\n  depends:\n    - tcp: \"127.0.0.1:5432\"\n    - path: /tmp/ready.flag\n    - not_listening: \"127.0.0.1:8080\"\n    - not_exists: /tmp/api.lock\n    - not_running: \"old-api.*\"\n    - process_exited: m\nm:\n  run: y\n  once: true\n",
        );
        let d = &c.processes[0].depends;
        assert!(
            matches!(&d[0].kind, DependencyKind::Tcp { address } if address == "127.0.0.1:5432")
        );
        assert!(
            matches!(&d[1].kind, DependencyKind::PathExists { path } if path == Path::new("/tmp/ready.flag"))
        );
        assert!(
            matches!(&d[2].kind, DependencyKind::NotListening { address } if address == "127.0.0.1:8080")
        );
        assert!(
            matches!(&d[3].kind, DependencyKind::NotExists { path } if path == Path::new("/tmp/api.lock"))
        );
        assert!(
            matches!(&d[4].kind, DependencyKind::NotRunning { pattern } if pattern == "old-api.*")
        );
        assert!(matches!(&d[5].kind, DependencyKind::ProcessExited { name } if name == "m"));
        for x in d {
            assert_eq!(x.poll_interval, Duration::from_secs(1));
            assert_eq!(x.timeout, Duration::from_secs(60));
            assert!(x.retry);
        }
        assert_eq!(d[5].location, Location { line: 9, column: 7 });
    }

    #[test]
    fn file_contains_inside_and_entry_level_options() {
        let d = dep(
            "a:\n  run: x\n  depends:\n    - file_contains:\n        path: $PM_TEST_DIR/c.yaml\n        format: yaml\n        key: \"$.envs[?(@.alias == 'local')].rpc\"\n        env: RPC\n        poll_interval: 0.25\n        timeout_seconds: 5\n        retry: false\n",
        );
        match &d.kind {
            DependencyKind::FileContains {
                path,
                format,
                key,
                env,
            } => {
                assert_eq!(path, Path::new("/srv/c.yaml"));
                assert_eq!(*format, FileFormat::Yaml);
                assert_eq!(key, "$.envs[?(@.alias == 'local')].rpc");
                assert_eq!(env.as_deref(), Some("RPC"));
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(d.poll_interval, Duration::from_millis(250));
        assert_eq!(d.timeout, Duration::from_secs(5));
        assert!(!d.retry);
        let d = dep(
            "a:\n  run: x\n  depends:\n    - file_contains: {path: f.json, format: json, key: $.a}\n      timeout_seconds: 9\n",
        );
        assert!(matches!(
            &d.kind,
            DependencyKind::FileContains {
                format: FileFormat::Json,
                env: None,
                ..
            }
        ));
        assert_eq!(d.timeout, Duration::from_secs(9));
        assert_eq!(d.poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn expansion_layers_system_extra_and_process_env() {
        let c = ok(
            "a:\n  env:\n    PM_TEST_PORT: \"9999\"\n    HOST: db\n  run: x\n  depends:\n    - tcp: ${HOST}:$PM_TEST_PORT\n    - url: http://x:$PM_TEST_PORT/$$\n      code: 200\nb:\n  run: x\n  depends:\n    - tcp: h:$PM_TEST_PORT\n",
        );
        assert!(
            matches!(&c.processes[0].depends[0].kind, DependencyKind::Tcp { address } if address == "db:9999")
        );
        assert!(
            matches!(&c.processes[0].depends[1].kind, DependencyKind::Http { url, .. } if url == "http://x:9999/$")
        );
        assert!(
            matches!(&c.processes[1].depends[0].kind, DependencyKind::Tcp { address } if address == "h:8080")
        );
        if let Ok(path) = std::env::var("PATH") {
            let c = ok("a:\n  run: x\n  depends:\n    - not_running: $PATH\n");
            assert!(
                matches!(&c.processes[0].depends[0].kind, DependencyKind::NotRunning { pattern } if *pattern == path)
            );
        }
    }

    #[test]
    fn watch_defaults_and_actions() {
        let c = ok(
            "web:\n  run: x\n  watch:\n    - check:\n        url: http://h/\n        code: 200\n    - name: disk\n      check:\n        path: /var/run/ok\n      initial_delay: 5.0\n      poll_interval: 10s\n      failure_threshold: 1\n      on_fail:\n        spawn: rec\n    - check: {tcp: \"h:1\"}\n      on_fail: log\n    - check: {tcp: \"h:2\"}\n      on_fail: debug\nrec:\n  run: y\n  autostart: false\n",
        );
        let w = &c.processes[0].watch;
        assert_eq!(w[0].name, "web.watch-0");
        assert_eq!(w[0].initial_delay, Duration::ZERO);
        assert_eq!(w[0].poll_interval, Duration::from_secs(5));
        assert_eq!(w[0].failure_threshold, 3);
        assert_eq!(w[0].on_fail, OnFail::Shutdown);
        assert!(matches!(
            w[0].check.kind,
            DependencyKind::Http { code: 200, .. }
        ));
        assert_eq!(w[1].name, "disk");
        assert_eq!(w[1].initial_delay, Duration::from_secs(5));
        assert_eq!(w[1].poll_interval, Duration::from_secs(10));
        assert_eq!(w[1].failure_threshold, 1);
        assert_eq!(w[1].on_fail, OnFail::Spawn("rec".into()));
        assert_eq!(w[2].name, "web.watch-2");
        assert_eq!(w[2].on_fail, OnFail::Log);
        assert_eq!(w[3].on_fail, OnFail::Shutdown);
    }

    #[test]
    fn templates_with_direct_and_transitive_dependency() {
        let c = ok(
            "setup:\n  run: s\n  once: true\nmiddle:\n  run: m\n  once: true\n  depends:\n    - process_exited: setup\napp:\n  env:\n    K: \"${{ setup.KEY }}\"\n  run: echo ${{middle.X}} ${{ setup.KEY }}\n  depends:\n    - process_exited: middle\n",
        );
        assert_eq!(c.processes[2].env["K"], "${{ setup.KEY }}");
    }

    // ---- errors --------------------------------------------------------------------------

    #[test]
    fn error_display_has_path_line_col_per_problem() {
        let e = parse("web:\n  run: x\n  depnds: []\n  once: \"yes\"\n").unwrap_err();
        let text = e.to_string();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0]
                .starts_with("procman.yaml:3:3: error: unknown field `depnds` in process `web`"),
            "{text}"
        );
        assert!(lines[0].contains("did you mean `depends`?"), "{text}");
        assert!(
            lines[1].starts_with("procman.yaml:4:9: error: `once` in process `web`"),
            "{text}"
        );
    }

    #[test]
    fn yaml_syntax_error() {
        only_err("web:\n  run: [\n", 3, 1, &["invalid YAML"]);
        only_err("web:\n  run: \"x\n", 2, 8, &["invalid YAML"]);
    }

    #[test]
    fn top_level_not_mapping() {
        only_err("- a\n- b\n", 1, 1, &["top level must be a mapping"]);
        only_err("just text\n", 1, 1, &["top level must be a mapping"]);
    }

    #[test]
    fn process_not_mapping() {
        only_err(
            "web: echo hi\n",
            1,
            6,
            &["process `web` must be a mapping", "`echo hi`"],
        );
        only_err("web:\n", 1, 1, &["process `web` is empty"]);
        only_err(
            "web:\n  - run: x\n",
            2,
            3,
            &["process `web` must be a mapping", "a list"],
        );
    }

    #[test]
    fn duplicate_keys() {
        only_err(
            "web:\n  run: a\nweb:\n  run: b\n",
            3,
            1,
            &["duplicate process `web`", "1:1"],
        );
        only_err(
            "web:\n  run: a\n  once: true\n  run: b\n",
            4,
            3,
            &["duplicate key `run` in process `web`", "2:3"],
        );
        only_err(
            "w:\n  run: a\n  env:\n    A: 1\n    A: 2\n",
            5,
            5,
            &["duplicate key `A` in process `w`"],
        );
    }

    #[test]
    fn every_duplicate_is_reported() {
        let d = diags(
            "é: {run: \"ü\", run: y}\nb: {run: x}\nb: {run: x, once: true, \"once\": false}\n",
        );
        let got: Vec<_> = d
            .iter()
            .map(|d| (d.line, d.column, d.message.as_str()))
            .collect();
        assert_eq!(got.len(), 3, "{d:#?}");
        assert_eq!((got[0].0, got[0].1), (1, 15));
        assert!(got[0].2.contains("duplicate key `run` in process `é`"));
        assert_eq!((got[1].0, got[1].1), (3, 1));
        assert!(got[1].2.contains("duplicate process `b`"));
        assert_eq!((got[2].0, got[2].1), (3, 25));
        assert!(got[2].2.contains("duplicate key `once` in process `b`"));
    }

    #[test]
    fn unsupported_yaml_features() {
        only_err(
            "a:\n  run: x\n---\nb:\n  run: y\n",
            3,
            1,
            &["second YAML document"],
        );
        ok("a:\n  run: x\n--- # trailing marker\n");
        only_err("a: &x\n  run: y\nb: *x\n", 2, 6, &["anchors and aliases"]);
        only_err("a: !!str x\n", 1, 10, &["tags"]);
        only_err("? [a]\n: 1\n", 1, 3, &["keys must be plain strings"]);
        only_err("a:\n\trun: x\n", 2, 2, &["invalid YAML", "tabs"]);
    }

    #[test]
    fn duplicate_does_not_hide_later_errors() {
        let d = diags("web:\n  run: a\nweb:\n  run: b\napi:\n  rn: x\n");
        let at: Vec<_> = d.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(at, [(3, 1), (5, 1), (6, 3)], "{d:#?}");
    }

    #[test]
    fn unknown_keys_everywhere() {
        only_err(
            "web:\n  run: x\n  depnds: []\n",
            3,
            3,
            &[
                "unknown field `depnds` in process `web`",
                "expected one of run, env",
                "did you mean `depends`?",
            ],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - url: http://h\n      code: 200\n      timeout: 3\n",
            6,
            7,
            &[
                "unknown field `timeout`",
                "process `web`",
                "timeout_seconds",
            ],
        );
        only_err(
            "web:\n  run: x\n  for_each:\n    glob: a\n    as: B\n    sort: true\n",
            6,
            5,
            &["unknown field `sort`", "`for_each` in process `web`"],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      treshold: 3\n",
            5,
            7,
            &["unknown field `treshold`", "process `web`"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - file_contains: {path: p, format: json, key: $.a, keys: 1}\n",
            4,
            56,
            &["unknown field `keys`", "did you mean `key`?"],
        );
        let d = diags("web:\n  run: x\n  zzzzzz: 1\n");
        assert!(!d[0].message.contains("did you mean"), "{d:?}");
    }

    #[test]
    fn wrong_types() {
        only_err(
            "web:\n  run: x\n  once: \"yes\"\n",
            3,
            9,
            &[
                "`once` in process `web` must be `true` or `false`",
                "\"yes\"",
            ],
        );
        only_err("web:\n  run: x\n  once: yes\n", 3, 9, &["`once`", "`yes`"]);
        only_err(
            "web:\n  run: x\n  depends: {}\n",
            3,
            12,
            &["`depends` in process `web` must be a list"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - url: http://h\n      code: abc\n",
            5,
            13,
            &["`code`", "process `web`", "HTTP status code", "`abc`"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - url: http://h\n      code: \"200\"\n",
            5,
            13,
            &["`code`"],
        );
        only_err(
            "web:\n  run: [a]\n",
            2,
            8,
            &["`run` in process `web` must be a string", "a list"],
        );
        only_err(
            "web:\n  run: x\n  env: [A]\n",
            3,
            8,
            &["`env` in process `web` must be a mapping"],
        );
        only_err(
            "web:\n  run: x\n  env:\n    A: [1]\n",
            4,
            8,
            &["`A` in `env` in process `web`"],
        );
        only_err(
            "web:\n  run: x\n  env:\n    A:\n",
            4,
            5,
            &["`A` in `env` in process `web` has no value"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - migrate\n",
            4,
            7,
            &[
                "a dependency of process `web` must be a mapping",
                "`migrate`",
            ],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      failure_threshold: 0\n",
            5,
            26,
            &[
                "failure_threshold",
                "at least 1",
                "watch `web.watch-0` of process `web`",
            ],
        );
        only_err(
            "web:\n  run: x\n  watch: {}\n",
            3,
            10,
            &["`watch` in process `web` must be a list"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - path: /x\n      retry: maybe\n",
            5,
            14,
            &["`retry`", "`maybe`"],
        );
    }

    #[test]
    fn missing_or_empty_run() {
        only_err(
            "web:\n  once: true\n",
            1,
            1,
            &["process `web` has no `run` command"],
        );
        only_err(
            "web:\n  run: \"   \"\n",
            2,
            8,
            &["`run` in process `web` is empty"],
        );
        only_err(
            "web:\n  run:\n",
            2,
            3,
            &["`run` in process `web` must be a string", "nothing"],
        );
    }

    #[test]
    fn dependency_kind_count() {
        only_err(
            "web:\n  run: x\n  depends:\n    - retry: false\n",
            4,
            7,
            &["has no kind", "process `web`", "url, tcp"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - tcp: a:1\n      path: /x\n",
            5,
            7,
            &["has both `tcp` and `path`", "process `web`"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - url: http://h\n",
            4,
            7,
            &["needs `code`", "process `web`"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - tcp: a:1\n      code: 200\n",
            5,
            7,
            &["`code` only applies to `url`", "process `web`"],
        );
    }

    #[test]
    fn file_contains_errors() {
        only_err(
            "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        format: toml\n        key: $.a\n",
            6,
            17,
            &[
                "unknown `format` `toml`",
                "expected `json` or `yaml`",
                "process `web`",
            ],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        format: json\n        key: \"$.[\"\n",
            7,
            14,
            &["invalid JSONPath `$.[`", "process `web`"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        key: $.a\n",
            5,
            9,
            &["needs `format`", "process `web`"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        format: json\n        key: $.a\n        retry: false\n      retry: true\n",
            8,
            9,
            &["`retry` is given both inside `file_contains` and on the entry"],
        );
        let d = diags(
            "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        format: json\n        key: \"$[\"\n",
        );
        assert!(
            d[0].message.len() > "invalid JSONPath `$[` in ".len() + 30,
            "parser message missing: {d:?}"
        );
    }

    #[test]
    fn process_exited_targets() {
        only_err(
            "web:\n  run: x\n  depends:\n    - process_exited: migrat\nmigrate:\n  run: m\n  once: true\n",
            4,
            23,
            &[
                "process `web` depends on unknown process `migrat`",
                "did you mean `migrate`?",
            ],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - process_exited: db\ndb:\n  run: m\n",
            4,
            23,
            &["process `web` waits for `db`", "not `once: true`"],
        );
        ok(
            "web:\n  run: x\n  depends:\n    - process_exited: nodes\nnodes:\n  for_each: {glob: \"*.y\", as: C}\n  run: m\n  once: true\n",
        );
    }

    #[test]
    fn broken_target_does_not_cascade() {
        // `db`'s `once` is malformed, so whether it is `once` is unknown: one error only.
        only_err(
            "web:\n  run: x\n  depends:\n    - process_exited: db\ndb:\n  run: m\n  once: yes\n",
            7,
            9,
            &["`once` in process `db`"],
        );
        // `db` is not a mapping, but it exists.
        only_err(
            "web:\n  run: x\n  depends:\n    - process_exited: db\ndb: oops\n",
            5,
            5,
            &["process `db` must be a mapping"],
        );
    }

    #[test]
    fn cycles() {
        only_err(
            "a:\n  run: x\n  once: true\n  depends:\n    - process_exited: b\nb:\n  run: y\n  once: true\n  depends:\n    - process_exited: a\n",
            10,
            7,
            &["circular dependency: a -> b -> a"],
        );
        only_err(
            "a:\n  run: x\n  once: true\n  depends:\n    - process_exited: a\n",
            5,
            7,
            &["circular dependency: a -> a"],
        );
        only_err(
            "a:\n  run: x\n  once: true\n  depends:\n    - process_exited: b\nb:\n  run: y\n  once: true\n  depends:\n    - process_exited: c\nc:\n  run: y\n  once: true\n  depends:\n    - tcp: h:1\n    - process_exited: a\n",
            16,
            7,
            &["circular dependency: a -> b -> c -> a"],
        );
    }

    #[test]
    fn watch_errors() {
        only_err(
            "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: {spawn: rec}\n",
            5,
            24,
            &["watch `web.watch-0` of process `web` spawns unknown process `rec`"],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: {spawn: rec}\nrec:\n  run: y\n",
            5,
            24,
            &["spawns `rec`", "autostart: false"],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - name: h\n      check: {path: /x}\n    - name: h\n      check: {path: /y}\n",
            6,
            13,
            &["duplicate watch name `h` in process `web`", "4:13"],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: restart\n",
            5,
            16,
            &["unknown `on_fail` action", "`restart`", "process `web`"],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: lgo\n",
            5,
            16,
            &["did you mean `log`?"],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - name: w\n      on_fail: log\n",
            4,
            7,
            &["watch `w` of process `web` needs `check`"],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - check: {process_exited: nope}\n",
            4,
            31,
            &["unknown process `nope`"],
        );
    }

    #[test]
    fn template_errors() {
        only_err(
            "app:\n  run: echo ${{ nonexistent.KEY }}\n",
            2,
            8,
            &[
                "process `app` references output `${{ nonexistent.KEY }}`",
                "does not exist",
            ],
        );
        only_err(
            "server:\n  run: s\napp:\n  run: echo ${{ server.PORT }}\n",
            4,
            8,
            &["process `server` is not `once: true`"],
        );
        only_err(
            "setup:\n  run: s\n  once: true\napp:\n  env:\n    K: \"${{ setup.KEY }}\"\n  run: x\n",
            6,
            8,
            &[
                "process `app`",
                "does not depend on `setup`",
                "process_exited: setup",
            ],
        );
        only_err(
            "app:\n  run: echo ${{ nodot }}\n",
            2,
            8,
            &["invalid template", "process `app`"],
        );
    }

    #[test]
    fn undefined_variable() {
        only_err(
            "web:\n  run: x\n  depends:\n    - path: $PM_TEST_NOPE/x\n",
            4,
            13,
            &[
                "undefined environment variable `PM_TEST_NOPE`",
                "`path`",
                "process `web`",
            ],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - check:\n        tcp: \"${PM_TEST_NOPE}:1\"\n",
            5,
            14,
            &["`PM_TEST_NOPE`", "process `web`"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - file_contains: {path: $PM_TEST_NOPE, format: json, key: $.a}\n",
            4,
            29,
            &["`PM_TEST_NOPE`", "file_contains.path"],
        );
    }

    #[test]
    fn bad_durations() {
        only_err(
            "web:\n  run: x\n  stop_timeout: -1\n",
            3,
            17,
            &["must not be negative"],
        );
        only_err("web:\n  run: x\n  stop_timeout: nan\n", 3, 17, &["finite"]);
        only_err(
            "web:\n  run: x\n  stop_timeout: .nan\n",
            3,
            17,
            &["must be a duration"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - path: /x\n      timeout_seconds: -5s\n",
            5,
            24,
            &["must not be negative"],
        );
        only_err(
            "web:\n  run: x\n  depends:\n    - path: /x\n      poll_interval: soon\n",
            5,
            22,
            &["must be a duration", "`soon`"],
        );
        only_err(
            "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      initial_delay: inf\n",
            5,
            22,
            &["finite"],
        );
    }

    #[test]
    fn many_errors_in_one_pass() {
        let d = diags(
            "a:\n  run: \"\"\nb:\n  once: maybe\n  run: x\nc:\n  run: y\n  depends:\n    - tcp: x\n      path: y\n",
        );
        let at: Vec<_> = d.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(at, [(2, 8), (4, 9), (10, 7)], "{d:#?}");
    }

    // ---- examples from procman 0.12's README and docs ---------------------------------------

    const README_FORMAT: &str = r#"web:
  env:
    PORT: "3000"
  run: serve --port $PORT

migrate:
  run: db-migrate up
  once: true

api:
  depends:
    - process_exited: migrate
    - url: http://localhost:3000/health
      code: 200
      poll_interval: 0.5
      timeout_seconds: 30
  run: api-server start

setup:
  depends:
    - path: /tmp/ready.flag
  run: post-setup-task

db:
  depends:
    - tcp: "127.0.0.1:5432"
  run: db-client start

healthcheck:
  depends:
    - not_listening: "127.0.0.1:8080"
    - not_exists: /tmp/api.lock
    - not_running: "old-api.*"
  run: api-server --port 8080

nodes:
  for_each:
    glob: "/etc/nodes/*.yaml"
    as: NODE_CONFIG
  run: node-agent --config $NODE_CONFIG
  once: true

recovery:
  run: ./scripts/recover.sh
  autostart: false

web:
  run: web-server --port 8080
  watch:
    - name: health
      check:
        url: http://localhost:8080/health
        code: 200
      initial_delay: 5.0
      poll_interval: 10.0
      failure_threshold: 3
      on_fail: shutdown
    - name: disk
      check:
        path: /var/run/healthy
      on_fail:
        spawn: recovery
"#;

    #[test]
    fn readme_format_example_reports_only_the_duplicate_web() {
        only_err(README_FORMAT, 47, 1, &["duplicate process `web`", "1:1"]);
        let fixed = README_FORMAT.replacen("web:\n  env:", "web0:\n  env:", 1);
        let c = ok(&fixed);
        assert_eq!(c.processes.len(), 9);
        assert_eq!(c.process("web").map(|p| p.watch.len()), Some(2));
    }

    #[test]
    fn readme_and_docs_examples_parse() {
        let examples = [
            "migrate:\n  run: db-migrate up\n  once: true\n\nweb:\n  run: serve --port 3000\n\napi:\n  depends:\n    - process_exited: migrate\n    - url: http://localhost:3000/health\n      code: 200\n      timeout_seconds: 30\n  run: api-server start\n",
            "web:\n  run: ./start-web --port 8080\n\nworker:\n  env:\n    RUST_LOG: debug\n  run: cargo run --bin worker\n  depends:\n    - url: http://localhost:8080/health\n      code: 200\n",
            "api:\n  run: cargo run --release --bin api-server\n\nmigrate:\n  run: |\n    ./run-migrations\n    echo \"DATABASE_URL=postgres://localhost:5432/mydb\" > $PROCMAN_OUTPUT\n\nhealthcheck:\n  run: curl -s http://localhost:8080/health && echo \"OK\"\n",
            "migrate:\n  run: |\n    ./run-migrations\n    echo \"DATABASE_URL=postgres://localhost:5432/mydb\" > $PROCMAN_OUTPUT\n  once: true\n\napi:\n  depends:\n    - process_exited: migrate\n  env:\n    DB_URL: \"${{ migrate.DATABASE_URL }}\"\n  run: ./start-api --db \"${{ migrate.DATABASE_URL }}\"\n",
            "setup:\n  run: ./generate-config\n  once: true\n\napi:\n  depends:\n    - process_exited: setup\n    - file_contains:\n        path: procman-logs/setup.output\n        format: yaml\n        key: \"$.database.url\"\n        env: DATABASE_URL\n  run: ./start-api\n",
            "nodes:\n  for_each:\n    glob: \"/etc/nodes/*.yaml\"\n    as: CONFIG_PATH\n  run: provision --config $CONFIG_PATH\n  once: true\n\ndeploy:\n  depends:\n    - process_exited: nodes\n  run: deploy-cluster\n  once: true\n",
            "api:\n  depends:\n    - path: $PM_TEST_DIR/.config/ready.flag\n    - url: http://localhost:${PM_TEST_PORT}/health\n      code: 200\n  run: ./start-api\n",
            "app:\n  depends:\n    - not_exists: /tmp/api.lock\n      retry: false\n    - file_contains:\n        path: /tmp/sui_client.yaml\n        format: yaml\n        key: \"$.envs[?(@.alias == 'local')].rpc\"\n        env: SUI_RPC_URL\n  run: x\n",
        ];
        for e in examples {
            ok(e);
        }
    }

    // ---- robustness ---------------------------------------------------------------------

    #[test]
    fn truncations_and_mutations_never_panic() {
        let fixed = README_FORMAT.replacen("web:\n  env:", "web0:\n  env:", 1);
        let mut variants: Vec<String> = Vec::new();
        for (i, _) in fixed.char_indices() {
            variants.push(fixed[..i].to_string());
        }
        let bytes = fixed.as_bytes();
        let junk = [
            b':', b'-', b'{', b'[', b'"', b'\'', b' ', b'\n', b'$', b'&', b'*', b'!', b'#', b'|',
            b'>', b'\t',
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        while variants.len() < 2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pos = (seed % bytes.len() as u64) as usize;
            let mut b = bytes.to_vec();
            b[pos] = junk[(seed >> 32) as usize % junk.len()];
            if (seed >> 20) % 3 == 0 {
                b.truncate(pos + 1 + (seed >> 40) as usize % 40);
            }
            variants.push(String::from_utf8_lossy(&b).into_owned());
        }
        assert!(variants.len() >= 2000);
        for v in &variants {
            match parse(v) {
                Ok(_) => {}
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        !e.diagnostics().is_empty(),
                        "error without diagnostics for {v:?}"
                    );
                    assert!(text.starts_with("procman.yaml:"), "{text}");
                }
            }
        }
    }

    // ---- JSON dependencies --------------------------------------------------------------

    #[test]
    fn json_dependencies_use_the_same_rules() {
        let v = serde_json::json!([
            {"url": "http://localhost:$PM_TEST_PORT/health", "code": 200},
            {"process_exited": "anything"},
            {"file_contains": {"path": "/x", "format": "json", "key": "$.a"}, "retry": false},
            {"tcp": "h:1", "poll_interval": "250ms", "timeout_seconds": 3}
        ]);
        let deps = parse_dependencies_json(&v, &env()).unwrap();
        assert_eq!(deps.len(), 4);
        assert!(
            matches!(&deps[0].kind, DependencyKind::Http { url, code: 200 } if url == "http://localhost:8080/health")
        );
        assert!(
            matches!(&deps[1].kind, DependencyKind::ProcessExited { name } if name == "anything")
        );
        assert!(!deps[2].retry);
        assert_eq!(deps[3].poll_interval, Duration::from_millis(250));
        assert_eq!(deps[3].timeout, Duration::from_secs(3));
    }

    #[test]
    fn json_dependency_errors_are_clear() {
        let e = parse_dependencies_json(&serde_json::json!({"url": "x"}), &env()).unwrap_err();
        assert!(e.contains("must be a list"), "{e}");
        let e = parse_dependencies_json(&serde_json::json!([{"url": "x", "code": "200"}]), &env())
            .unwrap_err();
        assert!(e.contains("`code`") && e.contains("depends[0]"), "{e}");
        let e = parse_dependencies_json(
            &serde_json::json!([{"tcp": "a"}, {"tcp": "$PM_TEST_NOPE"}, {"bogus": 1}]),
            &env(),
        )
        .unwrap_err();
        assert!(
            e.contains("depends[1]") && e.contains("PM_TEST_NOPE"),
            "{e}"
        );
        assert!(
            e.contains("unknown field `bogus`") && e.contains("depends[2]"),
            "{e}"
        );
        assert!(!e.contains(":0:0"), "{e}");
    }

    #[test]
    fn load_errors() {
        let dir = std::env::temp_dir().join(format!("procman-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("nope.yaml");
        let e = load(&missing, &BTreeMap::new()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("no config file at")
                && text.contains("nope.yaml")
                && text.contains("hint:"),
            "{text}"
        );
        let e = load(&dir, &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, b"web:\n  run: \xff\n").unwrap();
        assert!(
            load(&bad, &BTreeMap::new())
                .unwrap_err()
                .to_string()
                .contains("not valid UTF-8")
        );
        let good = dir.join("procman.yaml");
        std::fs::write(&good, "web:\n  run: x\n  cwd: sub\n").unwrap();
        let c = load(&good, &BTreeMap::new()).unwrap();
        let canon = std::fs::canonicalize(&good).unwrap();
        assert_eq!(c.path, canon);
        assert_eq!(c.dir, canon.parent().unwrap());
        assert_eq!(
            c.processes[0].cwd.as_deref(),
            Some(canon.parent().unwrap().join("sub").as_path())
        );
        std::fs::write(&good, "web:\n  rn: x\n").unwrap();
        let e = load(&good, &BTreeMap::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:1:1: error:", good.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
