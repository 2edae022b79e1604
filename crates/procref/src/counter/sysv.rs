//! [`RefCounter`] on a System V semaphore set with `SEM_UNDO`.
//!
//! A set has seven semaphores:
//!
//! | index | meaning |
//! |---|---|
//! | `COUNT` | references held (each `+1` is undone by the kernel when its holder dies) |
//! | `LOCK` | the startup lock: 1 = free, 0 = held (the `-1` is undone on death) |
//! | `ALIVE` | 1 once initialised; 0 while being removed (a tombstone) |
//! | `FP0..FP3` | the name's fingerprint, proving whose set this is |
//!
//! Creation is `IPC_CREAT | IPC_EXCL` followed by one atomic `semop` that sets `LOCK`,
//! `ALIVE` and the fingerprint together, so no one can observe a half-initialised set.
//! Acquiring is one atomic `semop` that requires `ALIVE == 1` and increments `COUNT`; removal
//! is one atomic `semop` (under the lock) that requires `COUNT == 0` and clears `ALIVE`,
//! followed by `IPC_RMID`. So a set with holders is never removed, and an acquirer never
//! lands on a set that is going away: it waits for the removal and re-opens.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::RefCounter;
use super::key::{self, SetIdentity};
use super::sys::{self, Errno, NOWAIT, Op, UNDO};
use crate::{Error, Result};

const COUNT: u16 = 0;
const LOCK: u16 = 1;
const ALIVE: u16 = 2;
const FP0: u16 = 3;
const NSEMS: i32 = 7;

/// How long an opener waits for a creator to initialise a new set before deciding the
/// creator died mid-creation and removing the set.
const INIT_GRACE: Duration = Duration::from_secs(2);
/// Bound on waiting for a tombstoned set to disappear.
const REMOVAL_GRACE: Duration = Duration::from_secs(10);

/// "This set is alive": wait until `ALIVE >= 1`, leaving it unchanged.
const REQUIRE_ALIVE: [Op; 2] = [Op::new(ALIVE, -1, 0), Op::new(ALIVE, 1, 0)];
/// Take a reference on a live set (blocks while the set is being removed).
const ACQUIRE: [Op; 3] = [REQUIRE_ALIVE[0], REQUIRE_ALIVE[1], Op::new(COUNT, 1, UNDO)];
/// The same, failing with `EAGAIN` instead of blocking (the common, uncontended case).
const ACQUIRE_NOWAIT: [Op; 3] = [
    Op::new(ALIVE, -1, NOWAIT),
    Op::new(ALIVE, 1, NOWAIT),
    Op::new(COUNT, 1, UNDO | NOWAIT),
];
/// Take the startup lock on a live set.
const LOCK_OPS: [Op; 3] = [REQUIRE_ALIVE[0], REQUIRE_ALIVE[1], Op::new(LOCK, -1, UNDO)];

/// Kernel-backed reference counter for one service name (System V semaphores).
///
/// The set is opened lazily: constructing a counter touches nothing in the kernel, and
/// [`count`](RefCounter::count) on a name that was never acquired reports 0 without
/// creating a set. Each `acquire` adds one reference held by this object; dropping the
/// object releases what it still holds (and the kernel does the same if the process dies).
#[derive(Debug)]
pub struct SysvRefCounter {
    name: String,
    identity: SetIdentity,
    euid: u32,
    /// Current set id, or -1 when not opened yet.
    id: AtomicI32,
    /// Serialises (re)opening within this process.
    open_lock: Mutex<()>,
    /// References this object holds.
    held: AtomicU32,
    /// Whether this object holds the startup lock.
    locked: AtomicBool,
}

impl SysvRefCounter {
    /// A counter for `name` (see [`validate_name`](crate::counter::validate_name) for the
    /// rules). Nothing is created in the kernel until the first operation that needs it.
    pub fn new(name: &str) -> Result<Self> {
        key::validate_name(name)?;
        let euid = sys::euid();
        Ok(Self {
            name: name.to_owned(),
            identity: key::identity(euid, name),
            euid,
            id: AtomicI32::new(-1),
            open_lock: Mutex::new(()),
            held: AtomicU32::new(0),
            locked: AtomicBool::new(false),
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The System V key of this name's set (for `ipcs -s`).
    pub fn key(&self) -> i32 {
        self.identity.key
    }

    /// References held by this object.
    pub fn held(&self) -> u32 {
        self.held.load(Ordering::SeqCst)
    }

    /// Whether this object holds the startup lock.
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }

    /// Blocks until the count is at least 1 (someone holds a reference), without taking
    /// a reference. Returns false if `timeout` passes first. Waits in the kernel.
    pub fn wait_nonzero(&self, timeout: Option<Duration>) -> Result<bool> {
        let ops = [Op::new(COUNT, -1, 0), Op::new(COUNT, 1, 0)];
        self.timed_op("semop(wait_nonzero)", &ops, timeout, true)
    }

    /// Removes the semaphore set if no one holds a reference, taking the startup lock
    /// for the removal (or using it if this object already holds it). Returns whether the
    /// set was removed (or did not exist). After removal, this and every other counter
    /// for the name re-open a fresh set on their next operation.
    pub fn try_remove(&self) -> Result<bool> {
        let had_lock = self.is_locked();
        if !had_lock && !self.try_lock()? {
            return Ok(false);
        }
        let Some(id) = self.current_id(false)? else {
            return Ok(true);
        };
        let tombstone = [
            Op::new(COUNT, 0, NOWAIT),
            // Undone by the kernel if we die before IPC_RMID, so the set comes back to life.
            Op::new(ALIVE, -1, NOWAIT | UNDO),
        ];
        let removed = match sys::op(id, &tombstone, None) {
            Ok(()) => match sys::remove(id) {
                Ok(()) | Err(libc::EIDRM | libc::EINVAL) => true,
                Err(e) => return Err(self.sem_error("semctl(IPC_RMID)", e)),
            },
            Err(libc::EAGAIN) => false,
            Err(libc::EIDRM | libc::EINVAL) => true,
            Err(e) => return Err(self.sem_error("semop(tombstone)", e)),
        };
        if removed {
            self.locked.store(false, Ordering::SeqCst);
            let _ = self
                .id
                .compare_exchange(id, -1, Ordering::SeqCst, Ordering::SeqCst);
        } else if !had_lock {
            self.unlock()?;
        }
        Ok(removed)
    }

    /// Releases one reference unless it is the last one. Returns false (and changes
    /// nothing) when the count is 1, so the caller can take the lock before releasing.
    pub(crate) fn release_unless_last(&self) -> Result<bool> {
        if self.held() == 0 {
            return Err(Error::NotHeld {
                name: self.name.clone(),
                what: "release",
            });
        }
        // Undo bookkeeping must net to one released reference: -1 with UNDO, and a
        // -1/+1 pair without, which requires the count to have been at least 2.
        let ops = [
            Op::new(COUNT, -1, UNDO | NOWAIT),
            Op::new(COUNT, -1, NOWAIT),
            Op::new(COUNT, 1, NOWAIT),
        ];
        let id = self.open()?;
        match sys::op(id, &ops, None) {
            Ok(()) => {
                self.held.fetch_sub(1, Ordering::SeqCst);
                Ok(true)
            }
            Err(libc::EAGAIN) => Ok(false),
            Err(libc::EIDRM | libc::EINVAL) => {
                self.reopen_after_removal(id)?;
                self.release_unless_last()
            }
            Err(e) => Err(self.sem_error("semop(release)", e)),
        }
    }

    /// The set id, opening (and with `create`, creating) it if needed. `None` when the
    /// set does not exist and `create` is false.
    fn current_id(&self, create: bool) -> Result<Option<i32>> {
        let id = self.id.load(Ordering::SeqCst);
        if id >= 0 {
            return Ok(Some(id));
        }
        let _guard = self.open_lock.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.id.load(Ordering::SeqCst);
        if id >= 0 {
            return Ok(Some(id));
        }
        let opened = self.open_or_create(create)?;
        if let Some(id) = opened {
            self.id.store(id, Ordering::SeqCst);
        }
        Ok(opened)
    }

    fn open(&self) -> Result<i32> {
        Ok(self
            .current_id(true)?
            .expect("create=true always yields a set"))
    }

    fn open_or_create(&self, create: bool) -> Result<Option<i32>> {
        let key = self.identity.key;
        let deadline = Instant::now() + REMOVAL_GRACE;
        loop {
            if Instant::now() > deadline {
                return Err(self.sem_error("semget", libc::ETIMEDOUT));
            }
            match sys::get(key, NSEMS, 0) {
                Ok(id) => match self.verify(id)? {
                    Verified::Ready => return Ok(Some(id)),
                    Verified::Gone => continue,
                },
                Err(libc::ENOENT) if !create => return Ok(None),
                Err(libc::ENOENT) => {}
                Err(libc::EINVAL) => {
                    return Err(self.foreign(format!(
                        "it has fewer than the {NSEMS} semaphores a procref set has"
                    )));
                }
                Err(libc::EACCES) => {
                    return Err(self.foreign("this user has no access to it".into()));
                }
                Err(e) => return Err(self.sem_error("semget", e)),
            }
            match sys::get(key, NSEMS, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) {
                Ok(id) => {
                    let mut init = vec![Op::new(LOCK, 1, 0), Op::new(ALIVE, 1, 0)];
                    for (i, &v) in self.identity.fingerprint.iter().enumerate() {
                        init.push(Op::new(FP0 + i as u16, v as i16, 0));
                    }
                    match sys::op(id, &init, None) {
                        Ok(()) => return Ok(Some(id)),
                        // Someone judged our creation abandoned and removed it: start over.
                        Err(libc::EIDRM | libc::EINVAL) => continue,
                        Err(e) => return Err(self.sem_error("semop(initialise)", e)),
                    }
                }
                Err(libc::EEXIST) => continue,
                Err(e) => return Err(self.sem_error("semget(IPC_CREAT)", e)),
            }
        }
    }

    /// Checks owner, mode, size and fingerprint of an existing set, waiting for its
    /// creator to finish initialising it.
    fn verify(&self, id: i32) -> Result<Verified> {
        let st = match sys::stat(id) {
            Ok(st) => st,
            Err(libc::EIDRM | libc::EINVAL) => return Ok(Verified::Gone),
            Err(libc::EACCES) => return Err(self.foreign("this user has no access to it".into())),
            Err(e) => return Err(self.sem_error("semctl(IPC_STAT)", e)),
        };
        if st.uid != self.euid || st.cuid != self.euid {
            return Err(self.foreign(format!(
                "it is owned by uid {} (created by uid {}), not by this user (uid {})",
                st.uid, st.cuid, self.euid
            )));
        }
        if st.mode & 0o777 != 0o600 {
            return Err(self.foreign(format!(
                "its mode is {:o}, not 600 (other users could change the count)",
                st.mode & 0o777
            )));
        }
        if st.nsems != NSEMS as u64 {
            return Err(self.foreign(format!("it has {} semaphores, not {NSEMS}", st.nsems)));
        }
        if st.otime == 0 {
            // Not initialised yet: wait (in the kernel) for the creator's first semop.
            match sys::op(id, &REQUIRE_ALIVE, Some(INIT_GRACE)) {
                Ok(()) => {}
                Err(libc::EIDRM | libc::EINVAL) => return Ok(Verified::Gone),
                Err(libc::EAGAIN) => {
                    if matches!(sys::stat(id), Ok(st) if st.otime == 0) {
                        // The creator died between semget and its initialising semop.
                        let _ = sys::remove(id);
                    }
                    return Ok(Verified::Gone);
                }
                Err(e) => return Err(self.sem_error("semop(wait for initialisation)", e)),
            }
        }
        for i in 0..4u16 {
            let found = match sys::value(id, FP0 + i) {
                Ok(v) => v,
                Err(libc::EIDRM | libc::EINVAL) => return Ok(Verified::Gone),
                Err(e) => return Err(self.sem_error("semctl(GETVAL)", e)),
            };
            if found != i32::from(self.identity.fingerprint[i as usize]) {
                return Err(self.foreign(
                    "its fingerprint belongs to a different name (a key collision, or a set \
                     made by another program)"
                        .into(),
                ));
            }
        }
        Ok(Verified::Ready)
    }

    /// After `EIDRM`: forget the old id, open a fresh set and restore this object's
    /// references on it (the kernel dropped them with the old set).
    fn reopen_after_removal(&self, old: i32) -> Result<()> {
        let _ = self
            .id
            .compare_exchange(old, -1, Ordering::SeqCst, Ordering::SeqCst);
        if self.locked.swap(false, Ordering::SeqCst) {
            tracing::warn!(name = %self.name, "semaphore set removed while this process held its lock");
        }
        let held = self.held.swap(0, Ordering::SeqCst);
        for _ in 0..held {
            self.acquire()?;
        }
        Ok(())
    }

    /// Runs a (possibly blocking) op; `Ok(false)` on timeout. With `zero_if_missing`, a
    /// missing or removed set counts as success without being created.
    fn timed_op(
        &self,
        call: &'static str,
        ops: &[Op],
        timeout: Option<Duration>,
        create: bool,
    ) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let Some(id) = self.current_id(create)? else {
                return Ok(true);
            };
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match sys::op(id, ops, left) {
                Ok(()) => return Ok(true),
                Err(libc::EAGAIN) => return Ok(false),
                Err(libc::EIDRM | libc::EINVAL) => {
                    self.reopen_after_removal(id)?;
                }
                Err(e) => return Err(self.sem_error(call, e)),
            }
        }
    }

    fn sem_error(&self, call: &'static str, errno: Errno) -> Error {
        Error::Semaphore {
            name: self.name.clone(),
            call,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    fn foreign(&self, reason: String) -> Error {
        Error::ForeignSet {
            name: self.name.clone(),
            key: self.identity.key,
            reason,
        }
    }
}

enum Verified {
    Ready,
    Gone,
}

impl RefCounter for SysvRefCounter {
    fn acquire(&self) -> Result<u32> {
        let id = self.open()?;
        let taken = match sys::op(id, &ACQUIRE_NOWAIT, None) {
            Ok(()) => true,
            Err(libc::EAGAIN | libc::EIDRM | libc::EINVAL) => false,
            Err(e) => return Err(self.sem_error("semop(acquire)", e)),
        };
        // Slow path: the set is being removed (or already was): wait for that, re-open.
        if !taken && !self.timed_op("semop(acquire)", &ACQUIRE, Some(REMOVAL_GRACE), true)? {
            return Err(self.sem_error("semop(acquire)", libc::ETIMEDOUT));
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        self.count()
    }

    fn release(&self) -> Result<u32> {
        if self.held() == 0 {
            return Err(Error::NotHeld {
                name: self.name.clone(),
                what: "release",
            });
        }
        let id = self.open()?;
        let ops = [Op::new(COUNT, -1, UNDO | NOWAIT)];
        match sys::op(id, &ops, None) {
            Ok(()) => {}
            // The set (and our reference with it) is gone already.
            Err(libc::EIDRM | libc::EINVAL) => {
                let _ = self
                    .id
                    .compare_exchange(id, -1, Ordering::SeqCst, Ordering::SeqCst);
            }
            Err(e) => return Err(self.sem_error("semop(release)", e)),
        }
        self.held.fetch_sub(1, Ordering::SeqCst);
        self.count()
    }

    fn count(&self) -> Result<u32> {
        loop {
            let Some(id) = self.current_id(false)? else {
                return Ok(0);
            };
            match sys::value(id, COUNT) {
                Ok(v) => return Ok(v as u32),
                Err(libc::EIDRM | libc::EINVAL) => {
                    let _ = self
                        .id
                        .compare_exchange(id, -1, Ordering::SeqCst, Ordering::SeqCst);
                }
                Err(e) => return Err(self.sem_error("semctl(GETVAL)", e)),
            }
        }
    }

    fn try_lock(&self) -> Result<bool> {
        if self.is_locked() {
            return Ok(true);
        }
        let ops = [
            Op::new(ALIVE, -1, NOWAIT),
            Op::new(ALIVE, 1, NOWAIT),
            Op::new(LOCK, -1, UNDO | NOWAIT),
        ];
        let got = self.timed_op("semop(try_lock)", &ops, None, true)?;
        self.locked.store(got, Ordering::SeqCst);
        Ok(got)
    }

    fn unlock(&self) -> Result<()> {
        if !self.locked.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let Some(id) = self.current_id(false)? else {
            return Ok(());
        };
        match sys::op(id, &[Op::new(LOCK, 1, UNDO)], None) {
            Ok(()) | Err(libc::EIDRM | libc::EINVAL) => Ok(()),
            Err(e) => Err(self.sem_error("semop(unlock)", e)),
        }
    }

    fn lock_timeout(&self, timeout: Duration) -> Result<bool> {
        if self.is_locked() {
            return Ok(true);
        }
        let got = self.timed_op("semop(lock)", &LOCK_OPS, Some(timeout), true)?;
        self.locked.store(got, Ordering::SeqCst);
        Ok(got)
    }

    fn wait_zero(&self, timeout: Option<Duration>) -> Result<bool> {
        let ops = [Op::new(COUNT, 0, 0)];
        self.timed_op("semop(wait_zero)", &ops, timeout, false)
    }
}

impl Drop for SysvRefCounter {
    fn drop(&mut self) {
        let _ = self.unlock();
        while self.held() > 0 {
            if self.release().is_err() {
                break;
            }
        }
    }
}
