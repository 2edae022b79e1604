//! Typed field readers on [`Ctx`] (mapping, list, string, boolean, integer, duration), the
//! unknown-key check with "did you mean" suggestions, and value descriptions for messages.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};

use super::Ctx;
use super::yaml::{loc, span_loc};
use crate::config::model::Location;

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
pub(crate) fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
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

pub(super) fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

pub(super) fn describe(n: &Node) -> String {
    match n {
        Node::Scalar(s) if is_null(s) => "nothing".to_string(),
        Node::Scalar(s) if !s.may_coerce() => format!("the quoted string `\"{}\"`", s.as_str()),
        Node::Scalar(s) => format!("`{}`", s.as_str()),
        Node::Mapping(_) => "a mapping".to_string(),
        Node::Sequence(_) => "a list".to_string(),
    }
}

pub(crate) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The recognised fields of one mapping, by name, with the key's location.
pub(super) type Fields<'n> = BTreeMap<&'n str, (Location, &'n Node)>;

impl Ctx {
    /// Splits a mapping into known fields, reporting unknown ones.
    pub(super) fn fields<'n>(
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

    pub(super) fn mapping<'n>(
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

    pub(super) fn sequence<'n>(
        &mut self,
        n: &'n Node,
        what: &str,
    ) -> Option<&'n MarkedSequenceNode> {
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

    pub(super) fn string(&mut self, n: &Node, what: &str) -> Option<String> {
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

    pub(super) fn boolean(&mut self, n: &Node, what: &str) -> Option<bool> {
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

    pub(super) fn integer<T: FromStr>(
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
    pub(super) fn duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
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
}
