//! `procman wait`: one condition against real listeners, HTTP servers on 127.0.0.1 and
//! files; exit 0 once it holds, 1 with one line when it times out.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use common::{Sandbox, free_port};

const LIMIT: Duration = Duration::from_secs(30);

fn wait(sandbox: &Sandbox, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["wait"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = sandbox.run(&all, LIMIT);
    (status.code().unwrap_or(-1), stdout, stderr)
}

fn sandbox() -> Sandbox {
    Sandbox::new("unused: {run: 'true'}\n")
}

/// An HTTP server on 127.0.0.1 answering every request with `status`, for `requests`
/// requests (then it closes).
fn http_server(status: u16, requests: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    port
}

#[test]
fn tcp_holds_when_something_listens_and_times_out_with_one_line_when_not() {
    let sandbox = sandbox();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (code, _, stderr) = wait(&sandbox, &["--tcp", &address, "--timeout", "10s"]);
    assert_eq!(code, 0, "{stderr}");
    drop(listener);

    let closed = format!("127.0.0.1:{}", free_port());
    let (code, stdout, stderr) = wait(
        &sandbox,
        &[
            "--tcp",
            &closed,
            "--timeout",
            "300ms",
            "--poll-interval",
            "50ms",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "timed out after 300ms: tcp {closed} accepts connections"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("refused"),
        "the last reason is named: {stderr}"
    );
}

#[test]
fn url_holds_on_the_expected_status_only() {
    let sandbox = sandbox();
    let port = http_server(200, 1);
    let url = format!("http://127.0.0.1:{port}/health");
    let (code, _, stderr) = wait(&sandbox, &["--url", &url, "--code", "200"]);
    assert_eq!(code, 0, "{stderr}");

    let port = http_server(503, 100);
    let url = format!("http://127.0.0.1:{port}/health");
    let (code, _, stderr) = wait(
        &sandbox,
        &[
            "--url",
            &url,
            "--timeout",
            "400ms",
            "--poll-interval",
            "100ms",
        ],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("(last: status 503)"), "{stderr}");

    let (code, _, stderr) = wait(&sandbox, &["--url", "https://127.0.0.1:1/"]);
    assert_eq!(code, 1, "an unsupported URL fails at once, not after 60s");
    assert!(stderr.contains("https is not supported"), "{stderr}");
}

#[test]
fn path_holds_once_the_file_appears() {
    let sandbox = sandbox();
    let ready = sandbox.file("ready");
    let writer = {
        let ready = ready.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            std::fs::write(ready, "").unwrap();
        })
    };
    let (code, _, stderr) = wait(
        &sandbox,
        &[
            "--path",
            ready.to_str().unwrap(),
            "--poll-interval",
            "50ms",
            "--timeout",
            "20s",
        ],
    );
    writer.join().unwrap();
    assert_eq!(code, 0, "{stderr}");

    let (code, _, stderr) = wait(
        &sandbox,
        &["--not-exists", ready.to_str().unwrap(), "--no-retry"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("retry disabled"), "{stderr}");
    let gone = sandbox.file("gone");
    let (code, _, _) = wait(&sandbox, &["--not-exists", gone.to_str().unwrap()]);
    assert_eq!(code, 0);

    // `$$` is a literal `$`, as in procman.yaml (exports rely on it).
    std::fs::write(sandbox.file("price$1"), "").unwrap();
    let (code, _, stderr) = wait(&sandbox, &["--path", "price$$1", "--timeout", "0s"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let sandbox = sandbox();
    std::fs::create_dir(sandbox.file("sub")).unwrap();
    std::fs::write(sandbox.file("marker"), "").unwrap();
    let config = sandbox.file("procman.yaml");
    let mut command = sandbox.command(&[
        "wait",
        config.to_str().unwrap(),
        "--path",
        "marker",
        "--timeout",
        "0s",
    ]);
    command.current_dir(sandbox.file("sub"));
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn file_contains_prints_the_value_and_a_command_runs_after() {
    let sandbox = sandbox();
    std::fs::write(
        sandbox.file("out.json"),
        r#"{"database": {"url": "postgres://db/app"}}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = wait(
        &sandbox,
        &[
            "--file-contains",
            "out.json",
            "--format",
            "json",
            "--key",
            "$.database.url",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim_end(), "postgres://db/app");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (code, stdout, stderr) = wait(
        &sandbox,
        &[
            "--tcp",
            &address,
            "--",
            "sh",
            "-c",
            "echo ran with \"$0\"",
            "arg",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim_end(), "ran with arg");
}

#[test]
fn not_listening_holds_once_the_listener_closes() {
    let sandbox = sandbox();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        drop(listener);
    });
    let (code, _, stderr) = wait(
        &sandbox,
        &[
            "--not-listening",
            &address,
            "--poll-interval",
            "50ms",
            "--timeout",
            "20s",
        ],
    );
    closer.join().unwrap();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn bad_conditions_are_refused_with_a_clear_message() {
    let sandbox = sandbox();
    let (code, _, stderr) = wait(&sandbox, &["--tcp", "a:1", "--path", "x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (code, _, stderr) = wait(&sandbox, &[]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = wait(&sandbox, &["--path", "x", "--poll-interval", "soon"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("poll_interval"), "{stderr}");
    let (code, _, stderr) = wait(&sandbox, &["--path", "$UNDEFINED_FOR_PROCMAN_WAIT/x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("UNDEFINED_FOR_PROCMAN_WAIT"), "{stderr}");
    let (code, _, stderr) = wait(
        &sandbox,
        &[
            "--file-contains",
            "x.json",
            "--format",
            "json",
            "--key",
            "$[",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("JSONPath") || stderr.contains("key"),
        "{stderr}"
    );
}

#[test]
fn file_contains_on_a_fifo_times_out_instead_of_hanging() {
    // The read blocked on the FIFO's open, so neither the check nor the timeout ended.
    let sandbox = sandbox();
    common::mkfifo(&sandbox.file("state.json"));
    let (code, _, stderr) = wait(
        &sandbox,
        &[
            "--file-contains",
            "state.json",
            "--format",
            "json",
            "--key",
            "$.ready",
            "--timeout",
            "1s",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("a FIFO (named pipe), not a regular file"),
        "{stderr}"
    );
}
