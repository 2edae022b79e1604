//! `SharedService` lifecycle with real client processes, real SIGKILLs and real keepers:
//! 32 clients racing to start one service; SIGKILL of a client holding a reference,
//! inside `on_first_acquire` and inside `on_last_release`; graceful last release; linger
//! (release and SIGKILL, re-acquire inside the window, linger + on_last_release); health
//! check with and without `on_recover` under 5 concurrent clients; untrustworthy
//! discovery files (garbage, truncated, dead pid, reused pid, symlink); startup_timeout;
//! SIGKILL of the keeper (with a client holding a handle that is then dropped or
//! SIGKILLed, with five clients, and with no client at all).
//! Every test checks that nothing is left: service, keeper, discovery file, semaphore set.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Barrier, Cleanup, Proc, Svc, alive, assert_clean, assert_exits, keeper_pid, keepers_of,
    lines_of, rt, sigkill, wait_until,
};
use procref::discovery::{ProcessId, RECORD_FORMAT, Record, write_atomic};
use procref::{Error, RefCounter, ServiceInfo, SysvRefCounter};

const T: Duration = Duration::from_secs(20);
/// Bound on the keeper noticing a dead last client and stopping the service.
const STOP: Duration = Duration::from_secs(10);

#[test]
#[ignore = "entry point for child processes spawned by other tests"]
fn child_entry() {
    common::child_main();
}

/// Per-test scratch: the discovery dir (base_dir) and a separate dir for record files.
struct Dirs {
    base: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        Dirs {
            base: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
        }
    }
    fn svc(&self, name: &str) -> Svc {
        let mut s = Svc::new(name, self.base.path());
        s.starts = Some(self.file("starts"));
        s
    }
    fn file(&self, f: &str) -> PathBuf {
        self.work.path().join(f)
    }
    fn discovery(&self, name: &str) -> PathBuf {
        self.base.path().join(format!("{name}.json"))
    }
}

fn client(svc: &Svc, extra: &[(&'static str, String)]) -> Proc {
    let mut env = svc.env();
    env.extend_from_slice(extra);
    Proc::spawn("svc", &env)
}

/// Reads the live service pid and keeper pid from the discovery file (and registers both
/// for cleanup).
fn running(cl: &mut Cleanup, dir: &Path, name: &str) -> (u32, u32) {
    let path = dir.join(format!("{name}.json"));
    let rec = Record::read_unchecked(&path)
        .unwrap()
        .expect("discovery file");
    let keeper = rec.keeper.expect("keeper recorded").pid;
    cl.pid(rec.service.pid);
    cl.pid(keeper);
    (rec.service.pid, keeper)
}

#[test]
fn thirty_two_clients_race_one_start_then_keeper_stops_it() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("race");
    let svc = d.svc(&name);
    let mut barrier = Barrier::new(d.work.path());
    let mut clients: Vec<Proc> = (0..32)
        .map(|_| client(&svc, &[("PT_BARRIER", barrier.path.display().to_string())]))
        .collect();
    for c in &clients {
        c.expect("waiting", T);
    }
    barrier.release();
    let pids: Vec<u32> = clients
        .iter()
        .map(|c| c.acquired_pid(Duration::from_secs(60)))
        .collect();
    let service = pids[0];
    cl.pid(service);
    assert!(
        pids.iter().all(|&p| p == service),
        "clients got different services: {pids:?}"
    );
    let starts = lines_of(d.work.path().join("starts").as_path());
    assert_eq!(starts.len(), 1, "on_first_acquire ran {starts:?}");
    assert!(alive(service));
    let svc_api = svc.build().unwrap();
    assert_eq!(svc_api.count().unwrap(), 32);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    for c in &mut clients {
        c.kill();
    }
    assert_exits(service, STOP, "service after all 32 clients were killed");
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());
}

#[test]
fn sigkill_of_the_holding_client_then_fresh_start() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("kill-hold");
    let svc = d.svc(&name);
    let mut a = client(&svc, &[]);
    let first = a.acquired_pid(T);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    let killed = Instant::now();
    a.kill();
    assert_exits(first, STOP, "service after its only client was SIGKILLed");
    eprintln!(
        "keeper stopped the service {:?} after the kill",
        killed.elapsed()
    );
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());

    let rt = rt();
    let service = svc.build().unwrap();
    let h = rt.block_on(service.acquire()).unwrap();
    cl.pid(h.pid());
    assert_ne!(h.pid(), first);
    assert!(alive(h.pid()));
    assert_eq!(lines_of(&d.file("starts")).len(), 2);
    let (second, keeper) = running(&mut cl, d.base.path(), &name);
    assert_eq!(second, h.pid());
    drop(h);
    assert_exits(second, STOP, "service after the last handle was dropped");
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());
}

#[test]
fn sigkill_inside_on_first_acquire_frees_everything() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("kill-start");
    let mut stuck = d.svc(&name);
    stuck.block_start = true;
    let mut a = client(&stuck, &[]);
    a.expect("in-start", T);
    let counter = SysvRefCounter::new(&name).unwrap();
    assert_eq!(counter.count().unwrap(), 1);
    assert!(!counter.try_lock().unwrap(), "the starter holds the lock");
    a.kill();
    assert_eq!(
        counter.count().unwrap(),
        0,
        "the starter's reference survived it"
    );
    assert!(
        counter.try_lock().unwrap(),
        "the starter's lock survived it"
    );
    counter.unlock().unwrap();
    assert!(!d.discovery(&name).exists());

    // Three clients at once: exactly one new start, one instance.
    let svc = d.svc(&name);
    let mut clients: Vec<Proc> = (0..3).map(|_| client(&svc, &[])).collect();
    let pids: Vec<u32> = clients.iter().map(|c| c.acquired_pid(T)).collect();
    cl.pids.extend(&pids);
    assert!(pids.iter().all(|&p| p == pids[0]), "{pids:?}");
    let starts = lines_of(&d.file("starts"));
    assert_eq!(
        starts.len(),
        2,
        "stuck start + exactly one real start: {starts:?}"
    );
    let (service, keeper) = running(&mut cl, d.base.path(), &name);
    assert_eq!(service, pids[0]);
    for c in &mut clients {
        c.kill();
    }
    assert_exits(service, STOP, "service");
    assert_exits(keeper, STOP, "keeper");
    drop(counter);
    assert_clean(&name, d.base.path());
}

#[test]
fn sigkill_inside_on_last_release_lets_the_keeper_stop_it() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("kill-stop");
    let mut svc = d.svc(&name);
    svc.stops = Some(d.file("stops"));
    svc.stop_delay = Some(Duration::from_secs(30));
    let mut a = client(&svc, &[("PT_HOLD_MS", "50".into())]);
    let service = a.acquired_pid(T);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    a.expect("in-stop", T);
    assert!(alive(service));
    a.kill();
    assert_exits(
        service,
        STOP,
        "service after the client died in on_last_release",
    );
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());
    assert!(
        lines_of(&d.file("stops")).is_empty(),
        "on_last_release never finished"
    );

    let counter = SysvRefCounter::new(&name).unwrap();
    assert_eq!(counter.count().unwrap(), 0);
    let rt = rt();
    let plain = d.svc(&name);
    let s = plain.build().unwrap();
    let h = rt.block_on(s.acquire()).unwrap();
    cl.pid(h.pid());
    assert_ne!(h.pid(), service);
    assert!(alive(h.pid()));
    let (next, keeper) = running(&mut cl, d.base.path(), &name);
    drop(h);
    assert_exits(next, STOP, "service");
    assert_exits(keeper, STOP, "keeper");
    drop(counter);
    assert_clean(&name, d.base.path());
}

#[test]
fn graceful_last_release_runs_on_last_release_in_the_releaser() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("graceful");
    let mut svc = d.svc(&name);
    svc.stops = Some(d.file("stops"));
    let mut a = client(&svc, &[("PT_HOLD_MS", "50".into())]);
    let service = a.acquired_pid(T);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    a.expect("released", T);
    // on_last_release ran (and finished) in the releasing process, before release returned.
    assert_eq!(
        lines_of(&d.file("stops")),
        vec![format!("stop {} {service}", a.pid())]
    );
    assert!(!alive(service));
    assert!(!d.discovery(&name).exists(), "discovery file not removed");
    assert!(a.wait_success(T));
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());
}

#[test]
fn acquire_during_on_last_release_gets_a_fresh_service() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("handover");
    let mut svc = d.svc(&name);
    svc.stops = Some(d.file("stops"));
    svc.stop_delay = Some(Duration::from_millis(1000));
    let mut a = client(&svc, &[("PT_HOLD_MS", "50".into())]);
    let old = a.acquired_pid(T);
    let (_, old_keeper) = running(&mut cl, d.base.path(), &name);
    a.expect("in-stop", T);
    // B arrives while A is stopping the old instance.
    let mut b_svc = svc.clone();
    b_svc.stop_delay = None;
    let mut b = client(&b_svc, &[]);
    let fresh = b.acquired_pid(T);
    cl.pid(fresh);
    a.expect("released", T);
    assert!(a.wait_success(T));
    assert_ne!(fresh, old, "B was handed the instance A was stopping");
    assert!(!alive(old));
    assert_eq!(lines_of(&d.file("starts")).len(), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(fresh), "B's service was stopped under it");
    let (service, keeper) = running(&mut cl, d.base.path(), &name);
    assert_eq!(service, fresh);
    b.kill();
    assert_exits(fresh, STOP, "B's service after B was killed");
    assert_exits(keeper, STOP, "keeper");
    assert_exits(old_keeper, STOP, "old keeper");
    assert_clean(&name, d.base.path());
}

/// Runs one linger scenario; `end` ends the last client (release or SIGKILL) and returns
/// when that happened.
fn linger_case(
    tag: &str,
    end: impl FnOnce(&mut Proc) -> Instant,
    extra: &[(&'static str, String)],
) {
    let linger = Duration::from_millis(1500);
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name(tag);
    let mut svc = d.svc(&name);
    svc.linger = Some(linger);
    let mut a = client(&svc, extra);
    let service = a.acquired_pid(T);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    let t0 = end(&mut a);
    std::thread::sleep(linger / 2);
    assert!(alive(service), "{tag}: stopped before the linger ran out");
    assert_exits(
        service,
        linger + STOP,
        &format!("{tag}: service after linger"),
    );
    let after = t0.elapsed();
    assert!(
        after >= linger * 8 / 10,
        "{tag}: stopped {after:?} after the last client left; linger is {linger:?}"
    );
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());
}

#[test]
fn linger_after_graceful_release() {
    linger_case(
        "linger-rel",
        |a| {
            a.expect("released", T);
            Instant::now()
        },
        &[("PT_HOLD_MS", "10".into())],
    );
}

#[test]
fn linger_after_sigkill() {
    linger_case(
        "linger-kill",
        |a| {
            a.kill();
            Instant::now()
        },
        &[],
    );
}

#[test]
fn acquire_inside_the_linger_window_reuses_the_service() {
    let linger = Duration::from_millis(1500);
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("linger-back");
    let mut svc = d.svc(&name);
    svc.linger = Some(linger);
    let mut a = client(&svc, &[]);
    let service = a.acquired_pid(T);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    a.kill();
    std::thread::sleep(linger / 3);
    let mut b = client(&svc, &[]);
    assert_eq!(
        b.acquired_pid(T),
        service,
        "B did not get the lingering service"
    );
    assert_eq!(lines_of(&d.file("starts")).len(), 1);
    std::thread::sleep(linger + Duration::from_millis(300));
    assert!(alive(service), "stopped while B holds it");
    assert_eq!(keeper_pid(d.base.path(), &name), Some(keeper));
    let t1 = Instant::now();
    b.kill();
    std::thread::sleep(linger / 2);
    assert!(alive(service), "stopped before the second linger ran out");
    assert_exits(service, linger + STOP, "service after B left");
    assert!(t1.elapsed() >= linger * 8 / 10);
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());
}

#[test]
fn linger_with_on_last_release_is_a_config_error() {
    let d = Dirs::new();
    let name = common::unique("cfg");
    let mut svc = d.svc(&name);
    svc.linger = Some(Duration::from_secs(1));
    svc.stops = Some(d.file("stops"));
    match svc.build() {
        Err(e @ Error::Config { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&name) && msg.contains("linger"), "{msg}");
        }
        Err(e) => panic!("expected Config, got {e}"),
        Ok(_) => panic!("expected Config, got a service"),
    }
    assert!(!common::set_exists(&name));
}

fn health_case(with_recover: bool) {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name(if with_recover { "recover" } else { "restart" });
    let mut svc = d.svc(&name);
    svc.health_marker = Some(d.file("healthy"));
    if with_recover {
        svc.recovers = Some(d.file("recovers"));
    }
    let a = client(&svc, &[]);
    let old = a.acquired_pid(T);
    let (_, old_keeper) = running(&mut cl, d.base.path(), &name);
    std::fs::remove_file(d.file("healthy")).unwrap();

    let mut barrier = Barrier::new(d.work.path());
    let mut clients: Vec<Proc> = (0..5)
        .map(|_| client(&svc, &[("PT_BARRIER", barrier.path.display().to_string())]))
        .collect();
    for c in &clients {
        c.expect("waiting", T);
    }
    barrier.release();
    let pids: Vec<u32> = clients.iter().map(|c| c.acquired_pid(T)).collect();
    cl.pids.extend(&pids);
    let fresh = pids[0];
    assert!(pids.iter().all(|&p| p == fresh), "{pids:?}");
    assert_ne!(fresh, old);
    assert!(alive(fresh));
    assert_exits(old, STOP, "unhealthy service");
    let starts = lines_of(&d.file("starts"));
    if with_recover {
        assert_eq!(lines_of(&d.file("recovers")).len(), 1, "on_recover count");
        assert_eq!(starts.len(), 1, "on_first_acquire ran again: {starts:?}");
    } else {
        assert_eq!(starts.len(), 2, "one start, one restart: {starts:?}");
    }
    assert_exits(old_keeper, STOP, "the old instance's keeper");
    let (service, keeper) = running(&mut cl, d.base.path(), &name);
    assert_eq!(service, fresh);
    drop(a);
    for c in &mut clients {
        c.kill();
    }
    assert_exits(fresh, STOP, "recovered service");
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());
}

#[test]
fn unhealthy_service_is_recovered_once_by_five_clients() {
    health_case(true);
}

#[test]
fn unhealthy_service_without_on_recover_is_restarted_once() {
    health_case(false);
}

/// A process of our own that has nothing to do with any service.
struct Bystander(std::process::Child);

impl Bystander {
    fn new() -> Bystander {
        Bystander(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn record(name: &str, service: ProcessId, keeper: Option<ProcessId>) -> Record {
    Record {
        format: RECORD_FORMAT,
        name: name.to_owned(),
        instance: "00000000000000000000000000000000".into(),
        service,
        info: ServiceInfo::new(service.pid, 1234),
        keeper,
        version: "0.2.0".into(),
        written_at: 0,
    }
}

#[test]
fn untrustworthy_discovery_files_are_ignored() {
    let bystander = Bystander::new();
    let by = ProcessId::of(bystander.pid()).unwrap();
    let wrong_start = ProcessId {
        pid: by.pid,
        start_time: by.start_time + 1,
    };
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        ProcessId { pid, start_time: 1 }
    };
    let valid_json = |name: &str, r: Record| {
        let _ = name;
        serde_json::to_vec(&r).unwrap()
    };
    type Fault = Box<dyn Fn(&str) -> Vec<u8>>;
    let faults: Vec<(&str, Fault)> = vec![
        ("garbage", Box::new(|_| b"\x00\xffnot json {{{".to_vec())),
        ("empty", Box::new(|_| Vec::new())),
        (
            "truncated",
            Box::new(move |n| {
                let full = serde_json::to_vec(&record(n, by, None)).unwrap();
                full[..full.len() / 2].to_vec()
            }),
        ),
        (
            "dead pid",
            Box::new(move |n| valid_json(n, record(n, dead, Some(dead)))),
        ),
        (
            "reused pid (wrong start time), keeper too",
            Box::new(move |n| valid_json(n, record(n, wrong_start, Some(wrong_start)))),
        ),
        (
            "other service's record",
            Box::new(move |n| valid_json(n, record(&format!("{n}-other"), by, None))),
        ),
        (
            "info pid differs from service pid",
            Box::new(move |n| {
                let mut r = record(n, dead, None);
                r.info = ServiceInfo::new(by.pid, 1);
                valid_json(n, r)
            }),
        ),
        (
            "future format",
            Box::new(move |n| {
                let mut r = record(n, by, None);
                r.format = RECORD_FORMAT + 1;
                valid_json(n, r)
            }),
        ),
    ];
    let rt = rt();
    for (what, fault) in &faults {
        let d = Dirs::new();
        let mut cl = Cleanup::default();
        cl.dirs.push(d.work.path().to_owned());
        let name = cl.name("disc");
        write_atomic(&d.discovery(&name), &fault(&name)).unwrap();
        let svc = d.svc(&name);
        let service = svc.build().unwrap();
        let h = rt
            .block_on(service.acquire())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        cl.pid(h.pid());
        assert_ne!(h.pid(), bystander.pid(), "{what}: trusted the bystander");
        assert_eq!(lines_of(&d.file("starts")).len(), 1, "{what}");
        let (pid, keeper) = running(&mut cl, d.base.path(), &name);
        assert_eq!(pid, h.pid());
        drop(h);
        assert_exits(pid, STOP, what);
        assert_exits(keeper, STOP, "keeper");
        assert_clean(&name, d.base.path());
        assert!(
            alive(bystander.pid()),
            "{what}: the unrelated process was killed"
        );
    }
    // Give any stray signal time to land before the last check.
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(bystander.pid()));
}

#[test]
fn symlinked_discovery_file_is_refused() {
    let rt = rt();
    for dangling in [false, true] {
        let d = Dirs::new();
        let mut cl = Cleanup::default();
        cl.dirs.push(d.work.path().to_owned());
        let name = cl.name("symlink");
        let target = d.file("target.json");
        if !dangling {
            std::fs::write(&target, b"do not touch").unwrap();
        }
        std::os::unix::fs::symlink(&target, d.discovery(&name)).unwrap();
        let service = d.svc(&name).build().unwrap();
        match rt.block_on(service.acquire()) {
            Err(e @ Error::InsecurePath { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("symlink"), "{msg}");
                assert!(msg.contains(&format!("{name}.json")), "{msg}");
            }
            Err(e) => panic!("expected InsecurePath, got {e}"),
            Ok(h) => panic!("acquired through a symlink: pid {}", h.pid()),
        }
        if dangling {
            assert!(!target.exists(), "the symlink was followed");
        } else {
            assert_eq!(std::fs::read(&target).unwrap(), b"do not touch");
        }
        assert!(lines_of(&d.file("starts")).is_empty(), "started anyway");
        assert!(
            std::fs::symlink_metadata(d.discovery(&name))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            service.count().unwrap(),
            0,
            "the failed acquire kept its reference"
        );
        drop(service);
        common::remove_counter(&name);
    }
}

#[test]
fn startup_timeout_names_the_service_and_a_dead_starter_is_taken_over() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("st-timeout");
    let mut stuck = d.svc(&name);
    stuck.block_start = true;
    let mut a = client(&stuck, &[]);
    a.expect("in-start", T);

    let mut impatient = d.svc(&name);
    impatient.startup_timeout = Some(Duration::from_millis(300));
    let rt = rt();
    let s = impatient.build().unwrap();
    let began = Instant::now();
    let result = rt.block_on(s.acquire());
    let waited = began.elapsed();
    match result {
        Err(e @ Error::StartupTimeout { .. }) => {
            assert!(e.to_string().contains(&name), "{e}");
        }
        Err(e) => panic!("expected StartupTimeout, got {e}"),
        Ok(h) => panic!("acquired while the starter is stuck: pid {}", h.pid()),
    }
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(3),
        "startup_timeout(300ms) took {waited:?}"
    );
    assert_eq!(
        s.count().unwrap(),
        1,
        "the timed-out acquire kept its reference"
    );

    let mut patient = d.svc(&name);
    patient.startup_timeout = Some(Duration::from_secs(20));
    let waiter = std::thread::spawn(move || {
        let rt = common::rt();
        let s = patient.build().unwrap();
        let h = rt.block_on(s.acquire());
        (h.map(|h| (h.pid(), Instant::now(), h)), s)
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    a.kill();
    let (got, _s) = waiter.join().unwrap();
    let (pid, at, h) = got.expect("waiting acquire failed after the starter died");
    cl.pid(pid);
    let lag = at.saturating_duration_since(killed);
    assert!(
        lag < Duration::from_secs(3),
        "took over {lag:?} after the kill"
    );
    assert!(alive(pid));
    let starts = lines_of(&d.file("starts"));
    assert_eq!(
        starts,
        vec![
            format!("start {}", a.pid()),
            format!("start {} {pid}", std::process::id())
        ],
        "the waiter must start it itself, once"
    );
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    drop(h);
    assert_exits(pid, STOP, "service");
    assert_exits(keeper, STOP, "keeper");
    drop(s);
    assert_clean(&name, d.base.path());
}

#[test]
fn crashed_service_is_restarted_and_its_old_keeper_dismissed() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("crashed");
    let svc = d.svc(&name);
    let mut a = client(&svc, &[]);
    let old = a.acquired_pid(T);
    let (_, old_keeper) = running(&mut cl, d.base.path(), &name);
    common::sigkill(old);
    assert_exits(old, T, "service");
    // A still holds its reference, so the old keeper has nothing to do yet.
    assert!(alive(old_keeper));
    let mut b = client(&svc, &[]);
    let fresh = b.acquired_pid(T);
    cl.pid(fresh);
    assert_ne!(fresh, old);
    assert_eq!(lines_of(&d.file("starts")).len(), 2);
    assert_exits(old_keeper, STOP, "the dead instance's keeper");
    let (service, keeper) = running(&mut cl, d.base.path(), &name);
    assert_eq!(service, fresh);
    a.kill();
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(fresh), "stopped while B still holds it");
    b.kill();
    assert_exits(fresh, STOP, "service");
    assert_exits(keeper, STOP, "keeper");
    assert_clean(&name, d.base.path());
}

#[test]
fn cancelled_acquire_leaves_no_reference_and_no_lock() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("cancel");
    let mut stuck = d.svc(&name);
    stuck.block_start = true;
    let mut a = client(&stuck, &[]);
    a.expect("in-start", T);
    let mut waiting = d.svc(&name);
    waiting.startup_timeout = Some(Duration::from_secs(5));
    let s = waiting.build().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let r = runtime
        .block_on(async { tokio::time::timeout(Duration::from_millis(200), s.acquire()).await });
    assert!(r.is_err(), "acquire should still be waiting");
    assert_eq!(
        s.count().unwrap(),
        1,
        "the cancelled acquire kept its reference"
    );
    a.kill();
    // The cancelled waiter may take the lock when A dies; it must give it back at once.
    let svc = d.svc(&name);
    let b = client(&svc, &[]);
    let pid = b.acquired_pid(Duration::from_secs(3));
    cl.pid(pid);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    drop(b);
    assert_exits(pid, STOP, "service");
    assert_exits(keeper, STOP, "keeper");
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(s);
    assert_clean(&name, d.base.path());
}

/// SIGKILLs the keeper recorded for `name` and waits until it is gone.
fn kill_keeper(keeper: u32) {
    sigkill(keeper);
    assert_exits(keeper, T, "SIGKILLed keeper");
}

/// Waits until the discovery file names a live keeper other than `old`; returns it.
fn replacement_keeper(cl: &mut Cleanup, dir: &Path, name: &str, old: u32) -> u32 {
    let mut found = None;
    let adopted = wait_until(T, || {
        found = keeper_pid(dir, name).filter(|&k| k != old && alive(k));
        found.is_some()
    });
    assert!(
        adopted,
        "no new keeper recorded after keeper {old} was killed"
    );
    let keeper = found.unwrap();
    cl.pid(keeper);
    keeper
}

/// Asserts that no keeper process of `name` is left.
fn assert_no_keeper(name: &str) {
    assert!(
        wait_until(STOP, || keepers_of(name).is_empty()),
        "keepers of {name} still running: {:?}",
        keepers_of(name)
    );
}

#[test]
fn sigkilled_keeper_then_dropped_handle_still_stops_the_service() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("keeper-drop");
    let rt = rt();
    let service = d.svc(&name).build().unwrap();
    let h = rt.block_on(service.acquire()).unwrap();
    let (pid, keeper) = running(&mut cl, d.base.path(), &name);
    kill_keeper(keeper);
    assert!(alive(pid));
    // Drop at once: this process may or may not have adopted the instance yet.
    drop(h);
    drop(service);
    assert_exits(
        pid,
        STOP,
        "service after its keeper and its last handle were gone",
    );
    assert_no_keeper(&name);
    assert_clean(&name, d.base.path());
    assert_eq!(lines_of(&d.file("starts")).len(), 1);
}

#[test]
fn sigkilled_keeper_then_sigkilled_client_still_stops_the_service() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("keeper-kill");
    let svc = d.svc(&name);
    let mut a = client(&svc, &[]);
    let service = a.acquired_pid(T);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    kill_keeper(keeper);
    // The client holding the handle notices (kernel event) and starts a new keeper.
    let adopted = replacement_keeper(&mut cl, d.base.path(), &name, keeper);
    assert_eq!(keepers_of(&name), vec![adopted]);
    assert!(alive(service));
    a.kill();
    assert_exits(
        service,
        STOP,
        "service after its keeper, then its client, were SIGKILLed",
    );
    assert_exits(adopted, STOP, "adopted keeper");
    assert_clean(&name, d.base.path());
    assert_eq!(
        lines_of(&d.file("starts")).len(),
        1,
        "the service was restarted"
    );
}

#[test]
fn five_clients_adopt_exactly_one_keeper() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("keeper-five");
    let svc = d.svc(&name);
    let mut clients: Vec<Proc> = (0..5).map(|_| client(&svc, &[])).collect();
    let pids: Vec<u32> = clients.iter().map(|c| c.acquired_pid(T)).collect();
    let (service, keeper) = running(&mut cl, d.base.path(), &name);
    assert!(pids.iter().all(|&p| p == service), "{pids:?}");
    for round in 0..2 {
        let old = keeper_pid(d.base.path(), &name).unwrap();
        kill_keeper(old);
        let adopted = replacement_keeper(&mut cl, d.base.path(), &name, old);
        // Every client woke; let the slower ones finish looking before counting.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            keepers_of(&name),
            vec![adopted],
            "round {round}: the five clients did not agree on one new keeper"
        );
    }
    assert_ne!(keeper_pid(d.base.path(), &name), Some(keeper));
    let last = keeper_pid(d.base.path(), &name).unwrap();
    for c in &mut clients[1..] {
        c.kill();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(service), "stopped while a client still holds it");
    clients[0].kill();
    assert_exits(service, STOP, "service after every client was SIGKILLed");
    assert_exits(last, STOP, "keeper");
    assert_no_keeper(&name);
    assert_clean(&name, d.base.path());
}

#[test]
fn keeper_killed_with_no_client_is_adopted_by_the_next_client() {
    let d = Dirs::new();
    let mut cl = Cleanup::default();
    cl.dirs.push(d.work.path().to_owned());
    let name = cl.name("keeper-idle");
    let mut lingering = d.svc(&name);
    lingering.linger = Some(Duration::from_secs(60));
    let mut a = client(&lingering, &[]);
    let service = a.acquired_pid(T);
    let (_, keeper) = running(&mut cl, d.base.path(), &name);
    a.kill();
    // The count is 0 and the keeper waits out the linger; kill it there.
    kill_keeper(keeper);
    assert!(
        alive(service),
        "no one is left to stop it until a client comes"
    );
    let mut b_svc = d.svc(&name);
    b_svc.linger = Some(Duration::ZERO);
    let mut b = client(&b_svc, &[]);
    assert_eq!(
        b.acquired_pid(T),
        service,
        "B did not reuse the running service"
    );
    let adopted = replacement_keeper(&mut cl, d.base.path(), &name, keeper);
    assert_eq!(lines_of(&d.file("starts")).len(), 1);
    b.kill();
    assert_exits(
        service,
        STOP,
        "service after the adopting client was SIGKILLed",
    );
    assert_exits(adopted, STOP, "adopted keeper");
    assert_clean(&name, d.base.path());
}
