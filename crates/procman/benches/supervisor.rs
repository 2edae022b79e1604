//! Whole-binary benchmarks of the supervisor (not timed tests).
//!
//! `cargo bench -p procman --bench supervisor` measures:
//! - output throughput: 8 children × 250,000 lines each through `procman run` into a
//!   pipe, every line counted (zero loss is asserted); with `PROCMAN012_BIN` set to a
//!   procman 0.12 binary, the same run through it for comparison (0.12 calls `sh -o
//!   pipefail`, so it runs with a `sh -> bash` shim first on PATH);
//! - latency from starting `procman run` to its one process's first command;
//! - an idle supervisor with 10 children: context switches over 10 s and RSS.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a seconds-long smoke
//! version so the harness stays tested.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (lines, runs) = if full { (250_000, 5) } else { (2_000, 1) };
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

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
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
            let mut received = 0u64;
            for line in BufReader::new(child.stdout.take().unwrap()).split(b'\n') {
                let line = line.unwrap();
                if !line.windows(10).any(|w| w == b"procman | ") {
                    received += 1;
                }
            }
            child.wait().unwrap();
            let elapsed = began.elapsed().as_secs_f64();
            assert_eq!(received, 8 * lines, "{}: lines lost", bin.display());
            received as f64 / elapsed
        })
        .collect()
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

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
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
    let rss = status_field(&PathBuf::from(format!("/proc/{pid}/status")), "VmRSS:");
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

fn status_field(path: &Path, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
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
