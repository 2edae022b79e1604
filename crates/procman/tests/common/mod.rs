//! Shared harness: a temp directory with a procman.yaml, the built binary, bounded waits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A scratch project directory.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new(config: &str) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("procman.yaml"), config).expect("write config");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `procman ARGS` in the sandbox, colour off, its servers' runtime files in the
    /// sandbox (a test may set another `PROCMAN_RUNTIME_DIR`): those of a procman that a
    /// test SIGKILLs go with the sandbox instead of staying in the user's runtime dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_procman"));
        cmd.args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env("PROCMAN_RUNTIME_DIR", self.runtime_dir())
            .stdin(Stdio::null());
        cmd
    }

    /// The runtime directory of [`Sandbox::command`]'s servers (procman creates it).
    pub fn runtime_dir(&self) -> PathBuf {
        self.file(".procman-run")
    }

    /// Runs to completion within `timeout`; returns (status, stdout, stderr).
    pub fn run(&self, args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
        let mut running = Running::start(self.command(args));
        let status = running.wait(timeout);
        let out = running.stdout_text();
        let err = running.stderr_text();
        (status, out, err)
    }

    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::start(self.command(args))
    }

    /// Puts an executable script called `name` in `bin/` (add it to PATH with `path_env`).
    pub fn script(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let bin = self.file("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.file("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// A running procman whose stdout/stderr lines are collected as they arrive.
pub struct Running {
    pub child: Child,
    stdout: Arc<(Mutex<Lines>, Condvar)>,
    stderr: Arc<(Mutex<Lines>, Condvar)>,
}

fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<(Mutex<Lines>, Condvar)> {
    let shared = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
    let writer = Arc::clone(&shared);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    writer.0.lock().unwrap().lines.push(line);
                    writer.1.notify_all();
                }
            }
        }
        writer.0.lock().unwrap().closed = true;
        writer.1.notify_all();
    });
    shared
}

impl Running {
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn procman");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until a stdout line contains `needle`; panics with the output so far on timeout.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_match(|l| l.contains(needle), timeout)
            .unwrap_or_else(|| {
                panic!(
                    "no line containing {needle:?} within {timeout:?}; output:\n{}",
                    self.stdout_text()
                )
            })
    }

    pub fn wait_for_match(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.stdout;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(l) = lines.lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline || lines.closed {
                return None;
            }
            lines = cvar.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for exit; SIGKILLs and panics on timeout.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the collectors see EOF.
                let end = Instant::now() + Duration::from_secs(5);
                while !(self.stdout.0.lock().unwrap().closed
                    && self.stderr.0.lock().unwrap().closed)
                    && Instant::now() < end
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "procman did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout_text(),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.0.lock().unwrap().lines.join("\n")
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.0.lock().unwrap().lines.clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.0.lock().unwrap().lines.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Processes whose command line contains `marker` (excluding pgrep itself).
pub fn processes_matching(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", "-a", marker])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A marker unique to this test run, usable in command lines.
pub fn marker(tag: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "{tag}{}x{:x}",
        std::process::id(),
        RandomState::new().hash_one(tag) & 0xffff_ffff
    )
}

/// A `sleep` duration unique to this test run (e.g. `1000.4821937`): its command line
/// identifies the process and every copy a shell forks.
pub fn unique_sleep() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "1000.{}{}",
        std::process::id(),
        RandomState::new().hash_one(0u8) % 1_000_000
    )
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes (test-side waiting only).
pub fn eventually(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Bound on a server's start and on each client command.
const SERVE_WAIT: Duration = Duration::from_secs(20);

/// A sandbox whose runtime files (FIFO, socket, discovery) live in its own private dir.
pub struct Served {
    pub sb: Sandbox,
}

impl Served {
    pub fn new(config: &str) -> Served {
        let sb = Sandbox::new(config);
        let run = sb.file("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Served { sb }
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.sb.command(args);
        cmd.env("PROCMAN_RUNTIME_DIR", self.sb.file("run"));
        cmd
    }

    pub fn serve(&self) -> Running {
        let running = Running::start(self.cmd(&["serve"]));
        running.wait_for("listening on", SERVE_WAIT);
        running
    }

    /// Runs a client command to completion (bounded: a hang fails the test).
    pub fn client(&self, args: &[&str]) -> (i32, String, String) {
        let mut running = Running::start(self.cmd(args));
        let status = running.wait(SERVE_WAIT);
        (
            status.code().unwrap_or(-1),
            running.stdout_text(),
            running.stderr_text(),
        )
    }

    pub fn runtime_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.sb.file("run"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    pub fn fifo(&self) -> PathBuf {
        let paths = procman::control::RuntimePaths::in_dir(
            &self.sb.file("procman.yaml"),
            &self.sb.file("run"),
        )
        .unwrap();
        paths.fifo
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, out, err) = self.client(&["status", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    pub fn names(&self) -> Vec<String> {
        self.status()["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Makes a FIFO (mode 0600) at `path`.
pub fn mkfifo(path: &Path) {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// Opens `fifo` for writing (waiting for a reader) and writes `bytes` in one go.
pub fn write_fifo(fifo: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap_or_else(|e| panic!("writing to {}: {e}", fifo.display()));
}
