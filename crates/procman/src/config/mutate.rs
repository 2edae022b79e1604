//! The loader's second stage: from each [`Draft`] as written to the processes the
//! supervisor runs. In order, per process:
//!
//! 1. paths: `cwd` and `env_file` resolve against the config's directory;
//! 2. environment files: each `env_file` is read (errors at `file:line`);
//! 3. instances: a `for_each` template becomes one instance per glob match, a `replicas: N`
//!    template N instances, `name-0`, `name-1`, … (`group` names the template);
//! 4. expansion: `${VAR}` in `env` values, in file order, against what is defined below
//!    them; then `$VAR` in dependency fields against the process's whole environment.
//!
//! An instance's value (its matched path, `PROCMAN_REPLICA`) reaches `run` only through the
//! environment; only dependency fields, which no shell reads, get it substituted as text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::draft::{Ctx, Draft};
use super::envfile;
use super::expand::{expand_braced, expand_vars};
use super::model::*;
use super::source::{self, ReadError};

/// What the mutators need beyond the drafts.
pub(super) struct Setting<'a> {
    /// The config's directory (canonical).
    pub dir: &'a Path,
    /// The config's directory as the user named it, for messages about files in it.
    pub shown_dir: &'a Path,
    /// What every process inherits before its own layers: the inherited environment, the
    /// global environment files, `-e` flags.
    pub base_env: &'a BTreeMap<String, String>,
    /// The config's directory is the working directory, so `for_each` values may stay
    /// relative (as procman 0.12 gives them).
    pub relative_values: bool,
}

/// The variable every replica gets: its index.
pub const REPLICA_VAR: &str = "PROCMAN_REPLICA";

/// Every process of `drafts`, mutated, in order.
pub(super) fn apply(drafts: &[Draft], setting: &Setting<'_>, cx: &mut Ctx) -> Vec<ProcessSpec> {
    let mut processes = Vec::new();
    for draft in drafts {
        let mut template = draft.spec.clone();
        resolve_paths(&mut template, setting.dir);
        template.file_env = read_env_files(draft, &template.env_files, setting.shown_dir, cx);
        for mut instance in instances(draft, &template, setting, cx) {
            expand(draft, &mut instance, setting.base_env, cx);
            processes.push(instance);
        }
    }
    processes
}

fn resolve_paths(spec: &mut ProcessSpec, dir: &Path) {
    if let Some(cwd) = &mut spec.cwd {
        *cwd = dir.join(&cwd);
    }
    for file in &mut spec.env_files {
        *file = dir.join(&file);
    }
}

/// Reads a process's environment files in order (a later one wins); problems go to `cx`,
/// located at the `env_file` entry or at the file's own line (shown under `shown_dir`).
fn read_env_files(
    draft: &Draft,
    files: &[PathBuf],
    shown_dir: &Path,
    cx: &mut Ctx,
) -> BTreeMap<String, String> {
    let owner = format!("process `{}`", draft.spec.name);
    let mut env = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let at = draft.env_files_at.get(i).copied().unwrap_or_default();
        let written = draft.spec.env_files.get(i).unwrap_or(file);
        match read_env_file(file) {
            Ok(pairs) => env.extend(pairs),
            Err(EnvFileError::Read(e)) => cx.err(
                at,
                format!(
                    "cannot read `env_file` {} of {owner}: {e}",
                    written.display()
                ),
            ),
            Err(EnvFileError::Lines(errors)) => {
                for e in errors {
                    cx.err_in(shown_dir.join(written), e.line, e.message);
                }
            }
        }
    }
    env
}

/// Why an environment file gave no variables.
pub(super) enum EnvFileError {
    Read(ReadError),
    Lines(Vec<envfile::LineError>),
}

/// The variables of one environment file.
pub(super) fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = source::read_text(path).map_err(EnvFileError::Read)?;
    envfile::parse(&text).map_err(EnvFileError::Lines)
}

/// The template itself, or its instances.
fn instances(
    draft: &Draft,
    template: &ProcessSpec,
    setting: &Setting<'_>,
    cx: &mut Ctx,
) -> Vec<ProcessSpec> {
    let values: Vec<(String, String)> = if let Some(fe) = &template.for_each {
        matches(fe, template, setting)
            .unwrap_or_else(|problem| {
                cx.err(draft.for_each_at, problem);
                Vec::new()
            })
            .into_iter()
            .map(|value| (fe.var.clone(), value))
            .collect()
    } else if let Some((count, _)) = draft.replicas {
        (0..count)
            .map(|i| (REPLICA_VAR.to_owned(), i.to_string()))
            .collect()
    } else {
        return vec![template.clone()];
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, (var, value))| {
            let mut instance = template.clone();
            instance.name = template.name.with_suffix('-', i);
            instance.group = Some(template.name.clone());
            instance.replicas = draft.replicas.map(|(count, _)| count);
            instance.instance_env.insert(var, value);
            instance
        })
        .collect()
}

/// The sorted matches of a `for_each` glob: relative paths (as procman 0.12 gives them)
/// when the process runs in the config's directory and that is the working directory,
/// absolute ones otherwise.
fn matches(fe: &ForEach, spec: &ProcessSpec, setting: &Setting<'_>) -> Result<Vec<String>, String> {
    let runs_in_dir = spec
        .cwd
        .as_deref()
        .is_none_or(|cwd| std::fs::canonicalize(cwd).is_ok_and(|cwd| cwd == setting.dir));
    let pattern = if Path::new(&fe.glob).is_absolute() || (setting.relative_values && runs_in_dir) {
        fe.glob.clone()
    } else {
        let dir = glob::Pattern::escape(&setting.dir.to_string_lossy());
        format!("{}/{}", dir.trim_end_matches('/'), fe.glob)
    };
    let what = format!("`for_each` glob `{}` of process `{}`", fe.glob, spec.name);
    let paths = glob::glob(&pattern).map_err(|e| format!("invalid {what}: {e}"))?;
    refuse_symlink_loops(&pattern, &what)?;
    let mut values = Vec::new();
    for path in paths {
        let path = path.map_err(|e| {
            format!(
                "{what} cannot look into {}: {}; fix its permissions or narrow the pattern",
                e.path().display(),
                e.error()
            )
        })?;
        let value = path.into_os_string().into_string().map_err(|path| {
            format!(
                "{what} matched {}, whose name is not valid UTF-8; rename it or narrow the pattern",
                Path::new(&path).display()
            )
        })?;
        values.push(value);
    }
    values.sort();
    if values.is_empty() {
        return Err(format!(
            "{what} matched no files (looked for {pattern}); add files or fix the pattern"
        ));
    }
    Ok(values)
}

/// Refuses a `**` pattern whose tree holds a symlink loop: the glob crate follows links
/// below `**` without noticing loops, so two links back to their parent make it walk
/// 2^40 paths (until the kernel's limit of 40 links per path). The tree below each
/// directory the part before `**` matches is walked once, with walkdir's loop check.
fn refuse_symlink_loops(pattern: &str, what: &str) -> Result<(), String> {
    let Some(at) = pattern.find("**") else {
        return Ok(());
    };
    let head = &pattern[..at];
    let roots: Vec<PathBuf> = if head.is_empty() || head == "/" {
        vec![PathBuf::from(if head.is_empty() { "." } else { "/" })]
    } else {
        glob::glob(head.trim_end_matches('/'))
            .map(|paths| paths.filter_map(Result::ok).collect())
            .unwrap_or_default()
    };
    for root in roots {
        for entry in walkdir::WalkDir::new(&root).follow_links(true) {
            if let Err(e) = entry
                && let Some(ancestor) = e.loop_ancestor()
            {
                return Err(format!(
                    "{what} would follow the symlink loop {} (back to {}) without end; remove the link or narrow the pattern",
                    e.path().unwrap_or(&root).display(),
                    ancestor.display()
                ));
            }
        }
    }
    Ok(())
}

/// `${VAR}` in `env` values, then `$VAR` in dependency fields.
fn expand(draft: &Draft, spec: &mut ProcessSpec, base: &BTreeMap<String, String>, cx: &mut Ctx) {
    let owner = format!("process `{}`", draft.spec.name);
    let mut defined = base.clone();
    defined.extend(spec.file_env.clone());
    defined.extend(spec.instance_env.clone());
    for (key, at) in &draft.env_order {
        let Some(value) = spec.env.get_mut(key) else {
            continue;
        };
        match expand_braced(value, &defined) {
            Ok(expanded) => *value = expanded,
            Err(e) => cx.err(*at, format!("{e} in `env` `{key}` of {owner}")),
        }
        if !spec.instance_env.contains_key(key) {
            defined.insert(key.clone(), value.clone());
        }
    }
    let kinds = spec
        .depends
        .iter_mut()
        .map(|d| &mut d.kind)
        .chain(spec.watch.iter_mut().map(|w| &mut w.check.kind));
    for (kind, expansion) in kinds.zip(&draft.expansions) {
        if let Some(x) = expansion
            && let Err(e) = expand_dependency(kind, &defined)
        {
            cx.err(x.at, format!("{e} in {}", x.context));
        }
    }
}

/// Expands `$VAR` in the one text field of `kind` that takes it (`url`, `tcp`, paths, …).
pub(super) fn expand_dependency(
    kind: &mut DependencyKind,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    use DependencyKind::*;
    let text = |s: &mut String| expand_vars(s, env).map(|v| *s = v);
    let path = |p: &mut PathBuf| expand_vars(&p.to_string_lossy(), env).map(|v| *p = v.into());
    match kind {
        Http { url, .. } => text(url),
        Tcp { address } | NotListening { address } => text(address),
        PathExists { path: p } | NotExists { path: p } | FileContains { path: p, .. } => path(p),
        NotRunning { pattern } => text(pattern),
        ProcessExited { .. } | OutputMatches { .. } => Ok(()),
    }
}
