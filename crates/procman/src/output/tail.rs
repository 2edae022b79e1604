//! The bounded in-memory tail of every process, for `procman logs` and the TUI.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

/// Lines kept per process.
pub const TAIL_LINES: usize = 1_000;
/// Bytes of line text kept per process (a line is at most 64 KiB, so at least 4 fit).
pub const TAIL_BYTES: usize = 256 * 1024;

/// One line of a process (or of the supervisor, under the name `procman`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Position in the run's output, across all processes: the order of `procman.log`.
    pub seq: u64,
    /// When procman read the line.
    pub time: SystemTime,
    pub name: Arc<str>,
    /// The line as printed (escape sequences, CR and NUL included), without its line
    /// ending; lines longer than 64 KiB come as several pieces.
    pub text: Arc<[u8]>,
}

/// The tails of all names, indexed by name id.
#[derive(Default)]
pub(crate) struct Tails {
    rings: Vec<Ring>,
}

/// The last lines of one process: their metadata, and their text back to back.
#[derive(Default)]
struct Ring {
    lines: VecDeque<Meta>,
    bytes: VecDeque<u8>,
}

struct Meta {
    seq: u64,
    time: SystemTime,
    len: u32,
}

impl Tails {
    /// Keeps the lines `ranges` of `data` (numbered from `first_seq`) as the newest of `id`.
    pub(crate) fn push(
        &mut self,
        id: usize,
        first_seq: u64,
        time: SystemTime,
        data: &[u8],
        ranges: &[Range<usize>],
    ) {
        if self.rings.len() <= id {
            self.rings.resize_with(id + 1, Ring::default);
        }
        let ring = &mut self.rings[id];
        // Older lines of a large batch would be evicted by its newer ones at once.
        let skip = ranges.len().saturating_sub(TAIL_LINES);
        for (seq, range) in (first_seq..).zip(ranges).skip(skip) {
            ring.push(seq, time, &data[range.clone()]);
        }
    }

    /// The newest `n` lines of each of `ids` that are not older than `since`, merged
    /// in output order, of which the newest `n`.
    pub(crate) fn tail(
        &self,
        ids: &[(usize, Arc<str>)],
        n: usize,
        since: Option<SystemTime>,
    ) -> Vec<LogLine> {
        let mut lines = Vec::new();
        for (id, name) in ids {
            if let Some(ring) = self.rings.get(*id) {
                ring.newest(name, n, since, &mut lines);
            }
        }
        lines.sort_unstable_by_key(|l| l.seq);
        lines.drain(..lines.len().saturating_sub(n));
        lines
    }
}

impl Ring {
    fn push(&mut self, seq: u64, time: SystemTime, text: &[u8]) {
        while self.lines.len() >= TAIL_LINES
            || (!self.lines.is_empty() && self.bytes.len() + text.len() > TAIL_BYTES)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes.drain(..old.len as usize);
            }
        }
        let needed = self.bytes.len() + text.len();
        if needed > self.bytes.capacity() {
            // Grow by doubling, but never past the bound (the default growth would).
            let target = (self.bytes.capacity() * 2).clamp(needed, TAIL_BYTES.max(needed));
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.lines.push_back(Meta {
            seq,
            time,
            len: text.len() as u32,
        });
        self.bytes.extend(text);
    }

    fn newest(&self, name: &Arc<str>, n: usize, since: Option<SystemTime>, out: &mut Vec<LogLine>) {
        let mut end = self.bytes.len();
        for meta in self.lines.iter().rev().take(n) {
            if since.is_some_and(|since| meta.time < since) {
                break;
            }
            let start = end - meta.len as usize;
            out.push(LogLine {
                seq: meta.seq,
                time: meta.time,
                name: Arc::clone(name),
                text: self.bytes.range(start..end).copied().collect(),
            });
            end = start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn push_lines(tails: &mut Tails, id: usize, first_seq: u64, time: SystemTime, lines: &[&[u8]]) {
        let data: Vec<u8> = lines.concat();
        let mut ranges = Vec::new();
        let mut at = 0;
        for line in lines {
            ranges.push(at..at + line.len());
            at += line.len();
        }
        tails.push(id, first_seq, time, &data, &ranges);
    }

    #[test]
    fn merges_in_output_order_and_filters() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let t1 = t0 + Duration::from_secs(10);
        let mut tails = Tails::default();
        push_lines(&mut tails, 1, 0, t0, &[b"a0", b"a1"]);
        push_lines(&mut tails, 2, 2, t0, &[b"b2"]);
        push_lines(&mut tails, 1, 3, t1, &[b"a3"]);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let both = [(1, Arc::clone(&a)), (2, Arc::clone(&b))];
        let text = |lines: Vec<LogLine>| -> Vec<String> {
            lines
                .iter()
                .map(|l| format!("{}:{}", l.name, String::from_utf8_lossy(&l.text)))
                .collect()
        };
        assert_eq!(
            text(tails.tail(&both, 10, None)),
            ["a:a0", "a:a1", "b:b2", "a:a3"]
        );
        assert_eq!(text(tails.tail(&both, 2, None)), ["b:b2", "a:a3"]);
        assert_eq!(text(tails.tail(&both[..1], 2, None)), ["a:a1", "a:a3"]);
        assert_eq!(text(tails.tail(&both, 10, Some(t1))), ["a:a3"]);
        assert_eq!(text(tails.tail(&[(7, b)], 10, None)), Vec::<String>::new());
    }

    #[test]
    fn bounded_by_lines_and_bytes() {
        let now = SystemTime::now();
        let mut tails = Tails::default();
        let name: Arc<str> = "p".into();
        for i in 0..3 * TAIL_LINES as u64 {
            push_lines(&mut tails, 0, i, now, &[format!("{i}").as_bytes()]);
        }
        let all = tails.tail(&[(0, Arc::clone(&name))], usize::MAX, None);
        assert_eq!(all.len(), TAIL_LINES);
        assert_eq!(&*all[0].text, format!("{}", 2 * TAIL_LINES).as_bytes());

        let big = vec![b'x'; 60 * 1024];
        for i in 0..10 {
            push_lines(&mut tails, 0, 10_000 + i, now, &[&big]);
        }
        let all = tails.tail(&[(0, name)], usize::MAX, None);
        assert_eq!(all.len(), TAIL_BYTES / big.len());
        assert_eq!(all.last().map(|l| l.seq), Some(10_009));
        assert!(tails.rings[0].bytes.capacity() <= TAIL_BYTES);
    }
}
