//! Output costs.
//!
//! `cargo bench -p procman --bench output` measures:
//! - lines per second from 8 pipe writers through `Output` in this process, median of 5 runs,
//!   without and with log files, and the CPU time per line of the whole process and of
//!   the output thread alone (less sensitive than wall time to other load on the machine);
//! - an idle `procman run` with 10 and with 500 sleeping children: the supervisor's threads
//!   and RSS; with `PROCMAN012_BIN` set to a procman 0.12 binary, the same for it (run with
//!   a `sh -> bash` shim first on PATH, as 0.12 calls `sh -o pipefail`).
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a small smoke version.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use procman::output::{ColorChoice, Output, OutputConfig};

const WRITERS: usize = 8;
const LINES: usize = 250_000;
const RUNS: usize = 5;

/// One run: wall time, CPU time of this whole process (writers included), and CPU time
/// of the output thread.
fn run(logs: bool, lines: usize) -> io::Result<(Duration, Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let config = OutputConfig {
        log_dir: logs.then(|| dir.path().to_path_buf()),
        color: ColorChoice::Never,
    };
    let before = output_threads();
    let out = Output::new(config, Box::new(File::create("/dev/null")?), false)?;
    // The new thread names itself once it runs.
    let named = Instant::now() + Duration::from_secs(5);
    let pump = loop {
        if let Some(t) = output_threads().into_iter().find(|t| !before.contains(t)) {
            break t;
        }
        if Instant::now() > named {
            return Err(io::Error::other("no output thread"));
        }
        thread::sleep(Duration::from_millis(1));
    };
    // Formatted beforehand, so that the writers cost little besides write(2).
    let texts: Vec<Vec<u8>> = (0..WRITERS)
        .map(|w| {
            (0..lines)
                .flat_map(|i| format!("{w} request {i} handled in 3ms status=200\n").into_bytes())
                .collect()
        })
        .collect();
    let cpu = cpu_time();
    let pump_cpu = thread_cpu(pump);
    let start = Instant::now();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (w, text) in texts.into_iter().enumerate() {
        let name = format!("worker-{w}");
        out.register(&name)?;
        let (reader, writer) = rustix::pipe::pipe()?;
        readers.push(out.capture(&name, reader));
        writers.push(thread::spawn(move || -> io::Result<()> {
            let mut writer = File::from(writer);
            for chunk in text.chunks(64 * 1024) {
                writer.write_all(chunk)?;
            }
            Ok(())
        }));
    }
    for writer in writers {
        writer
            .join()
            .map_err(|_| io::Error::other("writer panicked"))??;
    }
    let mut total = 0;
    for reader in readers {
        total += reader.wait()?;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu;
    let pump_cpu = thread_cpu(pump) - pump_cpu;
    if total != (WRITERS * lines) as u64 {
        return Err(io::Error::other(format!("lost lines: {total}")));
    }
    Ok((elapsed, cpu, pump_cpu))
}

/// Ids of this process's threads named `procman-output`.
fn output_threads() -> Vec<u64> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "procman-output")
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// CPU time of thread `tid` so far (the first field of its schedstat, in nanoseconds).
fn thread_cpu(tid: u64) -> Duration {
    let stat =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap_or_default();
    Duration::from_nanos(
        stat.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

/// User and system CPU time of this process so far, all threads (ended ones too).
fn cpu_time() -> Duration {
    // SAFETY: getrusage(2) fills the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn main() -> io::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let (runs, lines) = if full { (RUNS, LINES) } else { (1, 20_000) };
    for logs in [false, true] {
        let results = (0..runs)
            .map(|_| run(logs, lines))
            .collect::<io::Result<Vec<_>>>()?;
        let mut walls: Vec<Duration> = results.iter().map(|r| r.0).collect();
        let mut cpus: Vec<Duration> = results.iter().map(|r| r.1).collect();
        let mut pumps: Vec<Duration> = results.iter().map(|r| r.2).collect();
        walls.sort();
        cpus.sort();
        pumps.sort();
        let (wall, cpu, pump) = (walls[runs / 2], cpus[runs / 2], pumps[runs / 2]);
        let total = (WRITERS * lines) as f64;
        let per_line = |d: Duration| d.as_nanos() as f64 / total;
        println!(
            "output: {WRITERS} writers x {lines} lines, logs={logs}: median {wall:?}, {:.0} lines/s; \
             CPU per line (medians): {:.1} ns in all, {:.1} ns in the output thread",
            total / wall.as_secs_f64(),
            per_line(cpu),
            per_line(pump),
        );
    }

    let ours = Path::new(env!("CARGO_BIN_EXE_procman"));
    let old = std::env::var_os("PROCMAN012_BIN");
    let shim = tempfile::tempdir()?;
    std::os::unix::fs::symlink("/bin/bash", shim.path().join("sh"))?;
    let sizes: &[usize] = if full { &[10, 500] } else { &[3] };
    for &n in sizes {
        let (threads, rss) = idle(ours, n, None)?;
        println!("idle, {n} children: procman (this repo) {threads} threads, RSS {rss} KiB");
        if let Some(old) = &old {
            let (threads, rss) = idle(Path::new(old), n, Some(shim.path()))?;
            println!("idle, {n} children: procman 0.12 {threads} threads, RSS {rss} KiB");
        }
    }
    Ok(())
}

/// An idle supervisor with `n` sleeping children: (threads, RSS KiB), once all of them run.
///
/// `shim` puts a `sh -> bash` link first on PATH (procman 0.12 runs `sh -o pipefail`).
fn idle(bin: &Path, n: usize, shim: Option<&Path>) -> io::Result<(u64, u64)> {
    let dir = tempfile::tempdir()?;
    let marker = format!("1000.{}{n}", std::process::id());
    let config: String = (0..n)
        .map(|i| format!("s{i}:\n  run: exec sleep {marker}\n"))
        .collect();
    std::fs::write(dir.path().join("procman.yaml"), config)?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(shim) = shim {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", shim.display()));
    }
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sleeping(&marker) < n {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("{n} children did not start")));
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Let start-up buffers and threads settle.
    thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let measured = (field("Threads:"), field("VmRSS:"));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleeping(&marker) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    Ok(measured)
}

/// Processes whose command line is `sleep MARKER`.
fn sleeping(marker: &str) -> usize {
    let wanted = format!("sleep\0{marker}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
        .count()
}
