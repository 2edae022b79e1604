//! Output costs.
//!
//! `cargo bench -p procman --bench output` measures:
//! - lines per second from 8 pipe writers through `Output` in this process, median of 5 runs,
//!   without and with log files;
//! - an idle `procman run` with 10 and with 500 sleeping children: the supervisor's threads
//!   and RSS; with `PROCMAN012_BIN` set to a procman 0.12 binary, the same for it (run with
//!   a `sh -> bash` shim first on PATH, as 0.12 calls `sh -o pipefail`).
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a small smoke version.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use procman::output::{ColorChoice, Output, OutputConfig};

const WRITERS: usize = 8;
const LINES: usize = 250_000;
const RUNS: usize = 5;

fn run(logs: bool, lines: usize) -> io::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let config = OutputConfig {
        log_dir: logs.then(|| dir.path().to_path_buf()),
        color: ColorChoice::Never,
    };
    let out = Output::new(config, Box::new(File::create("/dev/null")?), false)?;
    let start = Instant::now();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let name = format!("worker-{w}");
        out.register(&name)?;
        let (reader, writer) = rustix::pipe::pipe()?;
        readers.push(out.capture(&name, reader));
        writers.push(thread::spawn(move || -> io::Result<()> {
            let mut writer = BufWriter::with_capacity(64 * 1024, File::from(writer));
            for i in 0..lines {
                writeln!(writer, "{w} request {i} handled in 3ms status=200")?;
            }
            writer.flush()
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
    if total != (WRITERS * lines) as u64 {
        return Err(io::Error::other(format!("lost lines: {total}")));
    }
    Ok(elapsed)
}

fn main() -> io::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let (runs, lines) = if full { (RUNS, LINES) } else { (1, 20_000) };
    for logs in [false, true] {
        let mut times = (0..runs)
            .map(|_| run(logs, lines))
            .collect::<io::Result<Vec<_>>>()?;
        times.sort();
        let median = times[runs / 2];
        let rate = (WRITERS * lines) as f64 / median.as_secs_f64();
        println!(
            "output: {WRITERS} writers x {lines} lines, logs={logs}: median {median:?}, {:.0} lines/s",
            rate
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
