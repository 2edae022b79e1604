//! Loading text into marked-yaml nodes: duplicate-key masking and reporting, the
//! single-document check, load-error messages, and node/span → [`Location`] helpers.

use marked_yaml::types::MarkedScalarNode;
use marked_yaml::{LoadError, LoaderOptions, Node, Span};

use super::Ctx;
use crate::config::model::Location;

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

pub(super) fn span_loc(span: &Span) -> Location {
    span.start().map(marker_loc).unwrap_or_default()
}

/// Where a node starts. A block mapping's own mark points past its first key, so a mapping is
/// located at its first key instead.
pub(super) fn loc(n: &Node) -> Location {
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
/// How much text the duplicate-key retries may parse again in all: each retry parses the
/// whole text twice, so without a bound a large file full of duplicates takes hours.
const MAX_REPARSED: usize = 2 << 20;

fn is_mask(c: char) -> bool {
    (MASK_BASE..MASK_BASE + MAX_MASKED).contains(&u32::from(c))
}

/// Loads the YAML tree, reporting every duplicate key.
///
/// marked-yaml stops at the first duplicate, so each one found is reported and then masked in
/// the source (its first character swapped for a private-use one, which keeps every position
/// intact) and the load retried; masked entries are dropped from the final tree, so the first
/// definition of a duplicated key is the one that is checked further. Past [`MAX_MASKED`]
/// duplicates or [`MAX_REPARSED`] bytes parsed again, the next duplicate is the last error.
pub(super) fn load_yaml(text: &str, cx: &mut Ctx) -> Option<Node> {
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
            Err(LoadError::DuplicateKey(dup)) => {
                report_duplicate(&current, &dup.prev_key, &dup.key, cx);
                if masked >= MAX_MASKED || masked as usize * text.len() > MAX_REPARSED {
                    return None;
                }
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

/// A position on a line of `text` (lines end at `\n`). The YAML scanner reads an implicit
/// line end after the text, so an error at the end of a file that does not end with `\n`
/// (or an empty value there, such as a last `- `) is marked on a line past its end; and it
/// also ends lines at a lone `\r`, which no editor does, so its column can lie past the end
/// of the line an editor shows. Such positions point at the end of that line instead.
pub(in crate::config) fn within(text: &str, at: Location) -> Location {
    let lines: Vec<&str> = text.split('\n').collect();
    let line = at.line.clamp(1, lines.len());
    let text_of = lines[line - 1]
        .strip_suffix('\r')
        .unwrap_or(lines[line - 1]);
    let end = text_of.chars().count() + 1;
    if line != at.line {
        return Location { line, column: end };
    }
    Location {
        line,
        column: at.column.clamp(1, end),
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
