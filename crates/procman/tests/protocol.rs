//! The socket protocol as any outside client speaks it: raw JSON lines over a Unix socket.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Served, unique_sleep};

const T: Duration = Duration::from_secs(20);

/// A raw connection to the server's socket.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(s: &Served) -> Client {
        let paths =
            procman::control::RuntimePaths::in_dir(&s.sb.file("procman.yaml"), &s.sb.file("run"))
                .unwrap();
        let stream = UnixStream::connect(&paths.socket).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    fn next(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "the reply ended early: {line:?}");
        serde_json::from_str(&line).unwrap()
    }
}

#[test]
fn a_subscription_sees_a_restart_as_state_changes() {
    let m = unique_sleep();
    let s = Served::new(&format!("web:\n  run: exec sleep {m}\n"));
    let mut server = s.serve();
    let mut sub = Client::connect(&s);
    sub.send(r#"{"type":"subscribe"}"#);
    let snapshot = sub.next();
    assert_eq!(snapshot["type"], "status");
    assert_eq!(snapshot["processes"][0]["state"], "running");
    let first = snapshot["processes"][0]["pid"].as_u64().unwrap();

    let mut control = Client::connect(&s);
    control.send(r#"{"type":"restart_process","name":"web"}"#);
    let mut states = Vec::new();
    loop {
        let event = sub.next();
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["process"]["name"], "web");
        let state = event["process"]["state"].as_str().unwrap().to_owned();
        states.push(state.clone());
        if state == "running" {
            assert_ne!(event["process"]["pid"].as_u64().unwrap(), first);
            assert_eq!(event["process"]["restarts"], 1);
            break;
        }
    }
    assert_eq!(states, ["stopping", "stopped", "running"]);
    let reply = control.next();
    assert_eq!(reply["type"], "started", "{reply}");
    // The control connection still takes requests after its reply.
    control.send(r#"{"type":"status"}"#);
    assert_eq!(control.next()["type"], "status");
    drop(sub);
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}

/// While a subscription streams, the server reads on (to see the client's EOF) and queues
/// what the client sends; it queued without bound, so one client flooding requests it
/// never waited for grew the server by gigabytes. Now the server stops reading, and the
/// flood waits in the client's writes.
#[test]
fn a_client_flooding_a_subscription_is_held_back_not_buffered() {
    const CAP: usize = 64 << 20;
    let s = Served::new("web:\n  run: sleep 1000\n");
    let mut server = s.serve();
    let mut sub = Client::connect(&s);
    sub.send(r#"{"type":"subscribe"}"#);
    assert_eq!(sub.next()["type"], "status");
    // A write that makes no progress for this long means the server stopped reading.
    sub.writer
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let chunk = "{\"type\":\"status\"}\n".repeat(4096);
    let mut accepted = 0;
    while accepted < CAP {
        match sub.writer.write(chunk.as_bytes()) {
            Ok(n) => accepted += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        accepted < CAP,
        "the server buffered {accepted} bytes of requests"
    );
    // Other clients are still served.
    let mut control = Client::connect(&s);
    control.send(r#"{"type":"status"}"#);
    assert_eq!(control.next()["type"], "status");
    drop(sub);
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}

/// A `run` request's dependencies expand `$VAR` from its `env`: one 60 KB line naming a
/// 30 KB value 10000 times made the server hold a 300 MB path. Now it gets an error.
#[test]
fn a_run_request_cannot_expand_into_a_huge_dependency() {
    let s = Served::new("web:\n  run: sleep 1000\n");
    let mut server = s.serve();
    let mut client = Client::connect(&s);
    let request = serde_json::json!({
        "type": "run",
        "name": "bomb",
        "run": "true",
        "env": {"A": "x".repeat(30_000)},
        "depends": [{"path": "$A".repeat(10_000)}],
    });
    client.send(&request.to_string());
    let reply = client.next();
    assert_eq!(reply["type"], "error", "{:.300}", reply.to_string());
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("past 128 KiB"), "{message:.300}");
    assert_eq!(s.names(), ["web"]);
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Served::new("web:\n  run: sleep 1000\n");
    let mut server = s.serve();
    let mut client = Client::connect(&s);
    client.send("{\"type\":\"status\"}\n{\"type\":\"bogus\"}\n{\"type\":\"status\"}");
    assert_eq!(client.next()["type"], "status");
    let error = client.next();
    assert_eq!(error["type"], "error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown message type")
    );
    assert_eq!(client.next()["type"], "status");
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}

#[test]
fn a_python_client_subscribes_and_restarts_as_the_protocol_doc_says() {
    let m = unique_sleep();
    let s = Served::new(&format!("web:\n  run: echo hello $$; exec sleep {m}\n"));
    let mut server = s.serve();
    let paths =
        procman::control::RuntimePaths::in_dir(&s.sb.file("procman.yaml"), &s.sb.file("run"))
            .unwrap();
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/protocol_client.py"
    );
    let mut python = common::Running::start({
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(client).arg(&paths.discovery).arg("web");
        cmd
    });
    let status = python.wait(T);
    let out = python.stdout_text();
    assert!(status.success(), "{out}\n{}", python.stderr_text());
    assert!(
        out.contains("web stopping\nweb stopped\nweb running\nweb said hello "),
        "{out}"
    );
    assert!(out.ends_with("\nok"), "{out}");
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}

#[test]
fn a_slow_output_follower_is_told_what_it_missed_and_the_server_carries_on() {
    let m = unique_sleep();
    let s = Served::new(&format!(
        "flood:\n  run: read x < go; seq 1 200000; echo done; exec sleep {m}\n"
    ));
    let fifo = s.sb.file("go");
    common::mkfifo(&fifo);
    let mut server = s.serve();
    let mut follower = Client::connect(&s);
    follower.send(r#"{"type":"logs","names":["flood"],"lines":0,"follow":true}"#);
    let tail = follower.next();
    assert_eq!(tail, serde_json::json!({"type":"logs","lines":[]}));
    // Nothing is read while the process prints far more than the buffers hold.
    common::write_fifo(&fifo, b"go\n");
    assert!(common::eventually(T, || {
        s.client(&["logs", "-n", "1", "flood"]).1.contains("done")
    }));
    let (mut lines, mut missed, mut last_seq) = (0u64, 0u64, None);
    loop {
        let reply = follower.next();
        match reply["type"].as_str().unwrap() {
            "log" => {
                lines += 1;
                // Numbered in output order; a gap skips numbers, nothing comes twice.
                let seq = reply["seq"].as_u64().unwrap();
                assert!(Some(seq) > last_seq, "{seq} after {last_seq:?}");
                last_seq = Some(seq);
                if reply["line"] == "done" {
                    break;
                }
            }
            "log_gap" => missed += reply["missed"].as_u64().unwrap(),
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    assert!(missed > 0, "no gap reported after {lines} lines");
    // Every line is either sent or counted (a gap also counts other processes' lines).
    assert!(lines + missed >= 200_001, "{lines} sent, {missed} missed");
    // An unknown name is an error that names it.
    let mut client = Client::connect(&s);
    client.send(r#"{"type":"logs","names":["flod"]}"#);
    let error = client.next();
    assert_eq!(error["type"], "error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("no process named \"flod\"; did you mean `flood`?"),
        "{error}"
    );
    drop(follower);
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}
