//! `procman attach` and idle shutdown: the server lives while clients hold references,
//! even clients killed with SIGKILL, and leaves nothing behind.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Running, Sandbox, eventually, processes_matching};

const T: Duration = Duration::from_secs(20);

struct Shared {
    sb: Sandbox,
    /// A sleep duration naming this test's configured process.
    marker: String,
}

impl Shared {
    fn new() -> Shared {
        let marker = common::unique_sleep();
        let sb = Sandbox::new(&format!("web:\n  run: exec sleep {marker}\n"));
        let run = sb.file("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Shared { sb, marker }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.sb.command(args);
        cmd.env("PROCMAN_RUNTIME_DIR", self.sb.file("run"));
        cmd
    }

    /// `procman attach --disconnect-timeout 1s -- sh -c SCRIPT`, running in the background.
    fn attach(&self, script: &str) -> Running {
        Running::start(self.cmd(&[
            "attach",
            "--disconnect-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            script,
        ]))
    }

    fn runtime_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.sb.file("run"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    fn server_pid(&self) -> Option<u32> {
        let paths = procman::control::RuntimePaths::in_dir(
            &self.sb.file("procman.yaml"),
            &self.sb.file("run"),
        )
        .unwrap();
        procman::control::ServerInfo::read(&paths.discovery)
            .filter(|s| s.is_live())
            .map(|s| s.pid)
    }

    fn children(&self) -> usize {
        processes_matching(&format!("^sleep {}", self.marker)).len()
    }

    fn assert_gone(&self) {
        assert!(
            eventually(T, || self.server_pid().is_none()
                && self.runtime_files().is_empty()),
            "{:?}",
            self.runtime_files()
        );
        assert!(
            eventually(T, || self.children() == 0),
            "server left its children"
        );
    }
}

fn pid_line(running: &Running) -> u32 {
    let line = running.wait_for("server ", T);
    line.trim_start_matches("server ").trim().parse().unwrap()
}

#[test]
fn attach_starts_reuses_and_the_server_leaves_after_the_last_client() {
    let s = Shared::new();
    let mut first =
        s.attach("echo server $PROCMAN_SERVER_PID; echo config $PROCMAN_CONFIG; sleep 0.5");
    let pid = pid_line(&first);
    assert!(first.wait_for("config ", T).ends_with("procman.yaml"));
    // Ready means the configured process runs.
    assert_eq!(s.children(), 1);
    let mut second = s.attach("echo server $PROCMAN_SERVER_PID; exit 7");
    assert_eq!(
        pid_line(&second),
        pid,
        "second attach must reuse the server"
    );
    assert_eq!(
        second.wait(T).code(),
        Some(7),
        "attach exits with the command's code"
    );
    assert_eq!(first.wait(T).code(), Some(0));
    // Still there right after the last client left (disconnect timeout 1 s)…
    assert_eq!(s.server_pid(), Some(pid));
    // …and gone after it, with every runtime file.
    s.assert_gone();
}

#[test]
fn a_sigkilled_client_still_lets_the_server_leave() {
    let s = Shared::new();
    let m = common::unique_sleep();
    let client = s.attach(&format!("echo server $PROCMAN_SERVER_PID; sleep {m}"));
    let pid = pid_line(&client);
    client.signal(libc::SIGKILL);
    // The killed client's command would outlive it; end it like a terminal would, again
    // until none is left (its shell may fork the sleep after one round has looked).
    assert!(eventually(T, || {
        let left = processes_matching(&m);
        for line in &left {
            let child: i32 = line.split_whitespace().next().unwrap().parse().unwrap();
            // SAFETY: kill(2) on the killed client's own command.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        left.is_empty()
    }));
    assert!(
        eventually(T, || s.server_pid() != Some(pid)),
        "server kept running after its only client was killed"
    );
    s.assert_gone();
}

#[test]
fn a_client_inside_the_window_keeps_the_same_server() {
    let s = Shared::new();
    let mut first = s.attach("echo server $PROCMAN_SERVER_PID");
    let pid = pid_line(&first);
    first.wait(T);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = s.attach("echo server $PROCMAN_SERVER_PID");
    assert_eq!(pid_line(&again), pid);
    again.wait(T);
    s.assert_gone();
}

#[test]
fn serve_without_clients_leaves_after_the_no_client_timeout() {
    let s = Shared::new();
    let mut server = Running::start(s.cmd(&["serve", "--no-client-timeout", "1s"]));
    server.wait_for("listening on", T);
    assert_eq!(server.wait(T).code(), Some(0));
    assert!(
        server.stdout_text().contains("idle: no client for 1s"),
        "{}",
        server.stdout_text()
    );
    s.assert_gone();
}

#[test]
fn serve_by_hand_never_leaves_on_its_own() {
    let s = Shared::new();
    let server = Running::start(s.cmd(&["serve"]));
    server.wait_for("listening on", T);
    let mut status = Running::start(s.cmd(&["status"]));
    assert_eq!(status.wait(T).code(), Some(0));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(s.server_pid().is_some());
    let mut stop = Running::start(s.cmd(&["stop"]));
    assert_eq!(stop.wait(T).code(), Some(0));
    s.assert_gone();
}

#[test]
fn a_sigkilled_server_leaves_no_orphans_and_the_next_attach_starts_fresh() {
    let s = Shared::new();
    let mut first = s.attach("echo server $PROCMAN_SERVER_PID");
    let pid = pid_line(&first);
    first.wait(T);
    // SAFETY: kill(2) on the server the test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(
        eventually(Duration::from_secs(2), || s.children() == 0),
        "orphaned children"
    );
    let mut next = s.attach("echo server $PROCMAN_SERVER_PID");
    let fresh = pid_line(&next);
    assert_ne!(fresh, pid);
    next.wait(T);
    s.assert_gone();
}

#[test]
fn twenty_concurrent_attaches_share_one_server() {
    let s = Shared::new();
    let clients: Vec<Running> = (0..20)
        .map(|_| s.attach("echo server $PROCMAN_SERVER_PID; sleep 0.3"))
        .collect();
    let pids: Vec<u32> = clients.iter().map(pid_line).collect();
    assert!(
        pids.iter().all(|&p| p == pids[0]),
        "more than one server: {pids:?}"
    );
    for mut c in clients {
        assert_eq!(c.wait(T).code(), Some(0));
    }
    s.assert_gone();
    let log = std::fs::read_to_string(s.sb.file("procman-logs/procman.log")).unwrap();
    assert_eq!(
        log.matches("started with 1 process(es), mode=serve")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("shutting down").count(), 1, "{log}");
}

#[test]
fn attach_fails_clearly_when_a_dependency_never_holds() {
    let sb = Sandbox::new(
        "api:\n  depends:\n    - path: never.flag\n      timeout_seconds: 60\n  run: sleep 1000\n",
    );
    std::fs::create_dir(sb.file("run")).unwrap();
    let mut cmd = sb.command(&[
        "attach",
        "--startup-timeout",
        "1s",
        "--disconnect-timeout",
        "0s",
        "--",
        "true",
    ]);
    cmd.env("PROCMAN_RUNTIME_DIR", sb.file("run"));
    let mut client = Running::start(cmd);
    assert_ne!(client.wait(T).code(), Some(0));
    assert!(
        client.stderr_text().contains("never.flag"),
        "{}",
        client.stderr_text()
    );
    assert!(eventually(T, || std::fs::read_dir(sb.file("run"))
        .unwrap()
        .count()
        == 0));
}

#[test]
fn a_client_of_another_version_warns_and_still_works() {
    let s = Shared::new();
    let mut server = Running::start(s.cmd(&["serve"]));
    server.wait_for("listening on", T);
    let paths =
        procman::control::RuntimePaths::in_dir(&s.sb.file("procman.yaml"), &s.sb.file("run"))
            .unwrap();
    let mut info = procman::control::ServerInfo::read(&paths.discovery).unwrap();
    info.version = "0.1.9".into();
    info.write(&paths.discovery).unwrap();
    let mut client = Running::start(s.cmd(&["attach", "--", "true"]));
    assert_eq!(client.wait(T).code(), Some(0));
    let err = client.stderr_text();
    assert!(
        err.contains("procman 0.1.9") && err.contains(env!("CARGO_PKG_VERSION")),
        "{err}"
    );
    let mut stop = Running::start(s.cmd(&["stop"]));
    assert_eq!(stop.wait(T).code(), Some(0));
    assert!(stop.stderr_text().contains("0.1.9"));
    server.wait(T);
    s.assert_gone();
}

#[test]
fn attach_runs_the_command_only_once_dependencies_have_held() {
    let m = common::unique_sleep();
    let sb = Sandbox::new(&format!(
        "web:\n  run: sleep 0.5; touch flag; exec sleep {m}\napi:\n  depends:\n    - path: flag\n      poll_interval: 0.05\n  run: exec sleep {m}\n"
    ));
    std::fs::create_dir(sb.file("run")).unwrap();
    let mut cmd = sb.command(&[
        "attach",
        "--disconnect-timeout",
        "0s",
        "--",
        "sh",
        "-c",
        "test -f flag || exit 9",
    ]);
    cmd.env("PROCMAN_RUNTIME_DIR", sb.file("run"));
    let mut client = Running::start(cmd);
    assert_eq!(
        client.wait(T).code(),
        Some(0),
        "the command ran before api's dependency held"
    );
    assert!(eventually(T, || processes_matching(&m).is_empty()));
    assert!(eventually(T, || std::fs::read_dir(sb.file("run"))
        .unwrap()
        .count()
        == 0));
}

#[test]
fn attach_says_why_the_server_it_started_stopped() {
    let marker = common::unique_sleep();
    // `api` waits for a file that never comes, so the server cannot be ready before `web`
    // has failed: the failure, not readiness, decides.
    let sb = Sandbox::new(&format!(
        "web:\n  run: echo \"Port 5055 is in use\" >&2; exit 1\napi:\n  depends:\n    - path: never.flag\n      timeout_seconds: 600\n  run: exec sleep {marker}\n"
    ));
    std::fs::create_dir(sb.file("run")).unwrap();
    std::fs::set_permissions(
        sb.file("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut cmd = sb.command(&["attach", "--", "echo", "the command ran"]);
    cmd.env("PROCMAN_RUNTIME_DIR", sb.file("run"));
    let mut client = Running::start(cmd);
    let status = client.wait(T);
    let (out, err) = (client.stdout_text(), client.stderr_text());
    assert_eq!(status.code(), Some(2), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("the command ran"), "{out}");
    assert!(
        err.contains("stopped before its processes were ready: web exited with code 1"),
        "{err}"
    );
    assert!(err.contains("web | Port 5055 is in use"), "{err}");
    assert!(!err.contains("invalid reply"), "{err}");
    assert!(eventually(T, || std::fs::read_dir(sb.file("run"))
        .unwrap()
        .count()
        == 0));
    assert!(processes_matching(&marker).is_empty());
}

#[test]
fn attach_shows_only_the_new_servers_output_when_it_fails() {
    let sb = Sandbox::new(
        "web:\n  run: exit 3\napi:\n  depends:\n    - path: never.flag\n  run: sleep 1000\n",
    );
    let run = sb.file("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // An earlier server's output, left in the log it appends to.
    let paths = procman::control::RuntimePaths::in_dir(&sb.file("procman.yaml"), &run).unwrap();
    let log = paths.discovery.with_extension("log");
    std::fs::write(&log, "    old | from an earlier server\n").unwrap();
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cmd = sb.command(&["attach", "--", "true"]);
    cmd.env("PROCMAN_RUNTIME_DIR", &run);
    let mut client = Running::start(cmd);
    assert_eq!(client.wait(T).code(), Some(2));
    let err = client.stderr_text();
    assert!(err.contains("web exited with code 3"), "{err}");
    assert!(!err.contains("from an earlier server"), "{err}");
}

#[test]
fn serve_in_the_foreground_shows_why_it_stopped() {
    let sb = Sandbox::new("web:\n  run: echo \"Port 5055 is in use\" >&2; exit 1\n");
    std::fs::create_dir(sb.file("run")).unwrap();
    let mut cmd = sb.command(&["serve"]);
    cmd.env("PROCMAN_RUNTIME_DIR", sb.file("run"));
    let mut server = Running::start(cmd);
    let status = server.wait(T);
    let out = server.stdout_text();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("web | Port 5055 is in use"), "{out}");
    assert!(
        out.contains("shutting down: web exited with code 1"),
        "{out}"
    );
}
