//! Cross-process checks after every entry is parsed: `process_exited` and `spawn` targets,
//! template references' rules, and dependency cycles.

use std::collections::{BTreeSet, HashMap};

use super::fields::suggest;
use super::{Ctx, Parsed};

pub(super) fn check_cross_references(parsed: &[Parsed], names: &BTreeSet<&str>, cx: &mut Ctx) {
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
