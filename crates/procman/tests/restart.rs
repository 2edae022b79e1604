//! Restart policies and one-process control with real processes and real signals: a stack
//! that survives a crash, and `restart` / `stop -p` / `start NAME` against `run` and `serve`.

mod common;

use std::time::Duration;

use common::{Running, Served, eventually, processes_matching, unique_sleep};

const T: Duration = Duration::from_secs(20);

/// Start times (ns since the epoch) a script appended to `file`, one per line.
fn starts(s: &Served, file: &str) -> Vec<u128> {
    std::fs::read_to_string(s.sb.file(file))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn process<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn pid_of(s: &Served, name: &str) -> Option<u64> {
    process(&s.status(), name)["pid"].as_u64()
}

/// `procman run` (no subcommand) in the sandbox, once every named process has started.
fn run_stack(s: &Served, names: &[&str]) -> Running {
    let running = Running::start(s.cmd(&[]));
    for name in names {
        running.wait_for(&format!("{name} ["), T);
    }
    running
}

#[test]
fn on_failure_with_max_restarts_runs_three_times_with_growing_gaps_then_fails() {
    let s = Served::new(
        "flaky:\n  run: date +%s%N >> starts; exit 3\n  restart: on-failure\n  max_restarts: 2\n  restart_delay: 200ms\n",
    );
    let mut running = Running::start(s.cmd(&[]));
    let status = running.wait(T);
    let out = running.stdout_text();
    assert_eq!(status.code(), Some(3), "{out}");
    let starts = starts(&s, "starts");
    assert_eq!(starts.len(), 3, "{out}");
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    assert!(gaps[0] >= 200, "first gap {gaps:?} ms");
    assert!(gaps[1] >= 400, "second gap doubles: {gaps:?} ms");
    assert!(out.contains("flaky: restart 1 of 2 in 200ms"), "{out}");
    assert!(out.contains("flaky: restart 2 of 2 in 400ms"), "{out}");
    assert!(out.contains("no restart left after 2 in a row"), "{out}");
}

#[test]
fn always_starts_a_process_again_after_exit_zero() {
    let s = Served::new(
        "blink:\n  run: date +%s%N >> starts; sleep 0.05\n  restart: always\n  restart_delay: 0s\n",
    );
    let mut running = Running::start(s.cmd(&[]));
    assert!(eventually(T, || starts(&s, "starts").len() >= 3));
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(T).code(), Some(0), "{}", running.stdout_text());
}

#[test]
fn a_sigkilled_worker_comes_back_while_the_rest_keeps_running() {
    let db = unique_sleep();
    let worker = format!("{db}1");
    let s = Served::new(&format!(
        "db:\n  run: exec sleep {db}\nworker:\n  run: exec sleep {worker}\n  restart: on-failure\n  restart_delay: 100ms\n"
    ));
    let mut running = run_stack(&s, &["db", "worker"]);
    let db_pid = pid_of(&s, "db").unwrap();
    let first = pid_of(&s, "worker").unwrap();
    // SAFETY: kill(2) on a pid we just read from our own server's status.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    assert!(eventually(T, || {
        let status = s.status();
        let w = process(&status, "worker");
        w["state"] == "running" && w["pid"].as_u64() != Some(first) && w["restarts"] == 1
    }));
    assert_eq!(pid_of(&s, "db"), Some(db_pid), "db was not touched");
    let out = running.stdout_text();
    assert!(out.contains("killed by SIGKILL"), "{out}");
    assert!(out.contains("worker: restart 1 in 100ms"), "{out}");
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(T).code(), Some(0));
    assert!(processes_matching(&format!("sleep {db}")).is_empty());
}

#[test]
fn while_a_stubborn_process_stops_the_server_answers_and_ctrl_c_works() {
    let m = common::marker("stubborn");
    let s = Served::new(&format!(
        "stubborn:\n  run: |\n    trap '' TERM\n    echo ready\n    while true; do sleep 0.05; done # {m}\n  stop_timeout: 60s\n"
    ));
    let mut server = s.serve();
    server.wait_for("stubborn | ready", T);
    let mut stopping = Running::start(s.cmd(&["stop", "-p", "stubborn"]));
    assert!(eventually(T, || process(&s.status(), "stubborn")["state"]
        == "stopping"));
    // Answered while the stop is in progress, not after its 60 s timeout.
    let (code, out, err) = s.client(&["start", "--name", "side", "sleep 30"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("started side (pid "), "{out}");
    assert_eq!(process(&s.status(), "stubborn")["state"], "stopping");
    server.signal(libc::SIGINT);
    server.wait_for("shutting down: received SIGINT", T);
    server.signal(libc::SIGINT);
    assert_eq!(server.wait(T).code(), Some(0), "{}", server.stdout_text());
    assert!(server.stdout_text().contains("second interrupt"));
    stopping.wait(T);
    assert!(eventually(Duration::from_secs(5), || processes_matching(
        &m
    )
    .is_empty()));
}

/// `restart NAME`, `stop -p NAME` and `start NAME` of a config process, against `run`
/// or `serve`.
fn one_process_at_a_time(serve: bool) {
    let web = unique_sleep();
    let other = format!("{web}2");
    let s = Served::new(&format!(
        "web:\n  run: exec sleep {web}\nother:\n  run: exec sleep {other}\n"
    ));
    let mut server = if serve {
        s.serve()
    } else {
        run_stack(&s, &["web", "other"])
    };
    let first = pid_of(&s, "web").unwrap();
    let (code, out, err) = s.client(&["restart", "web"]);
    assert_eq!(code, 0, "{err}");
    let second = pid_of(&s, "web").unwrap();
    assert_ne!(first, second);
    assert!(
        out.contains(&format!("started web (pid {second})")),
        "{out}"
    );
    assert_eq!(process(&s.status(), "web")["restarts"], 1);

    let (code, out, err) = s.client(&["stop", "-p", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stopped web"), "{out}");
    let status = s.status();
    assert_eq!(process(&status, "web")["state"], "stopped");
    assert_eq!(process(&status, "other")["state"], "running");
    assert!(processes_matching(&format!("^sleep {web}$")).is_empty());

    let (code, out, err) = s.client(&["start", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("started web (pid "), "{out}");
    assert_eq!(process(&s.status(), "web")["state"], "running");

    let (code, _, err) = s.client(&["restart", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no process named \"nope\"; known: web, other"),
        "{err}"
    );

    let (code, _, err) = s.client(&["stop"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.wait(T).code(), Some(0), "{}", server.stdout_text());
}

#[test]
fn restart_stop_and_start_one_process_against_run() {
    one_process_at_a_time(false);
}

#[test]
fn restart_stop_and_start_one_process_against_serve() {
    one_process_at_a_time(true);
}

#[test]
fn stop_with_a_process_name_instead_of_a_config_says_how() {
    let s = Served::new("web:\n  run: sleep 1\n");
    let (code, _, err) = s.client(&["stop", "web"]);
    assert_eq!(code, 2);
    assert!(err.contains("procman stop -p web"), "{err}");
}

#[test]
fn shutdown_keeps_the_first_start_order_after_a_restart() {
    let base = unique_sleep();
    let s = Served::new(&format!(
        "db:\n  run: exec sleep {base}\napi:\n  depends:\n    - process_exited: migrate\n  run: exec sleep {base}1\nmigrate:\n  run: 'true'\n  once: true\n"
    ));
    let mut running = run_stack(&s, &["db", "api"]);
    let (code, _, err) = s.client(&["restart", "db"]);
    assert_eq!(code, 0, "{err}");
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(T).code(), Some(0));
    let lines = running.stdout_lines();
    let stopped = |name: &str| {
        lines
            .iter()
            .rposition(|l| l.contains(&format!("{name} [")) && l.contains("stopped by SIGTERM"))
            .unwrap_or_else(|| panic!("{name} not stopped:\n{}", lines.join("\n")))
    };
    assert!(
        stopped("api") < stopped("db"),
        "db first started before api; its restart does not move it, so it still stops last:\n{}",
        lines.join("\n")
    );
}
