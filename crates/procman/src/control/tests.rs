//! Integration tests of the control layer over real FIFOs and sockets in temp dirs.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::*;
use crate::protocol::{Message, ProcessName, Reply, RunRequest, parse_reply};

struct Fixture {
    _tmp: tempfile::TempDir,
    paths: RuntimePaths,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("proj");
    std::fs::create_dir(&project).unwrap();
    let config = project.join("procman.yaml");
    std::fs::write(&config, "web: sleep 100\n").unwrap();
    let paths = RuntimePaths::in_dir(&config, &tmp.path().join("rt")).unwrap();
    Fixture { _tmp: tmp, paths }
}

fn run(name: &str) -> Message {
    Message::Run(RunRequest {
        name: ProcessName::new(name).unwrap(),
        run: format!("echo {name}"),
        env: [("K".to_owned(), "V".to_owned())].into(),
        depends: None,
        once: false,
    })
}

async fn next(listener: &mut Listener) -> Incoming {
    tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("no request within 10 s")
        .expect("listener ended")
}

fn mkfifo(path: &Path, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from_raw_mode(mode)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes raw bytes to the FIFO from a plain thread (large writes block until read).
fn write_raw(path: &Path, chunks: Vec<Vec<u8>>) -> std::thread::JoinHandle<()> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        for chunk in chunks {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all(&chunk).unwrap();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_run_and_shutdown() {
    let fx = fixture();
    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    let meta = std::fs::symlink_metadata(&fx.paths.fifo).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let meta = std::fs::symlink_metadata(&fx.paths.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);

    send_fifo(&fx.paths, &run("a")).unwrap();
    let shutdown = Message::Shutdown {
        user: Some("alice".into()),
        message: Some("done".into()),
    };
    send_fifo(&fx.paths, &shutdown).unwrap();
    let first = next(&mut listener).await;
    assert_eq!(first.via, Channel::Fifo);
    assert!(!first.wants_reply());
    assert_eq!(first.request.unwrap(), run("a"));
    assert_eq!(next(&mut listener).await.request.unwrap(), shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_message_without_final_newline_is_processed() {
    let fx = fixture();
    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    let line = protocol_line(&run("bare"));
    let bare = line.trim_end().as_bytes().to_vec();
    // One writer closes without a newline; the next one's message still arrives on its own.
    write_raw(&fx.paths.fifo, vec![bare]).join().unwrap();
    assert_eq!(next(&mut listener).await.request.unwrap(), run("bare"));
    send_fifo(&fx.paths, &run("after")).unwrap();
    assert_eq!(next(&mut listener).await.request.unwrap(), run("after"));
    // A message split across writes is taken whole, once complete.
    let (head, tail) = line.split_at(10);
    write_raw(
        &fx.paths.fifo,
        vec![
            head.as_bytes().to_vec(),
            tail.trim_end().as_bytes().to_vec(),
        ],
    )
    .join()
    .unwrap();
    assert_eq!(next(&mut listener).await.request.unwrap(), run("bare"));
}

fn protocol_line(message: &Message) -> String {
    let mut line = serde_json::to_string(message).unwrap();
    line.push('\n');
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_bad_lines_are_reported_and_later_messages_arrive() {
    let fx = fixture();
    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    let long = format!(
        "{{\"type\":\"run\",\"name\":\"x\",\"run\":\"{}\"}}\n",
        "a".repeat(70 * 1024)
    );
    let lines: Vec<Vec<u8>> = vec![
        b"{\"type\":\"run\",\n".to_vec(),
        b"{\"type\":\"run\",\"run\":\"true\"}\n".to_vec(),
        b"{\"type\":\"run\",\"name\":\"x\",\"run\":\"\"}\n".to_vec(),
        b"{\"type\":\"explode\"}\n".to_vec(),
        long.into_bytes(),
        b"\n\n".to_vec(),
        b"\xff\xfe\x00\x01binary\n".to_vec(),
        b"{\"type\":\"run\",\"na".to_vec(),
    ];
    write_raw(&fx.paths.fifo, lines).join().unwrap();
    send_fifo(&fx.paths, &run("after")).unwrap();
    send_fifo(&fx.paths, &run("last")).unwrap();

    let expected = [
        "not valid JSON",
        "missing field `name`",
        "empty `run`",
        "unknown message type \"explode\"",
        "limited to 65536",
        "not UTF-8",
        "discarded 17 bytes",
    ];
    for want in expected {
        let err = next(&mut listener).await.request.unwrap_err();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
    assert_eq!(next(&mut listener).await.request.unwrap(), run("after"));
    assert_eq!(next(&mut listener).await.request.unwrap(), run("last"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_200_concurrent_writers() {
    let fx = fixture();
    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let paths = fx.paths.clone();
            std::thread::spawn(move || send_fifo(&paths, &run(&format!("w{i}"))))
        })
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..200 {
        match next(&mut listener).await.request {
            Ok(Message::Run(r)) => {
                assert_eq!(r.run, format!("echo {}", r.name));
                names.insert(r.name);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(names.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_coming_and_going_never_end_the_stream() {
    let fx = fixture();
    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    for i in 0..5 {
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fx.paths.fifo)
                .unwrap(),
        );
        let quiet = tokio::time::timeout(Duration::from_millis(50), listener.next()).await;
        assert!(quiet.is_err(), "a closed writer produced {quiet:?}");
        send_fifo(&fx.paths, &run(&format!("n{i}"))).unwrap();
        assert_eq!(
            next(&mut listener).await.request.unwrap(),
            run(&format!("n{i}"))
        );
    }
}

/// Answers every request the way a server would: status for `status`, drops the rest
/// (so the listener sends the client an error reply).
fn serve(mut listener: Listener) -> tokio::task::JoinHandle<Listener> {
    tokio::spawn(async move {
        while let Some(incoming) = listener.next().await {
            match incoming.request {
                Ok(Message::Status) => incoming.reply(Reply::Status {
                    pid: std::process::id(),
                    config: "cfg".into(),
                    processes: vec![],
                }),
                Ok(Message::Shutdown { .. }) => {
                    incoming.reply(Reply::Ok {
                        message: "bye".into(),
                    });
                    break;
                }
                _ => drop(incoming),
            }
        }
        listener
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_request_reply_and_errors() {
    let fx = fixture();
    let server = serve(Listener::bind(&fx.paths).await.unwrap());
    let timeout = Duration::from_secs(5);
    let reply = request(&fx.paths, &Message::Status, timeout).await.unwrap();
    assert!(matches!(reply, Reply::Status { pid, .. } if pid == std::process::id()));

    let mut raw = tokio::net::UnixStream::connect(&fx.paths.socket)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"{\"type\":\"nope\"}\n{\"type\":\"status\"}\n")
        .await
        .unwrap();
    let mut text = String::new();
    let mut reader = tokio::io::BufReader::new(raw);
    for _ in 0..2 {
        tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut text)
            .await
            .unwrap();
    }
    let mut replies = text.lines().map(|l| parse_reply(l.as_bytes()).unwrap());
    assert!(
        matches!(replies.next(), Some(Reply::Error { message }) if message.contains("unknown message type"))
    );
    assert!(matches!(replies.next(), Some(Reply::Status { .. })));

    let bye = Message::Shutdown {
        user: None,
        message: None,
    };
    let reply = request(&fx.paths, &bye, timeout).await.unwrap();
    assert_eq!(
        reply,
        Reply::Ok {
            message: "bye".into()
        }
    );
    drop(server.await.unwrap());
    assert!(!fx.paths.socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_socket_client_is_dropped_without_blocking_others() {
    let fx = fixture();
    let listener = Listener::bind_with_idle_timeout(&fx.paths, Duration::from_secs(1))
        .await
        .unwrap();
    let _server = serve(listener);
    let mut silent = tokio::net::UnixStream::connect(&fx.paths.socket)
        .await
        .unwrap();
    let started = Instant::now();
    let reply = request(&fx.paths, &Message::Status, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Status { .. }));
    assert!(started.elapsed() < Duration::from_millis(900));
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("silent client not dropped")
        .unwrap();
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

fn snapshot(path: &Path) -> (u64, u32, Vec<u8>) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let content = if meta.file_type().is_file() {
        std::fs::read(path).unwrap()
    } else {
        Vec::new()
    };
    (meta.ino(), meta.mode(), content)
}

async fn assert_refused(paths: &RuntimePaths, path: &Path, want: &str) {
    let before = snapshot(path);
    let err = Listener::bind(paths).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ControlError::Insecure { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(want), "expected {want:?} in {text}");
    assert_eq!(snapshot(path), before);
}

#[tokio::test]
async fn bind_refuses_unsafe_fifo_paths() {
    let fx = fixture();
    let fifo = &fx.paths.fifo;
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();

    std::fs::write(fifo, "precious").unwrap();
    assert_refused(&fx.paths, fifo, "a regular file, not a FIFO").await;
    std::fs::remove_file(fifo).unwrap();

    let elsewhere = fifo.with_extension("real");
    mkfifo(&elsewhere, 0o600);
    std::os::unix::fs::symlink(&elsewhere, fifo).unwrap();
    assert_refused(&fx.paths, fifo, "symbolic link").await;
    std::fs::remove_file(fifo).unwrap();

    mkfifo(fifo, 0o666);
    assert_refused(&fx.paths, fifo, "lets other users write").await;
    std::fs::remove_file(fifo).unwrap();

    std::fs::write(&fx.paths.socket, "precious").unwrap();
    assert_refused(&fx.paths, &fx.paths.socket, "not a Unix socket").await;
    assert!(!fifo.exists());
}

#[tokio::test]
async fn bind_refuses_a_live_server_by_pid() {
    let fx = fixture();
    let mut first = Listener::bind(&fx.paths).await.unwrap();
    ServerInfo::current(&fx.paths)
        .write(&fx.paths.discovery)
        .unwrap();
    let err = Listener::bind(&fx.paths).await.unwrap_err();
    let text = err.to_string();
    let pid = std::process::id();
    assert!(matches!(err, ControlError::AlreadyRunning { pid: Some(p), .. } if p == pid));
    assert!(text.contains(&format!("(pid {pid})")), "{text}");
    assert!(text.contains("procman stop"), "{text}");
    assert!(
        text.contains(&fx.paths.config.display().to_string()),
        "{text}"
    );
    send_fifo(&fx.paths, &run("still")).unwrap();
    assert_eq!(next(&mut first).await.request.unwrap(), run("still"));
}

#[tokio::test]
async fn bind_replaces_stale_fifo_and_socket() {
    let fx = fixture();
    mkfifo(&fx.paths.fifo, 0o600);
    drop(std::os::unix::net::UnixListener::bind(&fx.paths.socket).unwrap());
    assert!(fx.paths.socket.exists());
    let err = send_fifo(&fx.paths, &run("x")).unwrap_err();
    assert!(matches!(err, ClientError::NoServer { .. }));

    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    send_fifo(&fx.paths, &run("fresh")).unwrap();
    assert_eq!(next(&mut listener).await.request.unwrap(), run("fresh"));
}

#[tokio::test]
async fn clients_without_server_fail_fast() {
    let fx = fixture();
    let started = Instant::now();
    let err = send_fifo(&fx.paths, &run("x")).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100));
    let text = err.to_string();
    assert!(matches!(err, ClientError::NoServer { .. }));
    assert!(!text.contains('\n'));
    let config = fx.paths.config.display().to_string();
    assert!(
        text.contains(&config) && text.contains("procman serve"),
        "{text}"
    );

    let err = request(&fx.paths, &Message::Status, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NoServer { .. }), "{err}");

    let huge = Message::Run(RunRequest {
        name: ProcessName::new("big").unwrap(),
        run: "x".repeat(PIPE_BUF),
        env: Default::default(),
        depends: None,
        once: false,
    });
    let err = send_fifo(&fx.paths, &huge).unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("4096"), "{err}");
}

#[tokio::test]
async fn close_removes_everything() {
    let fx = fixture();
    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    ServerInfo::current(&fx.paths)
        .write(&fx.paths.discovery)
        .unwrap();
    listener.close();
    assert!(!fx.paths.fifo.exists());
    assert!(!fx.paths.socket.exists());
    assert!(!fx.paths.discovery.exists());
    assert!(listener.next().await.is_none());
    let err = send_fifo(&fx.paths, &run("x")).unwrap_err();
    assert!(matches!(err, ClientError::NoServer { .. }));
    listener.close();
    drop(listener);
    let again = Listener::bind(&fx.paths).await.unwrap();
    drop(again);
    assert!(!fx.paths.fifo.exists());
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[tokio::test]
async fn foreign_owned_files_are_refused_by_server_and_client() {
    if !is_root() {
        eprintln!("skipped: needs root to create files owned by another user");
        return;
    }
    let fx = fixture();
    mkfifo(&fx.paths.fifo, 0o600);
    std::os::unix::fs::chown(&fx.paths.fifo, Some(65534), Some(65534)).unwrap();
    assert_refused(&fx.paths, &fx.paths.fifo, "owned by uid 65534").await;
    let err = send_fifo(&fx.paths, &run("x")).unwrap_err();
    assert!(matches!(err, ClientError::Insecure { .. }), "{err}");
    std::fs::remove_file(&fx.paths.fifo).unwrap();

    drop(std::os::unix::net::UnixListener::bind(&fx.paths.socket).unwrap());
    std::os::unix::fs::chown(&fx.paths.socket, Some(65534), Some(65534)).unwrap();
    assert_refused(&fx.paths, &fx.paths.socket, "owned by uid 65534").await;
    let err = request(&fx.paths, &Message::Status, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Insecure { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_peers_of_another_user_are_refused() {
    if !is_root() || !Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: needs root and /usr/bin/python3 to connect as another user");
        return;
    }
    let fx = fixture();
    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    // Open the path and mode barriers so that only SO_PEERCRED stands in the way.
    let rt = fx.paths.socket.parent().unwrap();
    for (dir, mode) in [
        (fx._tmp.path(), 0o711),
        (rt, 0o711),
        (&fx.paths.socket, 0o666),
    ] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        try:\n    s.sendall(b'{\"type\":\"status\"}\\n')\n    print(repr(s.recv(100)))\n\
        except (ConnectionResetError, BrokenPipeError):\n    print('reset')\n";
    let out = tokio::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&fx.paths.socket)
        .uid(65534)
        .gid(65534)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.trim() == "b''" || stdout.trim() == "reset",
        "stdout {stdout:?} stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = next(&mut listener).await;
    assert_eq!(refused.via, Channel::Socket);
    let err = refused.request.unwrap_err();
    assert!(err.contains("from uid 65534"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_fifo_makes_writers_wait_not_lose_messages() {
    let fx = fixture();
    let mut listener = Listener::bind(&fx.paths).await.unwrap();
    let paths = fx.paths.clone();
    let count = 3000;
    let writer = std::thread::spawn(move || {
        for i in 0..count {
            send_fifo(&paths, &run(&format!("m{i}"))).unwrap();
        }
    });
    // Not reading yet: the queue and the pipe fill up and the writer has to wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..count {
        assert_eq!(
            next(&mut listener).await.request.unwrap(),
            run(&format!("m{i}"))
        );
    }
    writer.join().unwrap();
}
