//! `for_each`: one instance per glob match, `name-0`, `name-1`, … in sorted order.

use std::path::PathBuf;

use crate::config::{self, Config, ProcessSpec};

/// Expands `for_each` into instances `name-0`, `name-1`, … (sorted glob matches).
pub(super) fn expand(config: &Config, spec: &ProcessSpec) -> Result<Vec<ProcessSpec>, String> {
    let Some(for_each) = &spec.for_each else {
        return Ok(vec![spec.clone()]);
    };
    let pattern = if std::path::Path::new(&for_each.glob).is_absolute() {
        for_each.glob.clone()
    } else {
        config
            .dir
            .join(&for_each.glob)
            .to_string_lossy()
            .into_owned()
    };
    let mut matches: Vec<String> = glob::glob(&pattern)
        .map_err(|e| format!("{}: invalid for_each glob {pattern:?}: {e}", spec.name))?
        .filter_map(Result::ok)
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    matches.sort();
    if matches.is_empty() {
        return Err(format!(
            "{}: for_each glob {pattern:?} matched no files",
            spec.name
        ));
    }
    let var = &for_each.var;
    Ok(matches
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let mut instance = spec.clone();
            instance.name = spec.name.with_suffix('-', i);
            instance.group = Some(spec.name.clone());
            instance.for_each = None;
            instance.run = substitute_var(&instance.run, var, &path);
            for dependency in instance
                .depends
                .iter_mut()
                .chain(instance.watch.iter_mut().map(|w| &mut w.check))
            {
                substitute_in(&mut dependency.kind, var, &path);
            }
            instance.env.insert(var.clone(), path.clone());
            instance
        })
        .collect())
}

/// Replaces `$var` and `${var}` in `text` with `value`.
fn substitute_var(text: &str, var: &str, value: &str) -> String {
    text.replace(&format!("${{{var}}}"), value)
        .replace(&format!("${var}"), value)
}

/// Substitutes `var` in every text field of a dependency (for `for_each` instances,
/// whose dependencies may name the instance's file as `${VAR}`).
fn substitute_in(kind: &mut config::DependencyKind, var: &str, value: &str) {
    use config::DependencyKind::*;
    let substitute = |text: &str| substitute_var(text, var, value);
    let path = |p: &mut PathBuf| *p = PathBuf::from(substitute(&p.to_string_lossy()));
    match kind {
        Http { url, .. } => *url = substitute(url),
        Tcp { address } | NotListening { address } => *address = substitute(address),
        PathExists { path: p } | NotExists { path: p } | FileContains { path: p, .. } => path(p),
        NotRunning { pattern } => *pattern = substitute(pattern),
        ProcessExited { .. } => {}
    }
}
