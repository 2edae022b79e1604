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

impl LogLine {
    /// The text as `procman.log` shows it: escape sequences removed, other controls as
    /// `^M`, invalid UTF-8 replaced.
    pub fn plain_text(&self) -> String {
        let mut plain = Vec::with_capacity(self.text.len());
        super::ansi::clean(&self.text, &mut plain);
        String::from_utf8_lossy(&plain).into_owned()
    }
}

/// The tails of all names, indexed by name id.
#[derive(Default)]
pub(crate) struct Tails {
    rings: Vec<Ring>,
    /// The `seq` after the newest line kept: every line kept later has at least this one.
    next_seq: u64,
}

/// The last lines of one process: their metadata, and the bytes they were cut from.
#[derive(Default)]
struct Ring {
    lines: VecDeque<Meta>,
    /// The bytes of the lines in `lines` (and the line endings between them).
    bytes: VecDeque<u8>,
    /// Position of `bytes[0]` in everything ever kept here.
    base: u64,
}

struct Meta {
    seq: u64,
    time: SystemTime,
    /// Position of the line's first byte, counted like `Ring::base`.
    start: u64,
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
        self.rings[id].push(first_seq, time, data, ranges);
        self.next_seq = self.next_seq.max(first_seq + ranges.len() as u64);
    }

    /// The `seq` of the next line to come (of any name).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
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
    /// Appends the newest lines of a read as one block of bytes.
    fn push(&mut self, first_seq: u64, time: SystemTime, data: &[u8], ranges: &[Range<usize>]) {
        let Some(last) = ranges.last() else {
            return;
        };
        // The newest lines that fit the bounds (a line is at most 64 KiB, so one always does).
        let mut first = ranges.len() - 1;
        while first > 0
            && ranges.len() - first < TAIL_LINES
            && last.end - ranges[first - 1].start <= TAIL_BYTES
        {
            first -= 1;
        }
        let block = ranges[first].start..last.end;
        let kept = ranges.len() - first;
        // The oldest lines that make room, dropped at once.
        let mut dropped = (self.lines.len() + kept)
            .saturating_sub(TAIL_LINES)
            .min(self.lines.len());
        let end = self.base + self.bytes.len() as u64;
        let start_of = |lines: &VecDeque<Meta>, i: usize| lines.get(i).map_or(end, |m| m.start);
        while dropped < self.lines.len()
            && (end - start_of(&self.lines, dropped)) as usize + block.len() > TAIL_BYTES
        {
            dropped += 1;
        }
        if dropped > 0 {
            let next = start_of(&self.lines, dropped);
            self.lines.drain(..dropped);
            self.bytes.drain(..(next - self.base) as usize);
            self.base = next;
        }
        let needed = self.bytes.len() + block.len();
        if needed > self.bytes.capacity() {
            // Grow by doubling, but never past the bound (the default growth would).
            let target = (self.bytes.capacity() * 2).clamp(needed, TAIL_BYTES.max(needed));
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        let block_at = self.base + self.bytes.len() as u64;
        self.bytes.extend(&data[block.clone()]);
        for (seq, range) in (first_seq..).zip(ranges).skip(first) {
            self.lines.push_back(Meta {
                seq,
                time,
                start: block_at + (range.start - block.start) as u64,
                len: range.len() as u32,
            });
        }
    }

    fn newest(&self, name: &Arc<str>, n: usize, since: Option<SystemTime>, out: &mut Vec<LogLine>) {
        for meta in self.lines.iter().rev().take(n) {
            if since.is_some_and(|since| meta.time < since) {
                break;
            }
            let start = (meta.start - self.base) as usize;
            out.push(LogLine {
                seq: meta.seq,
                time: meta.time,
                name: Arc::clone(name),
                text: self
                    .bytes
                    .range(start..start + meta.len as usize)
                    .copied()
                    .collect(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Pushes `lines` as one read, each followed by a newline.
    fn push_lines(tails: &mut Tails, id: usize, first_seq: u64, time: SystemTime, lines: &[&[u8]]) {
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for line in lines {
            ranges.push(data.len()..data.len() + line.len());
            data.extend_from_slice(line);
            data.push(b'\n');
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
        let all = tails.tail(&[(0, Arc::clone(&name))], usize::MAX, None);
        assert_eq!(all.len(), TAIL_BYTES / (big.len() + 1));
        assert_eq!(all.last().map(|l| l.seq), Some(10_009));
        assert!(all.iter().all(|l| *l.text == *big));
        assert!(tails.rings[0].bytes.capacity() <= TAIL_BYTES);

        // One read of many lines keeps only its newest, within both bounds.
        let lines: Vec<Vec<u8>> = (0..5_000)
            .map(|i| format!("line {i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        push_lines(&mut tails, 0, 20_000, now, &refs);
        let all = tails.tail(&[(0, name)], usize::MAX, None);
        assert_eq!(all.len(), TAIL_LINES);
        assert_eq!(&*all[0].text, b"line 4000");
        assert_eq!(all[0].seq, 24_000);
        assert!(tails.rings[0].bytes.len() <= TAIL_BYTES);
    }
}
