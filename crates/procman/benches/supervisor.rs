//! Whole-binary benchmarks of the supervisor (not timed tests).
//!
//! `cargo bench -p procman --bench supervisor` measures:
//! - output throughput: 8 children × 250,000 lines each through `procman run` (logs on,
//!   the default `procman-logs/`) into a pipe, every line counted (zero loss is
//!   asserted); with `PROCMAN012_BIN` set to a procman 0.12 binary, the same run through
//!   it for comparison (0.12 calls `sh -o pipefail`, so it runs with a `sh -> bash` shim
//!   first on PATH). The reader is kept lean, as it shares the machine with what it
//!   measures: 1 MiB reads, lines found with `memchr` in place (no allocation per line),
//!   and each line checked to be a child's (`{name} | {number}`, not `procman | …`).
//!   `THROUGHPUT_LINES=N` sets the lines per child;
//! - latency from starting `procman run` to its one process's first command;
//! - an idle supervisor with 10 children: context switches over 10 s and RSS;
//! - `serve`: `run` messages written straight into the FIFO, processes spawned per second,
//!   and the time from invoking `procman start` to the new process's first command;
//! - `attach -- true` against a running server, and against none (cold start of a
//!   one-process config up to the command's exec);
//! - from SIGKILL of the last client to the server beginning its shutdown
//!   (`--disconnect-timeout 0s`).
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a seconds-long smoke
//! version so the harness stays tested.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, median, now_secs, sorted_median, status_field, wait_for_stamp};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (lines, runs) = if full { (250_000, 5) } else { (2_000, 1) };
    // Lines per child of the throughput rows (e.g. 2,500,000 to see the streaming rate
    // with the start-up and shutdown costs spread thinner).
    let lines = std::env::var("THROUGHPUT_LINES").map_or(lines, |v| v.parse().unwrap());
    println!("machine: {} cores; {}", cores(), cpu_model());

    let ours = Path::new(env!("CARGO_BIN_EXE_procman")).to_owned();
    report("procman (this repo)", &throughput(&ours, lines, runs, None));
    if let Some(old) = std::env::var_os("PROCMAN012_BIN") {
        let shim = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/bin/bash", shim.path().join("sh")).unwrap();
        report(
            "procman 0.12",
            &throughput(Path::new(&old), lines, runs, Some(shim.path())),
        );
    }

    let mut latencies: Vec<f64> = (0..if full { 30 } else { 3 })
        .map(|_| exec_latency(&ours))
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "run → first command of the process: median {:.2} ms (of {})",
        median(&latencies),
        latencies.len()
    );

    let idle_for = if full {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(500)
    };
    let (switches, rss_kib) = idle(&ours, idle_for);
    println!(
        "idle, 10 children, {idle_for:?}: {switches} context switches in the supervisor, RSS {rss_kib} KiB"
    );

    let messages = if full { 2_000 } else { 20 };
    let rate = fifo_spawn_rate(&ours, messages);
    println!("serve: {rate:.0} processes/s accepted and spawned from {messages} FIFO messages");
    let samples = if full { 30 } else { 3 };
    let (to_exec, start_wall) = start_latency(&ours, samples);
    println!(
        "serve: invoking procman start → process's first command: median {to_exec:.2} ms; procman start's own wall time: median {start_wall:.2} ms"
    );
    let (warm, cold) = attach_latency(&ours, samples);
    println!(
        "attach -- true with a running server: median {warm:.2} ms; with no server, to the command's exec: median {cold:.2} ms"
    );
    let kill = kill_to_shutdown(&ours, if full { 15 } else { 2 });
    println!("last client SIGKILLed → server shutting down (disconnect 0s): median {kill:.2} ms");
}

fn report(what: &str, rates: &[f64]) {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{what}: median {:.0} lines/s (runs: {:?})",
        median(&sorted),
        sorted.iter().map(|r| *r as u64).collect::<Vec<_>>()
    );
}

/// Lines per second through the supervisor, 8 children, counting every line received.
fn throughput(bin: &Path, lines: u64, runs: usize, shim: Option<&Path>) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    for p in 0..8 {
        config.push_str(&format!("w{p}:\n  run: seq 1 {lines}\n  once: true\n"));
    }
    std::fs::write(dir.path().join("procman.yaml"), config).unwrap();
    (0..runs)
        .map(|_| {
            let mut cmd = Command::new(bin);
            cmd.arg("run")
                .current_dir(dir.path())
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if let Some(shim) = shim {
                cmd.env(
                    "PATH",
                    format!(
                        "{}:{}",
                        shim.display(),
                        std::env::var("PATH").unwrap_or_default()
                    ),
                );
            }
            let began = Instant::now();
            let mut child = cmd.spawn().unwrap();
            let received = count_child_lines(child.stdout.take().unwrap());
            child.wait().unwrap();
            let elapsed = began.elapsed().as_secs_f64();
            assert_eq!(received, 8 * lines, "{}: lines lost", bin.display());
            received as f64 / elapsed
        })
        .collect()
}

/// The lines of `stdout` that are a child's: the payload after "| " is a number from
/// `seq` (procman 0.12 also logs lifecycle lines under the process names).
fn count_child_lines(mut stdout: impl Read) -> u64 {
    let is_child_line = |line: &[u8]| {
        let payload = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
        !line.trim_ascii_start().starts_with(b"procman |")
            && !payload.is_empty()
            && payload.iter().all(u8::is_ascii_digit)
            && memchr::memmem::find(line, b"| ").is_some()
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut received = 0;
    loop {
        let n = stdout.read(&mut buf[filled..]).unwrap();
        let end = filled + n;
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', &buf[filled..end]) {
            received += u64::from(is_child_line(&buf[start..filled + newline]));
            start = filled + newline + 1;
        }
        if n == 0 {
            // A last line without its newline counts too.
            return received + u64::from(start < end && is_child_line(&buf[start..end]));
        }
        assert!(start > 0 || end < buf.len(), "a line longer than 1 MiB");
        buf.copy_within(start..end, 0);
        filled = end - start;
    }
}

/// Milliseconds from spawning `procman run` to the process's script running.
fn exec_latency(bin: &Path) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("stamp");
    std::fs::write(
        dir.path().join("procman.yaml"),
        format!(
            "p:\n  run: echo $EPOCHREALTIME > {}\n  once: true\n",
            stamp.display()
        ),
    )
    .unwrap();
    let began = now_secs();
    let status = Command::new(bin)
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let ran: f64 = std::fs::read_to_string(&stamp)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (ran - began) * 1000.0
}

/// Context switches of every supervisor thread over `window`, and its RSS.
fn idle(bin: &Path, window: Duration) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    for p in 0..10 {
        config.push_str(&format!("s{p}:\n  run: exec sleep 1000\n"));
    }
    std::fs::write(dir.path().join("procman.yaml"), config).unwrap();
    let mut child = Command::new(bin)
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let pid = child.id();
    let before = switches(pid);
    std::thread::sleep(window);
    let after = switches(pid);
    let rss = status_field(format!("/proc/{pid}/status"), "VmRSS:");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    child.wait().unwrap();
    (after - before, rss)
}

fn switches(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|t| {
            let status = t.path().join("status");
            status_field(&status, "voluntary_ctxt_switches:")
                + status_field(&status, "nonvoluntary_ctxt_switches:")
        })
        .sum()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default()
}

/// Processes per second spawned from `run` messages written straight into the FIFO.
fn fifo_spawn_rate(bin: &Path, messages: usize) -> f64 {
    use std::io::Write;
    let project = Project::new("");
    let (server, lines) = project.serve(bin, &[]);
    let began = Instant::now();
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(project.paths().fifo)
        .unwrap();
    for _ in 0..messages {
        fifo.write_all(b"{\"type\":\"run\",\"name\":\"t\",\"run\":\"true\",\"once\":true}\n")
            .unwrap();
    }
    let mut started = 0;
    while started < messages {
        if lines.recv().unwrap().contains("] started") {
            started += 1;
        }
    }
    let rate = messages as f64 / began.elapsed().as_secs_f64();
    project.stop(bin, server);
    rate
}

/// Medians in ms: (invoking `procman start` → the process's first command, `procman start` wall time).
fn start_latency(bin: &Path, samples: usize) -> (f64, f64) {
    let project = Project::new("");
    let (server, _lines) = project.serve(bin, &[]);
    let mut to_exec = Vec::new();
    let mut wall = Vec::new();
    for i in 0..samples {
        let stamp = project.dir.path().join(format!("stamp{i}"));
        let script = format!("echo $EPOCHREALTIME > {}", stamp.display());
        let began_at = now_secs();
        let began = Instant::now();
        let status = project
            .cmd(bin, &["start", "--once", "--name", "probe", &script])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        wall.push(began.elapsed().as_secs_f64() * 1000.0);
        assert!(status.success());
        to_exec.push((wait_for_stamp(&stamp) - began_at) * 1000.0);
    }
    project.stop(bin, server);
    (sorted_median(to_exec), sorted_median(wall))
}

/// Medians in ms: (warm `attach -- true` wall time, cold attach → the command's exec).
fn attach_latency(bin: &Path, samples: usize) -> (f64, f64) {
    let project = Project::new("web:\n  run: exec sleep 1000.4343\n");
    let (server, _lines) = project.serve(bin, &[]);
    let mut warm = Vec::new();
    for _ in 0..samples {
        let began = Instant::now();
        assert!(
            project
                .cmd(bin, &["attach", "--", "true"])
                .status()
                .unwrap()
                .success()
        );
        warm.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    project.stop(bin, server);

    let paths = project.paths();
    let mut cold = Vec::new();
    for i in 0..samples {
        let stamp = project.dir.path().join(format!("cold{i}"));
        let script = format!("echo $EPOCHREALTIME > {}", stamp.display());
        let began_at = now_secs();
        let args = [
            "attach",
            "--disconnect-timeout",
            "0s",
            "--",
            "bash",
            "-c",
            &script,
        ];
        assert!(project.cmd(bin, &args).status().unwrap().success());
        cold.push((wait_for_stamp(&stamp) - began_at) * 1000.0);
        // Let that server leave before the next cold start.
        while paths.discovery.exists() || paths.fifo.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    (sorted_median(warm), sorted_median(cold))
}

/// Median ms from SIGKILL of the only client to the server logging "shutting down".
fn kill_to_shutdown(bin: &Path, samples: usize) -> f64 {
    use procref::RefCounter;
    let project = Project::new("");
    let counter = procref::SysvRefCounter::new(&project.paths().service_name()).unwrap();
    let mut results = Vec::new();
    for _ in 0..samples {
        let (mut server, lines) = project.serve(bin, &["--disconnect-timeout", "0s"]);
        let mut client = project
            .cmd(bin, &["attach", "--", "sleep", "1000.4242"])
            .spawn()
            .unwrap();
        while counter.count().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(50));
        let began = Instant::now();
        client.kill().unwrap();
        while !lines.recv().unwrap().contains("shutting down") {}
        results.push(began.elapsed().as_secs_f64() * 1000.0);
        client.wait().unwrap();
        let _ = Command::new("pkill")
            .args(["-f", "^sleep 1000.4242$"])
            .status();
        server.wait().unwrap();
    }
    sorted_median(results)
}
