//! Benchmarks of procref's hot paths, against procref 0.1 where it has one:
//!
//! - `raw_pair`: `SysvRefCounter` acquire + release by the name's only user, on one
//!   counter object (which keeps the set while it exists: one `semop` each).
//! - `raw_pair_shared`: the same pair while another object holds a reference.
//! - `raw_object_cycle`: new counter object, acquire, release, drop, by the name's only
//!   user: the set's whole life (created by the acquire, removed by the drop) each time.
//! - `procref01_raw_pair`: the pair on procref 0.1's `LinuxRefCounter` (which never
//!   removes its set).
//! - `warm_acquire`: `SharedService::acquire` + drop of a running service.
//! - `keeper_reaction`: SIGKILL of the last client → the keeper's SIGTERM reaching the
//!   service (timestamped by the service itself), one client process per iteration.
//! - `keeper_adoption`: SIGKILL of the keeper while a client holds the service → the
//!   discovery file names the new keeper that client started (its pid is read only once
//!   it is ready), one client process per iteration.
//!
//! Run: `cargo bench -p procref@0.2.0 --bench refcount`. Everything created (sets,
//! services, keepers, the 0.1 set) is removed before the benchmark exits.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, SamplingMode};
use procref::{RefCounter, ServiceInfo, SharedService, SysvRefCounter};

const CHILD_VAR: &str = "PROCREF_BENCH_CHILD";

fn unique(tag: &str) -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("getrandom");
    format!(
        "bench-{tag}-{}-{:08x}",
        std::process::id(),
        u32::from_le_bytes(b)
    )
}

fn set_exists(name: &str) -> bool {
    let key = SysvRefCounter::new(name).expect("name").key();
    // SAFETY: semget with flags 0 only looks the key up.
    unsafe { libc::semget(key, 0, 0) >= 0 }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

/// `sleep 600` in its own process group, reaped by a helper thread.
fn spawn_sleeper() -> std::io::Result<u32> {
    let mut child = Command::new("sleep")
        .arg("600")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

fn raw_pair(c: &mut Criterion) {
    let name = unique("raw");
    let counter = SysvRefCounter::new(&name).expect("counter");
    c.bench_function("raw_pair", |b| {
        b.iter(|| {
            counter.acquire().expect("acquire");
            counter.release().expect("release")
        })
    });
    drop(counter);
    assert!(!set_exists(&name), "raw_pair: set left behind");
}

fn raw_object_cycle(c: &mut Criterion) {
    let name = unique("cycle");
    c.bench_function("raw_object_cycle", |b| {
        b.iter(|| {
            let counter = SysvRefCounter::new(&name).expect("counter");
            counter.acquire().expect("acquire");
            counter.release().expect("release")
        })
    });
    assert!(!set_exists(&name), "raw_object_cycle: set left behind");
}

fn raw_pair_shared(c: &mut Criterion) {
    let name = unique("shared");
    let anchor = SysvRefCounter::new(&name).expect("counter");
    anchor.acquire().expect("anchor acquire");
    let counter = SysvRefCounter::new(&name).expect("counter");
    c.bench_function("raw_pair_shared", |b| {
        b.iter(|| {
            counter.acquire().expect("acquire");
            counter.release().expect("release")
        })
    });
    drop((counter, anchor));
    assert!(!set_exists(&name), "raw_pair_shared: set left behind");
}

/// procref 0.1's key: ftok("/tmp", 1 + sum of the name's bytes, wrapping in u8).
fn procref01_key(name: &str) -> i32 {
    let proj = name.bytes().fold(1u8, |a, b| a.wrapping_add(b)) as i32;
    // SAFETY: the path is a valid NUL-terminated string.
    unsafe { libc::ftok(c"/tmp".as_ptr(), proj) }
}

fn procref01_raw_pair(c: &mut Criterion) {
    use procref01::RefCounter as _;
    // 0.1 treats a negative ftok key (proj_id >= 0x80: half of all names) as an ftok
    // failure, so pick a name it can use.
    let (name, key) = loop {
        let name = unique("v01");
        let key = procref01_key(&name);
        if key >= 0 {
            break (name, key);
        }
    };
    // SAFETY: semget with flags 0 only looks the key up.
    let preexisting = unsafe { libc::semget(key, 0, 0) } >= 0;
    let counter = procref01::PlatformRefCounter::new(&name).expect("procref 0.1 counter");
    c.bench_function("procref01_raw_pair", |b| {
        b.iter(|| {
            counter.acquire().expect("acquire");
            counter.release().expect("release")
        })
    });
    drop(counter);
    // 0.1 never removes its sets; remove ours (not one that was there before us).
    if !preexisting {
        // SAFETY: semget/semctl(IPC_RMID) take plain integers.
        unsafe {
            let id = libc::semget(key, 0, 0);
            if id >= 0 {
                libc::semctl(id, 0, libc::IPC_RMID);
            }
        }
    } else {
        eprintln!("procref 0.1 key {key:#x} was already in use; left as found");
    }
}

fn warm_acquire(c: &mut Criterion) {
    let name = unique("warm");
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service = SharedService::builder(name.as_str())
        .base_dir(dir.path())
        .on_first_acquire(|| async { Ok(ServiceInfo::new(spawn_sleeper()?, 0)) })
        .build()
        .expect("service");
    let keep = rt.block_on(service.acquire()).expect("first acquire");
    let pid = keep.pid();
    c.bench_function("warm_acquire", |b| {
        b.iter(|| {
            let h = rt.block_on(service.acquire()).expect("acquire");
            assert_eq!(h.pid(), pid);
            drop(h);
        })
    });
    drop(keep);
    assert!(
        wait_until(Duration::from_secs(10), || !procref::process::is_alive(pid)
            && !set_exists(&name)),
        "warm_acquire: service or set left behind"
    );
}

/// The client process of `keeper_reaction`: acquire (starting the service), report, hold.
fn bench_child() {
    let name = std::env::var("BENCH_NAME").expect("BENCH_NAME");
    let dir = std::env::var("BENCH_DIR").expect("BENCH_DIR");
    let stamp = std::env::var("BENCH_STAMP").expect("BENCH_STAMP");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let service = SharedService::builder(name.as_str())
            .base_dir(dir)
            .linger(Duration::ZERO)
            .on_first_acquire(move || {
                let stamp = stamp.clone();
                async move {
                    // Writes the time SIGTERM arrived (a bash builtin: no fork on the path).
                    // It says "ready" once the trap is set, and is a service only then: a
                    // SIGTERM before that would end it without a timestamp.
                    let mut child = Command::new("bash")
                        .args([
                            "-c",
                            r#"trap 'printf %s "$EPOCHREALTIME" > "$STAMP"; kill $! 2>/dev/null; exit 0' TERM; echo ready; sleep 600 & wait"#,
                        ])
                        .env("STAMP", &stamp)
                        .process_group(0)
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()?;
                    let mut ready = String::new();
                    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready)?;
                    Ok(ServiceInfo::new(child.id(), 0))
                }
            })
            .build()
            .expect("service");
        let h = service.acquire().await.expect("acquire");
        println!("acquired {}", h.pid());
        loop {
            std::thread::sleep(Duration::from_secs(600));
        }
    });
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

/// One round: start a client (which starts the service), SIGKILL it, and return the time
/// from the kill to the service's SIGTERM timestamp.
fn keeper_round(name: &str, dir: &Path, stamp: &PathBuf) -> Duration {
    let _ = std::fs::remove_file(stamp);
    let (mut child, service) = spawn_client(name, dir, stamp);
    let killed = unix_now();
    let _ = child.kill();
    let _ = child.wait();
    let got = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(stamp).is_ok_and(|s| !s.is_empty())
    });
    if !got {
        let _ = procref::process::kill(service);
        panic!("keeper_reaction: the keeper did not stop the service within 10 s");
    }
    let text = std::fs::read_to_string(stamp).expect("stamp");
    let secs: f64 = text
        .trim()
        .replace(',', ".")
        .parse()
        .expect("EPOCHREALTIME");
    let termed = Duration::from_secs_f64(secs);
    // Not timed: let the keeper finish (service gone, file and set removed).
    assert_cleaned_up("keeper_reaction", name, dir, service);
    termed.saturating_sub(killed)
}

/// Spawns the `bench_child` client; returns it and the service pid it reports.
fn spawn_client(name: &str, dir: &Path, stamp: &Path) -> (std::process::Child, u32) {
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .env(CHILD_VAR, "1")
        .env("BENCH_NAME", name)
        .env("BENCH_DIR", dir)
        .env("BENCH_STAMP", stamp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    match (read, line.trim().strip_prefix("acquired ")) {
        (Ok(_), Some(pid)) => (child, pid.parse().expect("pid")),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client did not acquire ({line:?})");
        }
    }
}

fn keeper_in(dir: &Path, name: &str) -> Option<u32> {
    let path = dir.join(format!("{name}.json"));
    procref::discovery::Record::read_unchecked(&path)
        .ok()
        .flatten()
        .and_then(|r| r.keeper)
        .map(|k| k.pid)
}

/// Waits until the keeper, the service, the discovery file and the set are all gone.
fn assert_cleaned_up(what: &str, name: &str, dir: &Path, service: u32) {
    assert!(
        wait_until(Duration::from_secs(10), || !procref::process::is_alive(
            service
        ) && !set_exists(name)
            && !dir.join(format!("{name}.json")).exists()),
        "{what}: keeper did not clean up"
    );
}

/// One round: a client starts the service; SIGKILL its keeper and return the time until
/// the discovery file names a live replacement.
fn adoption_round(name: &str, dir: &Path, stamp: &Path) -> Duration {
    let (mut child, service) = spawn_client(name, dir, stamp);
    let old = keeper_in(dir, name).expect("keeper recorded");
    let killed = Instant::now();
    procref::process::kill(old).expect("kill keeper");
    let mut adopted = None;
    let found = wait_until(Duration::from_secs(10), || {
        adopted = keeper_in(dir, name).filter(|&k| k != old);
        adopted.is_some()
    });
    let took = killed.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "keeper_adoption: no new keeper within 10 s");
    assert_cleaned_up("keeper_adoption", name, dir, service);
    took
}

fn keeper_adoption(c: &mut Criterion) {
    let name = unique("adopt");
    let dir = tempfile::tempdir().expect("tempdir");
    let stamp = dir.path().join("sigterm.stamp");
    let mut group = c.benchmark_group("keeper_adoption");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    group.bench_function("sigkill_to_new_keeper", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| adoption_round(&name, dir.path(), &stamp))
                .sum()
        })
    });
    group.finish();
}

fn keeper_reaction(c: &mut Criterion) {
    let name = unique("keeper");
    let dir = tempfile::tempdir().expect("tempdir");
    let stamp = dir.path().join("sigterm.stamp");
    let mut group = c.benchmark_group("keeper_reaction");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(15)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    group.bench_function("sigkill_to_sigterm", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| keeper_round(&name, dir.path(), &stamp))
                .sum()
        })
    });
    group.finish();
}

fn main() {
    if std::env::var_os(CHILD_VAR).is_some() {
        bench_child();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    raw_pair(&mut c);
    raw_pair_shared(&mut c);
    raw_object_cycle(&mut c);
    procref01_raw_pair(&mut c);
    warm_acquire(&mut c);
    keeper_reaction(&mut c);
    keeper_adoption(&mut c);
    c.final_summary();
}
