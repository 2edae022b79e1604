//! The keeper stops a service whose last client was SIGKILLed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procref::{ServiceInfo, SharedService};

fn unique(tag: &str) -> String {
    format!("t-{tag}-{}-{:x}", std::process::id(), rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

#[test]
#[ignore = "entry point for child processes spawned by other tests"]
fn child_entry() {
    let Ok(name) = std::env::var("SMOKE_NAME") else {
        return;
    };
    let dir = std::env::var("SMOKE_DIR").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let service = SharedService::builder(name.as_str())
            .base_dir(dir)
            .on_first_acquire(|| async {
                let child = Command::new("sleep").arg("600").process_group(0).spawn()?;
                Ok(ServiceInfo::new(child.id(), 0))
            })
            .build()
            .unwrap();
        let handle = service.acquire().await.unwrap();
        println!("{}", handle.pid());
        std::thread::sleep(Duration::from_secs(600));
    });
}

use std::os::unix::process::CommandExt;

#[test]
fn keeper_stops_service_when_last_client_is_killed() {
    let name = unique("smoke");
    let dir = tempfile::tempdir().unwrap();
    let mut client = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_entry",
            "--nocapture",
            "--quiet",
        ])
        .env("SMOKE_NAME", &name)
        .env("SMOKE_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    while line.trim().parse::<u32>().is_err() {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "client ended early"
        );
    }
    let service_pid: u32 = line.trim().parse().unwrap();
    assert!(procref::process::is_alive(service_pid));
    client.kill().unwrap();
    client.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while procref::process::is_alive(service_pid) {
        assert!(
            Instant::now() < deadline,
            "service {service_pid} still running after its last client died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !dir.path().join(format!("{name}.json")).exists(),
        "discovery file left behind"
    );
}
