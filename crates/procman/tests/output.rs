//! Output of real processes: under load (nothing lost, mixed or reordered), log files
//! (raw bytes, time stamps, the previous run, the user's files), a closed stdout.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::{Sandbox, eventually};

const T: Duration = Duration::from_secs(60);

/// A line of `procman.log` without its `2025-01-01T00:00:00.000Z ` time stamp.
fn unstamped(line: &str) -> &str {
    let (stamp, rest) = line.split_at(25);
    assert!(
        humantime::parse_rfc3339(stamp.trim_end()).is_ok() && stamp.ends_with("Z "),
        "no time stamp in {line:?}"
    );
    rest
}

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
        .filter(|l| !unstamped(l).trim_start().starts_with("procman |"))
        .count();
    assert_eq!(count as u64, PROCS as u64 * LINES);
}

#[test]
fn own_log_holds_the_bytes_as_printed_and_procman_log_the_clean_view() {
    let sb = Sandbox::new(
        "raw:\n  run: printf '\\033[1;31mred\\033[0m\\r\\nnul\\000byte\\nbar\\rover\\n'; head -c 100000 /dev/zero | tr '\\0' x; printf '\\nend'\n  once: true\n",
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{err}");
    let mut expected = b"\x1b[1;31mred\x1b[0m\r\nnul\0byte\nbar\rover\n".to_vec();
    expected.extend(std::iter::repeat_n(b'x', 100_000));
    expected.extend_from_slice(b"\nend");
    let own = std::fs::read(sb.file("procman-logs/raw.log")).unwrap();
    assert!(
        own == expected,
        "raw.log differs: {:?}",
        String::from_utf8_lossy(&own[..60])
    );

    let combined = std::fs::read(sb.file("procman-logs/procman.log")).unwrap();
    assert!(!combined.contains(&0x1b), "escape sequences in procman.log");
    let combined = String::from_utf8_lossy(&combined);
    let lines: Vec<&str> = combined
        .lines()
        .map(unstamped)
        .filter(|l| l.trim_start().starts_with("raw |"))
        .collect();
    assert_eq!(lines[0], "    raw | red");
    // Control characters are shown, so no line can return over its own prefix.
    assert_eq!(lines[1], "    raw | nul^@byte");
    assert_eq!(lines[2], "    raw | bar^Mover");
    // The terminal and procman.log cut lines at 64 KiB; the own log keeps them whole.
    assert_eq!(lines[3].len(), 10 + 64 * 1024);
    assert_eq!(lines.last(), Some(&"    raw | end"));
    assert!(out.contains("raw | \u{1b}[1;31mred\u{1b}[0m"), "{out}");
}

#[test]
fn important_log_survives_log_dir_dot_and_previous_run_is_kept() {
    let sb = Sandbox::new("greet:\n  run: echo hello $PROCMAN_RUN_TAG\n  once: true\n");
    std::fs::write(sb.file("important.log"), "do not touch").unwrap();
    std::fs::write(sb.file("greet.log.bak"), "mine").unwrap();
    for run in 1..=3 {
        let tag = format!("PROCMAN_RUN_TAG=run{run}");
        let mut running = sb.spawn(&["run", "--log-dir", ".", "-e", &tag]);
        assert_eq!(running.wait(T).code(), Some(0), "{}", running.stderr_text());
    }
    assert_eq!(
        std::fs::read_to_string(sb.file("important.log")).unwrap(),
        "do not touch"
    );
    assert_eq!(
        std::fs::read_to_string(sb.file("greet.log.bak")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(sb.file("greet.log")).unwrap(),
        "hello run3\n"
    );
    assert_eq!(
        std::fs::read_to_string(sb.file("previous/greet.log")).unwrap(),
        "hello run2\n"
    );
    let previous = std::fs::read_to_string(sb.file("previous/procman.log")).unwrap();
    assert!(previous.contains("greet | hello run2"), "{previous}");
    assert!(sb.file("procman.yaml").exists());
}

#[test]
fn planted_symlinks_in_the_log_dir_are_refused() {
    let sb = Sandbox::new("web:\n  run: echo secret output\n  once: true\n");
    let target = sb.file("victim");
    std::fs::write(&target, "precious").unwrap();
    std::fs::create_dir(sb.file("procman-logs")).unwrap();
    std::os::unix::fs::symlink(&target, sb.file("procman-logs/procman.log")).unwrap();
    let (status, _out, err) = sb.run(&[], T);
    assert_ne!(status.code(), Some(0));
    assert!(err.contains("procman.log is a symlink"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");

    std::fs::remove_file(sb.file("procman-logs/procman.log")).unwrap();
    std::os::unix::fs::symlink(&target, sb.file("procman-logs/web.log")).unwrap();
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.contains("web.log is a symlink"), "{out}");
    assert!(out.contains("web | secret output"), "{out}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    assert!(
        std::fs::symlink_metadata(sb.file("procman-logs/web.log"))
            .unwrap()
            .is_symlink()
    );
}

#[test]
fn a_closed_stdout_neither_panics_nor_stops_the_logs() {
    let sb = Sandbox::new("count:\n  run: seq 1 20000\n  once: true\n");
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let stderr = std::fs::File::create(sb.file("stderr")).unwrap();
    let mut child = sb
        .command(&[])
        .stdout(Stdio::from(writer))
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "procman did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = std::fs::read_to_string(sb.file("stderr")).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let own = std::fs::read_to_string(sb.file("procman-logs/count.log")).unwrap();
    assert_eq!(own.lines().count(), 20_000);
}

/// `procman run | cmd` where `cmd` stopped reading, with a process in a crash loop: each
/// restart waits until the last run's output is read, instead of leaving procman one unread
/// pipe per run; once the terminal reads again, the restarts go on.
#[test]
fn a_crash_loop_waits_for_a_stuck_terminal_instead_of_piling_up_pipes() {
    let sb =
        Sandbox::new("flap:\n  run: seq 1 300; exit 1\n  restart: always\n  restart_delay: 0s\n");
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    // One page, which the first runs fill.
    rustix::pipe::fcntl_setpipe_size(&writer, 4096).unwrap();
    let child = sb
        .command(&[])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let flap = || {
        let (_, out, _) = sb.run(&["status", "--json"], T);
        let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        status["processes"][0].clone()
    };
    // Its restart is due and waits, as `status` says.
    let held = eventually(T, || {
        let flap = flap();
        flap["state"] == "backing_off" && flap["waiting_for_output"] == true
    });
    let (_, table, _) = sb.run(&["status"], T);
    let pipes = || {
        std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .unwrap()
            .filter(|fd| {
                let target = std::fs::read_link(fd.as_ref().unwrap().path()).unwrap_or_default();
                target.to_string_lossy().starts_with("pipe:")
            })
            .count()
    };
    let held_pipes = pipes();
    let restarts = flap()["restarts"].as_u64().unwrap_or_default();

    let draining = std::thread::spawn(move || {
        let mut terminal = std::fs::File::from(reader);
        std::io::copy(&mut terminal, &mut std::io::sink())
    });
    let resumed = eventually(T, || {
        flap()["restarts"]
            .as_u64()
            .is_some_and(|now| now > restarts + 5)
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let child = std::cell::RefCell::new(child);
    let exited = eventually(T, || child.borrow_mut().try_wait().unwrap().is_some());
    draining.join().unwrap().unwrap();
    assert!(
        held,
        "the crash loop went on while the terminal took nothing"
    );
    assert!(table.contains("once its output is read"), "{table}");
    assert!(
        held_pipes <= 8,
        "{held_pipes} pipes open in procman while held"
    );
    assert!(
        resumed,
        "the restarts did not go on once the terminal read again"
    );
    assert!(exited, "procman did not exit");
}
