//! One process entry: `run`, `env`, `env_file`, `once`, `autostart`, `cwd`, `stop_timeout`,
//! `for_each`, `replicas`, the restart policy, and collecting the `${{ process.key }}`
//! templates it uses.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use marked_yaml::Node;
use marked_yaml::types::MarkedScalarNode;

use super::fields::{Fields, describe, is_env_name, is_null, suggest};
use super::yaml::{loc, span_loc};
use super::{Ctx, Refs};
use crate::config::draft::Draft;
use crate::config::model::*;
use crate::config::template;
use crate::protocol::ProcessName;

const PROCESS_FIELDS: &[&str] = &[
    "run",
    "env",
    "env_file",
    "once",
    "autostart",
    "depends",
    "for_each",
    "replicas",
    "watch",
    "cwd",
    "stop_timeout",
    "restart",
    "max_restarts",
    "restart_delay",
    "max_restart_delay",
];
const FOR_EACH_FIELDS: &[&str] = &["glob", "as"];

/// The most instances `replicas` may ask for.
pub(crate) const MAX_REPLICAS: u32 = 1000;

/// Checks a process name where it was written.
pub(crate) fn process_name(cx: &mut Ctx, name: &str, at: Location) -> Option<ProcessName> {
    match ProcessName::new(name) {
        Ok(valid) => Some(valid),
        Err(e) => {
            cx.err(at, format!("invalid process name: {e}"));
            None
        }
    }
}

impl Ctx {
    pub(super) fn process(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<Draft> {
        let name = key.as_str().to_string();
        let at = span_loc(key.span());
        let process_name = process_name(self, &name, at);
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
        let mut env_order = Vec::new();
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
                            env_order.push((var.to_string(), loc(v)));
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
            Some(PathBuf::from(c))
        });
        let stop_timeout = f
            .get("stop_timeout")
            .and_then(|(_, n)| self.duration(n, &format!("`stop_timeout` in {owner}")))
            .unwrap_or(DEFAULT_STOP_TIMEOUT);

        let restart = self.restart_policy(&f, &owner, once);

        let (env_files, env_files_at) = self.env_files(&f, &owner);

        let for_each = f
            .get("for_each")
            .and_then(|(_, n)| self.for_each(n, &owner));
        let for_each_at = f
            .get("for_each")
            .and_then(|(_, n)| n.as_mapping()?.get_node("glob").map(loc))
            .unwrap_or(at);
        let replicas = f.get("replicas").and_then(|(_, n)| {
            let count = self.integer::<u32>(
                n,
                &format!("`replicas` in {owner}"),
                &format!("a whole number from 1 to {MAX_REPLICAS}"),
                |c| (1..=MAX_REPLICAS).contains(c),
            )?;
            Some((count, loc(n)))
        });
        if let (Some((at, _)), Some(_)) = (f.get("replicas"), f.get("for_each")) {
            self.err(
                *at,
                format!("{owner} has both `for_each` and `replicas`; use one of them"),
            );
        }

        let mut refs = Refs::default();
        let mut expansions = Vec::new();
        let mut deps_complete = true;
        let mut depends = Vec::new();
        if let Some((_, n)) = f.get("depends") {
            match n {
                Node::Scalar(s) if is_null(s) => {}
                _ => match self.sequence(n, &format!("`depends` in {owner}")) {
                    Some(seq) => {
                        for entry in seq.iter() {
                            match self.dependency(entry, &owner, Some(true), &mut refs) {
                                Some((d, x)) => {
                                    depends.push(d);
                                    expansions.push(x);
                                }
                                None => deps_complete = false,
                            }
                        }
                    }
                    None => deps_complete = false,
                },
            }
        }

        let mut watch = Vec::new();
        if let Some((_, n)) = f.get("watch") {
            let what = format!("`watch` in {owner}");
            let entries = match n {
                Node::Scalar(s) if is_null(s) => None,
                _ => self.sequence(n, &what),
            };
            let mut seen: HashMap<String, Location> = HashMap::new();
            for (i, entry) in entries.into_iter().flat_map(|s| s.iter()).enumerate() {
                if let Some((w, name_at, x)) = self.watch(entry, i, &name, &owner, &mut refs) {
                    expansions.push(x);
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

        Some(Draft {
            spec: ProcessSpec {
                env,
                env_files,
                once,
                autostart,
                depends,
                for_each,
                watch,
                cwd,
                stop_timeout,
                restart,
                ..ProcessSpec::with_defaults(process_name?, run, at)
            },
            env_order,
            env_files_at,
            for_each_at,
            replicas,
            expansions,
            flags_known,
            deps_complete,
            exited: refs.exited,
            outputs: refs.outputs,
            spawns: refs.spawns,
            templates,
        })
    }

    /// `env_file: PATH` or a list of paths, as written (read by the mutators).
    fn env_files(&mut self, f: &Fields<'_>, owner: &str) -> (Vec<PathBuf>, Vec<Location>) {
        let Some((_, n)) = f.get("env_file") else {
            return (Vec::new(), Vec::new());
        };
        let what = format!("`env_file` in {owner}");
        let entries: Vec<&Node> = match n {
            Node::Sequence(seq) => seq.iter().collect(),
            one => vec![one],
        };
        let mut paths = Vec::new();
        let mut at = Vec::new();
        for entry in entries {
            match self.string(entry, &format!("{what} (a path or a list of paths)")) {
                Some(p) if p.trim().is_empty() => self.err(loc(entry), format!("{what} is empty")),
                Some(p) => {
                    paths.push(PathBuf::from(p));
                    at.push(loc(entry));
                }
                None => {}
            }
        }
        (paths, at)
    }

    /// `restart`, `max_restarts`, `restart_delay`, `max_restart_delay`; `restart: always`
    /// with `once: true` is a contradiction and an error.
    fn restart_policy(&mut self, f: &Fields<'_>, owner: &str, once: bool) -> RestartPolicy {
        let mut policy = RestartPolicy::default();
        if let Some((_, n)) = f.get("restart") {
            let what = format!("`restart` in {owner}");
            let choices = ["no", "on-failure", "always"];
            policy.when = match n {
                // YAML 1.1 reads a bare `no` as false; accept it as the policy it spells.
                Node::Scalar(s) if matches!(s.as_str(), "no" | "false") => Restart::No,
                Node::Scalar(s) if s.as_str() == "on-failure" => Restart::OnFailure,
                Node::Scalar(s) if s.as_str() == "always" => {
                    if once {
                        self.err(
                            loc(n),
                            format!(
                                "{what} is `always` but the process is `once: true`; a job that \
                                 runs once cannot always restart (use `on-failure` to retry it)"
                            ),
                        );
                    }
                    Restart::Always
                }
                other => {
                    let got = match other {
                        Node::Scalar(s) => format!(
                            "`{}`{}",
                            s.as_str(),
                            suggest(&s.as_str().replace('_', "-"), choices)
                        ),
                        other => describe(other),
                    };
                    self.err(
                        loc(other),
                        format!("{what} must be `no`, `on-failure` or `always`, got {got}"),
                    );
                    Restart::No
                }
            };
        }
        if let Some((_, n)) = f.get("max_restarts") {
            policy.max_restarts = self.integer(
                n,
                &format!("`max_restarts` in {owner}"),
                "a whole number (0 or more)",
                |_: &u32| true,
            );
        }
        if let Some((_, n)) = f.get("restart_delay") {
            policy.delay = self
                .duration(n, &format!("`restart_delay` in {owner}"))
                .unwrap_or(policy.delay);
        }
        if let Some((_, n)) = f.get("max_restart_delay") {
            policy.max_delay = self
                .duration(n, &format!("`max_restart_delay` in {owner}"))
                .unwrap_or(policy.max_delay);
        }
        if policy.when == Restart::No {
            for key in ["max_restarts", "restart_delay", "max_restart_delay"] {
                if let Some((at, _)) = f.get(key) {
                    self.err(
                        *at,
                        format!(
                            "`{key}` in {owner} has no effect without a restart policy; \
                             add `restart: on-failure` or `restart: always`"
                        ),
                    );
                }
            }
        }
        policy
    }

    pub(crate) fn collect_templates(
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

    pub(super) fn for_each(&mut self, n: &Node, owner: &str) -> Option<ForEach> {
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
}
