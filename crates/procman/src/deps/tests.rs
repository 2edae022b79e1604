//! Tests against real sockets, files and processes; every wait is bounded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::config::{Dependency, DependencyKind, FileFormat, Location};

const BOUND: Duration = Duration::from_secs(5);

fn dep(kind: DependencyKind) -> Dependency {
    Dependency {
        kind,
        poll_interval: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
        retry: true,
        location: Location::default(),
    }
}

fn timeout(mut d: Dependency, ms: u64) -> Dependency {
    d.timeout = Duration::from_millis(ms);
    d
}

fn no_retry(mut d: Dependency) -> Dependency {
    d.retry = false;
    d
}

type Board = watch::Sender<BTreeMap<String, ExitState>>;

fn board() -> (Board, ExitBoard) {
    watch::channel(BTreeMap::new())
}

struct Run {
    result: Result<BTreeMap<String, String>, DepFailure>,
    events: Vec<String>,
    elapsed: Duration,
}

impl Run {
    fn ok(&self) -> &BTreeMap<String, String> {
        match &self.result {
            Ok(env) => env,
            Err(e) => panic!("expected success, got: {e}"),
        }
    }

    fn err(&self) -> &DepFailure {
        match &self.result {
            Ok(env) => panic!("expected failure, got {env:?}"),
            Err(e) => e,
        }
    }

    fn not_ready_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.starts_with("not ready"))
            .count()
    }
}

async fn run_with(deps: &[Dependency], exits: ExitBoard, bound: Duration) -> Run {
    let events = Mutex::new(Vec::new());
    let report = |p: Progress<'_>| {
        let line = match p {
            Progress::Waiting { dependency } => format!("waiting: {dependency}"),
            Progress::NotReady { dependency, reason } => {
                format!("not ready: {dependency}: {reason}")
            }
            Progress::Satisfied {
                dependency,
                remaining,
            } => format!("satisfied: {dependency} ({remaining} left)"),
        };
        events.lock().unwrap().push(line);
    };
    let started = Instant::now();
    let result = tokio::time::timeout(bound, wait_for_all("api", deps, exits, None, &report))
        .await
        .expect("wait_for_all exceeded the test bound");
    Run {
        result,
        events: events.into_inner().unwrap(),
        elapsed: started.elapsed(),
    }
}

async fn run(deps: &[Dependency]) -> Run {
    run_with(deps, board().1, BOUND).await
}

fn assert_timed_out(run: &Run, ms: u64) {
    assert_eq!(
        run.err().reason,
        FailReason::TimedOut(Duration::from_millis(ms)),
        "{}",
        run.err()
    );
    assert!(
        run.elapsed >= Duration::from_millis(ms),
        "{:?}",
        run.elapsed
    );
    assert!(
        run.elapsed < Duration::from_millis(ms + 1500),
        "{:?}",
        run.elapsed
    );
}

fn assert_fails_fast(run: &Run) {
    assert!(
        matches!(run.err().reason, FailReason::RetryDisabled { .. }),
        "{}",
        run.err()
    );
    assert!(
        run.elapsed < Duration::from_millis(1500),
        "{:?}",
        run.elapsed
    );
    assert_eq!(run.not_ready_count(), 0);
}

fn later(after_ms: u64, f: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        f();
    });
}

// ---- HTTP ----

/// Answers 503 to the first `fail_first` requests, then 200; counts requests.
async fn http_server(fail_first: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let served = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let n = served.fetch_add(1, Ordering::SeqCst);
                let status = if n < fail_first {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let response =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/health"), count)
}

fn http(url: &str, code: u16) -> DependencyKind {
    DependencyKind::Http {
        url: url.to_owned(),
        code,
    }
}

#[tokio::test]
async fn http_holds_once_the_server_answers_200() {
    let (url, count) = http_server(2).await;
    let run = run(&[timeout(dep(http(&url, 200)), 3000)]).await;
    run.ok();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(run.not_ready_count(), 1);
    assert!(run.events[1].ends_with(": status 503"), "{:?}", run.events);
}

#[tokio::test]
async fn http_non_2xx_status_can_be_the_expected_one() {
    let (url, _) = http_server(usize::MAX).await;
    let (_tx, exits) = board();
    assert_eq!(
        check_once(&http(&url, 503), &exits).await,
        Check::Holds { value: None }
    );
}

#[tokio::test]
async fn http_times_out_with_the_last_status() {
    let (url, count) = http_server(usize::MAX).await;
    let mut d = dep(http(&url, 200));
    d.poll_interval = Duration::from_millis(100);
    let run = run(&[d]).await;
    assert_timed_out(&run, 300);
    assert_eq!(
        run.err().to_string(),
        format!("api: dependency timed out after 300ms: {url} returns 200 (last: status 503)")
    );
    let checks = count.load(Ordering::SeqCst);
    assert!((2..=4).contains(&checks), "{checks} checks in 300ms");
}

/// Answers 503 to everything, the first answer only after `first_delay`; records arrivals.
async fn slow_first_server(first_delay: Duration) -> (String, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push(Instant::now());
                seen.len() == 1
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                if first {
                    tokio::time::sleep(first_delay).await;
                }
                let response = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/"), arrivals)
}

#[tokio::test]
async fn checks_start_poll_interval_apart_even_after_a_slow_check() {
    let (url, arrivals) = slow_first_server(Duration::from_millis(400)).await;
    let mut d = timeout(dep(http(&url, 200)), 900);
    d.poll_interval = Duration::from_millis(100);
    assert_timed_out(&run(&[d]).await, 900);
    let arrivals = arrivals.lock().unwrap();
    assert!(arrivals.len() >= 2, "{} checks", arrivals.len());
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        // Arrivals are stamped by the server, so one delayed accept shortens the next gap
        // on a busy machine; the fault this catches (checks back to back) gives ~0 ms.
        assert!(gap >= Duration::from_millis(50), "checks {gap:?} apart");
    }
}

#[tokio::test]
async fn http_without_retry_fails_at_once() {
    let (url, count) = http_server(usize::MAX).await;
    let run = run(&[no_retry(dep(http(&url, 200)))]).await;
    assert_fails_fast(&run);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(run.err().to_string().contains("(status 503)"));
}

#[tokio::test]
async fn https_is_rejected_clearly() {
    let kind = http("https://127.0.0.1:1/", 200);
    let (_tx, exits) = board();
    let Check::NotYet { reason } = check_once(&kind, &exits).await else {
        panic!("https cannot hold")
    };
    assert!(reason.contains("https is not supported"), "{reason}");
    let run = run(&[timeout(dep(kind), 60_000)]).await;
    assert!(matches!(run.err().reason, FailReason::Unsatisfiable { .. }));
    assert!(run.elapsed < Duration::from_secs(1));
}

// ---- TCP ----

async fn refused_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn tcp_holds_when_listening_including_by_host_name() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    for address in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        run(&[dep(DependencyKind::Tcp { address })]).await.ok();
    }
}

#[tokio::test]
async fn tcp_refused_times_out_or_fails_fast() {
    let address = refused_address().await;
    let run1 = run(&[dep(DependencyKind::Tcp {
        address: address.clone(),
    })])
    .await;
    assert_timed_out(&run1, 300);
    assert!(run1.err().last.as_deref().unwrap().contains("refused"));
    assert_eq!(run1.not_ready_count(), 1);
    let run2 = run(&[no_retry(dep(DependencyKind::Tcp { address }))]).await;
    assert_fails_fast(&run2);
}

#[tokio::test]
async fn not_listening_holds_when_refused() {
    let address = refused_address().await;
    run(&[dep(DependencyKind::NotListening { address })])
        .await
        .ok();
}

#[tokio::test]
async fn not_listening_waits_for_the_listener_to_go() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let kind = || DependencyKind::NotListening {
        address: address.clone(),
    };
    let run1 = run(&[dep(kind())]).await;
    assert_timed_out(&run1, 300);
    assert_eq!(
        run1.err().last.as_deref(),
        Some(format!("something is listening on {address}").as_str())
    );
    assert_fails_fast(&run(&[no_retry(dep(kind()))]).await);
    let holder = Arc::new(Mutex::new(Some(listener)));
    let dropper = holder.clone();
    later(150, move || drop(dropper.lock().unwrap().take()));
    let run3 = run(&[timeout(dep(kind()), 3000)]).await;
    run3.ok();
    assert!(run3.elapsed >= Duration::from_millis(150));
}

// ---- paths ----

fn touch(path: &Path) {
    std::fs::write(path, "").unwrap();
}

#[tokio::test]
async fn path_appearing_mid_wait_is_satisfied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.flag");
    let created = path.clone();
    later(150, move || touch(&created));
    let run = run(&[timeout(dep(DependencyKind::PathExists { path }), 3000)]).await;
    run.ok();
    assert!(run.elapsed >= Duration::from_millis(150));
    assert_eq!(run.not_ready_count(), 1);
}

#[tokio::test]
async fn missing_path_times_out_or_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never");
    let run1 = run(&[dep(DependencyKind::PathExists { path: path.clone() })]).await;
    assert_timed_out(&run1, 300);
    assert!(run1.err().to_string().contains("never exists (last: "));
    assert_fails_fast(&run(&[no_retry(dep(DependencyKind::PathExists { path }))]).await);
}

#[tokio::test]
async fn path_follows_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
    let (_tx, exits) = board();
    let exists = DependencyKind::PathExists { path: link.clone() };
    let not_exists = DependencyKind::NotExists { path: link };
    assert!(matches!(
        check_once(&exists, &exits).await,
        Check::NotYet { .. }
    ));
    assert!(matches!(
        check_once(&not_exists, &exits).await,
        Check::Holds { .. }
    ));
}

#[tokio::test]
async fn not_exists_waits_for_removal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.lock");
    touch(&path);
    let kind = || DependencyKind::NotExists { path: path.clone() };
    assert_timed_out(&run(&[dep(kind())]).await, 300);
    assert_fails_fast(&run(&[no_retry(dep(kind()))]).await);
    let removed = path.clone();
    later(150, move || std::fs::remove_file(removed).unwrap());
    run(&[timeout(dep(kind()), 3000)]).await.ok();
    run(&[no_retry(dep(kind()))]).await.ok();
}

// ---- file_contains ----

fn contains(path: &Path, format: FileFormat, key: &str, env: Option<&str>) -> DependencyKind {
    DependencyKind::FileContains {
        path: path.to_owned(),
        format,
        key: key.to_owned(),
        env: env.map(str::to_owned),
    }
}

const SUI_YAML: &str = "\
active_env: local
envs:
  - alias: devnet
    rpc: https://devnet.example
  - alias: local
    rpc: http://127.0.0.1:9000
    ws: ~
";

#[tokio::test]
async fn file_contains_yaml_filter_exports_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.yaml");
    std::fs::write(&path, SUI_YAML).unwrap();
    let run = run(&[
        dep(contains(
            &path,
            FileFormat::Yaml,
            "$.envs[?(@.alias == 'local')].rpc",
            Some("SUI_RPC_URL"),
        )),
        dep(contains(&path, FileFormat::Yaml, "$.active_env", None)),
    ])
    .await;
    let expected = BTreeMap::from([("SUI_RPC_URL".to_owned(), "http://127.0.0.1:9000".to_owned())]);
    assert_eq!(run.ok(), &expected);
}

#[tokio::test]
async fn file_contains_json_value_conversions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(
        &path,
        r#"{"a": {"b": 42, "t": true, "s": "x y", "n": null, "o": {"k": [1, "2"]}}}"#,
    )
    .unwrap();
    let (_tx, exits) = board();
    for (key, want) in [
        ("$.a.b", Some("42")),
        ("$.a.t", Some("true")),
        ("$.a.s", Some("x y")),
        ("$.a.o", Some(r#"{"k":[1,"2"]}"#)),
        ("$.a.n", None),
        ("$.a.missing", None),
    ] {
        let got = check_once(&contains(&path, FileFormat::Json, key, None), &exits).await;
        match (want, got) {
            (Some(want), Check::Holds { value }) => assert_eq!(value.as_deref(), Some(want)),
            (None, Check::NotYet { reason }) => assert!(reason.contains("not found"), "{reason}"),
            (want, got) => panic!("{key}: wanted {want:?}, got {got:?}"),
        }
    }
}

#[tokio::test]
async fn file_contains_waits_for_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.json");
    let written = path.clone();
    later(100, move || {
        std::fs::write(&written, r#"{"port": null}"#).unwrap()
    });
    let rewritten = path.clone();
    later(250, move || {
        std::fs::write(&rewritten, r#"{"port": 8080}"#).unwrap()
    });
    let run = run(&[timeout(
        dep(contains(&path, FileFormat::Json, "$.port", Some("PORT"))),
        3000,
    )])
    .await;
    assert_eq!(run.ok().get("PORT").map(String::as_str), Some("8080"));
    assert!(run.elapsed >= Duration::from_millis(250));
    assert_eq!(run.not_ready_count(), 1);
}

#[tokio::test]
async fn file_contains_times_out_or_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "a: {c: 1}\n").unwrap();
    let kind = || contains(&path, FileFormat::Yaml, "$.a.b", None);
    let run1 = run(&[dep(kind())]).await;
    assert_timed_out(&run1, 300);
    assert!(
        run1.err().to_string().contains("$.a.b in "),
        "{}",
        run1.err()
    );
    assert_fails_fast(&run(&[no_retry(dep(kind()))]).await);
}

#[tokio::test]
async fn file_contains_invalid_jsonpath_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let kind = contains(&dir.path().join("x.json"), FileFormat::Json, "$[", None);
    let run = run(&[timeout(dep(kind), 60_000)]).await;
    assert!(matches!(run.err().reason, FailReason::Unsatisfiable { .. }));
}

// ---- process_exited ----

fn exited(name: &str) -> DependencyKind {
    DependencyKind::ProcessExited {
        name: name.to_owned(),
    }
}

fn publish(tx: &Board, name: &str, state: ExitState) {
    tx.send_modify(|b| {
        b.insert(name.to_owned(), state);
    });
}

#[tokio::test]
async fn process_exited_is_event_driven() {
    let (tx, exits) = board();
    let mut d = timeout(dep(exited("migrate")), 30_000);
    d.poll_interval = Duration::from_secs(10);
    publish(&tx, "other", ExitState::Succeeded);
    later(150, move || publish(&tx, "migrate", ExitState::Succeeded));
    let run = run_with(&[d], exits, Duration::from_secs(2)).await;
    run.ok();
    assert!(run.elapsed >= Duration::from_millis(150));
    assert_eq!(run.not_ready_count(), 1);
}

#[tokio::test]
async fn process_exited_already_done_holds_without_waiting() {
    let (tx, exits) = board();
    publish(&tx, "migrate", ExitState::Succeeded);
    let run = run_with(&[no_retry(dep(exited("migrate")))], exits, BOUND).await;
    run.ok();
    assert_eq!(run.not_ready_count(), 0);
}

#[tokio::test]
async fn process_exited_failure_fails_at_once() {
    let (tx, exits) = board();
    later(100, move || {
        publish(&tx, "migrate", ExitState::Failed { code: 3 });
        drop(tx);
    });
    let run = run_with(&[timeout(dep(exited("migrate")), 30_000)], exits, BOUND).await;
    assert_eq!(run.err().reason, FailReason::ProcessFailed { code: 3 });
    assert!(run.elapsed < Duration::from_secs(2));
    assert_eq!(
        run.err().to_string(),
        "api: dependency cannot be satisfied: process `migrate` exited successfully \
         (it exited with code 3)"
    );
}

#[tokio::test]
async fn process_exited_times_out_or_fails_fast() {
    let (_tx, exits) = board();
    let run1 = run_with(&[dep(exited("migrate"))], exits.clone(), BOUND).await;
    assert_timed_out(&run1, 300);
    assert_eq!(
        run1.err().last.as_deref(),
        Some("`migrate` has not exited yet")
    );
    assert_fails_fast(&run_with(&[no_retry(dep(exited("migrate")))], exits, BOUND).await);
}

#[tokio::test]
async fn process_exited_with_a_dropped_board_does_not_hang() {
    let (tx, exits) = board();
    later(100, move || drop(tx));
    let run = run_with(&[timeout(dep(exited("migrate")), 30_000)], exits, BOUND).await;
    assert!(matches!(run.err().reason, FailReason::Unsatisfiable { .. }));
    assert!(run.elapsed < Duration::from_secs(2));
}

// ---- not_running ----

static MARKER: AtomicUsize = AtomicUsize::new(0);

/// A `sleep` whose command line nothing else has, and a `pgrep -f` pattern for exactly it.
async fn unique_sleep() -> (tokio::process::Child, String) {
    let arg = format!(
        "30.{}{}",
        std::process::id(),
        MARKER.fetch_add(1, Ordering::SeqCst)
    );
    let child = tokio::process::Command::new("sleep")
        .arg(&arg)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pattern = format!("^sleep {}$", arg.replace('.', "\\."));
    let kind = DependencyKind::NotRunning {
        pattern: pattern.clone(),
    };
    let (_tx, exits) = board();
    let deadline = Instant::now() + Duration::from_secs(2);
    while matches!(check_once(&kind, &exits).await, Check::Holds { .. }) {
        assert!(Instant::now() < deadline, "sleep never showed up in pgrep");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (child, pattern)
}

#[tokio::test]
async fn not_running_waits_for_the_process_to_die() {
    let (mut child, pattern) = unique_sleep().await;
    let kind = || DependencyKind::NotRunning {
        pattern: pattern.clone(),
    };
    let run1 = run(&[dep(kind())]).await;
    assert_timed_out(&run1, 300);
    assert!(
        run1.err()
            .last
            .as_deref()
            .unwrap()
            .starts_with("running: pid ")
    );
    assert_fails_fast(&run(&[no_retry(dep(kind()))]).await);
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        child.kill().await.unwrap();
    });
    let run3 = run(&[timeout(dep(kind()), 3000)]).await;
    run3.ok();
    assert!(run3.elapsed >= Duration::from_millis(150));
    killer.await.unwrap();
}

#[tokio::test]
async fn not_running_ignores_procman_itself() {
    // This process's exact command line (under nextest, sibling processes run the same
    // binary with other arguments, so the executable alone would match them too).
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut pattern = String::from("^");
    for c in args.join(" ").chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    let (_tx, exits) = board();
    let kind = DependencyKind::NotRunning { pattern };
    assert_eq!(
        check_once(&kind, &exits).await,
        Check::Holds { value: None }
    );
}

// ---- ordering and progress ----

#[tokio::test]
async fn timeouts_start_when_each_dependency_becomes_active() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    let (a, b) = (first.clone(), second.clone());
    later(400, move || touch(&a));
    later(550, move || touch(&b));
    let run = run(&[
        timeout(dep(DependencyKind::PathExists { path: first }), 3000),
        timeout(dep(DependencyKind::PathExists { path: second }), 400),
    ])
    .await;
    run.ok();
    assert!(run.elapsed >= Duration::from_millis(550));
    let d1 = format!("{} exists", dir.path().join("first").display());
    let d2 = format!("{} exists", dir.path().join("second").display());
    assert_eq!(run.events.len(), 6, "{:?}", run.events);
    assert_eq!(run.events[0], format!("waiting: {d1}"));
    assert!(run.events[1].starts_with(&format!("not ready: {d1}: ")));
    assert_eq!(run.events[2], format!("satisfied: {d1} (1 left)"));
    assert_eq!(run.events[3], format!("waiting: {d2}"));
    assert!(run.events[4].starts_with(&format!("not ready: {d2}: ")));
    assert_eq!(run.events[5], format!("satisfied: {d2} (0 left)"));
}

#[tokio::test]
async fn a_later_dependency_is_not_checked_before_an_earlier_one_holds() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let a = first.clone();
    later(300, move || touch(&a));
    let run = run(&[
        timeout(dep(DependencyKind::PathExists { path: first }), 3000),
        timeout(
            dep(DependencyKind::PathExists {
                path: dir.path().join("never"),
            }),
            200,
        ),
    ])
    .await;
    assert_timed_out(&run, 200);
    assert!(
        run.elapsed >= Duration::from_millis(500),
        "{:?}",
        run.elapsed
    );
    assert!(run.err().dependency.ends_with("never exists"));
}

#[tokio::test]
async fn not_ready_is_reported_once_per_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flag");
    let created = path.clone();
    later(250, move || touch(&created));
    let mut d = timeout(dep(DependencyKind::PathExists { path }), 3000);
    d.poll_interval = Duration::from_millis(10);
    let run = run(&[d]).await;
    run.ok();
    assert_eq!(run.not_ready_count(), 1);
    assert_eq!(run.events.len(), 3);
}

#[tokio::test]
async fn empty_depends_is_satisfied() {
    let run = run(&[]).await;
    assert!(run.ok().is_empty());
    assert!(run.events.is_empty());
}

#[test]
fn descriptions_read_as_claims() {
    let cases = [
        (
            http("http://127.0.0.1:3000/health", 200),
            "http://127.0.0.1:3000/health returns 200",
        ),
        (
            DependencyKind::Tcp {
                address: "127.0.0.1:5432".into(),
            },
            "tcp 127.0.0.1:5432 accepts connections",
        ),
        (exited("migrate"), "process `migrate` exited successfully"),
        (
            DependencyKind::PathExists {
                path: "/tmp/x".into(),
            },
            "/tmp/x exists",
        ),
        (
            contains(Path::new("/tmp/c.yaml"), FileFormat::Yaml, "$.a.b", None),
            "$.a.b in /tmp/c.yaml",
        ),
    ];
    for (kind, want) in cases {
        assert_eq!(describe(&kind), want);
    }
}

mod output_matches {
    //! The matcher against a real [`Output`] (its output thread, tail and feed).

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::BOUND;
    use crate::deps::output::{Matcher, OutputSource, Run, RunState, check_now};
    use crate::output::{FEED_CAPACITY, Output, OutputConfig};

    type Runs = watch::Sender<BTreeMap<String, Run>>;

    fn source() -> (OutputSource, Runs) {
        let output =
            Output::new(OutputConfig::default(), Box::new(std::io::sink()), false).unwrap();
        let (runs, board) = watch::channel(BTreeMap::new());
        let source = OutputSource {
            output,
            runs: board,
            groups: Arc::new(BTreeMap::new()),
        };
        (source, runs)
    }

    /// Starts a run of `name` now.
    fn started(source: &OutputSource, runs: &Runs, name: &str) {
        let first_seq = source.output.next_seq();
        runs.send_modify(|r| {
            let state = RunState::Running;
            r.insert(name.to_owned(), Run { first_seq, state });
        });
    }

    fn set(runs: &Runs, name: &str, state: RunState) {
        runs.send_modify(|r| r.get_mut(name).unwrap().state = state);
    }

    fn ready() -> regex::Regex {
        regex::Regex::new("^ready$").unwrap()
    }

    async fn outcome(matcher: &mut Matcher) -> Result<(), String> {
        tokio::time::timeout(BOUND, matcher.finished())
            .await
            .expect("the matcher did not finish within the bound")
    }

    #[tokio::test]
    async fn a_lagging_feed_falls_back_to_the_tail() {
        let (source, runs) = source();
        started(&source, &runs, "db");
        let mut matcher = Matcher::start(&source, "db", &ready());
        // Lets it look at the (empty) tail once and wait on the feed; it is not polled
        // again before every line below is out, so its feed overflows.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        source.output.line("db", b"ready");
        for i in 0..2 * FEED_CAPACITY {
            source.output.line("noise", format!("noise {i}").as_bytes());
        }
        source.output.flush().unwrap();
        assert_eq!(outcome(&mut matcher).await, Ok(()));
    }

    #[tokio::test]
    async fn only_the_current_run_counts() {
        let (source, runs) = source();
        started(&source, &runs, "db");
        source.output.line("db", b"ready");
        source.output.flush().unwrap();
        set(
            &runs,
            "db",
            RunState::Exited {
                how: "exited with code 1".into(),
            },
        );
        assert_eq!(check_now(&source, "db", &ready()), None);
        started(&source, &runs, "db");
        let mut matcher = Matcher::start(&source, "db", &ready());
        assert_eq!(check_now(&source, "db", &ready()), None);
        source.output.line("db", b"not yet");
        source.output.line("db", b"ready");
        assert_eq!(outcome(&mut matcher).await, Ok(()));
    }

    #[tokio::test]
    async fn an_ended_target_fails_the_wait_with_how_it_ended() {
        let (source, runs) = source();
        started(&source, &runs, "db");
        let mut matcher = Matcher::start(&source, "db", &ready());
        source.output.line("db", b"almost ready");
        source.output.flush().unwrap();
        set(
            &runs,
            "db",
            RunState::Exited {
                how: "exited with code 3".into(),
            },
        );
        set(
            &runs,
            "db",
            RunState::Ended {
                how: "exited with code 3".into(),
            },
        );
        assert_eq!(
            outcome(&mut matcher).await,
            Err("`db` exited with code 3 before printing a line matching `^ready$`".into())
        );
    }

    #[tokio::test]
    async fn the_last_run_of_an_ended_target_still_counts() {
        let (source, runs) = source();
        started(&source, &runs, "setup");
        source.output.line("setup", b"\x1b[32mready\x1b[0m");
        source.output.flush().unwrap();
        set(
            &runs,
            "setup",
            RunState::Ended {
                how: "exited with code 0".into(),
            },
        );
        assert_eq!(check_now(&source, "setup", &ready()), Some(Ok(())));
    }
}
