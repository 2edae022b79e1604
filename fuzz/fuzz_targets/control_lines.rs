//! What the FIFO and the socket do with arbitrary bytes: the line splitter (lines of at
//! most `MAX_LINE` bytes, the same lines however the stream is cut into reads), the
//! message parser (an accepted message encodes and parses back to itself; nothing longer
//! than `MAX_LINE` is accepted), the FIFO's recovery of glued lines and its taking of a
//! message left without a newline.
//!
//! Input: one byte that seeds the read sizes, then the stream, in which `0xFE n` stands for
//! `n × 512` bytes of `x`, so that over-long lines are cheap to reach.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procman::fuzzing::{fifo_requests, recover_fifo_line, split_lines};
use procman::protocol::{MAX_LINE, Message, encode, parse_line};

fn stream(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut bytes = data.iter();
    while let Some(&b) = bytes.next() {
        match (b, bytes.clone().next()) {
            (0xFE, Some(&n)) => {
                bytes.next();
                out.resize(out.len() + usize::from(n) * 512, b'x');
            }
            _ => out.push(b),
        }
    }
    out
}

/// Cuts `bytes` into reads whose sizes cycle through 1..=`seed`-derived values.
fn chunks(bytes: &[u8], seed: u8) -> Vec<&[u8]> {
    let sizes = [1, 7, 512, 4096, 16 * 1024, 65_535, 65_536, 65_537];
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut i = usize::from(seed);
    while !rest.is_empty() {
        let size = sizes[i % sizes.len()].min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        out.push(chunk);
        rest = tail;
        i = i.wrapping_mul(31).wrapping_add(usize::from(seed) | 1);
    }
    out
}

fn check_message(message: &Message) {
    let line = encode(message);
    assert!(
        line.ends_with('\n') && line.matches('\n').count() == 1,
        "{line:?}"
    );
    if line.len() <= MAX_LINE {
        assert_eq!(
            parse_line(line.as_bytes()).as_ref(),
            Ok(message),
            "{line:?}"
        );
    }
}

fn check_line(line: &[u8]) {
    let parsed = parse_line(line);
    if let Ok(message) = &parsed {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        assert!(
            body.len() <= MAX_LINE,
            "accepted a {}-byte line",
            body.len()
        );
        check_message(message);
        // The same message padded past MAX_LINE is refused, with or without a line end.
        for end in [&b""[..], b"\n", b"\r\n"] {
            let mut padded = body.to_vec();
            padded.resize(MAX_LINE + 1, b' ');
            padded.extend_from_slice(end);
            assert!(
                parse_line(&padded).is_err(),
                "accepted {} bytes",
                padded.len()
            );
        }
    }
    let recovered = recover_fifo_line(line);
    assert!(matches!(recovered.len(), 1 | 2), "{recovered:?}");
    match parsed {
        Ok(message) => assert_eq!(recovered, vec![Ok(message)]),
        Err(_) => assert!(recovered[0].is_err()),
    }
    for result in &recovered {
        match result {
            Ok(message) => check_message(message),
            Err(error) => assert!(!error.trim().is_empty()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let bytes = stream(rest);
    let whole = split_lines([&bytes[..]]);
    assert_eq!(
        split_lines(chunks(&bytes, seed)),
        whole,
        "depends on the reads"
    );
    if bytes.len() <= 4096 {
        assert_eq!(split_lines(bytes.chunks(1)), whole, "depends on the reads");
    }
    // The FIFO also takes a complete message not ended by a newline; whatever it
    // delivers is a message that round-trips.
    for request in fifo_requests(chunks(&bytes, seed)) {
        match request {
            Ok(message) => check_message(&message),
            Err(error) => assert!(!error.trim().is_empty()),
        }
    }
    let (lines, partial) = whole;
    for line in lines.iter().flatten().chain(&partial) {
        assert!(line.len() <= MAX_LINE, "a {}-byte line", line.len());
        assert!(!line.contains(&b'\n'));
        assert!(!line.iter().all(u8::is_ascii_whitespace));
        check_line(line);
    }
});
