//! Shared by the whole-binary benchmarks: scratch projects, clocks, medians.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A scratch project with its own private runtime dir.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(config: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("procman.yaml"), config).unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        Project { dir }
    }

    pub fn paths(&self) -> procman::control::RuntimePaths {
        let config = self.dir.path().join("procman.yaml");
        procman::control::RuntimePaths::in_dir(&config, &self.dir.path().join("run")).unwrap()
    }

    pub fn cmd(&self, bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("PROCMAN_RUNTIME_DIR", self.dir.path().join("run"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `procman serve ARGS`, waits until it listens; its stdout lines arrive on the channel.
    pub fn serve(
        &self,
        bin: &Path,
        args: &[&str],
    ) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
        let mut child = self
            .cmd(bin, &[&["serve"], args].concat())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while !rx.recv().unwrap().contains("listening on") {}
        (child, rx)
    }

    pub fn stop(&self, bin: &Path, mut server: std::process::Child) {
        self.cmd(bin, &["stop"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        server.wait().unwrap();
    }
}

pub fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub fn wait_for_stamp(stamp: &Path) -> f64 {
    loop {
        if let Some(v) = std::fs::read_to_string(stamp)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn sorted_median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    median(&values)
}

/// The number in a `/proc/PID/status` line starting with `field` (`VmRSS:`, `Threads:`);
/// 0 when the process or the line is gone.
pub fn status_field(path: impl AsRef<Path>, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
