//! Shared helpers for the multi-process tests: unique names, child processes that are
//! the test binary re-executed with a role in the environment, bounded waits, and
//! guards that kill, reap and clean up on every exit path (including panics).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use procref::{RefCounter, ServiceInfo, SharedService, SysvRefCounter};

/// Environment variable naming what a re-executed child does.
pub const ROLE: &str = "PROCREF_TEST_ROLE";

/// A service name no other test (or test run) uses.
pub fn unique(tag: &str) -> String {
    format!("t-{tag}-{}-{:08x}", std::process::id(), rand_u32())
}

pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("getrandom");
    u32::from_le_bytes(b)
}

/// Polls `f` until it is true; false if `timeout` passes first.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a semaphore set exists under `name`'s key (without creating one).
pub fn set_exists(name: &str) -> bool {
    set_id(name).is_some()
}

/// The id of the semaphore set under `name`'s key, if there is one (without creating one).
pub fn set_id(name: &str) -> Option<i32> {
    let key = SysvRefCounter::new(name).expect("valid name").key();
    // SAFETY: semget takes plain integers; flags 0 only looks the key up.
    let id = unsafe { libc::semget(key, 0, 0) };
    (id >= 0).then_some(id)
}

/// Removes whatever set is under `name`'s key (cleanup on failure paths).
pub fn force_remove_set(name: &str) {
    let Ok(c) = SysvRefCounter::new(name) else {
        return;
    };
    // SAFETY: semget/semctl(IPC_RMID) take plain integers.
    unsafe {
        let id = libc::semget(c.key(), 0, 0);
        if id >= 0 {
            libc::semctl(id, 0, libc::IPC_RMID);
        }
    }
}

/// Live keeper processes of `name` (their argv[0] is `procref-keeper: NAME`).
pub fn keepers_of(name: &str) -> Vec<u32> {
    keepers_of_any(&[name.to_owned()])
}

/// Live keeper processes of any of `names`, in one scan of /proc.
pub fn keepers_of_any(names: &[String]) -> Vec<u32> {
    let wanted: Vec<Vec<u8>> = names
        .iter()
        .map(|n| format!("procref-keeper: {n}\0").into_bytes())
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| wanted.contains(&c))
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// SIGKILLs a pid (test-owned processes only).
pub fn sigkill(pid: u32) {
    if pid > 1 {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

pub fn alive(pid: u32) -> bool {
    procref::process::is_alive(pid)
}

/// Waits until `pid` has exited; panics with `what` after `timeout`.
pub fn assert_exits(pid: u32, timeout: Duration, what: &str) {
    assert!(
        wait_until(timeout, || !alive(pid)),
        "{what}: pid {pid} still running after {timeout:?}"
    );
}

/// Kills and reaps everything it tracks when dropped, and removes leftover sets, so a
/// failing test leaves nothing behind either.
#[derive(Default)]
pub struct Cleanup {
    pub pids: Vec<u32>,
    pub names: Vec<String>,
    pub dirs: Vec<PathBuf>,
}

impl Cleanup {
    pub fn name(&mut self, tag: &str) -> String {
        let n = unique(tag);
        self.names.push(n.clone());
        n
    }
    pub fn pid(&mut self, pid: u32) {
        self.pids.push(pid);
    }
    /// Adds the keeper pid recorded in `dir/name.json`, if any.
    pub fn keeper_of(&mut self, dir: &Path, name: &str) -> Option<u32> {
        let k = keeper_pid(dir, name)?;
        self.pids.push(k);
        Some(k)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Services started by test clients record their pids in files of the work dirs
        // (see `Svc`): on a failure path those may be services the test never heard of.
        for dir in &self.dirs {
            for f in ["starts", "recovers"] {
                for line in lines_of(&dir.join(f)) {
                    if let Some(pid) = line.split(' ').nth(2).and_then(|p| p.parse().ok()) {
                        self.pids.push(pid);
                    }
                }
            }
        }
        // Keepers started by adoption are in no file the test read: find them by name.
        let keepers = keepers_of_any(&self.names);
        self.pids.extend(keepers);
        for &p in &self.pids {
            if alive(p) {
                sigkill(p);
            }
        }
        for &p in &self.pids {
            wait_until(Duration::from_secs(2), || !alive(p));
        }
        if std::thread::panicking() {
            for n in &self.names {
                force_remove_set(n);
            }
        }
    }
}

/// The keeper pid recorded in the discovery file.
pub fn keeper_pid(dir: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["keeper"]["pid"].as_u64().map(|p| p as u32)
}

/// Asserts that `name` left nothing: no set (waiting for a keeper to remove it), no
/// discovery file.
pub fn assert_clean(name: &str, dir: &Path) {
    assert!(
        wait_until(Duration::from_secs(10), || !set_exists(name)),
        "semaphore set for {name} left behind"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !dir
            .join(format!("{name}.json"))
            .exists()),
        "discovery file for {name} left behind"
    );
}

/// A child process (this test binary re-executed with a role). Killed and reaped on drop.
pub struct Proc {
    pub child: Child,
    lines: Receiver<String>,
}

impl Proc {
    /// Spawns the test binary's `child_entry` with `ROLE=role` and `env`.
    pub fn spawn(role: &str, env: &[(&str, String)]) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.args([
            "--ignored",
            "--exact",
            "child_entry",
            "--nocapture",
            "--quiet",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines: rx }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line starting with `prefix` (rest after it), within `timeout`.
    pub fn expect(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "child {}: no {prefix:?} line within {timeout:?}",
                        self.pid()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("child {}: exited before printing {prefix:?}", self.pid())
                }
            }
        }
    }

    /// The service pid the child reports after acquiring.
    pub fn acquired_pid(&self, timeout: Duration) -> u32 {
        self.expect("acquired ", timeout)
            .parse()
            .expect("pid after 'acquired'")
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for a normal exit; returns whether it succeeded.
    pub fn wait_success(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            if Instant::now() >= deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Appends one line to `path` (O_APPEND: safe across processes for short lines).
pub fn append_line(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open count file");
    f.write_all(format!("{line}\n").as_bytes()).expect("append");
}

pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Spawns `sleep 600` in its own process group, reaped by a helper thread so it never
/// lingers as a zombie. Returns its pid.
pub fn spawn_sleeper() -> std::io::Result<u32> {
    let mut child = Command::new("sleep")
        .arg("600")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k).map(PathBuf::from)
}

fn env_ms(k: &str) -> Option<Duration> {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// Settings for a [`SharedService`] used by tests, passed to children as env vars.
#[derive(Clone, Default)]
pub struct Svc {
    pub name: String,
    pub dir: PathBuf,
    /// on_first_acquire appends "start <pid of caller> <service pid>" here (a blocking
    /// one: "start <pid of caller>").
    pub starts: Option<PathBuf>,
    /// on_first_acquire prints "in-start" and blocks for 30 s (spawning nothing).
    pub block_start: bool,
    /// on_last_release appends "stop <pid of caller> <service pid>" and stops the service.
    pub stops: Option<PathBuf>,
    /// on_last_release prints "in-stop" then sleeps this long before stopping.
    pub stop_delay: Option<Duration>,
    pub linger: Option<Duration>,
    /// Health check: this marker file exists. on_first_acquire/on_recover create it.
    pub health_marker: Option<PathBuf>,
    /// With a health marker: on_recover appends "recover <caller pid> <new pid>" here.
    pub recovers: Option<PathBuf>,
    pub startup_timeout: Option<Duration>,
}

impl Svc {
    pub fn new(name: &str, dir: &Path) -> Svc {
        Svc {
            name: name.to_owned(),
            dir: dir.to_owned(),
            ..Svc::default()
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("PT_NAME", self.name.clone()),
            ("PT_DIR", self.dir.display().to_string()),
        ];
        let p = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        if let Some(s) = p(&self.starts) {
            v.push(("PT_STARTS", s));
        }
        if self.block_start {
            v.push(("PT_BLOCK_START", "1".into()));
        }
        if let Some(s) = p(&self.stops) {
            v.push(("PT_STOPS", s));
        }
        if let Some(d) = self.stop_delay {
            v.push(("PT_STOP_DELAY", d.as_millis().to_string()));
        }
        if let Some(d) = self.linger {
            v.push(("PT_LINGER", d.as_millis().to_string()));
        }
        if let Some(s) = p(&self.health_marker) {
            v.push(("PT_HEALTH", s));
        }
        if let Some(s) = p(&self.recovers) {
            v.push(("PT_RECOVERS", s));
        }
        if let Some(d) = self.startup_timeout {
            v.push(("PT_STARTUP_TIMEOUT", d.as_millis().to_string()));
        }
        v
    }

    pub fn from_env() -> Svc {
        Svc {
            name: std::env::var("PT_NAME").expect("PT_NAME"),
            dir: env_path("PT_DIR").expect("PT_DIR"),
            starts: env_path("PT_STARTS"),
            block_start: std::env::var_os("PT_BLOCK_START").is_some(),
            stops: env_path("PT_STOPS"),
            stop_delay: env_ms("PT_STOP_DELAY"),
            linger: env_ms("PT_LINGER"),
            health_marker: env_path("PT_HEALTH"),
            recovers: env_path("PT_RECOVERS"),
            startup_timeout: env_ms("PT_STARTUP_TIMEOUT"),
        }
    }

    pub fn build(&self) -> procref::Result<SharedService> {
        let starts = self.starts.clone();
        let block = self.block_start;
        let marker = self.health_marker.clone();
        let m1 = marker.clone();
        let mut b = SharedService::builder(self.name.as_str())
            .base_dir(&self.dir)
            .stop_timeout(Duration::from_secs(2))
            .on_first_acquire(move || {
                let starts = starts.clone();
                let marker = m1.clone();
                async move {
                    if block {
                        if let Some(f) = &starts {
                            append_line(f, &format!("start {}", std::process::id()));
                        }
                        println!("in-start");
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return Err("blocked starter timed out".into());
                    }
                    let pid = spawn_sleeper()?;
                    if let Some(f) = &starts {
                        append_line(f, &format!("start {} {pid}", std::process::id()));
                    }
                    if let Some(m) = &marker {
                        std::fs::write(m, b"ok")?;
                    }
                    Ok(ServiceInfo::new(pid, 0))
                }
            });
        if let Some(stops) = self.stops.clone() {
            let delay = self.stop_delay;
            b = b.on_last_release(move |info| {
                let stops = stops.clone();
                async move {
                    if let Some(d) = delay {
                        println!("in-stop");
                        tokio::time::sleep(d).await;
                    }
                    append_line(
                        &stops,
                        &format!("stop {} {}", std::process::id(), info.pid()),
                    );
                    procref::process::stop(info.pid(), Duration::from_secs(2))?;
                    Ok(())
                }
            });
        }
        if let Some(m) = marker.clone() {
            let check = m.clone();
            b = b.on_health_check(move |_info| {
                let m = check.clone();
                async move { m.exists() }
            });
            if let Some(recovers) = self.recovers.clone() {
                b = b.on_recover(move |old| {
                    let recovers = recovers.clone();
                    let m = m.clone();
                    async move {
                        procref::process::stop(old.pid(), Duration::from_secs(2))?;
                        let pid = spawn_sleeper()?;
                        append_line(&recovers, &format!("recover {} {pid}", std::process::id()));
                        std::fs::write(&m, b"ok")?;
                        Ok(ServiceInfo::new(pid, 0))
                    }
                });
            }
        }
        if let Some(l) = self.linger {
            b = b.linger(l);
        }
        if let Some(t) = self.startup_timeout {
            b = b.startup_timeout(t);
        }
        b.build()
    }
}

/// The body of every test binary's `child_entry`. Roles:
/// - `hold`: acquire a reference on counter `PT_NAME`, print `ready`, sleep.
/// - `lock`: take the startup lock of counter `PT_NAME`, print `ready`, sleep.
/// - `watch`: declare presence on counter `PT_NAME` (`watch`), print `ready`, sleep.
/// - `churn`: `PT_ROUNDS` times acquire, release and leave counter `PT_NAME` (see
///   [`churn`]); print `done`.
/// - `svc`: optionally wait on barrier FIFO `PT_BARRIER`, acquire the service described
///   by the `PT_*` variables, print `acquired <service pid>`; then with `PT_HOLD_MS`
///   hold that long, release gracefully and print `released`; else hold forever.
pub fn child_main() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "hold" => {
            let c = SysvRefCounter::new(&std::env::var("PT_NAME").unwrap()).unwrap();
            c.acquire().unwrap();
            println!("ready");
            hang();
        }
        "lock" => {
            let c = SysvRefCounter::new(&std::env::var("PT_NAME").unwrap()).unwrap();
            assert!(c.try_lock().unwrap());
            println!("ready");
            hang();
        }
        "watch" => {
            let c = SysvRefCounter::new(&std::env::var("PT_NAME").unwrap()).unwrap();
            c.watch().unwrap();
            println!("ready");
            hang();
        }
        "churn" => {
            let name = std::env::var("PT_NAME").unwrap();
            let rounds = std::env::var("PT_ROUNDS").unwrap().parse().unwrap();
            churn(&name, rounds);
            println!("done");
        }
        "svc" => {
            let svc = Svc::from_env();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let service = svc.build().unwrap();
                if let Some(fifo) = env_path("PT_BARRIER") {
                    // The test holds the FIFO open read-write, so this open does not block;
                    // the read ends (EOF for every child at once) when the test closes it.
                    let mut f = std::fs::File::open(&fifo).unwrap();
                    println!("waiting");
                    let mut buf = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut f, &mut buf);
                }
                let handle = service.acquire().await.unwrap();
                println!("acquired {}", handle.pid());
                std::io::stdout().flush().unwrap();
                match env_ms("PT_HOLD_MS") {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        handle.release().await.unwrap();
                        println!("released");
                    }
                    None => hang(),
                }
            });
        }
        other => panic!("unknown role {other}"),
    }
}

/// `rounds` acquire/release pairs on `name`, each followed by leaving the set (so that
/// every round may remove it while others enter it): alternately by one long-lived
/// object's `unwatch` and by dropping a fresh object. While the reference is held, the set
/// under the name's key must exist and count it.
pub fn churn(name: &str, rounds: usize) {
    let kept = SysvRefCounter::new(name).unwrap();
    for round in 0..rounds {
        let fresh = (round % 2 == 1).then(|| SysvRefCounter::new(name).unwrap());
        let c = fresh.as_ref().unwrap_or(&kept);
        assert!(c.acquire().unwrap() >= 1);
        let count = set_value(name, 0);
        assert!(
            count.is_some_and(|v| v >= 1),
            "{name}: a reference is held but the set under the key counts {count:?}"
        );
        c.release().unwrap();
        c.unwatch().unwrap();
        assert!(!c.is_present());
    }
    assert_eq!(kept.held(), 0);
}

/// Semaphore `sem` of the set under `name`'s key, if there is a set.
pub fn set_value(name: &str, sem: i32) -> Option<i32> {
    let key = SysvRefCounter::new(name).expect("valid name").key();
    // SAFETY: semget/semctl(GETVAL) take plain integers.
    unsafe {
        let id = libc::semget(key, 0, 0);
        if id < 0 {
            return None;
        }
        let v = libc::semctl(id, sem, libc::GETVAL);
        (v >= 0).then_some(v)
    }
}

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(600));
    }
}

/// A current-thread tokio runtime for the test body.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `count()` is 0 and the set is gone, or can be removed (for counter-only tests).
pub fn remove_counter(name: &str) {
    let c = SysvRefCounter::new(name).unwrap();
    assert_eq!(c.count().unwrap(), 0, "{name}: references left");
    assert!(c.try_remove().unwrap(), "{name}: set could not be removed");
    assert!(
        !set_exists(name),
        "{name}: set still exists after try_remove"
    );
}

/// A FIFO barrier: children block reading it until [`Barrier::release`].
pub struct Barrier {
    pub path: PathBuf,
    holder: Option<std::fs::File>,
}

impl Barrier {
    pub fn new(dir: &Path) -> Barrier {
        let path = dir.join("barrier.fifo");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        // Read-write: never blocks, and keeps a writer so the children's reads block.
        let holder = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open fifo");
        Barrier {
            path,
            holder: Some(holder),
        }
    }

    pub fn release(&mut self) {
        self.holder = None;
    }
}
