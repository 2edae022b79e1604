//! `sweep_abandoned` against the real kernel. Its own test binary: a sweep removes every
//! abandoned procref set of this user, and other tests of one binary run in parallel.
//! Real child processes hold, watch and lock sets (and are SIGKILLed), an object of this
//! process keeps a set by its presence alone, and a hand-made set of procref's shape but
//! with a wrong magic value stands in for another program's set.

mod common;

use std::time::Duration;

use common::{Cleanup, Proc, set_exists};
use procref::{RefCounter, SysvRefCounter};

const T: Duration = Duration::from_secs(10);

#[test]
#[ignore = "entry point for child processes spawned by other tests"]
fn child_entry() {
    common::child_main();
}

fn child(role: &str, name: &str) -> Proc {
    let p = Proc::spawn(role, &[("PT_NAME", name.to_owned())]);
    p.expect("ready", T);
    p
}

/// A set under `name`'s key with procref's shape (10 semaphores, 0600, initialised) but a
/// magic value no procref set has. Removed on drop.
struct Lookalike(i32);

impl Lookalike {
    fn new(name: &str) -> Lookalike {
        let key = SysvRefCounter::new(name).unwrap().key();
        // SAFETY: semget takes plain integers; `ops` is a live array for semop.
        unsafe {
            let id = libc::semget(key, 10, libc::IPC_CREAT | libc::IPC_EXCL | 0o600);
            assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
            let mut ops: Vec<libc::sembuf> = [(1, 1), (2, 1), (3, 7), (4, 7), (5, 7), (6, 7)]
                .into_iter()
                .map(|(n, v)| libc::sembuf {
                    sem_num: n,
                    sem_op: v,
                    sem_flg: 0,
                })
                .collect();
            assert_eq!(libc::semop(id, ops.as_mut_ptr(), ops.len()), 0);
            Lookalike(id)
        }
    }
}

impl Drop for Lookalike {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID takes plain integers.
        unsafe { libc::semctl(self.0, 0, libc::IPC_RMID) };
    }
}

#[test]
fn sweep_removes_abandoned_sets_and_nothing_in_use() {
    let mut cl = Cleanup::default();
    let abandoned = cl.name("sw-abandoned");
    let held = cl.name("sw-held");
    let watched = cl.name("sw-watched");
    let locked = cl.name("sw-locked");
    let lookalike = cl.name("sw-lookalike");
    let idle = cl.name("sw-idle");

    // Abandoned: its only holder was SIGKILLed, so the count is 0 and the set stays.
    let mut a = child("hold", &abandoned);
    // This process has the set open too (cached id) and must cope with its removal.
    let bystander = SysvRefCounter::new(&abandoned).unwrap();
    assert_eq!(bystander.count().unwrap(), 1);
    a.kill();
    assert_eq!(bystander.count().unwrap(), 0);
    assert!(set_exists(&abandoned));

    let mut h = child("hold", &held);
    let mut w = child("watch", &watched);
    let mut l = child("lock", &locked);
    let _foreign = Lookalike::new(&lookalike);
    // A live object of this process that holds nothing but its presence.
    let idle_object = SysvRefCounter::new(&idle).unwrap();
    assert_eq!(idle_object.acquire().unwrap(), 1);
    assert_eq!(idle_object.release().unwrap(), 0);

    let removed = procref::sweep_abandoned().unwrap();
    assert!(removed >= 1, "swept {removed}");
    assert!(
        !set_exists(&abandoned),
        "the abandoned set survived the sweep"
    );
    for (what, name) in [
        ("held", &held),
        ("watched", &watched),
        ("locked", &locked),
        ("lookalike", &lookalike),
        ("idle object's", &idle),
    ] {
        assert!(set_exists(name), "the {what} set was swept");
    }
    // The bystander sees no set, and acquiring makes a fresh one (removed with it).
    assert_eq!(bystander.count().unwrap(), 0);
    assert_eq!(bystander.acquire().unwrap(), 1);
    assert_eq!(bystander.release().unwrap(), 0);
    drop(bystander);
    assert!(!set_exists(&abandoned));
    drop(idle_object);
    assert!(!set_exists(&idle), "the idle object left its set behind");

    // Once their users are SIGKILLed, those sets are abandoned too.
    for p in [&mut h, &mut w, &mut l] {
        p.kill();
    }
    assert!(procref::sweep_abandoned().unwrap() >= 3);
    for name in [&held, &watched, &locked] {
        assert!(!set_exists(name), "{name} survived the second sweep");
    }
    assert!(set_exists(&lookalike), "another program's set was swept");
}
