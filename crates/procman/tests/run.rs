//! `procman run` end to end: real children, real signals, real exit codes.

mod common;

use std::time::Duration;

use common::{Sandbox, eventually, marker, processes_matching};

const T: Duration = Duration::from_secs(20);

fn pos(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line containing {needle:?} in:\n{}", lines.join("\n")))
}

#[test]
fn once_jobs_pass_values_and_exit_zero() {
    let sb = Sandbox::new(
        r#"
setup:
  run: echo "GREETING=hello from setup" > $PROCMAN_OUTPUT
  once: true
greet:
  depends:
    - process_exited: setup
  env:
    WHO: "${{ setup.GREETING }}"
  run: echo "got [$WHO] and [${{ setup.GREETING }}]"
  once: true
"#,
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("greet | got [hello from setup] and [hello from setup]"),
        "{out}"
    );
    let log = std::fs::read_to_string(sb.file("procman-logs/greet.log")).unwrap();
    assert_eq!(log, "got [hello from setup] and [hello from setup]\n");
    let combined = std::fs::read_to_string(sb.file("procman-logs/procman.log")).unwrap();
    assert!(combined.contains("setup ["), "{combined}");
}

#[test]
fn a_template_value_is_never_read_as_shell_code() {
    // The output file is data (a job may copy it from anywhere); only values that mean
    // nothing to the shell are spliced into the script, the rest arrive as variables.
    let sb = Sandbox::new(
        r#"
setup:
  run: |
    printf '%s\n' 'PORT=8080' 'EVIL=$(touch PWNED1)`touch PWNED2`"; touch PWNED3; "' > $PROCMAN_OUTPUT
  once: true
use:
  depends:
    - process_exited: setup
  run: echo "port=${{ setup.PORT }} evil=${{ setup.EVIL }}"; echo bare ${{ setup.EVIL }}
  once: true
"#,
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let evil = r#"$(touch PWNED1)`touch PWNED2`"; touch PWNED3; ""#;
    assert!(
        out.contains(&format!("use | port=8080 evil={evil}")),
        "{out}"
    );
    assert!(out.contains(&format!("use | bare {evil}")), "{out}");
    for pwned in ["PWNED1", "PWNED2", "PWNED3"] {
        assert!(!sb.file(pwned).exists(), "{pwned} was created: {out}");
    }
}

#[test]
fn an_output_file_replaced_by_a_fifo_or_a_device_is_not_read() {
    // Read on the supervisor's thread: a FIFO there hung procman for good, and /dev/zero
    // would have filled its memory.
    for replace in [
        "mkfifo \"$PROCMAN_OUTPUT\"",
        "ln -s /dev/zero \"$PROCMAN_OUTPUT\"",
    ] {
        let sb = Sandbox::new(&format!(
            r#"
setup:
  run: rm -f "$PROCMAN_OUTPUT" && {replace}
  once: true
use:
  depends:
    - process_exited: setup
  run: echo "got ${{{{ setup.KEY }}}}"
  once: true
"#
        ));
        let (status, out, err) = sb.run(&[], T);
        assert_eq!(status.code(), Some(1), "{replace}:\n{out}{err}");
        assert!(
            out.contains("setup.output: it is a FIFO (named pipe), not a regular file; its values are not read")
                || out.contains("setup.output: it is a character device, not a regular file; its values are not read"),
            "{replace}:\n{out}"
        );
        assert!(
            out.contains("process `setup` did not output `KEY`"),
            "{out}"
        );
    }
}

#[test]
fn a_users_file_named_like_an_output_file_is_left_alone() {
    let sb = Sandbox::new("web:\n  run: echo \"output=[${PROCMAN_OUTPUT:-none}]\"\n  once: true\n");
    let logs = sb.file("procman-logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("web.output"), "KEY=mine\n").unwrap();
    let mut cmd = sb.command(&[]);
    // Nor is an inherited one passed on: it is no file of this run.
    cmd.env("PROCMAN_OUTPUT", logs.join("web.output"));
    let mut running = common::Running::start(cmd);
    let status = running.wait(T);
    let out = running.stdout_text();
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("web | output=[none]"), "{out}");
    assert!(
        out.contains("web.output already exists and procman has no record of creating it"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("web.output")).unwrap(),
        "KEY=mine\n"
    );
}

#[test]
fn output_files_of_the_last_run_move_aside_and_never_satisfy_templates() {
    let write = "setup:\n  run: echo GREETING=one > $PROCMAN_OUTPUT.tmp && mv $PROCMAN_OUTPUT.tmp $PROCMAN_OUTPUT\n  once: true\n";
    let sb = Sandbox::new(write);
    let (status, out, _) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{out}");
    // The same file, replaced by a rename, is still known as procman's at the next start.
    let (status, out, _) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(!out.contains("already exists"), "{out}");
    let previous = sb.file("procman-logs/previous/setup.output");
    assert_eq!(
        std::fs::read_to_string(&previous).unwrap(),
        "GREETING=one\n"
    );

    std::fs::write(
        sb.file("procman.yaml"),
        "setup:\n  run: \"true\"\n  once: true\ngreet:\n  depends:\n    - process_exited: setup\n  run: echo \"got ${{ setup.GREETING }}\"\n  once: true\n",
    )
    .unwrap();
    let (status, out, _) = sb.run(&[], T);
    assert_ne!(status.code(), Some(0), "{out}");
    assert!(!out.contains("got one"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&previous).unwrap(),
        "GREETING=one\n"
    );
    assert_eq!(
        std::fs::read_to_string(sb.file("procman-logs/setup.output")).unwrap(),
        ""
    );
}

#[test]
fn failing_once_job_sets_exit_code_and_stops_the_rest() {
    let m = common::unique_sleep();
    let sb = Sandbox::new(&format!(
        "web:\n  run: exec sleep {m}\nbroken:\n  run: exit 3\n  once: true\n"
    ));
    let (status, out, _) = sb.run(&[], T);
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("broken ["), "{out}");
    assert!(out.contains("exited with code 3"), "{out}");
    assert!(processes_matching(&m).is_empty(), "web left running");
}

#[test]
fn pipelines_run_under_pipefail_not_the_dash_failure() {
    let sb = Sandbox::new(
        "p:\n  run: |\n    echo one | cat\n    false | true\n    echo unreachable\n  once: true\n",
    );
    let (status, out, _) = sb.run(&[], T);
    assert!(!out.contains("Illegal option"), "{out}");
    assert!(out.contains("p | one"), "{out}");
    assert!(
        !out.contains("unreachable"),
        "pipefail must stop the script: {out}"
    );
    assert_eq!(status.code(), Some(1));
}

#[test]
fn without_bash_a_posix_shell_runs_the_script() {
    let sb = Sandbox::new("p:\n  run: echo via-sh | cat\n  once: true\n");
    let bin = sb.file("nobash");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "cat"] {
        let real = which(tool);
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let (status, out, _) = sb.run_with_env(&[], "PATH", bin.to_str().unwrap());
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("p | via-sh"), "{out}");
}

fn which(tool: &str) -> String {
    let out = std::process::Command::new("bash")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

trait RunWithEnv {
    fn run_with_env(
        &self,
        args: &[&str],
        key: &str,
        value: &str,
    ) -> (std::process::ExitStatus, String, String);
}

impl RunWithEnv for Sandbox {
    fn run_with_env(
        &self,
        args: &[&str],
        key: &str,
        value: &str,
    ) -> (std::process::ExitStatus, String, String) {
        let mut cmd = self.command(args);
        cmd.env(key, value);
        let mut running = common::Running::start(cmd);
        let status = running.wait(T);
        (status, running.stdout_text(), running.stderr_text())
    }
}

#[test]
fn env_precedence_system_then_flags_then_process_env() {
    let sb = Sandbox::new(
        "p:\n  env:\n    C: from-yaml\n  run: echo \"A=$A B=$B C=$C\"\n  once: true\n",
    );
    let mut cmd = sb.command(&["run", "-e", "B=from-flag", "-e", "C=from-flag"]);
    cmd.env("A", "from-system")
        .env("B", "from-system")
        .env("C", "from-system");
    let mut running = common::Running::start(cmd);
    assert_eq!(running.wait(T).code(), Some(0));
    assert!(
        running
            .stdout_text()
            .contains("A=from-system B=from-flag C=from-yaml"),
        "{}",
        running.stdout_text()
    );
}

#[test]
fn sigkilled_supervisor_leaves_no_orphans() {
    let m = common::unique_sleep();
    let sb = Sandbox::new(&format!(
        "a:\n  run: \"bash -c 'sleep {m} & sleep {m}'\"\nb:\n  run: \"sleep {m} & sleep {m}\"\n"
    ));
    let running = sb.spawn(&[]);
    running.wait_for("a [", T);
    running.wait_for("b [", T);
    // Four sleeps (two of them grandchildren behind an inner bash), plus the shells.
    assert!(
        eventually(T, || processes_matching(&format!("^sleep {m}")).len() == 4),
        "children not running: {:?}",
        processes_matching(&m)
    );
    running.signal(libc::SIGKILL);
    // Every group must be gone within 1 s of the supervisor's death.
    assert!(
        eventually(Duration::from_secs(1), || processes_matching(&m).is_empty()),
        "left behind: {:?}",
        processes_matching(&m)
    );
}

#[test]
fn stubborn_child_is_killed_after_its_stop_timeout() {
    let m = marker("stubborn");
    let sb = Sandbox::new(&format!(
        "stubborn:\n  run: |\n    trap '' TERM\n    echo ready\n    while true; do sleep 0.05; done # {m}\n  stop_timeout: 300ms\n"
    ));
    let mut running = sb.spawn(&[]);
    running.wait_for("stubborn | ready", T);
    running.signal(libc::SIGTERM);
    let status = running.wait(T);
    assert_eq!(status.code(), Some(0));
    let out = running.stdout_text();
    assert!(
        out.contains("did not stop within 300ms: sending SIGKILL"),
        "{out}"
    );
    assert!(processes_matching(&m).is_empty());
}

#[test]
fn second_ctrl_c_kills_at_once() {
    let m = marker("patient");
    let sb = Sandbox::new(&format!(
        "patient:\n  run: |\n    trap '' TERM INT\n    echo ready\n    while true; do sleep 0.05; done # {m}\n  stop_timeout: 60s\n"
    ));
    let mut running = sb.spawn(&[]);
    running.wait_for("patient | ready", T);
    running.signal(libc::SIGINT);
    running.wait_for("shutting down", T);
    running.signal(libc::SIGINT);
    // Far below the 60 s stop_timeout.
    running.wait(Duration::from_secs(10));
    assert!(
        running.stdout_text().contains("second interrupt"),
        "{}",
        running.stdout_text()
    );
    assert!(eventually(Duration::from_secs(2), || processes_matching(
        &m
    )
    .is_empty()));
}

#[test]
fn exiting_long_runner_stops_the_others_in_reverse_start_order() {
    let sb = Sandbox::new(
        "first:\n  run: sleep 1000\nsecond:\n  depends:\n    - path: ready\n  run: sleep 1000\nquitter:\n  depends:\n    - path: ready\n  run: sleep 0.3; exit 7\n",
    );
    std::fs::write(sb.file("ready"), "").unwrap();
    let (status, out, _) = sb.run(&[], T);
    assert_eq!(status.code(), Some(7), "{out}");
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    let killed_second = lines
        .iter()
        .rposition(|l| l.contains("second [") && l.contains("SIGTERM"))
        .expect(&out);
    let killed_first = lines
        .iter()
        .rposition(|l| l.contains("first [") && l.contains("SIGTERM"))
        .expect(&out);
    assert!(
        killed_second < killed_first,
        "second started later, so it stops first:\n{out}"
    );
}

#[test]
fn dependency_timeout_names_process_and_condition() {
    let sb = Sandbox::new(
        "api:\n  depends:\n    - path: never-appears\n      timeout_seconds: 1\n      poll_interval: 0.1\n  run: echo never\n",
    );
    let (status, out, _) = sb.run(&[], T);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("api"), "{out}");
    assert!(out.contains("never-appears"), "{out}");
    assert!(out.contains("timed out"), "{out}");
    assert!(!out.contains("api | never"), "{out}");
}

#[test]
fn retry_false_fails_at_once() {
    let sb = Sandbox::new(
        "api:\n  depends:\n    - not_exists: stale.lock\n      retry: false\n  run: echo never\n",
    );
    std::fs::write(sb.file("stale.lock"), "").unwrap();
    let started = std::time::Instant::now();
    let (status, out, _) = sb.run(&[], T);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("stale.lock"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn tcp_and_http_dependencies_gate_the_start() {
    let port = common::free_port();
    let sb = Sandbox::new(&format!(
        r#"
web:
  run: exec python3 -m http.server {port} --bind 127.0.0.1
api:
  depends:
    - tcp: 127.0.0.1:{port}
      poll_interval: 0.1
    - url: http://127.0.0.1:{port}/
      code: 200
      poll_interval: 0.1
  run: echo api-is-up; exit 0
  once: true
"#
    ));
    let mut running = sb.spawn(&[]);
    running.wait_for("api | api-is-up", T);
    running.signal(libc::SIGTERM);
    running.wait(T);
    let lines = running.stdout_lines();
    assert!(pos(&lines, "web [") < pos(&lines, "api ["));
    assert!(pos(&lines, "dependency satisfied") < pos(&lines, "api ["));
}

#[test]
fn for_each_fans_out_and_gates_dependents() {
    let sb = Sandbox::new(
        "nodes:\n  for_each:\n    glob: \"conf/*.yaml\"\n    as: CONFIG_PATH\n  run: echo \"node $(basename $CONFIG_PATH)\"\n  once: true\ndeploy:\n  depends:\n    - process_exited: nodes\n  run: echo deployed\n  once: true\n",
    );
    std::fs::create_dir(sb.file("conf")).unwrap();
    for n in ["a", "b", "c"] {
        std::fs::write(sb.file(&format!("conf/{n}.yaml")), "").unwrap();
    }
    let (status, out, _) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{out}");
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        assert!(out.contains(&format!("nodes-{i} | node {n}.yaml")), "{out}");
    }
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    let last_node = lines
        .iter()
        .rposition(|l| l.contains("nodes-") && l.contains("completed"))
        .unwrap();
    assert!(last_node < pos(&lines, "deploy ["), "{out}");
}

#[test]
fn missing_config_says_where_it_looked() {
    let sb = Sandbox::new("");
    std::fs::remove_file(sb.file("procman.yaml")).unwrap();
    let (status, _, err) = sb.run(&[], T);
    assert_ne!(status.code(), Some(0));
    assert!(err.contains("procman.yaml"), "{err}");
}

#[test]
fn check_reports_errors_with_line_and_column() {
    let sb = Sandbox::new("web:\n  run: serve\n  depnds:\n    - path: x\n");
    let (status, out, err) = sb.run(&["check"], T);
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty());
    assert!(err.contains("procman.yaml:3:3: error:"), "{err}");
    assert!(err.contains("depnds"), "{err}");

    let ok = Sandbox::new("web:\n  run: serve\n");
    let (status, out, err) = ok.run(&["check"], T);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.is_empty() && err.is_empty());
}

#[test]
fn cycle_is_rejected_before_anything_starts() {
    let m = marker("cycle");
    let sb = Sandbox::new(&format!(
        "a:\n  run: echo {m}\n  once: true\n  depends:\n    - process_exited: b\nb:\n  run: echo {m}\n  once: true\n  depends:\n    - process_exited: a\n"
    ));
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("a -> b -> a") || err.contains("b -> a -> b"),
        "{err}"
    );
    assert!(!out.contains(&m));
}

#[test]
fn cwd_is_relative_to_the_config_file() {
    let sb = Sandbox::new("p:\n  cwd: sub\n  run: pwd\n  once: true\n");
    std::fs::create_dir(sb.file("sub")).unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut cmd = sb.command(&["run", sb.file("procman.yaml").to_str().unwrap()]);
    cmd.current_dir(other.path());
    let mut running = common::Running::start(cmd);
    assert_eq!(running.wait(T).code(), Some(0));
    let expected = std::fs::canonicalize(sb.file("sub")).unwrap();
    assert!(
        running
            .stdout_text()
            .contains(&format!("p | {}", expected.display())),
        "{}",
        running.stdout_text()
    );
}

#[test]
fn failing_watch_spawns_the_dormant_recovery_process() {
    let m = common::unique_sleep();
    let sb = Sandbox::new(&format!(
        r#"
web:
  run: exec sleep {m}
  watch:
    - name: flag
      check:
        path: healthy.flag
      poll_interval: 0.1
      failure_threshold: 2
      on_fail:
        spawn: recovery
recovery:
  autostart: false
  once: true
  run: echo "recovering after $PROCMAN_WATCH_FAILURES failures of $PROCMAN_WATCH_NAME"; touch healthy.flag
"#
    ));
    let mut running = sb.spawn(&[]);
    running.wait_for("recovery | recovering after 2 failures of flag", T);
    assert!(eventually(T, || sb.file("healthy.flag").exists()));
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(T).code(), Some(0));
    assert!(processes_matching(&m).is_empty());
}

#[test]
fn failing_watch_with_shutdown_stops_everything() {
    let sb = Sandbox::new(
        "web:\n  run: exec sleep 1000\n  watch:\n    - check:\n        tcp: 127.0.0.1:1\n      poll_interval: 0.1\n      failure_threshold: 1\n",
    );
    let (status, out, _) = sb.run(&[], T);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("web: watch web.watch-0 failed 1 time(s) in a row"),
        "{out}"
    );
}

#[test]
fn for_each_instances_substitute_their_file_into_dependencies() {
    let sb = Sandbox::new(
        "nodes:\n  for_each:\n    glob: \"conf/*.yaml\"\n    as: CFG\n  depends:\n    - path: ${CFG}.ready\n      poll_interval: 0.1\n      timeout_seconds: 10\n  run: echo \"node $(basename $CFG)\"\n  once: true\n",
    );
    std::fs::create_dir(sb.file("conf")).unwrap();
    for n in ["a", "b"] {
        std::fs::write(sb.file(&format!("conf/{n}.yaml")), "").unwrap();
        std::fs::write(sb.file(&format!("conf/{n}.yaml.ready")), "").unwrap();
    }
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.contains("nodes-0 | node a.yaml") && out.contains("nodes-1 | node b.yaml"),
        "{out}"
    );
}

#[test]
fn group_members_get_their_stop_timeout_after_the_leader_exits() {
    // The leader (bash in `wait`) dies on SIGTERM at once; a member of its group traps
    // SIGTERM and needs a moment to clean up. It must get that moment, not a SIGKILL.
    let sb = Sandbox::new(
        "svc:\n  run: |\n    ( trap 'sleep 0.5; touch cleaned; exit 0' TERM; while true; do sleep 0.05; done ) &\n    echo ready\n    wait\n  stop_timeout: 10s\n",
    );
    let mut running = sb.spawn(&[]);
    running.wait_for("svc | ready", T);
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(T).code(), Some(0));
    assert!(
        sb.file("cleaned").exists(),
        "the trapping group member was killed:\n{}",
        running.stdout_text()
    );
}

#[test]
fn a_process_is_announced_before_its_first_line() {
    // Processes that print at once, started together: their first line is read as soon
    // as it is written, which must still come after the supervisor says it started.
    let mut config = String::new();
    for i in 0..12 {
        config.push_str(&format!("p{i}:\n  run: echo first-{i}\n  once: true\n"));
    }
    let sb = Sandbox::new(&config);
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    for i in 0..12 {
        let started = pos(&lines, &format!("p{i} ["));
        assert!(lines[started].contains("started"), "{out}");
        assert!(started < pos(&lines, &format!("first-{i}")), "{out}");
    }
}
