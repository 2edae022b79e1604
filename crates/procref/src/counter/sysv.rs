//! [`RefCounter`] on a System V semaphore set with `SEM_UNDO`.
//!
//! A set has ten semaphores:
//!
//! | index | meaning |
//! |---|---|
//! | `COUNT` | references held (each `+1` is undone by the kernel when its holder dies) |
//! | `LOCK` | the startup lock: 1 = free, 0 = held (the `-1` is undone on death) |
//! | `ALIVE` | 1 once initialised; 0 while being removed (a tombstone) |
//! | `FP0..FP3` | the name's fingerprint, proving whose set this is |
//! | `WATCHERS` | objects present without a reference ([`SysvRefCounter::watch`]; undone on death) |
//! | `KEEPERS` | keeper processes guarding the service (see `keeper.rs`; undone on death) |
//! | `MAGIC` | the key's magic, marking the set as procref's for [`crate::sweep_abandoned`] |
//!
//! Creation is `IPC_CREAT | IPC_EXCL` followed by one atomic `semop` that sets `LOCK`,
//! `ALIVE`, the fingerprint and the magic together (and, when the creator is acquiring,
//! its reference), so no one can observe a half-initialised set.
//!
//! A set exists only while in use. Whoever stops using it (the last `release`, an `unlock`
//! or `unwatch` of an object that holds nothing else) removes it if no one else uses it,
//! and "no one else uses it" is decided in the same atomic `semop` that tombstones it:
//! `COUNT`, `WATCHERS` and `KEEPERS` are 0, the lock is free (the group takes it), and
//! `ALIVE` goes from 1 to 0; then `IPC_RMID`. Every operation that enters a set (acquire,
//! lock, watch) requires `ALIVE == 1` in the same atomic `semop`, so no one enters a set
//! that is going away: it waits for the removal (`EIDRM`) and opens a fresh set. Every
//! change in the tombstone carries `SEM_UNDO`, so a remover that dies before `IPC_RMID`
//! leaves a live, consistent set behind.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::RefCounter;
use super::key::{self, SetIdentity};
use super::sys::{self, Errno, MAX_OPS, NOWAIT, Op, UNDO};
use crate::{Error, Result};

const COUNT: u16 = 0;
const LOCK: u16 = 1;
const ALIVE: u16 = 2;
const FP0: u16 = 3;
const WATCHERS: u16 = 7;
const KEEPERS: u16 = 8;
const MAGIC: u16 = 9;
const NSEMS: i32 = 10;

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
/// Give back one reference that is not the last one (`EAGAIN` if the count is 1). The undo
/// bookkeeping nets to one released reference: -1 with UNDO, and a -1/+1 pair without,
/// which requires the count to have been at least 2.
const RELEASE_NOT_LAST: [Op; 3] = [
    Op::new(COUNT, -1, UNDO | NOWAIT),
    Op::new(COUNT, -1, NOWAIT),
    Op::new(COUNT, 1, NOWAIT),
];
/// Give back one reference.
const RELEASE: [Op; 1] = [Op::new(COUNT, -1, UNDO | NOWAIT)];
/// Take the startup lock on a live set.
const LOCK_OPS: [Op; 3] = [REQUIRE_ALIVE[0], REQUIRE_ALIVE[1], Op::new(LOCK, -1, UNDO)];

/// A presence an object can hold on a set without a reference. While any is held, the set
/// is not removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// [`SysvRefCounter::watch`].
    Watcher,
    /// A keeper process guarding the service.
    Keeper,
}

impl Slot {
    fn sem(self) -> u16 {
        match self {
            Slot::Watcher => WATCHERS,
            Slot::Keeper => KEEPERS,
        }
    }

    fn call(self) -> &'static str {
        match self {
            Slot::Watcher => "semop(watch)",
            Slot::Keeper => "semop(keeper)",
        }
    }
}

/// What an object gives up when its set is removed.
#[derive(Debug, Clone, Copy, Default)]
struct Giving {
    reference: bool,
    lock: bool,
    watcher: bool,
    keeper: bool,
}

/// An atomic group built at run time, on the stack.
struct Group {
    ops: [Op; MAX_OPS],
    len: usize,
}

impl Group {
    fn new() -> Group {
        Group {
            ops: [Op::new(0, 0, 0); MAX_OPS],
            len: 0,
        }
    }

    fn push(&mut self, op: Op) {
        self.ops[self.len] = op;
        self.len += 1;
    }

    fn ops(&self) -> &[Op] {
        &self.ops[..self.len]
    }
}

/// The tombstone: succeeds only if, once the remover has given up `giving`, no one holds a
/// reference, a watcher or keeper slot, or the lock; then clears `ALIVE`. Each change nets
/// to the remover's undo adjustments, so a remover dying before `IPC_RMID` revives the set.
fn tombstone(giving: Giving) -> Group {
    let mut g = Group::new();
    if giving.reference {
        g.push(Op::new(COUNT, -1, UNDO | NOWAIT));
    }
    g.push(Op::new(COUNT, 0, NOWAIT));
    for (sem, mine) in [(WATCHERS, giving.watcher), (KEEPERS, giving.keeper)] {
        if mine {
            g.push(Op::new(sem, -1, UNDO | NOWAIT));
        }
        g.push(Op::new(sem, 0, NOWAIT));
    }
    if !giving.lock {
        g.push(Op::new(LOCK, -1, UNDO | NOWAIT));
    }
    g.push(Op::new(ALIVE, -1, UNDO | NOWAIT));
    g
}

/// How to get a set id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// Only an existing set.
    Existing,
    /// Create the set if there is none.
    Create,
    /// Create the set if there is none, with this object's new reference in it.
    CreateReferenced,
}

/// Kernel-backed reference counter for one service name (System V semaphores).
///
/// The set is opened lazily: constructing a counter touches nothing in the kernel, and
/// [`count`](RefCounter::count) on a name that was never acquired reports 0 without
/// creating a set. Each `acquire` adds one reference held by this object; dropping the
/// object releases what it still holds (and the kernel does the same if the process dies).
///
/// The set exists only while in use: when this object gives up the last thing anyone held
/// on it (the last reference, the lock, a [`watch`](Self::watch)), it removes the set, and
/// the next user creates a fresh one. A process that waits on the count without holding a
/// reference (a server watching its clients) calls [`watch`](Self::watch) first, so that
/// the set it waits on is not removed under it.
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
    /// Whether this object holds a watcher slot.
    watching: AtomicBool,
    /// Whether this object holds a keeper slot.
    keeping: AtomicBool,
    /// Whether this object's last acquire made the count 1: then its release most likely
    /// removes the set, and tries that first (a hint; both orders are correct).
    alone: AtomicBool,
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
            watching: AtomicBool::new(false),
            keeping: AtomicBool::new(false),
            alone: AtomicBool::new(false),
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
        self.held.load(SeqCst)
    }

    /// Whether this object holds the startup lock.
    pub fn is_locked(&self) -> bool {
        self.locked.load(SeqCst)
    }

    /// Whether this object is present through [`watch`](Self::watch).
    pub fn is_watching(&self) -> bool {
        self.watching.load(SeqCst)
    }

    /// Blocks until the count is at least 1 (someone holds a reference), without taking
    /// a reference. Returns false if `timeout` passes first. Waits in the kernel.
    pub fn wait_nonzero(&self, timeout: Option<Duration>) -> Result<bool> {
        let ops = [Op::new(COUNT, -1, 0), Op::new(COUNT, 1, 0)];
        self.timed_op("semop(wait_nonzero)", &ops, timeout, true)
    }

    /// Declares this object present without taking a reference, creating the set if
    /// needed. While any object is present, the set is kept even when the count is 0, so
    /// a process that waits on the count ([`wait_zero`](RefCounter::wait_zero),
    /// [`wait_nonzero`](Self::wait_nonzero)) keeps waiting on the same set. The kernel
    /// withdraws the presence when the process dies (`SEM_UNDO`); [`unwatch`](Self::unwatch)
    /// and dropping the object withdraw it too. Idempotent.
    pub fn watch(&self) -> Result<()> {
        self.enter(Slot::Watcher)
    }

    /// Withdraws [`watch`](Self::watch), removing the set if that leaves it unused.
    pub fn unwatch(&self) -> Result<()> {
        self.leave(Slot::Watcher)
    }

    /// Removes the semaphore set if no one uses it: no references, no one present, and
    /// the startup lock free (or held by this object). What this object holds besides
    /// references (the lock, its presence) is given up with the set. Returns whether the
    /// set was removed (or did not exist). After removal, this and every other counter for
    /// the name open a fresh set on their next operation.
    pub fn try_remove(&self) -> Result<bool> {
        let Some(id) = self.current_id(false)? else {
            return Ok(true);
        };
        let giving = Giving {
            reference: false,
            lock: self.is_locked(),
            watcher: self.is_watching(),
            keeper: self.keeping.load(SeqCst),
        };
        self.remove(id, giving)
    }

    /// Takes this object's keeper slot (for the keeper process, see `keeper.rs`).
    pub(crate) fn enter_as_keeper(&self) -> Result<()> {
        self.enter(Slot::Keeper)
    }

    /// How many keepers are present (0 when there is no set).
    pub(crate) fn keepers(&self) -> Result<u32> {
        self.value(KEEPERS, "semctl(GETVAL keepers)")
    }

    /// Releases one reference unless it is the last one. Returns false (and changes
    /// nothing) when the count is 1, so the caller can take the lock before releasing.
    pub(crate) fn release_unless_last(&self) -> Result<bool> {
        if self.held() == 0 {
            return Err(self.not_held());
        }
        let id = self.open()?;
        match sys::op(id, &RELEASE_NOT_LAST, None) {
            Ok(()) => {
                self.held.fetch_sub(1, SeqCst);
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

    fn enter(&self, slot: Slot) -> Result<()> {
        if self.flag(slot).load(SeqCst) {
            return Ok(());
        }
        let ops = [
            REQUIRE_ALIVE[0],
            REQUIRE_ALIVE[1],
            Op::new(slot.sem(), 1, UNDO),
        ];
        if !self.timed_op(slot.call(), &ops, Some(REMOVAL_GRACE), true)? {
            return Err(self.sem_error(slot.call(), libc::ETIMEDOUT));
        }
        self.flag(slot).store(true, SeqCst);
        Ok(())
    }

    fn leave(&self, slot: Slot) -> Result<()> {
        if !self.flag(slot).load(SeqCst) {
            return Ok(());
        }
        let Some(id) = self.current_id(false)? else {
            self.flag(slot).store(false, SeqCst);
            return Ok(());
        };
        let giving = Giving {
            watcher: slot == Slot::Watcher,
            keeper: slot == Slot::Keeper,
            ..Giving::default()
        };
        if self.holds_only(giving) && self.remove(id, giving)? {
            return Ok(());
        }
        if !self.flag(slot).swap(false, SeqCst) {
            return Ok(());
        }
        match sys::op(id, &[Op::new(slot.sem(), -1, UNDO | NOWAIT)], None) {
            Ok(()) | Err(libc::EIDRM | libc::EINVAL) => Ok(()),
            Err(e) => Err(self.sem_error(slot.call(), e)),
        }
    }

    fn flag(&self, slot: Slot) -> &AtomicBool {
        match slot {
            Slot::Watcher => &self.watching,
            Slot::Keeper => &self.keeping,
        }
    }

    /// Whether `giving` is all this object holds on its set, so that removing the set
    /// takes nothing from it that it means to keep.
    fn holds_only(&self, giving: Giving) -> bool {
        self.held() == u32::from(giving.reference)
            && (giving.lock || !self.is_locked())
            && (giving.watcher || !self.is_watching())
            && (giving.keeper || !self.keeping.load(SeqCst))
    }

    /// Tombstones and removes set `id` if no one but this object (giving up `giving`) uses
    /// it. Returns whether the set is gone.
    fn remove(&self, id: i32, giving: Giving) -> Result<bool> {
        match sys::op(id, tombstone(giving).ops(), None) {
            Ok(()) => match sys::remove(id) {
                Ok(()) | Err(libc::EIDRM | libc::EINVAL) => {}
                Err(e) => return Err(self.sem_error("semctl(IPC_RMID)", e)),
            },
            Err(libc::EAGAIN) => return Ok(false),
            Err(libc::EIDRM | libc::EINVAL) => {}
            Err(e) => return Err(self.sem_error("semop(tombstone)", e)),
        }
        self.forget(id, giving);
        Ok(true)
    }

    /// Set `id` is gone, and with it what this object held there (`giving`).
    fn forget(&self, id: i32, giving: Giving) {
        let _ = self.id.compare_exchange(id, -1, SeqCst, SeqCst);
        if giving.reference {
            self.held.fetch_sub(1, SeqCst);
        }
        if giving.lock {
            self.locked.store(false, SeqCst);
        }
        if giving.watcher {
            self.watching.store(false, SeqCst);
        }
        if giving.keeper {
            self.keeping.store(false, SeqCst);
        }
    }

    /// The set id, opening (and with `create`, creating) it if needed. `None` when the
    /// set does not exist and `create` is false.
    fn current_id(&self, create: bool) -> Result<Option<i32>> {
        let mode = if create { Open::Create } else { Open::Existing };
        Ok(self.open_id(mode)?.map(|(id, _)| id))
    }

    fn open(&self) -> Result<i32> {
        Ok(self
            .current_id(true)?
            .expect("create=true always yields a set"))
    }

    /// The set id, opened or created as `mode` says; the flag tells whether the set was
    /// just created with this object's new reference in it.
    fn open_id(&self, mode: Open) -> Result<Option<(i32, bool)>> {
        let id = self.id.load(SeqCst);
        if id >= 0 {
            return Ok(Some((id, false)));
        }
        let _guard = self.open_lock.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.id.load(SeqCst);
        if id >= 0 {
            return Ok(Some((id, false)));
        }
        let opened = self.open_or_create(mode)?;
        if let Some((id, _)) = opened {
            self.id.store(id, SeqCst);
        }
        Ok(opened)
    }

    fn open_or_create(&self, mode: Open) -> Result<Option<(i32, bool)>> {
        let key = self.identity.key;
        let deadline = Instant::now() + REMOVAL_GRACE;
        loop {
            if Instant::now() > deadline {
                return Err(self.sem_error("semget", libc::ETIMEDOUT));
            }
            // Creating first saves a call in the common case of a name whose set the last
            // user removed; an existing set answers EEXIST and is opened below.
            if mode != Open::Existing {
                match sys::get(key, NSEMS, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) {
                    Ok(id) => {
                        let referenced = mode == Open::CreateReferenced;
                        match sys::op(id, self.initialiser(referenced).ops(), None) {
                            Ok(()) => return Ok(Some((id, referenced))),
                            // Someone judged our creation abandoned and removed it: start over.
                            Err(libc::EIDRM | libc::EINVAL) => continue,
                            Err(e) => return Err(self.sem_error("semop(initialise)", e)),
                        }
                    }
                    Err(libc::EEXIST) => {}
                    Err(e) => return Err(self.sem_error("semget(IPC_CREAT)", e)),
                }
            }
            match sys::get(key, NSEMS, 0) {
                Ok(id) => match self.verify(id)? {
                    Verified::Ready => return Ok(Some((id, false))),
                    Verified::Gone => continue,
                },
                Err(libc::ENOENT) if mode == Open::Existing => return Ok(None),
                // Removed since we tried to create it: try again.
                Err(libc::ENOENT) => continue,
                Err(libc::EINVAL) => {
                    return Err(self.foreign(format!(
                        "it has fewer than the {NSEMS} semaphores a procref set has (an \
                         older procref's set, or another program's)"
                    )));
                }
                Err(libc::EACCES) => {
                    return Err(self.foreign("this user has no access to it".into()));
                }
                Err(e) => return Err(self.sem_error("semget", e)),
            }
        }
    }

    /// The first `semop` on a set we created: lock free, alive, fingerprint and magic,
    /// and with `referenced`, this object's reference.
    fn initialiser(&self, referenced: bool) -> Group {
        let mut g = Group::new();
        g.push(Op::new(LOCK, 1, 0));
        g.push(Op::new(ALIVE, 1, 0));
        for (i, &v) in self.identity.fingerprint.iter().enumerate() {
            g.push(Op::new(FP0 + i as u16, v as i16, 0));
        }
        g.push(Op::new(MAGIC, self.identity.magic as i16, 0));
        if referenced {
            g.push(Op::new(COUNT, 1, UNDO));
        }
        g
    }

    /// Checks owner, mode, size, fingerprint and magic of an existing set, waiting for
    /// its creator to finish initialising it.
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
        let fp = &self.identity.fingerprint;
        let expected = [
            (FP0, fp[0]),
            (FP0 + 1, fp[1]),
            (FP0 + 2, fp[2]),
            (FP0 + 3, fp[3]),
            (MAGIC, self.identity.magic),
        ];
        for (sem, want) in expected {
            let found = match sys::value(id, sem) {
                Ok(v) => v,
                Err(libc::EIDRM | libc::EINVAL) => return Ok(Verified::Gone),
                Err(e) => return Err(self.sem_error("semctl(GETVAL)", e)),
            };
            if found != i32::from(want) {
                return Err(self.foreign(
                    "its fingerprint belongs to a different name (a key collision, or a set \
                     made by another program)"
                        .into(),
                ));
            }
        }
        Ok(Verified::Ready)
    }

    /// After `EIDRM` (the set was removed from outside while this object held something
    /// on it): forget the old id, open a fresh set and restore this object's references
    /// and presence on it (the kernel dropped them with the old set).
    fn reopen_after_removal(&self, old: i32) -> Result<()> {
        let _ = self.id.compare_exchange(old, -1, SeqCst, SeqCst);
        if self.locked.swap(false, SeqCst) {
            tracing::warn!(name = %self.name, "semaphore set removed while this process held its lock");
        }
        let held = self.held.swap(0, SeqCst);
        for _ in 0..held {
            self.acquire()?;
        }
        for slot in [Slot::Watcher, Slot::Keeper] {
            if self.flag(slot).swap(false, SeqCst) {
                self.enter(slot)?;
            }
        }
        Ok(())
    }

    /// Runs a (possibly blocking) op; `Ok(false)` on timeout. Without `create`, a
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

    /// The value of semaphore `sem` (0 when there is no set).
    fn value(&self, sem: u16, call: &'static str) -> Result<u32> {
        loop {
            let Some(id) = self.current_id(false)? else {
                return Ok(0);
            };
            match sys::value(id, sem) {
                Ok(v) => return Ok(v as u32),
                Err(libc::EIDRM | libc::EINVAL) => {
                    let _ = self.id.compare_exchange(id, -1, SeqCst, SeqCst);
                }
                Err(e) => return Err(self.sem_error(call, e)),
            }
        }
    }

    fn not_held(&self) -> Error {
        Error::NotHeld {
            name: self.name.clone(),
            what: "release",
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
        let (id, created) = self
            .open_id(Open::CreateReferenced)?
            .expect("creating always yields a set");
        if created {
            self.held.fetch_add(1, SeqCst);
            self.alone.store(true, SeqCst);
            return Ok(1);
        }
        let taken = match sys::op(id, &ACQUIRE_NOWAIT, None) {
            Ok(()) => true,
            Err(libc::EAGAIN | libc::EIDRM | libc::EINVAL) => false,
            Err(e) => return Err(self.sem_error("semop(acquire)", e)),
        };
        // Slow path: the set is being removed (or already was): wait for that, re-open.
        if !taken && !self.timed_op("semop(acquire)", &ACQUIRE, Some(REMOVAL_GRACE), true)? {
            return Err(self.sem_error("semop(acquire)", libc::ETIMEDOUT));
        }
        self.held.fetch_add(1, SeqCst);
        let count = self.count()?;
        self.alone.store(count == 1, SeqCst);
        Ok(count)
    }

    fn release(&self) -> Result<u32> {
        if self.held() == 0 {
            return Err(self.not_held());
        }
        let only_reference = Giving {
            reference: true,
            ..Giving::default()
        };
        let Some(id) = self.current_id(false)? else {
            // Removed from outside (ipcrm), and our reference with it.
            self.held.fetch_sub(1, SeqCst);
            return Ok(0);
        };
        // The last reference goes with the set, unless someone still uses it (a holder
        // that arrived meanwhile, someone present, a lock holder, this object too). Try
        // first what is likelier: the removal if this object was alone when it acquired.
        let may_remove = self.holds_only(only_reference);
        let removal_first = may_remove && self.alone.load(SeqCst);
        if removal_first && self.remove(id, only_reference)? {
            return Ok(0);
        }
        match sys::op(id, &RELEASE_NOT_LAST, None) {
            Ok(()) => {
                self.held.fetch_sub(1, SeqCst);
                return self.count();
            }
            Err(libc::EAGAIN) => {}
            Err(libc::EIDRM | libc::EINVAL) => {
                self.forget(id, only_reference);
                return Ok(0);
            }
            Err(e) => return Err(self.sem_error("semop(release)", e)),
        }
        if may_remove && !removal_first && self.remove(id, only_reference)? {
            return Ok(0);
        }
        match sys::op(id, &RELEASE, None) {
            Ok(()) => {}
            Err(libc::EIDRM | libc::EINVAL) => {
                self.forget(id, only_reference);
                return Ok(0);
            }
            Err(e) => return Err(self.sem_error("semop(release)", e)),
        }
        self.held.fetch_sub(1, SeqCst);
        self.count()
    }

    fn count(&self) -> Result<u32> {
        self.value(COUNT, "semctl(GETVAL)")
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
        self.locked.store(got, SeqCst);
        Ok(got)
    }

    fn unlock(&self) -> Result<()> {
        if !self.is_locked() {
            return Ok(());
        }
        let Some(id) = self.current_id(false)? else {
            self.locked.store(false, SeqCst);
            return Ok(());
        };
        let only_lock = Giving {
            lock: true,
            ..Giving::default()
        };
        if self.holds_only(only_lock) && self.remove(id, only_lock)? {
            return Ok(());
        }
        if !self.locked.swap(false, SeqCst) {
            return Ok(());
        }
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
        self.locked.store(got, SeqCst);
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
        let _ = self.leave(Slot::Watcher);
        let _ = self.leave(Slot::Keeper);
    }
}

/// Removes set `id`, listed under `key`, if it is one of this user's procref sets (owner,
/// creator, mode, size, magic, fingerprint range) and no one uses it: the same atomic
/// tombstone as every other removal. Returns whether it removed the set.
pub(crate) fn remove_if_abandoned(key: i32, id: i32) -> Result<bool, Errno> {
    let euid = sys::euid();
    let st = match sys::stat(id) {
        Ok(st) => st,
        Err(libc::EIDRM | libc::EINVAL | libc::EACCES) => return Ok(false),
        Err(e) => return Err(e),
    };
    let shaped = st.key == key
        && key != libc::IPC_PRIVATE
        && st.uid == euid
        && st.cuid == euid
        && st.mode & 0o777 == 0o600
        && st.nsems == NSEMS as u64
        && st.otime != 0;
    if !shaped {
        return Ok(false);
    }
    let value = |sem| match sys::value(id, sem) {
        Ok(v) => Ok(Some(v)),
        Err(libc::EIDRM | libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    };
    if value(MAGIC)? != Some(i32::from(key::magic(euid, key))) {
        return Ok(false);
    }
    for i in 0..4 {
        if !value(FP0 + i)?.is_some_and(|v| (1..=32767).contains(&v)) {
            return Ok(false);
        }
    }
    match sys::op(id, tombstone(Giving::default()).ops(), None) {
        Ok(()) => match sys::remove(id) {
            Ok(()) | Err(libc::EIDRM | libc::EINVAL) => Ok(true),
            Err(e) => Err(e),
        },
        Err(libc::EAGAIN | libc::EIDRM | libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}
