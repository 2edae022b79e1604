//! The process names of a run: their ids, colours and the width of the name column.

use std::collections::HashMap;
use std::sync::Arc;

use unicode_width::UnicodeWidthChar;

use super::SUPERVISOR;

/// The id of the supervisor's own name.
pub(crate) const SUPERVISOR_ID: usize = 0;

/// Widest name column, in terminal columns; longer names are shortened in the column only.
pub(crate) const WIDTH_CAP: usize = 24;

/// Names in the order they were registered; the supervisor's is id 0.
pub(crate) struct Names {
    ids: HashMap<Arc<str>, usize>,
    names: Vec<Arc<str>>,
    widest: usize,
    /// Fixed at the first line shown; later names never widen it.
    width: Option<usize>,
}

impl Names {
    pub(crate) fn new() -> Names {
        let mut names = Names {
            ids: HashMap::new(),
            names: Vec::new(),
            widest: 0,
            width: None,
        };
        names.add(SUPERVISOR);
        names
    }

    pub(crate) fn get(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }

    /// Adds a name that is not registered yet; widens the column until it is fixed.
    pub(crate) fn add(&mut self, name: &str) -> usize {
        let id = self.names.len();
        let name: Arc<str> = name.into();
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, id);
        if self.width.is_none() {
            self.widest = self.widest.max(columns(&self.names[id]));
        }
        id
    }

    pub(crate) fn name(&self, id: usize) -> &Arc<str> {
        &self.names[id]
    }

    /// Every name with its id, in registration order.
    pub(crate) fn all(&self) -> impl Iterator<Item = (usize, Arc<str>)> + '_ {
        self.names.iter().cloned().enumerate()
    }

    /// The colour index of a name: registration order, the supervisor has none (bold).
    pub(crate) fn color(id: usize) -> Option<usize> {
        id.checked_sub(1)
    }

    /// Fixes the width of the name column (the widest name so far, capped) and returns it.
    pub(crate) fn fix_width(&mut self) -> usize {
        *self.width.get_or_insert(self.widest.min(WIDTH_CAP))
    }
}

/// Terminal columns `name` takes in the name column (a wide character takes two, a
/// combining mark none, a control character the one of its `?`).
pub(crate) fn columns(name: &str) -> usize {
    name.chars().map(char_columns).sum()
}

fn char_columns(c: char) -> usize {
    if c.is_control() {
        1
    } else {
        c.width().unwrap_or(0)
    }
}

/// `name` as shown in a column of `width` terminal columns, right-aligned: control
/// characters become `?` (a name cannot break a line) and a longer name loses its middle
/// to `…`, keeping the end that tells `worker-1` from `worker-2`.
pub(crate) fn label(name: &str, width: usize) -> String {
    let clean: Vec<char> = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let total = columns_of(&clean);
    let (shown, used) = if total <= width {
        (clean.into_iter().collect(), total)
    } else {
        let kept = width.saturating_sub(1);
        let tail = fitting(clean.iter().rev(), kept / 2);
        let head = fitting(
            clean.iter(),
            kept - columns_of(&clean[clean.len() - tail..]),
        );
        let mut short: String = clean[..head].iter().collect();
        short.push('…');
        short.extend(&clean[clean.len() - tail..]);
        let used = columns_of(&clean[..head]) + 1 + columns_of(&clean[clean.len() - tail..]);
        (short, used)
    };
    format!("{}{shown}", " ".repeat(width.saturating_sub(used)))
}

fn columns_of(chars: &[char]) -> usize {
    chars.iter().map(|&c| char_columns(c)).sum()
}

/// How many of `chars` fit in `width` columns.
fn fitting<'a>(chars: impl Iterator<Item = &'a char>, width: usize) -> usize {
    let mut used = 0;
    chars
        .take_while(|&&c| {
            used += char_columns(c);
            used <= width
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_is_fixed_and_capped() {
        let mut names = Names::new();
        names.add("web");
        assert_eq!(names.fix_width(), SUPERVISOR.len());
        names.add("a-much-longer-runtime-name");
        assert_eq!(names.fix_width(), SUPERVISOR.len());

        let mut names = Names::new();
        names.add(&"x".repeat(10_000));
        assert_eq!(names.fix_width(), WIDTH_CAP);
    }

    #[test]
    fn labels() {
        assert_eq!(label("web", 7), "    web");
        assert_eq!(label("a\nb", 3), "a?b");
        assert_eq!(label("postgres-replica", 8), "post…ica");
        assert_eq!(label("worker-12", 7), "wor…-12");
        assert_eq!(label("ünïcödé-name", 8), "ünïc…ame");
        assert_eq!(label("abc", 1), "…");
    }

    #[test]
    fn wide_and_combining_names_keep_the_column() {
        // Five CJK characters take ten columns, `e` + U+0301 one.
        assert_eq!(label("数据库服务", 12), "  数据库服务");
        assert_eq!(label("e\u{301}e\u{301}", 4), "  e\u{301}e\u{301}");
        // Shortened to the columns, never past them (a wide character does not split).
        let short = label("数据库服务数据库服务", 8);
        assert_eq!(short, " 数据…务");
        assert_eq!(columns(&short), 8);
        let mut names = Names::new();
        names.add("数据库服务");
        assert_eq!(names.fix_width(), 10);
    }

    #[test]
    fn colours_follow_registration_order() {
        assert_eq!(Names::color(SUPERVISOR_ID), None);
        assert_eq!(Names::color(1), Some(0));
        assert_eq!(Names::color(11), Some(10));
    }
}
