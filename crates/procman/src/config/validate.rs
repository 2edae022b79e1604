//! The loader's last stage: checks across processes, once every process is parsed and
//! mutated. Names are unique (instances included); `process_exited`, `output_matches` and
//! `spawn` targets exist and suit; template references follow their rules; dependencies
//! have no cycle.
//!
//! A reference may name a top-level process, a `for_each`/`replicas` template (the whole
//! group) or one instance; checks on an instance apply to its template.

use std::collections::{BTreeSet, HashMap};

use super::draft::{Ctx, Draft};
use super::model::ProcessSpec;
use super::parse::suggest;

/// Runs every check. `keys` are every top-level name as written (a process whose entry
/// is broken is still a name others may refer to); `processes` are the mutated ones.
pub(super) fn check(drafts: &[Draft], keys: &[String], processes: &[ProcessSpec], cx: &mut Ctx) {
    check_unique_names(drafts, processes, cx);
    let mut by_name: HashMap<&str, &Draft> =
        drafts.iter().map(|d| (d.spec.name.as_str(), d)).collect();
    for p in processes {
        if let Some(group) = &p.group
            && let Some(template) = by_name.get(group.as_str()).copied()
        {
            by_name.entry(p.name.as_str()).or_insert(template);
        }
    }
    let mut names: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    names.extend(processes.iter().map(|p| p.name.as_str()));
    check_cross_references(drafts, &names, &by_name, cx);
}

/// An instance must not take the name of another process.
fn check_unique_names(drafts: &[Draft], processes: &[ProcessSpec], cx: &mut Ctx) {
    let mut seen: HashMap<&str, &ProcessSpec> = HashMap::new();
    for p in processes {
        let Some(first) = seen.get(p.name.as_str()).copied() else {
            seen.insert(p.name.as_str(), p);
            continue;
        };
        let (instance, other) = if p.group.is_some() {
            (p, first)
        } else {
            (first, p)
        };
        let Some(template) = &instance.group else {
            continue;
        };
        let at = drafts
            .iter()
            .find(|d| d.spec.name == *template)
            .map_or(instance.location, |d| d.spec.location);
        let how = if instance.replicas.is_some() {
            "replicas"
        } else {
            "for_each"
        };
        cx.err(
            at,
            format!(
                "instance `{}` of `{template}` ({how}) has the same name as process `{}` at line {}:{}; rename one of them",
                instance.name, other.name, other.location.line, other.location.column
            ),
        );
    }
}

fn check_cross_references(
    parsed: &[Draft],
    names: &BTreeSet<&str>,
    by_name: &HashMap<&str, &Draft>,
    cx: &mut Ctx,
) {
    for p in parsed {
        let me = &p.spec.name;
        for (target, at) in &p.outputs {
            if !names.contains(target.as_str()) {
                cx.err(
                    *at,
                    format!(
                        "process `{me}` waits for output of unknown process `{target}` (output_matches){}",
                        suggest(target, names.iter().copied())
                    ),
                );
            } else if by_name
                .get(target.as_str())
                .is_some_and(|t| t.spec.name == *me)
            {
                cx.err(
                    *at,
                    format!(
                        "process `{me}` waits for its own output (output_matches); it cannot print before it starts"
                    ),
                );
            }
        }
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
                    } else if reaches(p, target, by_name) == Some(false) {
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
    report_cycles(parsed, by_name, cx);
}

/// Whether `from` reaches `target` through `process_exited` dependencies; `None` when an
/// incompletely parsed process on the way makes the answer unknown.
fn reaches(from: &Draft, target: &str, by_name: &HashMap<&str, &Draft>) -> Option<bool> {
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

fn report_cycles(parsed: &[Draft], by_name: &HashMap<&str, &Draft>, cx: &mut Ctx) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'a>(
        p: &'a Draft,
        by_name: &HashMap<&str, &'a Draft>,
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
