//! Cost of the supervisor as the stack grows (issue 13), ours against procman 0.12 in the
//! same run (`PROCMAN012_BIN=/path/to/procman-0.12`; it calls `sh -o pipefail`, so it runs
//! with a `sh -> bash` shim first on PATH).
//!
//! `cargo bench -p procman --bench scaling` measures, medians of several runs:
//! - threads and RSS of the supervisor with 10, 100 and 500 sleeping children, and the
//!   time from starting it to all of them running `sleep` (start-all), next to a bash loop
//!   that starts the same 500 `sleep`s;
//! - supervisor CPU (utime + stime of `/proc/PID/stat`) per process over 2,000 `run`
//!   messages of `true` written into the FIFO, and the processes per second they start,
//!   for `true` (executed directly) and for `true && true` (which needs the shell).
//!
//! Our log directory is on tmpfs (`/dev/shm` where it exists): creating thousands of log
//! files a second in a directory where the previous run deleted thousands is slow on ext4
//! (its allocator skips recently deleted inodes one by one), which would measure the file
//! system rather than the supervisor.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a small version once so
//! the harness stays tested. `-- --bench fifo` (or `sleepers`) runs only that part;
//! `PROCMAN_BENCH_BIN` measures another build of ours (an earlier commit) in its place.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, sorted_median, status_field};

/// The `sleep` argument that marks this benchmark's children.
const SLEEP: &str = "1000.1313";

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 5 } else { 1 };
    let sizes: &[usize] = if full { &[10, 100, 500] } else { &[5] };
    let only = |part: &str| {
        let parts = ["sleepers", "fifo"];
        let named: Vec<String> = std::env::args()
            .filter(|a| parts.contains(&a.as_str()))
            .collect();
        named.is_empty() || named.iter().any(|a| a == part)
    };
    let ours = std::env::var_os("PROCMAN_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_procman")),
        PathBuf::from,
    );
    let peer = std::env::var_os("PROCMAN012_BIN").map(PathBuf::from);
    let shim = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/bin/bash", shim.path().join("sh")).unwrap();

    if only("sleepers") {
        sleeper_table(&ours, peer.as_deref(), shim.path(), sizes, runs);
    }
    if !only("fifo") {
        return;
    }
    let messages = if full { 2_000 } else { 20 };
    for (what, script) in [("true", "true"), ("needs the shell", "true && true")] {
        let mut cpu = Vec::new();
        let mut rate = Vec::new();
        for _ in 0..runs {
            let (ms, per_second) = fifo_spawns(&ours, script, messages);
            cpu.push(ms);
            rate.push(per_second);
        }
        println!(
            "run messages of {script:?} ({what}), {messages} per run: supervisor CPU {:.3} ms per process, {:.0} processes/s (medians of {runs})",
            sorted_median(cpu),
            sorted_median(rate)
        );
    }
}

/// The table of supervisors with `sizes` sleeping children, ours next to the peer's (run
/// through `shim`) and a bash loop.
fn sleeper_table(ours: &Path, peer: Option<&Path>, shim: &Path, sizes: &[usize], runs: usize) {
    println!("| N | supervisor | threads | RSS | start-all |");
    println!("|---|---|---|---|---|");
    for &n in sizes {
        let mut rows = vec![("ours", sleepers(ours, n, runs, None))];
        if let Some(peer) = peer {
            rows.push(("procman 0.12", sleepers(peer, n, runs, Some(shim))));
        }
        rows.push(("bash loop", bash_loop(n, runs)));
        for (who, (threads, rss, start)) in rows {
            let threads = threads.map_or("–".to_owned(), |t| format!("{t:.0}"));
            let rss = rss.map_or("–".to_owned(), |r| format!("{:.1} MiB", r / 1024.0));
            println!("| {n} | {who} | {threads} | {rss} | {start:.0} ms |");
        }
    }
}

/// Medians of (threads, RSS in KiB, ms until all `n` children run `sleep`) for a
/// supervisor running `n` sleeping children.
fn sleepers(
    bin: &Path,
    n: usize,
    runs: usize,
    shim: Option<&Path>,
) -> (Option<f64>, Option<f64>, f64) {
    let mut threads = Vec::new();
    let mut rss = Vec::new();
    let mut start = Vec::new();
    for _ in 0..runs {
        let project = Project::new(&config(n));
        let logs = log_dir();
        let mut cmd = match shim {
            None => project.cmd(bin, &["run", "--log-dir", logs.path().to_str().unwrap()]),
            Some(_) => project.cmd(bin, &["run"]),
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(shim) = shim {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", shim.display()));
        }
        let began = Instant::now();
        let mut child = cmd.spawn().unwrap();
        wait_for_sleepers(child.id(), n);
        start.push(began.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(500));
        let status = format!("/proc/{}/status", child.id());
        threads.push(status_field(&status, "Threads:") as f64);
        rss.push(status_field(&status, "VmRSS:") as f64);
        stop(&mut child);
    }
    (
        Some(sorted_median(threads)),
        Some(sorted_median(rss)),
        sorted_median(start),
    )
}

fn config(n: usize) -> String {
    (0..n)
        .map(|i| format!("s{i}:\n  run: exec sleep {SLEEP}\n"))
        .collect()
}

/// Median ms for bash to start `n` `sleep`s in a loop, until all of them run `sleep`.
fn bash_loop(n: usize, runs: usize) -> (Option<f64>, Option<f64>, f64) {
    let script = format!("for i in $(seq {n}); do sleep {SLEEP} & done; wait");
    let start = (0..runs)
        .map(|_| {
            let began = Instant::now();
            let mut child = Command::new("bash")
                .args(["-c", &script])
                .process_group(0)
                .spawn()
                .unwrap();
            wait_for_sleepers(child.id(), n);
            let elapsed = began.elapsed().as_secs_f64() * 1000.0;
            // SAFETY: kill(2) on the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            child.wait().unwrap();
            elapsed
        })
        .collect();
    (None, None, sorted_median(start))
}

use std::os::unix::process::CommandExt;

/// Waits (up to a minute) until `n` children of `parent` run `sleep SLEEP`.
fn wait_for_sleepers(parent: u32, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut running: HashSet<u32> = HashSet::new();
    let children = format!("/proc/{parent}/task/{parent}/children");
    while running.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} children started",
            running.len()
        );
        let list = std::fs::read_to_string(&children).unwrap_or_default();
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if !running.contains(&pid) && runs_sleep(pid) {
                running.insert(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn runs_sleep(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline.starts_with(b"sleep\0") && cmdline.ends_with(format!("{SLEEP}\0").as_bytes())
    })
}

/// SIGTERM, and wait for the supervisor (which stops its children) to exit.
fn stop(child: &mut Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

/// (supervisor CPU ms per process, processes/s) for `messages` `run` messages of `script`
/// written straight into the FIFO of a `serve`.
fn fifo_spawns(bin: &Path, script: &str, messages: usize) -> (f64, f64) {
    let project = Project::new("");
    let logs = log_dir();
    let (server, lines) = project.serve(bin, &["--log-dir", logs.path().to_str().unwrap()]);
    let cpu_before = cpu_ms(server.id());
    let message =
        format!("{{\"type\":\"run\",\"name\":\"t\",\"run\":\"{script}\",\"once\":true}}\n");
    let began = Instant::now();
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(project.paths().fifo)
        .unwrap();
    for _ in 0..messages {
        fifo.write_all(message.as_bytes()).unwrap();
    }
    let (mut started, mut ended) = (0, 0);
    let mut rate = 0.0;
    while ended < messages {
        let line = lines.recv().unwrap();
        if line.contains("] started") {
            started += 1;
            if started == messages {
                rate = messages as f64 / began.elapsed().as_secs_f64();
            }
        } else if line.contains("] completed") || line.contains("] exited") {
            ended += 1;
        }
    }
    let cpu = cpu_ms(server.id()) - cpu_before;
    project.stop(bin, server);
    (cpu / messages as f64, rate)
}

/// A scratch log directory, on tmpfs where there is one.
fn log_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

/// utime + stime of `pid` in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may contain spaces) in parentheses.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 * 1000.0 / hz
}
