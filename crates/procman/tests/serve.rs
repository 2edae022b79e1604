//! `procman serve` / `start` / `stop` / `status`: processes added at runtime over the FIFO
//! protocol and the reply socket, with real servers, real FIFOs and real signals.

mod common;

use std::time::{Duration, Instant};

use common::{Running, Sandbox, Served, eventually, processes_matching};

const T: Duration = Duration::from_secs(20);

fn http_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.0 200")
}

#[test]
fn seed_workflow_serve_wait_start_stop() {
    let port = common::free_port();
    let m = common::unique_sleep();
    let s = Served::new(&format!(
        "api:\n  run: exec python3 -m http.server {port} --bind 127.0.0.1\n"
    ));
    let mut server = s.serve();
    assert!(eventually(T, || http_ok(port)), "api never became healthy");
    let (code, out, err) = s.client(&["start", &format!("sleep {m}")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("started sleep (pid "), "{out}");
    assert!(eventually(T, || !processes_matching(&format!(
        "^sleep {m}"
    ))
    .is_empty()));
    server.wait_for("sleep: added at runtime", T);

    let (code, _, err) = s.client(&["stop"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.wait(T).code(), Some(0));
    assert!(
        server.stdout_text().contains("shutdown via"),
        "{}",
        server.stdout_text()
    );
    assert!(
        s.runtime_files().is_empty(),
        "left behind: {:?}",
        s.runtime_files()
    );
    assert!(processes_matching(&format!("^sleep {m}")).is_empty());
}

#[test]
fn identical_starts_are_deduplicated() {
    let m = common::unique_sleep();
    let s = Served::new("");
    let mut server = s.serve();
    for expected in ["sleep", "sleep.1", "sleep.2"] {
        let (code, out, err) = s.client(&["start", &format!("sleep {m}")]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with(&format!("started {expected} (pid ")),
            "{out}"
        );
    }
    assert_eq!(s.names(), ["sleep", "sleep.1", "sleep.2"]);
    s.client(&["stop"]);
    server.wait(T);
}

#[test]
fn start_and_stop_without_a_server_fail_at_once() {
    let s = Served::new("");
    for args in [&["start", "sleep 1"][..], &["stop"][..]] {
        let began = Instant::now();
        let (code, _, err) = s.client(args);
        assert_ne!(code, 0);
        assert!(err.contains("no `procman serve` is running"), "{err}");
        assert!(err.contains("procman.yaml"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(began.elapsed() < Duration::from_secs(5), "hung");
    }
}

#[test]
fn other_config_directories_get_their_own_server() {
    let a = Served::new("");
    let b = Sandbox::new("");
    let mut server = a.serve();
    let mut other = Running::start({
        let mut cmd = b.command(&["serve"]);
        cmd.env("PROCMAN_RUNTIME_DIR", a.sb.file("run"));
        cmd
    });
    other.wait_for("listening on", T);
    let m = common::unique_sleep();
    let b_config = b.file("procman.yaml");
    let (code, _, err) = a.client(&[
        "start",
        "--config",
        b_config.to_str().unwrap(),
        &format!("sleep {m}"),
    ]);
    assert_eq!(code, 0, "{err}");
    other.wait_for("sleep: added at runtime", T);
    assert!(a.names().is_empty(), "went to the wrong server");
    assert_eq!(a.runtime_files().len(), 6, "two servers, three files each");
    a.client(&["stop", b_config.to_str().unwrap()]);
    a.client(&["stop"]);
    server.wait(T);
    other.wait(T);
}

#[test]
fn two_hundred_concurrent_starts_lose_nothing() {
    let m = common::unique_sleep();
    let s = Served::new("");
    let mut server = s.serve();
    let clients: Vec<Running> = (0..200)
        .map(|_| Running::start(s.cmd(&["start", &format!("sleep {m}")])))
        .collect();
    for mut c in clients {
        assert_eq!(
            c.wait(Duration::from_secs(60)).code(),
            Some(0),
            "{}",
            c.stderr_text()
        );
    }
    let mut names = s.names();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 200);
    assert!(eventually(T, || processes_matching(&format!("^sleep {m}"))
        .len()
        == 200));
    s.client(&["stop"]);
    server.wait(Duration::from_secs(60));
    assert!(eventually(T, || processes_matching(&format!("^sleep {m}")).is_empty()));
}

#[test]
fn bad_fifo_input_is_reported_and_skipped() {
    use std::io::Write;
    let s = Served::new("");
    let mut server = s.serve();
    let fifo = s.fifo();
    let write = |bytes: &[u8]| {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        f.write_all(bytes).unwrap();
    };
    write(b"this is not json\n");
    write(b"{\"type\":\"run\",\"run\":\"true\"}\n");
    write(b"{\"type\":\"run\",\"name\":\"x\",\"run\":\"  \"}\n");
    write(b"{\"type\":\"explode\"}\n");
    write(&[b'x'; 70 * 1024]);
    write(b"\n");
    write(b"\xff\xfe\x00\x01garbage\n");
    write(b"{\"type\":\"run\",\"na"); // a writer that dies mid-line
    let m = common::unique_sleep();
    let (code, _, err) = s.client(&["start", "--name", "survivor", &format!("sleep {m}")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        eventually(T, || s.names().contains(&"survivor".to_owned())),
        "{}",
        server.stdout_text()
    );
    let log = server.stdout_text();
    assert!(
        log.matches("ignored a bad control message").count() >= 6,
        "{log}"
    );
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}

#[test]
fn unsafe_fifo_paths_are_refused_and_untouched() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = Served::new("");
    let fifo = s.fifo();
    type Make<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "regular file",
            Box::new(|| std::fs::write(&fifo, b"precious").unwrap()),
        ),
        (
            "symlink",
            Box::new(|| std::os::unix::fs::symlink(s.sb.file("procman.yaml"), &fifo).unwrap()),
        ),
        (
            "fifo mode 0666",
            Box::new(|| {
                common::mkfifo(&fifo);
                std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();
            }),
        ),
    ];
    for (what, make) in cases {
        make();
        let before = std::fs::symlink_metadata(&fifo).unwrap();
        let mut server = Running::start(s.cmd(&["serve"]));
        let status = server.wait(T);
        assert_ne!(status.code(), Some(0), "{what}: accepted");
        assert!(
            server.stderr_text().contains(fifo.to_str().unwrap()),
            "{what}: {}",
            server.stderr_text()
        );
        let after = std::fs::symlink_metadata(&fifo).unwrap();
        assert_eq!(
            (before.ino(), before.mode(), before.len()),
            (after.ino(), after.mode(), after.len()),
            "{what}: touched"
        );
        std::fs::remove_file(&fifo).unwrap();
    }
    assert_eq!(
        std::fs::read(s.sb.file("procman.yaml")).unwrap(),
        b"",
        "symlink target written to"
    );
}

#[test]
fn after_kill_9_the_next_serve_starts_cleanly() {
    let s = Served::new("");
    let server = s.serve();
    server.signal(libc::SIGKILL);
    drop(server);
    assert!(
        !s.runtime_files().is_empty(),
        "a SIGKILLed server leaves its files"
    );
    let mut again = s.serve();
    let m = common::unique_sleep();
    let (code, out, err) = s.client(&["start", &format!("sleep {m}")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("started sleep"), "{out}");
    s.client(&["stop"]);
    assert_eq!(again.wait(T).code(), Some(0));
    assert!(s.runtime_files().is_empty());
}

#[test]
fn a_second_server_for_the_same_config_is_refused() {
    let s = Served::new("");
    let mut first = s.serve();
    let mut second = Running::start(s.cmd(&["serve"]));
    assert_ne!(second.wait(T).code(), Some(0));
    let pid = first.pid().to_string();
    assert!(
        second.stderr_text().contains(&pid),
        "should name pid {pid}: {}",
        second.stderr_text()
    );
    s.client(&["stop"]);
    first.wait(T);
}

#[test]
fn status_restart_and_stop_process_over_the_socket() {
    let m = common::unique_sleep();
    let s = Served::new(&format!("worker:\n  run: exec sleep {m}\n"));
    let mut server = s.serve();
    let status = s.status();
    let worker = &status["processes"][0];
    assert_eq!(worker["name"], "worker");
    assert_eq!(worker["state"], "running");
    let pid = worker["pid"].as_u64().unwrap();
    let (code, _, err) = s.client(&["status"]);
    assert_eq!(code, 0, "{err}");

    let paths =
        procman::control::RuntimePaths::in_dir(&s.sb.file("procman.yaml"), &s.sb.file("run"))
            .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let restart = procman::protocol::Message::RestartProcess {
        name: "worker".into(),
    };
    rt.block_on(procman::control::request(&paths, &restart, T))
        .unwrap();
    let after = s.status();
    assert_eq!(after["processes"][0]["restarts"], 1);
    assert_ne!(after["processes"][0]["pid"].as_u64().unwrap(), pid);

    let stop = procman::protocol::Message::StopProcess {
        name: "worker".into(),
    };
    rt.block_on(procman::control::request(&paths, &stop, T))
        .unwrap();
    assert_eq!(s.status()["processes"][0]["state"], "stopped");
    assert!(processes_matching(&format!("^sleep {m}")).is_empty());
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}

#[test]
fn status_into_a_closed_pipe_exits_quietly() {
    let s = Served::new("web:\n  run: sleep 1000\n");
    let mut server = s.serve();
    let (read_end, write_end) = std::io::pipe().unwrap();
    drop(read_end);
    let out = s
        .cmd(&["status"])
        .stdout(write_end)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    s.client(&["stop"]);
    assert_eq!(server.wait(T).code(), Some(0));
}
