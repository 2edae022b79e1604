//! Dependency entries (`depends`, JSON `depends`, watch checks) and `watch` entries.

use std::time::Duration;

use marked_yaml::Node;

use super::fields::{Fields, describe, is_env_name, suggest};
use super::yaml::loc;
use super::{Ctx, Refs};
use crate::config::draft::{ExitedRef, Expansion};
use crate::config::model::*;

const DEP_KINDS: &[&str] = &[
    "url",
    "tcp",
    "path",
    "file_contains",
    "process_exited",
    "not_listening",
    "not_exists",
    "not_running",
    "output_matches",
];
const DEP_OPTIONS: &[&str] = &[
    "code",
    "process",
    "poll_interval",
    "timeout_seconds",
    "retry",
];
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

const DEFAULT_POLL: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_WATCH_POLL: Duration = Duration::from_secs(5);
const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

impl Ctx {
    /// Parses one dependency entry, its fields as written; the field that `$VAR` expansion
    /// applies to (if any) comes with it. `in_depends` is `Some(true)` for `depends`,
    /// `Some(false)` for a watch check, `None` when there is no config to check references
    /// against.
    pub(super) fn dependency(
        &mut self,
        n: &Node,
        owner: &str,
        in_depends: Option<bool>,
        refs: &mut Refs,
    ) -> Option<(Dependency, Option<Expansion>)> {
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
        for (option, only) in [("code", "url"), ("process", "output_matches")] {
            if kind != only
                && let Some((l, _)) = f.get(option)
            {
                self.err(
                    *l,
                    format!("`{option}` only applies to `{only}` dependencies (in {owner})"),
                );
                ok = false;
            }
        }
        let field_what = |field: &str| format!("`{field}` in {place}");
        let mut expansion = None;
        let mut expand = |cx: &mut Ctx, field: &str, v: &Node| -> Option<String> {
            let raw = cx.string(v, &field_what(field))?;
            expansion = Some(Expansion {
                at: loc(v),
                context: format!("`{field}` of {place}"),
            });
            Some(raw)
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
                        refs.exited.push(ExitedRef {
                            name: name.clone(),
                            at_value: loc(value),
                            at_entry: at,
                            in_depends,
                        });
                    }
                    DependencyKind::ProcessExited { name }
                }),
            "output_matches" => self.output_matches(value, &f, kind_at, &place, in_depends, refs),
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
        let dependency = Dependency {
            kind,
            poll_interval,
            timeout,
            retry,
            location: at,
        };
        ok.then_some((dependency, expansion))
    }

    /// `output_matches: REGEX` with `process: NAME`: the regex is compiled here, once.
    fn output_matches(
        &mut self,
        value: &Node,
        f: &Fields<'_>,
        kind_at: Location,
        place: &str,
        in_depends: Option<bool>,
        refs: &mut Refs,
    ) -> Option<DependencyKind> {
        if in_depends == Some(false) {
            self.err(
                kind_at,
                format!(
                    "`output_matches` cannot be a watch check (it waits for one line at start-up), in {place}"
                ),
            );
            return None;
        }
        let pattern = self.string(value, &format!("`output_matches` in {place}"));
        let process = match f.get("process") {
            None => {
                self.err(
                    kind_at,
                    format!(
                        "`output_matches` {place} needs `process: NAME` (whose output to watch)"
                    ),
                );
                None
            }
            Some((_, v)) => self.string(v, &format!("`process` in {place}")),
        };
        if let (Some(name), Some((_, v))) = (&process, f.get("process"))
            && in_depends.is_some()
        {
            refs.outputs.push((name.clone(), loc(v)));
        }
        let regex = match regex::Regex::new(&pattern?) {
            Ok(regex) => Some(regex),
            Err(e) => {
                let first = e.to_string();
                let reason = first.lines().last().unwrap_or("").trim().to_owned();
                self.err(
                    loc(value),
                    format!("invalid regular expression in `output_matches` of {place}: {reason}"),
                );
                None
            }
        };
        Some(DependencyKind::OutputMatches {
            process: process?,
            regex: regex?,
        })
    }

    pub(super) fn watch(
        &mut self,
        n: &Node,
        index: usize,
        process: &str,
        owner: &str,
        refs: &mut Refs,
    ) -> Option<(Watch, Location, Option<Expansion>)> {
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
            Some((_, v)) => self.dependency(v, &what, Some(false), refs),
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
        let expected = "`shutdown`, `log`, `debug`, `restart` or `spawn: PROCESS`";
        let on_fail = match f.get("on_fail") {
            None => Some(OnFail::Shutdown),
            Some((_, v)) => match v {
                // 0.12's `debug` pauses for an interactive confirmation before shutting down;
                // that pause belongs to the `--debug` flag here, so the action itself is a shutdown.
                Node::Scalar(s) if matches!(s.as_str(), "shutdown" | "debug") => {
                    Some(OnFail::Shutdown)
                }
                Node::Scalar(s) if s.as_str() == "log" => Some(OnFail::Log),
                Node::Scalar(s) if s.as_str() == "restart" => Some(OnFail::Restart),
                Node::Mapping(sm) if sm.len() == 1 && sm.get_node("spawn").is_some() => {
                    let target = sm.get_node("spawn")?;
                    let t = self.string(target, &format!("`spawn` in {what}"))?;
                    refs.spawns.push((t.clone(), loc(target), name.clone()));
                    Some(OnFail::Spawn(t))
                }
                other => {
                    let got = match other {
                        Node::Scalar(s) => format!(
                            "`{}`{}",
                            s.as_str(),
                            suggest(s.as_str(), ["shutdown", "log", "debug", "restart"])
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
        let (check, expansion) = check?;
        let watch = Watch {
            name,
            check,
            initial_delay,
            poll_interval,
            failure_threshold,
            on_fail: on_fail?,
        };
        ok.then_some((watch, name_at, expansion))
    }
}
