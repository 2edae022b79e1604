//! A shared `python3 -m http.server`: the first of three client processes starts it,
//! the others reuse it, and procref's keeper stops it after the last client exits.
//!
//! Run: `cargo run -p procref@0.2.0 --example shared_http`
//!
//! The example re-executes itself as the clients (`SHARED_HTTP_CLIENT=K`). Each client
//! acquires the service, prints which server it uses, fetches `/` with a raw HTTP GET,
//! and exits at a staggered time. The parent then shows that the server is gone and the
//! discovery file removed. Nothing is left behind, on success or on failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procref::{ServiceInfo, SharedService};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const CLIENTS: usize = 3;
const CLIENT_VAR: &str = "SHARED_HTTP_CLIENT";

fn main() {
    let outcome = match std::env::var(CLIENT_VAR) {
        Ok(k) => client(&k),
        Err(_) => parent(),
    };
    if let Err(e) = outcome {
        eprintln!("shared_http: {e}");
        std::process::exit(1);
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)).is_ok()
}

/// The shared service as every client describes it.
fn service(name: &str, dir: &str, port: u16, www: String) -> procref::Result<SharedService> {
    SharedService::builder(name)
        .base_dir(dir)
        .on_first_acquire(move || {
            let www = www.clone();
            async move {
                let mut server = Command::new("python3")
                    .args([
                        "-m",
                        "http.server",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                    ])
                    .arg("--directory")
                    .arg(&www)
                    .process_group(0)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                let deadline = Instant::now() + Duration::from_secs(5);
                while !accepts(port) {
                    if Instant::now() > deadline || server.try_wait()?.is_some() {
                        let _ = server.kill();
                        let _ = server.wait();
                        return Err(format!("http.server did not listen on port {port}").into());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(ServiceInfo::new(server.id(), port))
            }
        })
        .on_health_check(|info| async move { accepts(info.port()) })
        .build()
}

fn client(k: &str) -> Result<()> {
    let var = |v: &str| std::env::var(v).map_err(|_| format!("{v} not set"));
    let name = var("SHARED_HTTP_NAME")?;
    let dir = var("SHARED_HTTP_DIR")?;
    let www = var("SHARED_HTTP_WWW")?;
    let port: u16 = var("SHARED_HTTP_PORT")?.parse()?;
    let hold = Duration::from_millis(var("SHARED_HTTP_HOLD_MS")?.parse()?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let service = service(&name, &dir, port, www)?;
        let handle = service.acquire().await?;
        println!(
            "client {k}: using http.server pid {} on port {} ({} client(s) now)",
            handle.pid(),
            handle.port(),
            service.count()?
        );
        let mut stream = TcpStream::connect_timeout(&addr(handle.port()), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let status = reply.lines().next().unwrap_or("(no reply)");
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        println!("client {k}: GET / -> {status}: {body:?}");
        tokio::time::sleep(hold).await;
        println!("client {k}: exiting after {hold:?}");
        drop(handle);
        Ok(())
    })
}

/// Kills and reaps the clients, and the server if it is still up, on every exit path.
struct Guard {
    clients: Vec<Child>,
    server: Option<u32>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.clients {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.server {
            let _ = procref::process::stop(pid, Duration::from_secs(2));
        }
    }
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn parent() -> Result<()> {
    let name = format!("shared-http-demo-{}", std::process::id());
    let state = tempfile::tempdir()?;
    let www = tempfile::tempdir()?;
    std::fs::write(
        www.path().join("index.html"),
        "hello from the shared server\n",
    )?;
    // A free port: bind to port 0, note the port, and let it go again.
    let port = TcpListener::bind(addr(0))?.local_addr()?.port();
    println!("parent: starting {CLIENTS} clients for service {name:?} on port {port}");

    let exe = std::env::current_exe()?;
    let mut guard = Guard {
        clients: Vec::new(),
        server: None,
    };
    for k in 1..=CLIENTS {
        let child = Command::new(&exe)
            .env(CLIENT_VAR, k.to_string())
            .env("SHARED_HTTP_NAME", &name)
            .env("SHARED_HTTP_DIR", state.path())
            .env("SHARED_HTTP_WWW", www.path())
            .env("SHARED_HTTP_PORT", port.to_string())
            .env("SHARED_HTTP_HOLD_MS", (600 * k).to_string())
            .stdin(Stdio::null())
            .spawn()?;
        guard.clients.push(child);
    }

    // Watch the service without holding a reference (so we never keep it alive).
    let watcher = service(&name, &state.path().to_string_lossy(), port, String::new())?;
    let mut server = None;
    wait_for(Duration::from_secs(10), || {
        server = watcher.running().ok().flatten().map(|i| i.pid());
        server.is_some()
    });
    let server = server.ok_or("no client started the server within 10 s")?;
    guard.server = Some(server);

    let deadline = Instant::now() + Duration::from_secs(15);
    for c in &mut guard.clients {
        loop {
            if let Some(status) = c.try_wait()? {
                if !status.success() {
                    return Err(format!("a client failed: {status}").into());
                }
                break;
            }
            if Instant::now() > deadline {
                return Err("clients did not finish within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!("parent: all clients exited; waiting for the keeper");

    let discovery = watcher.discovery_path().to_owned();
    if !wait_for(Duration::from_secs(5), || {
        !procref::process::is_alive(server) && !discovery.exists()
    }) {
        return Err(format!("http.server pid {server} still running after the last client").into());
    }
    guard.server = None;
    println!(
        "parent: http.server pid {server} is gone, port {port} {}, discovery file {} {}, {} client(s)",
        if accepts(port) {
            "STILL OPEN"
        } else {
            "closed"
        },
        short(&discovery),
        if discovery.exists() {
            "STILL THERE"
        } else {
            "removed"
        },
        watcher.count()?
    );
    Ok(())
}

fn short(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
