//! `SysvRefCounter` against the real kernel, with real child processes and SIGKILL:
//! counting, NotHeld, the startup lock (try_lock / unlock / lock_timeout), wait_zero
//! blocking in the kernel, crash safety of the count and the lock, name independence
//! (anagrams, 300 names at once), name validation, refusal of foreign sets (wrong mode,
//! owner, fingerprint, size) without touching them, and removal of the set when no one
//! uses it any more: when the last object present is dropped, after SIGKILLed holders by
//! the next user, never under an object, a watcher or a lock holder, re-opened with the
//! object's presence after an outside removal, without losing a racing acquirer's
//! reference, and never left behind by objects leaving together.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, Proc, remove_counter, set_exists, set_id, set_value};
use procref::{Error, RefCounter, SysvRefCounter};

const T: Duration = Duration::from_secs(10);

#[test]
#[ignore = "entry point for child processes spawned by other tests"]
fn child_entry() {
    common::child_main();
}

fn holder(role: &str, name: &str) -> Proc {
    let p = Proc::spawn(role, &[("PT_NAME", name.to_owned())]);
    p.expect("ready", T);
    p
}

#[test]
fn acquire_count_release_and_not_held() {
    let mut cl = Cleanup::default();
    let name = cl.name("basic");
    let c = SysvRefCounter::new(&name).unwrap();
    assert_eq!(c.count().unwrap(), 0);
    assert!(!set_exists(&name), "count() must not create a set");
    assert!(matches!(c.release(), Err(Error::NotHeld { .. })));
    assert_eq!(c.acquire().unwrap(), 1);
    assert_eq!(c.count().unwrap(), 1);
    assert_eq!(c.acquire().unwrap(), 2);
    // A second object in the same process sees the same count but holds nothing.
    let other = SysvRefCounter::new(&name).unwrap();
    assert_eq!(other.count().unwrap(), 2);
    assert!(matches!(other.release(), Err(Error::NotHeld { .. })));
    assert_eq!(c.release().unwrap(), 1);
    assert_eq!(c.release().unwrap(), 0);
    let err = c.release().unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    drop((c, other));
    remove_counter(&name);
}

#[test]
fn lock_is_exclusive_and_freed_by_the_kernel_on_sigkill() {
    let mut cl = Cleanup::default();
    let name = cl.name("lock");
    let c = SysvRefCounter::new(&name).unwrap();
    assert!(c.try_lock().unwrap());
    assert!(c.try_lock().unwrap(), "re-entrant for the same object");
    let other = SysvRefCounter::new(&name).unwrap();
    assert!(
        !other.try_lock().unwrap(),
        "second object must not get the lock"
    );
    c.unlock().unwrap();
    assert!(other.try_lock().unwrap());
    other.unlock().unwrap();
    drop(other);

    let mut child = holder("lock", &name);
    assert!(!c.try_lock().unwrap());
    let began = Instant::now();
    assert!(!c.lock_timeout(Duration::from_millis(200)).unwrap());
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
        "lock_timeout(200ms) returned after {waited:?}"
    );

    // A waiter in lock_timeout is woken by the kernel when the holder dies.
    let waiter = std::thread::spawn(move || {
        let began = Instant::now();
        let got = c.lock_timeout(Duration::from_secs(20)).unwrap();
        (got, began.elapsed(), c)
    });
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    child.kill();
    let (got, waited, c) = waiter.join().unwrap();
    assert!(got, "lock not obtained after the holder was killed");
    assert!(
        waited < Duration::from_secs(5) && killed.elapsed() < Duration::from_secs(2),
        "lock obtained only {waited:?} after the wait began"
    );
    c.unlock().unwrap();
    drop(c);
    remove_counter(&name);
}

/// State and wait channel of one of our threads.
fn thread_state(tid: i32) -> (char, String) {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?');
    let wchan = std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan")).unwrap_or_default();
    (state, wchan)
}

#[test]
fn wait_zero_blocks_in_the_kernel_until_the_holder_dies() {
    let mut cl = Cleanup::default();
    let name = cl.name("wz");
    let c = SysvRefCounter::new(&name).unwrap();
    assert!(
        c.wait_zero(Some(Duration::ZERO)).unwrap(),
        "no set: count is 0"
    );
    let mut child = holder("hold", &name);
    assert_eq!(c.count().unwrap(), 1);
    let began = Instant::now();
    assert!(!c.wait_zero(Some(Duration::from_millis(200))).unwrap());
    assert!(began.elapsed() >= Duration::from_millis(190));

    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let got = c.wait_zero(Some(Duration::from_secs(20))).unwrap();
        (got, Instant::now(), c)
    });
    let tid = tid_rx.recv_timeout(T).unwrap();
    // The waiter sleeps in semtimedop: interruptible sleep with a semaphore wait channel,
    // not a polling loop (which would show R, or hrtimer/futex sleeps).
    let mut seen = (' ', String::new());
    assert!(
        common::wait_until(T, || {
            seen = thread_state(tid);
            seen.0 == 'S' && (seen.1.is_empty() || seen.1.contains("sem"))
        }),
        "waiter thread not asleep in a semaphore wait: {seen:?}"
    );
    // Still asleep a little later: it is not waking up periodically to poll.
    std::thread::sleep(Duration::from_millis(100));
    let again = thread_state(tid);
    assert_eq!(again.0, 'S', "{again:?}");
    let killed = Instant::now();
    child.kill();
    let (got, woke, c) = waiter.join().unwrap();
    assert!(got, "wait_zero timed out although the holder died");
    let lag = woke.saturating_duration_since(killed);
    assert!(
        lag < Duration::from_millis(500),
        "woke {lag:?} after the kill"
    );
    assert_eq!(c.count().unwrap(), 0);
    drop(c);
    remove_counter(&name);
}

#[test]
fn sigkilled_holders_give_back_count_and_lock() {
    let mut cl = Cleanup::default();
    let name = cl.name("crash");
    let c = SysvRefCounter::new(&name).unwrap();
    let mut a = holder("hold", &name);
    let mut b = holder("hold", &name);
    assert_eq!(c.count().unwrap(), 2);
    a.kill();
    assert_eq!(
        c.count().unwrap(),
        1,
        "the kernel undoes at exit, before reaping returns"
    );
    b.kill();
    assert_eq!(c.count().unwrap(), 0);

    let mut l = holder("lock", &name);
    assert!(!c.try_lock().unwrap());
    l.kill();
    assert!(
        c.try_lock().unwrap(),
        "lock still held after its holder was SIGKILLed"
    );
    c.unlock().unwrap();

    assert_eq!(c.acquire().unwrap(), 1, "acquire after crashes");
    assert_eq!(c.release().unwrap(), 0);
    drop(c);
    remove_counter(&name);
}

#[test]
fn anagram_names_are_independent() {
    let suffix = format!("{}x{:08x}", std::process::id(), common::rand_u32());
    let ab = format!("ab{suffix}");
    let ba = format!("ba{suffix}");
    let mut cl = Cleanup::default();
    cl.names = vec![ab.clone(), ba.clone()];
    let a = SysvRefCounter::new(&ab).unwrap();
    let b = SysvRefCounter::new(&ba).unwrap();
    assert_ne!(a.key(), b.key());
    assert_eq!(a.acquire().unwrap(), 1);
    assert_eq!(b.count().unwrap(), 0);
    assert_eq!(a.acquire().unwrap(), 2);
    assert_eq!(b.acquire().unwrap(), 1);
    assert_eq!(a.count().unwrap(), 2);
    assert!(a.try_lock().unwrap());
    assert!(b.try_lock().unwrap(), "locks are per name");
    a.unlock().unwrap();
    b.unlock().unwrap();
    a.release().unwrap();
    a.release().unwrap();
    b.release().unwrap();
    drop((a, b));
    remove_counter(&ab);
    remove_counter(&ba);
    // The literal short names of the brief, too.
    let a = SysvRefCounter::new("ab").unwrap();
    let b = SysvRefCounter::new("ba").unwrap();
    assert_ne!(a.key(), b.key());
}

#[test]
fn three_hundred_names_at_once() {
    let mut cl = Cleanup::default();
    let names: Vec<String> = (0..300).map(|i| cl.name(&format!("many{i}"))).collect();
    let counters: Vec<SysvRefCounter> = names
        .iter()
        .map(|n| SysvRefCounter::new(n).unwrap())
        .collect();
    for c in &counters {
        assert_eq!(c.acquire().unwrap(), 1, "{}", c.name());
    }
    for c in &counters {
        assert_eq!(c.count().unwrap(), 1, "{}", c.name());
    }
    // Changing one changes no other.
    assert_eq!(counters[0].acquire().unwrap(), 2);
    assert!(counters[1..].iter().all(|c| c.count().unwrap() == 1));
    counters[0].release().unwrap();
    for c in &counters {
        assert_eq!(c.release().unwrap(), 0);
        assert!(c.try_remove().unwrap(), "{}", c.name());
    }
    assert!(names.iter().all(|n| !set_exists(n)));
}

#[test]
fn bad_names_are_rejected() {
    for bad in ["", &"x".repeat(101), "a/b", "a b", ".x", "-x"] {
        match SysvRefCounter::new(bad) {
            Err(Error::InvalidName { name, reason }) => {
                assert_eq!(name, bad);
                assert!(!reason.is_empty());
            }
            other => panic!("{bad:?}: expected InvalidName, got {other:?}"),
        }
        assert!(matches!(
            procref::SharedService::builder(bad).build(),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(SysvRefCounter::new(&"x".repeat(100)).is_ok());
}

/// Hand-made sets under a procref key, for the foreign-set checks.
mod foreign {
    /// Creates a set of `nsems` under `key` with `mode`, sets every value with one semop
    /// (so it looks initialised), and optionally hands it to `owner`. Returns its id.
    pub fn create(key: i32, nsems: i32, mode: i32, values: &[i16], owner: Option<u32>) -> i32 {
        // SAFETY: semget takes plain integers.
        let id = unsafe { libc::semget(key, nsems, libc::IPC_CREAT | libc::IPC_EXCL | mode) };
        assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
        let mut ops: Vec<libc::sembuf> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(i, &v)| libc::sembuf {
                sem_num: i as u16,
                sem_op: v,
                sem_flg: 0,
            })
            .collect();
        // SAFETY: `ops` is a live array of `ops.len()` sembufs for the call.
        let rc = unsafe { libc::semop(id, ops.as_mut_ptr(), ops.len()) };
        assert_eq!(rc, 0, "semop: {}", std::io::Error::last_os_error());
        if let Some(uid) = owner {
            // SAFETY: semid_ds is plain data; IPC_STAT fills it through a valid pointer and
            // IPC_SET reads it back; both pointers are valid for the calls.
            unsafe {
                let mut ds: libc::semid_ds = std::mem::zeroed();
                assert_eq!(libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut _), 0);
                ds.sem_perm.uid = uid;
                assert_eq!(
                    libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut _),
                    0,
                    "IPC_SET: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        id
    }

    /// All values plus the last-semop time: what "untouched" means.
    pub fn snapshot(id: i32) -> (Vec<u16>, i64, u32, u16) {
        // SAFETY: as above; GETALL writes sem_nsems u16 values into `vals`, which is sized
        // from IPC_STAT's sem_nsems.
        unsafe {
            let mut ds: libc::semid_ds = std::mem::zeroed();
            assert_eq!(libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut _), 0);
            let mut vals = vec![0u16; ds.sem_nsems as usize];
            assert_eq!(libc::semctl(id, 0, libc::GETALL, vals.as_mut_ptr()), 0);
            (
                vals,
                ds.sem_otime as i64,
                ds.sem_perm.uid,
                ds.sem_perm.mode as u16,
            )
        }
    }

    pub fn remove(id: i32) {
        // SAFETY: IPC_RMID takes plain integers.
        unsafe { libc::semctl(id, 0, libc::IPC_RMID) };
    }
}

#[test]
fn foreign_sets_are_refused_and_left_untouched() {
    let euid = rustix::process::geteuid().as_raw();
    // (values: COUNT, LOCK, ALIVE, FP0..FP3, WATCHERS, KEEPERS, MAGIC) — a plausible set
    // with a bogus fingerprint and magic.
    let plausible: [i16; 10] = [0, 1, 1, 11, 22, 33, 44, 0, 0, 55];
    struct Case {
        what: &'static str,
        nsems: i32,
        mode: i32,
        owner: Option<u32>,
        expect: &'static str,
    }
    let cases = [
        Case {
            what: "mode 0666",
            nsems: 10,
            mode: 0o666,
            owner: None,
            expect: "mode",
        },
        Case {
            what: "owned by 65534",
            nsems: 10,
            mode: 0o600,
            owner: Some(65534),
            expect: "owned by uid 65534",
        },
        Case {
            what: "wrong fingerprint",
            nsems: 10,
            mode: 0o600,
            owner: None,
            expect: "fingerprint",
        },
        Case {
            what: "3 semaphores",
            nsems: 3,
            mode: 0o600,
            owner: None,
            expect: "fewer than",
        },
        Case {
            what: "7 semaphores (an older procref's set)",
            nsems: 7,
            mode: 0o600,
            owner: None,
            expect: "fewer than",
        },
        Case {
            what: "12 semaphores",
            nsems: 12,
            mode: 0o600,
            owner: None,
            expect: "12 semaphores",
        },
    ];
    if euid != 0 {
        eprintln!("not root: the 'owned by 65534' case cannot be built and is skipped");
    }
    for case in cases.iter().filter(|c| euid == 0 || c.owner.is_none()) {
        let mut cl = Cleanup::default();
        let name = cl.name("foreign");
        let c = SysvRefCounter::new(&name).unwrap();
        let values = &plausible[..(case.nsems as usize).min(plausible.len())];
        let id = foreign::create(c.key(), case.nsems, case.mode, values, case.owner);
        struct Rm(i32);
        impl Drop for Rm {
            fn drop(&mut self) {
                foreign::remove(self.0);
            }
        }
        let _rm = Rm(id);
        let before = foreign::snapshot(id);
        for attempt in ["acquire", "try_lock", "count"] {
            let result = match attempt {
                "acquire" => c.acquire().map(|_| ()),
                "try_lock" => c.try_lock().map(|_| ()),
                _ => c.count().map(|_| ()),
            };
            match result {
                Err(e @ Error::ForeignSet { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(case.expect), "{}: {msg}", case.what);
                    assert!(msg.contains("ipcrm"), "{}: {msg}", case.what);
                }
                other => panic!(
                    "{} / {attempt}: expected ForeignSet, got {other:?}",
                    case.what
                ),
            }
        }
        assert_eq!(c.held(), 0);
        assert!(!c.is_locked());
        assert_eq!(
            foreign::snapshot(id),
            before,
            "{}: the foreign set was modified",
            case.what
        );
        // try_remove must not remove someone else's set either.
        assert!(c.try_remove().is_err(), "{}", case.what);
        assert_eq!(foreign::snapshot(id), before, "{}", case.what);
    }
}

#[test]
fn the_last_object_present_removes_the_set() {
    let mut cl = Cleanup::default();
    let name = cl.name("last");
    // One object's pairs reuse one set, which goes when the object is dropped.
    let c = SysvRefCounter::new(&name).unwrap();
    assert!(!c.is_present(), "a new object touches nothing");
    assert_eq!(c.acquire().unwrap(), 1);
    assert!(c.is_present());
    let first = set_id(&name).expect("acquire creates the set");
    assert_eq!(c.release().unwrap(), 0);
    assert_eq!(c.acquire().unwrap(), 1);
    assert_eq!(c.release().unwrap(), 0);
    assert_eq!(set_id(&name), Some(first), "the object's set was not kept");
    drop(c);
    assert!(
        !set_exists(&name),
        "set left after dropping its only object"
    );

    // Two holders in two processes: the other's death leaves the set to this object.
    let c = SysvRefCounter::new(&name).unwrap();
    let other = holder("hold", &name);
    assert_eq!(c.acquire().unwrap(), 2);
    assert_eq!(c.release().unwrap(), 1);
    drop(other); // SIGKILL: the kernel gives its reference and presence back
    assert_eq!(c.count().unwrap(), 0);
    assert!(set_exists(&name), "removed while this object exists");
    drop(c);
    assert!(
        !set_exists(&name),
        "set left after the last object was dropped"
    );

    // Every user SIGKILLed: the set stays (the kernel cannot remove it), and the next
    // user of the name removes it when it is done.
    let mut killed = holder("hold", &name);
    killed.kill();
    assert!(set_exists(&name), "nobody left, so nobody removed it");
    let next = SysvRefCounter::new(&name).unwrap();
    assert_eq!(next.acquire().unwrap(), 1);
    assert_eq!(next.release().unwrap(), 0);
    drop(next);
    assert!(
        !set_exists(&name),
        "the next user left the abandoned set behind"
    );

    // Two objects in one process: the set goes with the last of them.
    let a = SysvRefCounter::new(&name).unwrap();
    let b = SysvRefCounter::new(&name).unwrap();
    assert_eq!(a.acquire().unwrap(), 1);
    assert_eq!(b.acquire().unwrap(), 2);
    drop(a);
    assert_eq!(
        b.count().unwrap(),
        1,
        "dropping an object releases its references"
    );
    assert_eq!(b.release().unwrap(), 0);
    assert!(set_exists(&name), "removed while an object exists");
    drop(b);
    assert!(!set_exists(&name));

    // The lock makes an object present, too.
    let l = SysvRefCounter::new(&name).unwrap();
    assert!(l.try_lock().unwrap());
    l.unlock().unwrap();
    assert!(set_exists(&name), "removed while its object exists");
    drop(l);
    assert!(
        !set_exists(&name),
        "set left after dropping the object that locked"
    );

    // Dropping a counter gives everything back and removes the set.
    let dropped = SysvRefCounter::new(&name).unwrap();
    dropped.acquire().unwrap();
    dropped.acquire().unwrap();
    assert!(dropped.try_lock().unwrap());
    drop(dropped);
    assert!(!set_exists(&name), "set left after dropping its only user");

    // try_remove gives up the presence with the set; the object can be used again.
    let t = SysvRefCounter::new(&name).unwrap();
    t.acquire().unwrap();
    assert!(
        !t.try_remove().unwrap(),
        "removed while this object holds a reference"
    );
    t.release().unwrap();
    assert!(t.try_remove().unwrap());
    assert!(!set_exists(&name) && !t.is_present());
    assert_eq!(t.acquire().unwrap(), 1);
    drop(t);
    assert!(!set_exists(&name));

    // An object that only looks (count) does not keep the set.
    let looker = SysvRefCounter::new(&name).unwrap();
    let holder_obj = SysvRefCounter::new(&name).unwrap();
    holder_obj.acquire().unwrap();
    assert_eq!(looker.count().unwrap(), 1);
    assert!(!looker.is_present());
    drop(holder_obj);
    assert!(!set_exists(&name), "kept by an object that only counted");
    assert_eq!(looker.count().unwrap(), 0);
}

#[test]
fn watchers_and_lock_holders_keep_the_set() {
    let mut cl = Cleanup::default();
    let name = cl.name("watch");
    let c = SysvRefCounter::new(&name).unwrap();
    let w = SysvRefCounter::new(&name).unwrap();
    w.watch().unwrap();
    assert!(w.is_present());
    assert!(set_exists(&name), "watch creates the set");
    assert_eq!(c.acquire().unwrap(), 1);
    assert_eq!(c.release().unwrap(), 0);
    c.unwatch().unwrap();
    assert!(!c.is_present());
    assert!(set_exists(&name), "removed under a watcher");

    // A waiter that is present sleeps on the same set across releases.
    let waiter = std::thread::spawn(move || {
        let got = w.wait_nonzero(Some(Duration::from_secs(20))).unwrap();
        (got, w)
    });
    std::thread::sleep(Duration::from_millis(100));
    c.acquire().unwrap();
    let (got, w) = waiter.join().unwrap();
    assert!(got, "the watcher was not woken by the acquire");
    c.unwatch().unwrap();
    assert!(c.is_present(), "unwatch gave up the presence of a holder");
    c.release().unwrap();
    assert!(!c.try_remove().unwrap(), "try_remove removed a watched set");
    assert!(c.is_present(), "a failed try_remove gave up the presence");
    w.unwatch().unwrap();
    c.unwatch().unwrap();
    assert!(!set_exists(&name), "unwatch of the last user left the set");

    // A watcher in another process, then SIGKILLed: its presence goes with it.
    let mut watcher = holder("watch", &name);
    c.acquire().unwrap();
    assert_eq!(c.release().unwrap(), 0);
    c.unwatch().unwrap();
    assert!(set_exists(&name), "removed under another process's watcher");
    watcher.kill();
    assert!(set_exists(&name), "nobody removed it yet");
    c.acquire().unwrap();
    assert_eq!(c.release().unwrap(), 0);
    c.unwatch().unwrap();
    assert!(
        !set_exists(&name),
        "the watcher died; this object leaving should remove the set"
    );

    // A lock holder in another process keeps it, too.
    let mut locker = holder("lock", &name);
    c.acquire().unwrap();
    assert_eq!(c.release().unwrap(), 0);
    drop(c);
    assert!(set_exists(&name), "removed under a lock holder");
    locker.kill();
    let c = SysvRefCounter::new(&name).unwrap();
    assert!(c.try_remove().unwrap());
    assert!(!set_exists(&name));
}

#[test]
fn a_set_removed_from_outside_is_reopened_with_the_objects_presence() {
    let mut cl = Cleanup::default();
    let name = cl.name("reopen");
    let c = SysvRefCounter::new(&name).unwrap();
    assert_eq!(c.acquire().unwrap(), 1);
    assert_eq!(c.acquire().unwrap(), 2);
    let old = set_id(&name).unwrap();
    common::force_remove_set(&name); // ipcrm
    assert_eq!(
        c.release().unwrap(),
        1,
        "references not restored on the fresh set"
    );
    assert_ne!(set_id(&name), Some(old));
    assert!(c.is_present());
    assert_eq!(set_value(&name, 7), Some(1), "presence not restored");
    assert_eq!(c.release().unwrap(), 0);
    assert!(
        set_exists(&name),
        "the fresh set went while its object exists"
    );

    // An object that only watches, waiting for zero: the fresh set is its again.
    let w = SysvRefCounter::new(&name).unwrap();
    w.watch().unwrap();
    drop(c);
    assert!(set_exists(&name), "removed under a watcher");
    common::force_remove_set(&name);
    assert!(w.wait_zero(Some(Duration::ZERO)).unwrap());
    assert!(w.is_present());
    assert_eq!(
        set_value(&name, 7),
        Some(1),
        "the watcher is not present on the fresh set"
    );
    let x = SysvRefCounter::new(&name).unwrap();
    x.acquire().unwrap();
    x.release().unwrap();
    drop(x);
    assert!(set_exists(&name), "removed under the re-opened watcher");
    drop(w);
    assert!(!set_exists(&name));
}

#[test]
fn racing_acquirers_never_lose_a_reference_to_a_removal() {
    let mut cl = Cleanup::default();
    let name = cl.name("churn");
    let rounds = 400;
    let mut children: Vec<Proc> = (0..2)
        .map(|_| {
            Proc::spawn(
                "churn",
                &[("PT_NAME", name.clone()), ("PT_ROUNDS", rounds.to_string())],
            )
        })
        .collect();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let name = name.clone();
            std::thread::spawn(move || common::churn(&name, rounds))
        })
        .collect();
    for t in threads {
        t.join().expect("a churning thread failed");
    }
    for c in &mut children {
        c.expect("done", Duration::from_secs(60));
        assert!(c.wait_success(T), "a churning process failed");
    }
    assert!(
        !set_exists(&name),
        "set left after every user released: {:?}",
        set_value(&name, 0)
    );
}

/// Objects that leave at the same moment each see the others present when they try the
/// removal; the last one to give back must still find itself alone and remove the set.
#[test]
fn objects_leaving_together_remove_the_set() {
    let mut cl = Cleanup::default();
    let name = cl.name("together");
    for round in 0..1000 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let name = name.clone();
                let barrier = std::sync::Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let c = SysvRefCounter::new(&name).unwrap();
                    match i {
                        0 => assert!(c.acquire().unwrap() >= 1),
                        1 => assert!(c.try_lock().unwrap()),
                        _ => c.watch().unwrap(),
                    }
                    barrier.wait();
                    drop(c);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a leaving thread failed");
        }
        assert!(
            !set_exists(&name),
            "round {round}: set left after every object was dropped"
        );
    }
}
