//! The output pane's data: a bounded tail of lines per process plus one merged tail, where
//! the view of a tail stands (following its end, or fixed on one line), the search within
//! it, and how a line wraps into rows.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::rc::Rc;

use unicode_width::UnicodeWidthChar;

use crate::protocol::Timestamp;

use super::ansi::plain;

/// Lines kept per process, and bytes: whichever bound is reached first.
pub const PROCESS_LINES: usize = 10_000;
/// Bytes kept per process.
pub const PROCESS_BYTES: usize = 2 << 20;
/// Lines kept in the merged view (its entries are shared with the processes' tails).
pub const MERGED_LINES: usize = 10_000;
/// Bytes the merged view keeps alive.
pub const MERGED_BYTES: usize = 4 << 20;

/// One output line as the server sent it.
#[derive(Debug)]
pub struct Entry {
    /// The process (or `procman` for the supervisor).
    pub name: Rc<str>,
    /// When the server read it.
    pub time: Timestamp,
    /// The line, with the process's escape sequences.
    pub raw: String,
}

/// A bounded tail: the oldest lines go once either bound is passed. Lines are numbered
/// for good (`seq`), so a position survives older lines leaving.
#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<Rc<Entry>>,
    bytes: usize,
    first: u64,
    max_lines: usize,
    max_bytes: usize,
}

impl Tail {
    fn new(max_lines: usize, max_bytes: usize) -> Tail {
        Tail {
            lines: VecDeque::new(),
            bytes: 0,
            first: 0,
            max_lines,
            max_bytes,
        }
    }

    fn push(&mut self, entry: Rc<Entry>) {
        self.bytes += entry.raw.len();
        self.lines.push_back(entry);
        while self.lines.len() > self.max_lines
            || (self.bytes > self.max_bytes && self.lines.len() > 1)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.raw.len();
                self.first += 1;
            }
        }
    }

    /// The number of the oldest line kept.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// One past the number of the newest line.
    pub fn end(&self) -> u64 {
        self.first + self.lines.len() as u64
    }

    /// Lines kept.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes of text kept.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Line number `seq`, if it is kept.
    pub fn get(&self, seq: u64) -> Option<&Entry> {
        let index = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.lines.get(index).map(Rc::as_ref)
    }
}

/// Every process's tail and the merged one.
#[derive(Debug)]
pub struct Logs {
    by_name: HashMap<Rc<str>, Tail>,
    merged: Tail,
}

impl Default for Logs {
    fn default() -> Logs {
        Logs {
            by_name: HashMap::new(),
            merged: Tail::new(MERGED_LINES, MERGED_BYTES),
        }
    }
}

impl Logs {
    /// Adds one line of `name`.
    pub fn push(&mut self, name: &str, time: Timestamp, raw: String) {
        let key = match self.by_name.get_key_value(name) {
            Some((key, _)) => Rc::clone(key),
            None => {
                let key: Rc<str> = name.into();
                self.by_name
                    .insert(Rc::clone(&key), Tail::new(PROCESS_LINES, PROCESS_BYTES));
                key
            }
        };
        let entry = Rc::new(Entry {
            name: Rc::clone(&key),
            time,
            raw,
        });
        self.merged.push(Rc::clone(&entry));
        if let Some(tail) = self.by_name.get_mut(&key) {
            tail.push(entry);
        }
    }

    /// The newest line of all.
    pub fn newest(&self) -> Option<&Entry> {
        self.merged.get(self.merged.end().checked_sub(1)?)
    }

    /// The tail of `name`, or the merged one for `None`.
    pub fn tail(&self, name: Option<&str>) -> Option<&Tail> {
        match name {
            None => Some(&self.merged),
            Some(name) => self.by_name.get(name),
        }
    }
}

/// How lines wrap: `width` columns, the first row of a line after a `prefix` of that many
/// columns, continuation rows indented under it when there is room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Columns of the pane.
    pub width: usize,
    /// Columns taken by the name prefix (merged view), 0 otherwise.
    pub prefix: usize,
}

impl Geometry {
    /// Columns of indentation of continuation rows.
    pub fn indent(&self) -> usize {
        if self.width >= self.prefix + 10 {
            self.prefix
        } else {
            0
        }
    }

    /// Byte offsets where each row of `text` starts (at least one row).
    pub fn row_starts(&self, text: &str) -> Vec<usize> {
        let mut starts = vec![0];
        let mut room = self.width.saturating_sub(self.prefix).max(1);
        let rest = self.width.saturating_sub(self.indent()).max(1);
        let mut used = 0;
        for (at, c) in text.char_indices() {
            let w = c.width().unwrap_or(0);
            if used + w > room && used > 0 {
                starts.push(at);
                room = rest;
                used = 0;
            }
            used += w;
        }
        starts
    }

    /// How many rows `text` takes.
    pub fn rows(&self, text: &str) -> usize {
        self.row_starts(text).len()
    }
}

/// Where the view of a tail stands: following its end, or with line `bottom` at the
/// bottom of the pane.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Viewport {
    /// `None` follows the newest line.
    pub bottom: Option<u64>,
}

/// Lines to show, oldest first, and how many rows of the first one are cut off the top.
#[derive(Debug, Default, PartialEq)]
pub struct Visible {
    /// `(seq, rows)` of each line shown.
    pub lines: Vec<(u64, usize)>,
    /// Rows of the first line above the pane.
    pub skip: usize,
}

impl Viewport {
    /// The line at the bottom, if the tail has any.
    pub fn bottom_line(&self, tail: &Tail) -> Option<u64> {
        if tail.is_empty() {
            return None;
        }
        let last = tail.end() - 1;
        Some(self.bottom.map_or(last, |b| b.clamp(tail.first(), last)))
    }

    /// Whether the view follows new lines.
    pub fn following(&self) -> bool {
        self.bottom.is_none()
    }

    /// The lines that fill `height` rows up to the bottom line.
    pub fn visible(&self, tail: &Tail, geometry: Geometry, height: usize) -> Visible {
        let mut visible = Visible::default();
        let Some(mut seq) = self.bottom_line(tail) else {
            return visible;
        };
        let mut rows = 0;
        while rows < height {
            let Some(entry) = tail.get(seq) else { break };
            let n = geometry.rows(&plain(&entry.raw));
            visible.lines.push((seq, n));
            rows += n;
            if seq == tail.first() {
                break;
            }
            seq -= 1;
        }
        visible.lines.reverse();
        visible.skip = rows.saturating_sub(height);
        visible
    }

    /// One page back: the line at the top becomes the bottom one.
    pub fn page_up(&mut self, tail: &Tail, geometry: Geometry, height: usize) {
        let Some(bottom) = self.bottom_line(tail) else {
            return;
        };
        let top = self
            .visible(tail, geometry, height)
            .lines
            .first()
            .map_or(bottom, |&(seq, _)| seq);
        let target = if top == bottom {
            bottom.saturating_sub(1)
        } else {
            top
        };
        self.bottom = Some(target.max(tail.first()));
    }

    /// One page on: the line at the bottom becomes the top one; past the end, follow.
    pub fn page_down(&mut self, tail: &Tail, geometry: Geometry, height: usize) {
        let Some(bottom) = self.bottom_line(tail) else {
            return;
        };
        if self.bottom.is_none() {
            return;
        }
        let mut rows = 0;
        let mut seq = bottom;
        while seq + 1 < tail.end() {
            let Some(entry) = tail.get(seq) else { break };
            rows += geometry.rows(&plain(&entry.raw));
            if rows >= height {
                break;
            }
            seq += 1;
        }
        let target = seq.max(bottom + 1);
        self.bottom = (target + 1 < tail.end()).then_some(target);
    }

    /// Moves by `lines` (negative: back); reaching the end follows again.
    pub fn scroll(&mut self, tail: &Tail, lines: i64) {
        let Some(bottom) = self.bottom_line(tail) else {
            return;
        };
        if lines >= 0 && self.bottom.is_none() {
            return;
        }
        let target = bottom.saturating_add_signed(lines).max(tail.first());
        self.bottom = (target + 1 < tail.end()).then_some(target);
    }

    /// Back to the oldest line kept.
    pub fn oldest(&mut self, tail: &Tail) {
        if !tail.is_empty() {
            self.bottom = Some(tail.first());
        }
    }
}

/// A search in the pane: plain text, case-insensitive unless the query has a capital.
#[derive(Debug, Clone)]
pub struct Search {
    /// What was typed.
    pub query: String,
    pattern: regex::Regex,
    /// The line of the current match.
    pub current: Option<u64>,
}

impl Search {
    /// A search for `query`; `None` for an empty one.
    pub fn new(query: &str) -> Option<Search> {
        if query.is_empty() {
            return None;
        }
        let ignore_case = !query.chars().any(char::is_uppercase);
        let pattern = regex::RegexBuilder::new(&regex::escape(query))
            .case_insensitive(ignore_case)
            .build()
            .ok()?;
        Some(Search {
            query: query.to_owned(),
            pattern,
            current: None,
        })
    }

    /// Byte ranges of the matches in `text`.
    pub fn matches(&self, text: &str) -> Vec<Range<usize>> {
        self.pattern.find_iter(text).map(|m| m.range()).collect()
    }

    /// The nearest matching line from `from` (included) going back (`older`) or on.
    pub fn find(&self, tail: &Tail, from: u64, older: bool) -> Option<u64> {
        let hit = |seq: &u64| {
            tail.get(*seq)
                .is_some_and(|e| self.pattern.is_match(&plain(&e.raw)))
        };
        if older {
            (tail.first()..=from.min(tail.end().checked_sub(1)?))
                .rev()
                .find(hit)
        } else {
            (from.max(tail.first())..tail.end()).find(hit)
        }
    }

    /// How many lines of `tail` match (for the status line).
    pub fn count(&self, tail: &Tail) -> usize {
        (tail.first()..tail.end())
            .filter(|&seq| {
                tail.get(seq)
                    .is_some_and(|e| self.pattern.is_match(&plain(&e.raw)))
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(lines: &[&str]) -> Logs {
        let mut logs = Logs::default();
        for line in lines {
            logs.push("web", Timestamp(0), (*line).to_owned());
        }
        logs
    }

    #[test]
    fn tails_are_bounded_by_lines_and_bytes() {
        let mut logs = Logs::default();
        for i in 0..(PROCESS_LINES + 5) {
            logs.push("a", Timestamp(0), format!("{i}"));
        }
        let tail = logs.tail(Some("a")).unwrap();
        assert_eq!(tail.len(), PROCESS_LINES);
        assert_eq!(tail.first(), 5);
        assert_eq!(tail.get(5).unwrap().raw, "5");
        assert!(tail.get(4).is_none());

        let big = "x".repeat(64 * 1024);
        for _ in 0..100 {
            logs.push("b", Timestamp(0), big.clone());
        }
        let b = logs.tail(Some("b")).unwrap();
        assert!(b.bytes() <= PROCESS_BYTES, "{}", b.bytes());
        assert_eq!(b.len(), PROCESS_BYTES / big.len());
        assert!(logs.tail(None).unwrap().bytes() <= MERGED_BYTES);
        // One line longer than the bound is still kept, alone.
        logs.push("c", Timestamp(0), "y".repeat(PROCESS_BYTES + 1));
        assert_eq!(logs.tail(Some("c")).unwrap().len(), 1);
    }

    #[test]
    fn rows_wrap_by_display_width_with_a_hanging_indent() {
        let g = Geometry {
            width: 10,
            prefix: 0,
        };
        assert_eq!(g.row_starts(""), vec![0]);
        assert_eq!(g.row_starts("0123456789"), vec![0]);
        assert_eq!(g.row_starts("0123456789a"), vec![0, 10]);
        // Wide characters are not split across rows.
        assert_eq!(g.row_starts("123456789界"), vec![0, 9]);
        let merged = Geometry {
            width: 14,
            prefix: 4,
        };
        assert_eq!(merged.indent(), 4);
        assert_eq!(merged.rows(&"x".repeat(30)), 3);
        let narrow = Geometry {
            width: 8,
            prefix: 4,
        };
        assert_eq!(narrow.indent(), 0);
        assert_eq!(narrow.row_starts("abcdefgh"), vec![0, 4]);
    }

    #[test]
    fn paging_and_following() {
        let lines: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let logs = tail_of(&refs);
        let tail = logs.tail(Some("web")).unwrap();
        let g = Geometry {
            width: 40,
            prefix: 0,
        };
        let mut view = Viewport::default();
        assert_eq!(view.bottom_line(tail), Some(19));
        let visible = view.visible(tail, g, 5);
        assert_eq!(
            visible.lines.iter().map(|l| l.0).collect::<Vec<_>>(),
            [15, 16, 17, 18, 19]
        );
        view.page_up(tail, g, 5);
        assert_eq!(view.bottom, Some(15));
        view.page_up(tail, g, 5);
        view.page_up(tail, g, 5);
        view.page_up(tail, g, 5);
        view.page_up(tail, g, 5);
        assert_eq!(view.bottom, Some(0));
        view.page_down(tail, g, 5);
        assert_eq!(view.bottom, Some(4));
        view.scroll(tail, 3);
        assert_eq!(view.bottom, Some(7));
        view.scroll(tail, 100);
        assert!(view.following());
        view.scroll(tail, -1);
        assert_eq!(view.bottom, Some(18));
        view.page_down(tail, g, 5);
        assert!(view.following());
    }

    #[test]
    fn a_line_taller_than_the_pane_is_cut_at_the_top() {
        let long = "x".repeat(100);
        let logs = tail_of(&["a", &long]);
        let tail = logs.tail(Some("web")).unwrap();
        let g = Geometry {
            width: 10,
            prefix: 0,
        };
        let mut view = Viewport::default();
        let visible = view.visible(tail, g, 4);
        assert_eq!(visible.lines, vec![(1, 10)]);
        assert_eq!(visible.skip, 6);
        view.page_up(tail, g, 4);
        assert_eq!(view.bottom, Some(0));
    }

    #[test]
    fn search_is_smart_case_on_plain_text() {
        let logs = tail_of(&["GET /a", "\x1b[31mERROR\x1b[0m x", "get /b", "error y"]);
        let tail = logs.tail(Some("web")).unwrap();
        let search = Search::new("error").unwrap();
        assert_eq!(search.count(tail), 2);
        assert_eq!(search.find(tail, 3, true), Some(3));
        assert_eq!(search.find(tail, 2, true), Some(1));
        assert_eq!(search.find(tail, 0, true), None);
        assert_eq!(search.find(tail, 2, false), Some(3));
        let exact = Search::new("ERROR").unwrap();
        assert_eq!(exact.count(tail), 1);
        assert_eq!(exact.matches("ERROR ERROR"), vec![0..5, 6..11]);
        assert!(Search::new("").is_none());
        // Regex syntax is taken literally.
        assert_eq!(Search::new("/(").unwrap().count(tail), 0);
    }
}
