//! `procman.yaml` (or a Procfile): the typed model and the loader that produces it.
//!
//! The loader is a pipeline, as process-compose's is (mutators, then validators):
//!
//! 1. **read** ([`source`]): the CONFIG must be a regular file (a FIFO, socket, directory
//!    or device is named as such, and never opened or blocked on), UTF-8;
//! 2. **environment**: `.env` beside the config and `--env-file` files ([`envfile`]),
//!    then `-e` flags, over the inherited environment;
//! 3. **parse** ([`parse`] for YAML, [`procfile`]): text → one draft per process, as
//!    written, each problem at `file:line:col`;
//! 4. **mutate** ([`mutate`]): paths, `env_file`s, `for_each` and `replicas` instances,
//!    variable expansion;
//! 5. **validate** ([`validate`]): unique names, references, cycles, at least one process.
//!
//! Every stage runs even when an earlier one found problems, so one run reports them all.
//! [`load`] is the one entry point of `check`, `run` and `serve`: they agree on every input.

mod draft;
pub(crate) mod envfile;
mod error;
mod expand;
mod model;
mod mutate;
mod parse;
mod procfile;
pub mod schema;
mod source;
pub mod template;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, Diagnostic};
pub(crate) use expand::expand_braced;
pub use expand::expand_vars;
pub use model::*;
pub use mutate::REPLICA_VAR;
pub use parse::parse_dependencies_json;
pub(crate) use parse::suggest;
pub use source::{Format, default_path};
pub(crate) use source::{ReadError, read_text};

use draft::Ctx;

/// What the command line adds to a config.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `-e KEY=VALUE` flags.
    pub env: BTreeMap<String, String>,
    /// `--env-file FILE` flags, in order (relative to the working directory).
    pub env_files: Vec<PathBuf>,
    /// `--no-dotenv`: do not read `.env` beside the config.
    pub no_dotenv: bool,
    /// For `serve`: a config without processes is valid (they arrive with `procman start`).
    pub allow_empty: bool,
}

/// Loads and validates the config at `path` (YAML, or a Procfile when it is named
/// `Procfile` or `*.procfile`). Messages show `path` as given; [`Config::path`] is canonical.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Config, ConfigError> {
    let text = source::read_text(path).map_err(|e| read_error(path, e))?;
    let canonical = std::fs::canonicalize(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let dir = canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut config = pipeline(&text, Format::of(path), path, &dir, options)?;
    config.path = canonical;
    Ok(config)
}

/// Loads YAML `text` as if it were a file in `dir`, with `-e` flags `extra_env` and no
/// `.env`; an empty config is accepted. For tests and tools: `display_path` prefixes every
/// message and becomes [`Config::path`].
pub fn parse_str(
    text: &str,
    display_path: &Path,
    dir: &Path,
    extra_env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let options = LoadOptions {
        env: extra_env.clone(),
        no_dotenv: true,
        allow_empty: true,
        ..LoadOptions::default()
    };
    pipeline(text, Format::Yaml, display_path, dir, &options)
}

pub(crate) fn pipeline(
    text: &str,
    format: Format,
    display_path: &Path,
    dir: &Path,
    options: &LoadOptions,
) -> Result<Config, ConfigError> {
    let mut cx = Ctx::default();
    let (env_files, file_env) = global_env_files(display_path, dir, options, &mut cx);
    let mut base_env: BTreeMap<String, String> = std::env::vars().collect();
    base_env.extend(file_env.clone());
    base_env.extend(options.env.clone());

    let (drafts, keys) = match format {
        Format::Yaml => parse::yaml(text, &mut cx),
        Format::Procfile => procfile::parse(text, &mut cx),
    };
    let relative_values = std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .is_ok_and(|cwd| cwd == dir);
    let shown_dir = display_path.parent().unwrap_or(Path::new(""));
    let setting = mutate::Setting {
        dir,
        shown_dir,
        base_env: &base_env,
        relative_values,
    };
    let processes = mutate::apply(&drafts, &setting, &mut cx);
    validate::check(&drafts, &keys, &processes, &mut cx);
    if cx.diags.is_empty() && processes.is_empty() && !options.allow_empty {
        cx.err(
            model::Location { line: 1, column: 1 },
            match format {
                Format::Yaml => "the config defines no processes; add one, e.g. `web: {run: python3 -m http.server 8000}` (only `procman serve` runs with none, adding them with `procman start`)",
                Format::Procfile => "the Procfile defines no processes; add a line such as `web: python3 -m http.server 8000`",
            },
        );
    }
    if !cx.diags.is_empty() {
        let mut diagnostics = cx.diags;
        if matches!(format, Format::Yaml) {
            for d in diagnostics.iter_mut().filter(|d| d.file.is_none()) {
                let at = parse::within(
                    text,
                    model::Location {
                        line: d.line,
                        column: d.column,
                    },
                );
                (d.line, d.column) = (at.line, at.column);
            }
        }
        diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        diagnostics.dedup();
        return Err(ConfigError::Invalid {
            display_path: display_path.to_path_buf(),
            diagnostics,
        });
    }
    Ok(Config {
        path: display_path.to_path_buf(),
        dir: dir.to_path_buf(),
        env_files,
        file_env,
        processes,
    })
}

/// `.env` beside the config (unless `--no-dotenv`; a missing one is fine), then each
/// `--env-file` (which must exist): the files read and what they define.
fn global_env_files(
    display_path: &Path,
    dir: &Path,
    options: &LoadOptions,
    cx: &mut Ctx,
) -> (Vec<PathBuf>, BTreeMap<String, String>) {
    let mut files = Vec::new();
    let dotenv = dir.join(".env");
    if !options.no_dotenv && dotenv.symlink_metadata().is_ok() {
        files.push((dotenv, display_path.with_file_name(".env")));
    }
    files.extend(options.env_files.iter().map(|f| (f.clone(), f.clone())));
    let mut read = Vec::new();
    let mut env = BTreeMap::new();
    for (file, shown) in files {
        match mutate::read_env_file(&file) {
            Ok(pairs) => env.extend(pairs),
            Err(mutate::EnvFileError::Read(e)) => cx.err_in(
                shown.clone(),
                0,
                format!("cannot read this environment file: {e}"),
            ),
            Err(mutate::EnvFileError::Lines(errors)) => {
                for e in errors {
                    cx.err_in(shown.clone(), e.line, e.message);
                }
            }
        }
        read.push(std::path::absolute(&file).unwrap_or(file));
    }
    (read, env)
}

fn read_error(path: &Path, e: ReadError) -> ConfigError {
    let path = path.to_path_buf();
    match e {
        ReadError::NotFound => ConfigError::NotFound { path },
        ReadError::NotAFile(kind) => ConfigError::NotAFile { path, kind },
        ReadError::TooLarge => ConfigError::TooLarge {
            path,
            limit: source::MAX_SIZE,
        },
        ReadError::Unreadable(e) => ConfigError::Unreadable {
            path,
            reason: e.to_string(),
        },
        ReadError::NotUtf8(offset) => ConfigError::NotUtf8 { path, offset },
    }
}
