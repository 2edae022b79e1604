//! Nothing escapes: whatever a process starts (background children, `setsid`, double
//! forks) is stopped with it, when procman ends, and when procman or its guardian is
//! SIGKILLed, in cgroup mode and in process-group mode; as PID 1, orphans are reaped.
//!
//! Every test runs in both modes: cgroup mode where cgroup v2 is writable (as root on CI),
//! and process-group mode forced with `PROCMAN_NO_CGROUP=1`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Running, Sandbox, Served, eventually, processes_matching};
use procman::supervisor::containment::procfs;

const T: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Cgroup,
    Groups,
}

const MODES: [Mode; 2] = [Mode::Cgroup, Mode::Groups];

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `procman ARGS` in `mode`.
fn start(sb: &Sandbox, mode: Mode, args: &[&str]) -> Procman {
    let mut cmd = sb.command(args);
    if mode == Mode::Groups {
        cmd.env("PROCMAN_NO_CGROUP", "1");
    }
    Procman::new(Running::start(cmd), mode)
}

/// `procman serve` of an empty config in `mode`, listening.
fn serve(mode: Mode) -> (Served, Procman) {
    let served = Served::new("");
    let mut cmd = served.cmd(&["serve"]);
    if mode == Mode::Groups {
        cmd.env("PROCMAN_NO_CGROUP", "1");
    }
    let procman = Procman::new(Running::start(cmd), mode);
    procman.running.wait_for("listening on", T);
    (served, procman)
}

/// A running procman and what it said about its containment.
struct Procman {
    running: Running,
    /// procman's cgroup (cgroup mode).
    cgroup: Option<PathBuf>,
    guardian: u32,
}

impl Procman {
    fn new(running: Running, mode: Mode) -> Procman {
        let line = running.wait_for("containment:", T);
        let guardian = line
            .rsplit_once("guardian [")
            .and_then(|(_, rest)| rest.trim_end_matches(']').parse().ok())
            .unwrap_or_else(|| panic!("no guardian in {line:?}"));
        let cgroup = line
            .split_once("one cgroup per process under ")
            .map(|(_, rest)| PathBuf::from(rest.split_once(';').unwrap().0));
        match mode {
            Mode::Cgroup if is_root() => {
                assert!(cgroup.is_some(), "root but not in cgroup mode: {line}")
            }
            Mode::Cgroup => {}
            Mode::Groups => assert!(line.contains("process groups"), "{line}"),
        }
        Procman {
            running,
            cgroup,
            guardian,
        }
    }

    fn assert_cgroup_removed(&self) {
        if let Some(dir) = &self.cgroup {
            assert!(
                eventually(T, || !dir.exists()),
                "{} was left behind",
                dir.display()
            );
        }
    }
}

impl Drop for Procman {
    fn drop(&mut self) {
        // Whatever a failed test left: kill it and remove the cgroup, so CI stays clean.
        if let Some(dir) = &self.cgroup {
            if dir.exists() {
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                eventually(Duration::from_secs(5), || {
                    !std::fs::read_to_string(dir.join("cgroup.events"))
                        .unwrap_or_default()
                        .contains("populated 1")
                });
                remove_cgroup(dir);
            }
        }
    }
}

fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Processes still running `sleep {marker}` (zombies do not count).
fn sleeping(marker: &str) -> Vec<String> {
    processes_matching(&format!("^sleep {marker}"))
}

/// A script that leaves behind: a background child in its group, a `setsid` child, a
/// double fork, and a double fork into a new session with its output elsewhere.
fn escapees(m: &str) -> String {
    format!("sleep {m} & setsid sleep {m} & (sleep {m} &); (setsid sleep {m} >/dev/null 2>&1 &);")
}

#[test]
fn run_exits_after_a_once_job_leaves_children_behind() {
    // Why 5: the children hold the job's output pipe (or escaped its group); `run` used
    // to hang after `exiting with code 0`, deaf to SIGTERM.
    for mode in MODES {
        let m = common::unique_sleep();
        let sb = Sandbox::new(&format!(
            "job:\n  run: \"{} sleep 0.2\"\n  once: true\n",
            escapees(&m)
        ));
        let mut procman = start(&sb, mode, &["run"]);
        let status = procman.running.wait(T);
        assert_eq!(
            status.code(),
            Some(0),
            "{mode:?}: {}",
            procman.running.stdout_text()
        );
        assert!(
            eventually(T, || sleeping(&m).is_empty()),
            "{mode:?}: left behind: {:?}",
            sleeping(&m)
        );
        procman.assert_cgroup_removed();
    }
}

#[test]
fn leftovers_of_a_finished_process_are_stopped_while_the_rest_runs() {
    // In cgroup mode a finished process's cgroup is emptied at once, escapees included;
    // in process-group mode its group and whatever still holds its output.
    for mode in MODES {
        let m = common::unique_sleep();
        let sb = Sandbox::new(&format!(
            "job:\n  run: \"sleep {m} & setsid sleep {m} & sleep 0.2\"\n  once: true\nsvc:\n  run: exec sleep 1000\n"
        ));
        let mut procman = start(&sb, mode, &["run"]);
        procman.running.wait_for("job [", T);
        procman.running.wait_for("completed after", T);
        assert!(
            eventually(T, || sleeping(&m).is_empty()),
            "{mode:?}: left behind while svc runs: {:?}\n{}",
            sleeping(&m),
            procman.running.stdout_text()
        );
        procman.running.signal(libc::SIGTERM);
        assert_eq!(procman.running.wait(T).code(), Some(0));
        procman.assert_cgroup_removed();
    }
}

#[test]
fn escapees_die_when_procman_stops() {
    for mode in MODES {
        let m = common::unique_sleep();
        let sb = Sandbox::new(&format!(
            "svc:\n  run: \"{} exec sleep {m}\"\n",
            escapees(&m)
        ));
        let mut procman = start(&sb, mode, &["run"]);
        assert!(
            eventually(T, || sleeping(&m).len() == 5),
            "{mode:?}: {:?}",
            sleeping(&m)
        );
        procman.running.signal(libc::SIGTERM);
        assert_eq!(procman.running.wait(T).code(), Some(0), "{mode:?}");
        assert!(
            sleeping(&m).is_empty(),
            "{mode:?}: still running after procman exited: {:?}",
            sleeping(&m)
        );
        procman.assert_cgroup_removed();
    }
}

#[test]
fn escapees_die_when_procman_is_sigkilled_even_after_its_guardian_was() {
    for mode in MODES {
        for kill_guardian in [false, true] {
            let m = common::unique_sleep();
            let sb = Sandbox::new(&format!(
                "svc:\n  run: \"{} exec sleep {m}\"\n",
                escapees(&m)
            ));
            let mut procman = start(&sb, mode, &["run"]);
            assert!(
                eventually(T, || sleeping(&m).len() == 5),
                "{mode:?}: {:?}",
                sleeping(&m)
            );
            if kill_guardian {
                let pid = rustix::process::Pid::from_raw(procman.guardian as i32).unwrap();
                rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
                procman.running.wait_for("started a new one", T);
            }
            procman.running.signal(libc::SIGKILL);
            procman.running.wait(T);
            assert!(
                eventually(T, || sleeping(&m).is_empty()),
                "{mode:?}, guardian killed: {kill_guardian}: left behind: {:?}",
                sleeping(&m)
            );
            procman.assert_cgroup_removed();
        }
    }
}

/// The cgroup procman makes its own in (the test's): where a process can move to leave
/// procman's. Found from a first procman in `sb`; the next one's parent is the same.
fn outside_cgroup(sb: &Sandbox) -> PathBuf {
    std::fs::write(sb.file("procman.yaml"), "svc:\n  run: exec sleep 1000\n").unwrap();
    let mut procman = start(sb, Mode::Cgroup, &["run"]);
    let outside = procman.cgroup.clone().unwrap().parent().unwrap().to_owned();
    procman.running.signal(libc::SIGTERM);
    assert_eq!(procman.running.wait(T).code(), Some(0));
    outside
}

#[test]
fn a_process_that_left_its_cgroup_dies_with_a_sigkilled_procman() {
    // Root (or a delegated user) may move a process out of procman's cgroup; the guardian
    // used to kill only the cgroup then, and a double fork from outside it survived.
    if !is_root() {
        eprintln!("skipped: cgroup v2 is writable only as root here");
        return;
    }
    let m = common::unique_sleep();
    let sb = Sandbox::new("");
    let outside = outside_cgroup(&sb);
    std::fs::write(
        sb.file("procman.yaml"),
        format!(
            "svc:\n  run: \"echo $$ > {}/cgroup.procs && (setsid sleep {m} >/dev/null 2>&1 &); exec sleep {m}\"\n",
            outside.display()
        ),
    )
    .unwrap();
    let mut procman = start(&sb, Mode::Cgroup, &["run"]);
    assert!(
        eventually(T, || sleeping(&m).len() == 2),
        "{:?}\n{}",
        sleeping(&m),
        procman.running.stdout_text()
    );
    procman.running.signal(libc::SIGKILL);
    procman.running.wait(T);
    assert!(
        eventually(T, || sleeping(&m).is_empty()),
        "left behind: {:?}",
        sleeping(&m)
    );
    procman.assert_cgroup_removed();
}

#[test]
fn a_restart_does_not_wait_for_a_process_that_left_its_cgroup() {
    // A restart waits until the last run's output is read, so that a stuck terminal cannot
    // pile up pipes; a process that moved out of procman's cgroup keeps the pipe open
    // without being a leftover, and must not hold the restart for as long as it lives.
    if !is_root() {
        eprintln!("skipped: cgroup v2 is writable only as root here");
        return;
    }
    let m = common::unique_sleep();
    let sb = Sandbox::new("");
    let outside = outside_cgroup(&sb);
    let escape = format!(
        "echo $$ > {}/cgroup.procs && : > escaped && exec sleep {m}",
        outside.display()
    );
    std::fs::write(
        sb.file("procman.yaml"),
        format!(
            "svc:\n  run: |\n    rm -f escaped\n    sh -c '{escape}' &\n    until [ -e escaped ]; do sleep 0.01; done\n    exit 1\n  restart: always\n  restart_delay: 0s\n  max_restarts: 1\n"
        ),
    )
    .unwrap();
    let mut procman = start(&sb, Mode::Cgroup, &["run"]);
    let restarted = procman
        .running
        .wait_for_match(|l| l.contains("started (restart 1)"), T);
    let status = procman.running.wait(T);
    let escaped = sleeping(&m);
    for line in &escaped {
        if let Some(pid) = line.split_whitespace().next().and_then(|p| p.parse().ok()) {
            let _ = procref::process::kill(pid);
        }
    }
    assert!(
        restarted.is_some(),
        "the restart waited for the escaped process:\n{}",
        procman.running.stdout_text()
    );
    assert_eq!(status.code(), Some(1), "{}", procman.running.stdout_text());
    assert!(escaped.is_empty(), "left behind: {escaped:?}");
}

#[test]
fn each_process_runs_in_its_own_cgroup() {
    if !is_root() {
        eprintln!("skipped: cgroup v2 is writable only as root here");
        return;
    }
    let sb = Sandbox::new(
        "a:\n  run: \"grep '^0::' /proc/self/cgroup; sleep 0.3\"\n  once: true\nb:\n  run: \"grep '^0::' /proc/self/cgroup; sleep 0.3\"\n  once: true\n",
    );
    let mut procman = start(&sb, Mode::Cgroup, &["run"]);
    assert_eq!(procman.running.wait(T).code(), Some(0));
    let top = procman.cgroup.clone().unwrap();
    let name = top.file_name().unwrap().to_str().unwrap().to_owned();
    let seen: Vec<String> = procman
        .running
        .stdout_lines()
        .into_iter()
        .filter_map(|l| l.split_once("| 0::").map(|(_, path)| path.to_owned()))
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0], seen[1]);
    for path in &seen {
        assert!(
            path.contains(&format!("/{name}/")),
            "{path} not under {name}"
        );
    }
    procman.assert_cgroup_removed();
}

#[test]
fn as_pid_1_orphans_are_reaped_and_shutdown_does_not_wait_on_them() {
    // Why 7: as PID 1 of a container, orphans are reparented to procman. Unreaped, they
    // stayed <defunct> and kept their group alive, so shutdown waited the stop_timeout.
    if !is_root() {
        eprintln!("skipped: a new pid namespace needs root here");
        return;
    }
    for mode in MODES {
        let m = common::unique_sleep();
        let sb = Sandbox::new(&format!(
            "svc:\n  run: \"for i in $(seq 20); do (sleep 0.05 &); done; echo spawned; exec sleep {m}\"\n  stop_timeout: 60s\n"
        ));
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_procman"))
            .arg("run")
            .current_dir(sb.path())
            .env("NO_COLOR", "1")
            .env("PROCMAN_RUNTIME_DIR", sb.runtime_dir())
            .stdin(std::process::Stdio::null());
        if mode == Mode::Groups {
            cmd.env("PROCMAN_NO_CGROUP", "1");
        }
        let mut procman = Procman::new(Running::start(cmd), mode);
        procman.running.wait_for("svc | spawned", T);
        // procman is unshare's only child; it sees itself as PID 1.
        let unshare = procman.running.pid() as u32;
        let pid1 = procfs::all()
            .into_iter()
            .find(|p| p.ppid == unshare)
            .expect("procman under unshare")
            .pid;
        let zombies = || {
            procfs::all()
                .into_iter()
                .filter(|p| p.ppid == pid1 && p.is_zombie())
                .count()
        };
        // Left under PID 1 once the orphans exited: the guardian and svc, no zombie.
        let children = || procfs::all().into_iter().filter(|p| p.ppid == pid1).count();
        assert!(
            eventually(T, || children() == 2 && zombies() == 0),
            "{mode:?}: {} zombie(s) under PID 1",
            zombies()
        );
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid1 as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        assert_eq!(procman.running.wait(T).code(), Some(0));
        let out = procman.running.stdout_text();
        // svc's pid in the namespace (procman's own threads take pids too).
        let svc = out
            .lines()
            .find_map(|l| l.strip_prefix("procman | svc [")?.strip_suffix("] started"))
            .unwrap_or_else(|| panic!("{mode:?}: no start line:\n{out}"));
        assert!(
            out.contains(&format!("svc [{svc}] stopped by SIGTERM"))
                && !out.contains("did not stop within"),
            "{mode:?}: shutdown waited on the orphans:\n{out}"
        );
        procman.assert_cgroup_removed();
    }
}

#[test]
fn many_exits_at_once_are_all_reaped_reported_and_cleaned_up() {
    // A burst of `run` messages in one write: commands executed directly, through the
    // shell, and ones that leave a child holding the output or an orphan outside the
    // group. Each one's end is reported once; afterwards procman has no child but the
    // guardian (no zombie, no leftover), and no cgroup of a finished process is left.
    const EACH: usize = 15;
    for mode in MODES {
        let m = common::unique_sleep();
        let (served, mut procman) = serve(mode);
        let scripts = [
            "true".to_owned(),
            "true && true".to_owned(),
            format!("sleep {m} & sleep 0.1"),
            format!(
                "(setsid sleep 0.{} >/dev/null 2>&1 &); true",
                &m[m.len() - 2..]
            ),
        ];
        let mut burst = String::new();
        for _ in 0..EACH {
            for (k, script) in scripts.iter().enumerate() {
                burst.push_str(&format!(
                    "{{\"type\":\"run\",\"name\":\"p{k}\",\"run\":\"{script}\",\"once\":true}}\n"
                ));
            }
        }
        common::write_fifo(&served.fifo(), burst.as_bytes());
        let total = EACH * scripts.len();
        // Every end, success or not, says how long the process ran.
        let ended = |out: &str| out.matches(" after running ").count();
        assert!(
            eventually(T, || ended(&procman.running.stdout_text()) >= total),
            "{mode:?}: {} of {total} ended:\n{}",
            ended(&procman.running.stdout_text()),
            procman.running.stdout_text()
        );
        let out = procman.running.stdout_text();
        assert_eq!(
            ended(&out),
            total,
            "{mode:?}: an end reported twice:\n{out}"
        );
        assert_eq!(
            out.matches("] completed after running ").count(),
            total,
            "{mode:?}: a process failed:\n{out}"
        );
        // The children of `sleep {m} &` are still running: stopped with their process.
        assert!(
            eventually(T, || sleeping(&m).is_empty()),
            "{mode:?}: left running: {:?}",
            sleeping(&m)
        );
        let pid = procman.running.pid() as u32;
        let children = || {
            procfs::all()
                .into_iter()
                .filter(|p| p.ppid == pid)
                .map(|p| p.pid)
                .collect::<Vec<u32>>()
        };
        assert!(
            eventually(T, || children() == [procman.guardian]),
            "{mode:?}: children besides the guardian {}: {:?}",
            procman.guardian,
            children()
        );
        if let Some(dir) = &procman.cgroup {
            let leaves = || {
                std::fs::read_dir(dir)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .count()
            };
            assert!(
                eventually(T, || leaves() == 0),
                "{mode:?}: {} cgroup(s) of finished processes left in {}",
                leaves(),
                dir.display()
            );
        }
        let (code, _, err) = served.client(&["stop"]);
        assert_eq!(code, 0, "{mode:?}: {err}");
        assert_eq!(procman.running.wait(T).code(), Some(0), "{mode:?}");
        procman.assert_cgroup_removed();
    }
}

/// The descriptors above 2 of process `pid` without close-on-exec.
fn inherited(pid: u32) -> impl Iterator<Item = u32> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&fd| fd > 2)
        .filter(move |fd| {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"));
            let flags = info.ok().and_then(|info| {
                let octal = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
                u32::from_str_radix(octal.trim(), 8).ok()
            });
            flags.is_some_and(|f| f & libc::O_CLOEXEC as u32 == 0)
        })
}

#[test]
fn a_process_inherits_only_stdin_stdout_and_stderr() {
    // However many descriptors procman holds for the processes already running (pidfds,
    // output pipes, log files), a new process gets 0, 1 and 2 (`ls` adds 3, its listing
    // of /proc/self/fd) and what procman inherited without close-on-exec, executed
    // directly or through the shell.
    for mode in MODES {
        let m = common::unique_sleep();
        let (served, procman) = serve(mode);
        // What procman itself inherited to pass on (from the test harness) is passed on.
        let mut expected: Vec<String> = ["0", "1", "2", "3"].map(String::from).to_vec();
        expected.extend(inherited(procman.running.pid() as u32).map(|fd| fd.to_string()));
        expected.sort();
        let run = |name: &str, script: &str| {
            format!("{{\"type\":\"run\",\"name\":\"{name}\",\"run\":\"{script}\",\"once\":true}}\n")
        };
        let mut burst: String = (0..20).map(|_| run("s", &format!("sleep {m}"))).collect();
        burst.push_str(&run("direct", "ls /proc/self/fd"));
        burst.push_str(&run("shell", "ls /proc/self/fd | cat"));
        common::write_fifo(&served.fifo(), burst.as_bytes());
        for name in ["direct", "shell"] {
            procman.running.wait_for(&format!("{name} ["), T);
            let done = format!("{name} [");
            assert!(
                eventually(T, || procman.running.stdout_lines().iter().any(|l| l
                    .contains(&done)
                    && l.contains("] completed after running"))),
                "{mode:?}: {name} did not complete:\n{}",
                procman.running.stdout_text()
            );
            let mut fds: Vec<String> = procman
                .running
                .stdout_lines()
                .iter()
                .filter_map(|l| l.split_once(" | "))
                .filter(|(who, _)| who.trim() == name)
                .map(|(_, fd)| fd.trim().to_owned())
                .collect();
            fds.sort();
            assert_eq!(fds, expected, "{mode:?}: {name}");
        }
        let (code, _, err) = served.client(&["stop"]);
        assert_eq!(code, 0, "{mode:?}: {err}");
        procman.assert_cgroup_removed();
        assert!(eventually(T, || sleeping(&m).is_empty()), "{mode:?}");
    }
}
