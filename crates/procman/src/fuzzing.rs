//! Entry points for the fuzz targets (`fuzz/`) and the property tests: thin wrappers around
//! parsers that are otherwise internal. Not part of procman's API; it may change at any time.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{self, Config, ConfigError, Format, LoadOptions};
use crate::control::{fifo, lines};
use crate::protocol::Message;

/// Loads Procfile `text` as if it were the file `display_path` in `dir`, as
/// [`config::parse_str`] does for YAML (no `.env`, an empty file accepted).
pub fn load_procfile(text: &str, display_path: &Path, dir: &Path) -> Result<Config, ConfigError> {
    let options = LoadOptions {
        no_dotenv: true,
        allow_empty: true,
        ..LoadOptions::default()
    };
    config::pipeline(text, Format::Procfile, display_path, dir, &options)
}

/// An environment file's variables, in file order.
pub type EnvVars = Vec<(String, String)>;

/// An environment file's malformed lines, as `(line, message)`.
pub type EnvErrors = Vec<(usize, String)>;

/// The `KEY=VALUE` pairs of an environment file's `text`, or each malformed line.
pub fn parse_env_file(text: &str) -> Result<EnvVars, EnvErrors> {
    config::envfile::parse(text)
        .map_err(|errors| errors.into_iter().map(|e| (e.line, e.message)).collect())
}

/// `${VAR}` expansion as applied to `env` values (`$VAR` without braces stays literal).
pub fn expand_braced(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    config::expand_braced(s, env)
}

/// The messages for the `${{ … }}` occurrences of `s` that are not `${{ process.KEY }}`.
pub fn malformed_templates(s: &str) -> Vec<String> {
    config::template::malformed(s)
}

/// What the control channels make of a byte stream read in `chunks`: each complete line
/// (`Some`), `None` for each line discarded as longer than
/// [`MAX_LINE`](crate::protocol::MAX_LINE), then the unterminated last line at end of stream.
pub fn split_lines<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Option<Vec<u8>>>, Option<Vec<u8>>) {
    let mut splitter = lines::LineSplitter::default();
    let mut pieces = Vec::new();
    for chunk in chunks {
        splitter.push(chunk, &mut pieces);
    }
    let lines = pieces
        .into_iter()
        .map(|piece| match piece {
            lines::Piece::Line(line) => Some(line),
            lines::Piece::TooLong => None,
        })
        .collect();
    (lines, splitter.take_partial())
}

/// The FIFO's reading of one line: the message; or the error and, when a dead writer's
/// fragment was glued before a complete message, that message too.
pub fn recover_fifo_line(line: &[u8]) -> Vec<Result<Message, String>> {
    fifo::recover(line)
}

/// What the server makes of a FIFO stream read in `chunks`: each request, or the error in
/// its place, in order.
pub fn fifo_requests<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Result<Message, String>> {
    let mut splitter = lines::LineSplitter::default();
    chunks
        .into_iter()
        .flat_map(|chunk| fifo::requests(&mut splitter, chunk))
        .collect()
}

/// Panics unless `result` is a well-formed answer of the loader for config `text`: a config
/// whose processes have distinct names, or an error whose every problem has a message and,
/// when it is in the config itself, a position inside `text` (line ≥ 1, column ≥ 1).
///
/// Lines end at `\n` (a `\r` before it dropped). The YAML scanner also ends a line at a lone
/// `\r` in some places and not in others, so in YAML a position that is inside the text
/// either way is accepted.
pub fn assert_well_formed(text: &str, format: Format, result: &Result<Config, ConfigError>) {
    match result {
        Ok(config) => {
            let mut names: Vec<&str> = config.processes.iter().map(|p| p.name.as_str()).collect();
            names.sort_unstable();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count, "duplicate process names: {names:?}");
        }
        Err(error) => {
            let shown = error.to_string();
            assert!(shown.contains("error: "), "{shown}");
            if let ConfigError::Invalid { diagnostics, .. } = error {
                assert!(!diagnostics.is_empty(), "an invalid config with no problem");
                let lines: Vec<&str> = text.split('\n').collect();
                let yaml_lines: Vec<&str> = match format {
                    Format::Yaml => text
                        .split("\r\n")
                        .flat_map(|l| l.split(['\r', '\n']))
                        .collect(),
                    Format::Procfile => Vec::new(),
                };
                let inside = |lines: &[&str], line: usize, column: usize| {
                    line >= 1
                        && lines.get(line - 1).is_some_and(|l| {
                            let l = l.strip_suffix('\r').unwrap_or(l);
                            (1..=l.chars().count() + 1).contains(&column)
                        })
                };
                for d in diagnostics.iter() {
                    assert!(!d.message.trim().is_empty(), "{d:?}");
                    if d.file.is_none() {
                        assert!(
                            inside(&lines, d.line, d.column)
                                || inside(&yaml_lines, d.line, d.column),
                            "position out of the text: {d:?}"
                        );
                    }
                }
            }
        }
    }
}
