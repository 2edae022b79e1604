//! Benchmarks of the state-machine core (not timed tests).
//!
//! `cargo bench -p procman --bench control` measures:
//! - a `status` round trip over the socket while 500 processes are supervised (in-process
//!   client, and the `procman status --json` command's wall time);
//! - restart latency with `restart_delay: 0s`: from the last instruction of a failing run
//!   to the first instruction of the next, beside a bash loop re-running the same script
//!   (the floor any supervisor pays: fork, exec, shell start-up).
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs a small smoke version.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, sorted_median};
use procman::protocol::{Message, Reply};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let bin = Path::new(env!("CARGO_BIN_EXE_procman")).to_owned();
    let (processes, samples) = if full { (500, 200) } else { (20, 5) };
    let (in_process, command) = status_round_trip(&bin, processes, samples);
    println!(
        "status with {processes} processes: round trip median {in_process:.3} ms (in-process client); `procman status --json` median {command:.2} ms"
    );
    let restarts = if full { 60 } else { 4 };
    let ours = restart_latency(&bin, restarts);
    let floor = bash_loop_latency(restarts);
    println!(
        "restart latency (restart_delay 0s), last instruction → next run's first: median {ours:.2} ms; a bash loop re-running the script: median {floor:.2} ms"
    );
}

/// Medians in ms: (a `status` request from this process, `procman status --json`).
fn status_round_trip(bin: &Path, processes: usize, samples: usize) -> (f64, f64) {
    let mut config = String::new();
    for i in 0..processes {
        config.push_str(&format!("p{i}:\n  run: exec sleep 1000.{i}\n"));
    }
    let project = Project::new(&config);
    let (server, lines) = project.serve(bin, &[]);
    let mut started = 0;
    while started < processes {
        if lines.recv().unwrap().contains("] started") {
            started += 1;
        }
    }
    let paths = project.paths();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut in_process = Vec::new();
    for _ in 0..samples {
        let began = Instant::now();
        let reply = runtime
            .block_on(procman::control::request(
                &paths,
                &Message::Status,
                Duration::from_secs(10),
            ))
            .unwrap();
        in_process.push(began.elapsed().as_secs_f64() * 1000.0);
        let Reply::Status {
            processes: rows, ..
        } = reply
        else {
            panic!("{reply:?}")
        };
        assert_eq!(rows.len(), processes);
    }
    let mut command = Vec::new();
    for _ in 0..samples.min(50) {
        let began = Instant::now();
        let out = project
            .cmd(bin, &["status", "--json"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        command.push(began.elapsed().as_secs_f64() * 1000.0);
        assert!(out.status.success());
    }
    project.stop(bin, server);
    (sorted_median(in_process), sorted_median(command))
}

/// The script each run executes: a start stamp, an end stamp, exit 1.
const SCRIPT: &str = "echo S $EPOCHREALTIME >> stamps; echo E $EPOCHREALTIME >> stamps; exit 1";

/// Median ms from one run's end stamp to the next run's start stamp under procman.
fn restart_latency(bin: &Path, restarts: usize) -> f64 {
    let project = Project::new(&format!(
        "r:\n  run: '{SCRIPT}'\n  restart: on-failure\n  restart_delay: 0s\n  max_restarts: {restarts}\n"
    ));
    let status = project
        .cmd(bin, &["run"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    gaps(&project.dir.path().join("stamps"))
}

/// The same measure for `bash -c SCRIPT` re-run by a bash loop.
fn bash_loop_latency(restarts: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "for i in $(seq 0 {restarts}); do bash -e -u -o pipefail -c '{SCRIPT}' || true; done"
    );
    let status = Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    gaps(&dir.path().join("stamps"))
}

fn gaps(stamps: &Path) -> f64 {
    let text = std::fs::read_to_string(stamps).unwrap();
    let stamps: Vec<(char, f64)> = text
        .lines()
        .map(|l| {
            let (kind, time) = l.split_once(' ').unwrap();
            (kind.chars().next().unwrap(), time.parse().unwrap())
        })
        .collect();
    let gaps: Vec<f64> = stamps
        .windows(2)
        .filter(|w| w[0].0 == 'E' && w[1].0 == 'S')
        .map(|w| (w[1].1 - w[0].1) * 1000.0)
        .collect();
    assert!(!gaps.is_empty());
    sorted_median(gaps)
}
