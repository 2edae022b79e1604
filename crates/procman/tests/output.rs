//! Output under load: 20 processes × 100,000 lines, nothing lost, mixed or reordered.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Sandbox;

const PROCS: usize = 20;
const LINES: u64 = 100_000;

/// Checks that `lines` (already attributed to a process) hold 1..=LINES exactly once, in order.
fn assert_complete(process: &str, numbers: &[u64]) {
    assert_eq!(
        numbers.len() as u64,
        LINES,
        "{process}: wrong number of lines"
    );
    for (i, &n) in numbers.iter().enumerate() {
        assert_eq!(n, i as u64 + 1, "{process}: line {i} out of order or lost");
    }
}

#[test]
fn twenty_fast_writers_lose_and_mix_nothing() {
    let mut config = String::new();
    for p in 0..PROCS {
        config.push_str(&format!(
            "w{p:02}:\n  run: seq -f 'w{p:02} %.0f' 1 {LINES}\n  once: true\n"
        ));
    }
    let sb = Sandbox::new(&config);
    let (status, out, err) = sb.run(&[], Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{err}");

    // Terminal: "  wNN | wNN <n>" — the prefix and the payload must name the same process.
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for line in out.lines() {
        let Some((prefix, payload)) = line.split_once(" | ") else {
            panic!("unprefixed line {line:?}")
        };
        let name = prefix.trim();
        if name == "procman" {
            continue;
        }
        let (who, n) = payload
            .split_once(' ')
            .unwrap_or_else(|| panic!("mixed line {line:?}"));
        assert_eq!(who, name, "line mixes two processes: {line:?}");
        seen.entry(name.to_owned())
            .or_default()
            .push(n.parse().unwrap_or_else(|_| panic!("mixed line {line:?}")));
    }
    assert_eq!(seen.len(), PROCS);
    for (name, numbers) in &seen {
        assert_complete(name, numbers);
    }

    // Logs: per-process files hold the raw lines; the combined log matches the terminal.
    for p in 0..PROCS {
        let name = format!("w{p:02}");
        let log = std::fs::read_to_string(sb.file(&format!("procman-logs/{name}.log"))).unwrap();
        let numbers: Vec<u64> = log
            .lines()
            .map(|l| {
                let (who, n) = l.split_once(' ').unwrap();
                assert_eq!(who, name);
                n.parse().unwrap()
            })
            .collect();
        assert_complete(&name, &numbers);
    }
    let combined = std::fs::read_to_string(sb.file("procman-logs/procman.log")).unwrap();
    let count = combined
        .lines()
        .filter(|l| !l.trim_start().starts_with("procman |"))
        .count();
    assert_eq!(count as u64, PROCS as u64 * LINES);
}
