//! `output_matches`: a dependent waits for a line of another process's output, with real
//! processes. Order is asserted from the output (which is in output order), never timing.

mod common;

use std::time::Duration;

use common::{Sandbox, Served, processes_matching, unique_sleep};

const T: Duration = Duration::from_secs(30);

/// Index of the first stdout line containing `needle`.
fn pos(out: &str, needle: &str) -> usize {
    out.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line containing {needle:?} in:\n{out}"))
}

#[test]
fn dependent_starts_only_after_the_line_is_printed() {
    let sb = Sandbox::new(
        r#"
db:
  run: |
    echo "booting"
    sleep 0.5
    echo "ready to accept connections"
    sleep 0.5
  once: true
api:
  depends:
    - output_matches: "ready to accept"
      process: db
      timeout_seconds: 25
  run: echo "api runs"
  once: true
"#,
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let ready = pos(&out, "db | ready to accept connections");
    assert!(pos(&out, "db | booting") < ready, "{out}");
    assert!(
        ready < pos(&out, "api: dependency satisfied: output of `db` matches"),
        "{out}"
    );
    assert!(ready < pos(&out, "api | api runs"), "{out}");
}

#[test]
fn a_target_that_ends_first_fails_the_dependent_with_how_it_ended() {
    let sb = Sandbox::new(
        r#"
db:
  run: echo "starting"; echo "giving up"
  once: true
api:
  depends:
    - output_matches: "^ready"
      process: db
      timeout_seconds: 600
  run: echo "api runs"
  once: true
"#,
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("`db` exited with code 0 before printing a line matching `^ready`"),
        "{out}"
    );
    assert!(!out.contains("api runs"), "{out}");
    assert!(!out.contains("timed out"), "{out}");
}

#[test]
fn a_failing_target_stops_the_stack_without_starting_the_dependent() {
    let m = unique_sleep();
    let sb = Sandbox::new(&format!(
        r#"
web:
  run: echo "Port 5055 is in use" >&2; exit 1
api:
  depends:
    - output_matches: "listening"
      process: web
      timeout_seconds: 600
  run: echo "api runs"; exec sleep {m}
"#
    ));
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("shutting down: web exited with code 1"),
        "{out}"
    );
    assert!(!out.contains("api runs"), "{out}");
    assert!(!out.contains("timed out"), "{out}");
    assert!(processes_matching(&m).is_empty());
}

#[test]
fn a_line_printed_before_the_dependent_began_waiting_counts() {
    let m = unique_sleep();
    let served = Served::new(&format!(
        r#"
db:
  run: echo "ready to accept connections"; exec sleep {m}
api:
  autostart: false
  depends:
    - output_matches: "ready to accept"
      process: db
      timeout_seconds: 25
  run: echo "api runs"; exec sleep {m}
"#
    ));
    let server = served.serve();
    server.wait_for("db | ready to accept connections", T);
    let (code, out, err) = served.client(&["start", "api"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    server.wait_for("api | api runs", T);
    let (code, _, err) = served.client(&["stop"]);
    assert_eq!(code, 0, "{err}");
    drop(server);
    assert!(common::eventually(T, || processes_matching(&m).is_empty()));
}

#[test]
fn a_line_split_across_reads_matches_as_one_line() {
    let sb = Sandbox::new(
        r#"
db:
  run: |
    printf 'rea'
    sleep 0.3
    printf 'dy now\n'
    sleep 0.3
  once: true
api:
  depends:
    - output_matches: "^ready now$"
      process: db
      timeout_seconds: 25
  run: echo "api runs"
  once: true
"#,
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        pos(&out, "db | ready now") < pos(&out, "api | api runs"),
        "{out}"
    );
}

#[test]
fn colours_are_removed_before_matching() {
    let sb = Sandbox::new(
        r#"
db:
  run: |
    printf '\033[1;32mready\033[0m to go\n'
    sleep 0.3
  once: true
api:
  depends:
    - output_matches: "^ready to go$"
      process: db
      timeout_seconds: 25
  run: echo "api runs"
  once: true
"#,
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("api | api runs"), "{out}");
}

#[test]
fn a_group_is_ready_once_every_instance_printed_the_line() {
    let sb = Sandbox::new(
        r#"
db:
  replicas: 2
  run: |
    sleep "0.$((PROCMAN_REPLICA * 4))"
    echo "ready $PROCMAN_REPLICA"
    sleep 0.5
  once: true
api:
  depends:
    - output_matches: "^ready"
      process: db
      timeout_seconds: 25
  run: echo "api runs"
  once: true
"#,
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let api = pos(&out, "api | api runs");
    assert!(pos(&out, "db-0 | ready 0") < api, "{out}");
    assert!(pos(&out, "db-1 | ready 1") < api, "{out}");
}

#[test]
fn procman_wait_refuses_output_matches_with_a_reason() {
    let sb = Sandbox::new("db:\n  run: echo ready\n");
    let (status, out, err) = sb.run(&["wait", "--output-matches", "ready", "--process", "db"], T);
    // Refused like any invalid invocation (exit 2), without waiting.
    assert_eq!(status.code(), Some(2), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("needs a running stack"), "{err}");
}
