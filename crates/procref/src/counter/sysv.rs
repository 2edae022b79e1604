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
//! | `PRESENT` | counter objects using the set, one each from the first operation that enters it until the object is dropped (undone on death) |
//! | `KEEPERS` | keeper processes guarding the service (see `keeper.rs`; undone on death) |
//! | `MAGIC` | the key's magic, marking the set as procref's for [`crate::sweep_abandoned`] |
//!
//! Creation is `IPC_CREAT | IPC_EXCL` followed by one atomic `semop` that sets `LOCK`,
//! `ALIVE`, the fingerprint and the magic together, with the creator's presence (and, when
//! the creator is acquiring, its reference), so no one can observe a half-initialised set.
//!
//! A set exists only while in use. A counter object is present on its set from the first
//! operation that enters it (acquire, lock, watch, or creating it) until the object is
//! dropped, so one object's acquire/release pairs reuse one set. An object that leaves
//! (dropped, [`SysvRefCounter::unwatch`], [`SysvRefCounter::try_remove`]) removes the set if
//! no one else uses it, and "no one else uses it" is decided in the same atomic `semop`
//! that tombstones it: once the leaver has given up what it holds, `COUNT`, `PRESENT` and
//! `KEEPERS` are 0, the lock is free (the group takes it), and `ALIVE` goes from 1 to 0;
//! then `IPC_RMID`. A leaver that is not alone gives back what it holds in one `semop` that
//! requires another presence, so of objects leaving together the last one finds itself
//! alone and removes the set. Every operation that enters a set requires `ALIVE == 1` and
//! adds the object's presence in the same atomic `semop`, so no one enters a set that is
//! going away: it waits for the removal (`EIDRM`) and opens a fresh set. Every change in
//! the tombstone carries `SEM_UNDO`, so a remover that dies before `IPC_RMID` leaves a
//! live, consistent set behind.

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
const PRESENT: u16 = 7;
const KEEPERS: u16 = 8;
const MAGIC: u16 = 9;
const NSEMS: i32 = 10;

/// How long an opener waits for a creator to initialise a new set before deciding the
/// creator died mid-creation and removing the set.
const INIT_GRACE: Duration = Duration::from_secs(2);
/// Bound on waiting for a tombstoned set to disappear.
const REMOVAL_GRACE: Duration = Duration::from_secs(10);
/// Rounds of "remove, else give back if someone else is present" before a leaver gives
/// back unconditionally. Between current procref objects a failed round means another
/// object left in between, so the next round removes the set; only a holder that is not
/// present (an older procref) makes every round fail, and it removes the set itself.
const LEAVE_ROUNDS: usize = 4;

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
/// Take the startup lock on a live set if it is free now.
const TRY_LOCK: [Op; 3] = [
    Op::new(ALIVE, -1, NOWAIT),
    Op::new(ALIVE, 1, NOWAIT),
    Op::new(LOCK, -1, UNDO | NOWAIT),
];
/// Take a keeper slot on a live set.
const KEEPER: [Op; 3] = [
    REQUIRE_ALIVE[0],
    REQUIRE_ALIVE[1],
    Op::new(KEEPERS, 1, UNDO),
];

/// What an object holds on its set: all of it, or the part it gives up.
#[derive(Debug, Clone, Copy, Default)]
struct Holding {
    references: u32,
    lock: bool,
    present: bool,
    keeper: bool,
}

impl Holding {
    fn is_empty(self) -> bool {
        self.references == 0 && !self.lock && !self.present && !self.keeper
    }
}

/// `n` references as a semaphore delta (the kernel caps a count at 32767).
fn delta(n: u32) -> i16 {
    i16::try_from(n).unwrap_or(i16::MAX)
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

    fn of(ops: &[Op]) -> Group {
        let mut g = Group::new();
        ops.iter().for_each(|&op| g.push(op));
        g
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
/// reference, a presence or keeper slot, or the lock; then clears `ALIVE`. Each change nets
/// to the remover's undo adjustments, so a remover dying before `IPC_RMID` revives the set.
fn tombstone(giving: Holding) -> Group {
    let mut g = Group::new();
    if giving.references > 0 {
        g.push(Op::new(COUNT, -delta(giving.references), UNDO | NOWAIT));
    }
    g.push(Op::new(COUNT, 0, NOWAIT));
    for (sem, mine) in [(PRESENT, giving.present), (KEEPERS, giving.keeper)] {
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

/// Gives back `giving` without removing the set. With `require_another`, the group fails
/// (`EAGAIN`, changing nothing) unless another presence stays: the giver's -1 with UNDO,
/// then a -1/+1 pair without, which needs a second presence.
fn give_back(giving: Holding, require_another: bool) -> Group {
    let mut g = Group::new();
    if giving.references > 0 {
        g.push(Op::new(COUNT, -delta(giving.references), UNDO | NOWAIT));
    }
    if giving.lock {
        g.push(Op::new(LOCK, 1, UNDO | NOWAIT));
    }
    if giving.keeper {
        g.push(Op::new(KEEPERS, -1, UNDO | NOWAIT));
    }
    if giving.present {
        g.push(Op::new(PRESENT, -1, UNDO | NOWAIT));
        if require_another {
            g.push(Op::new(PRESENT, -1, NOWAIT));
            g.push(Op::new(PRESENT, 1, NOWAIT));
        }
    }
    g
}

/// What a removal attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// This call removed the set.
    Removed,
    /// Someone else uses the set; nothing changed.
    InUse,
    /// The set was already gone.
    Gone,
}

/// Tombstones and removes set `id` if no one but the caller (giving up `giving`) uses it.
fn remove_unless_used(id: i32, giving: Holding) -> Result<Removal, (&'static str, Errno)> {
    match sys::op(id, tombstone(giving).ops(), None) {
        Ok(()) => match sys::remove(id) {
            Ok(()) | Err(libc::EIDRM | libc::EINVAL) => Ok(Removal::Removed),
            Err(e) => Err(("semctl(IPC_RMID)", e)),
        },
        Err(libc::EAGAIN) => Ok(Removal::InUse),
        Err(libc::EIDRM | libc::EINVAL) => Ok(Removal::Gone),
        Err(e) => Err(("semop(tombstone)", e)),
    }
}

/// How to get a set id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// Only an existing set.
    Existing,
    /// Create the set if there is none (with this object's presence in it).
    Create,
    /// Create the set if there is none, with this object's presence and new reference.
    CreateReferenced,
}

/// What a (possibly blocking) operation does with the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Looks only: a missing set counts as success and is not created.
    Observe,
    /// Waits on the set, creating it if needed.
    Wait,
    /// Enters the set: creates it if needed and takes this object's presence with the op.
    Enter,
}

/// Kernel-backed reference counter for one service name (System V semaphores).
///
/// The set is opened lazily: constructing a counter touches nothing in the kernel, and
/// [`count`](RefCounter::count) on a name that was never acquired reports 0 without
/// creating a set. Each `acquire` adds one reference held by this object; dropping the
/// object releases what it still holds (and the kernel does the same if the process dies).
///
/// The object is present on the set from its first operation that enters it (`acquire`,
/// the lock, [`watch`](Self::watch), [`wait_nonzero`](Self::wait_nonzero)) until it is
/// dropped, and while any object is present the set stays: one object's acquire/release
/// pairs reuse one set, and a process that waits on the count keeps waiting on the same
/// set. Operations that only look (`count`, `wait_zero`) do not make an object present.
/// When the last object present is dropped with the count at 0 and the lock free, it
/// removes the set, and the next user creates a fresh one. The kernel withdraws the
/// presence of a process that dies; if every user died, the next user of the name (or
/// [`sweep_abandoned`](crate::sweep_abandoned)) removes the set.
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
    /// Whether this object holds its presence on the set.
    present: AtomicBool,
    /// Whether this object holds a keeper slot.
    keeping: AtomicBool,
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
            present: AtomicBool::new(false),
            keeping: AtomicBool::new(false),
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

    /// Whether this object is present on the set (and so keeps it).
    pub fn is_present(&self) -> bool {
        self.present.load(SeqCst)
    }

    /// Blocks until the count is at least 1 (someone holds a reference), without taking
    /// a reference. Returns false if `timeout` passes first. Waits in the kernel, on a set
    /// this object is present on ([`watch`](Self::watch) first), so that the set is not
    /// removed under the waiter.
    pub fn wait_nonzero(&self, timeout: Option<Duration>) -> Result<bool> {
        self.watch()?;
        let ops = [Op::new(COUNT, -1, 0), Op::new(COUNT, 1, 0)];
        self.timed_op("semop(wait_nonzero)", &ops, timeout, Access::Wait)
    }

    /// Makes this object present without taking a reference, creating the set if needed.
    /// Every operation that enters the set does this too; `watch` is for an object that
    /// only waits on the count ([`wait_zero`](RefCounter::wait_zero)) and must keep
    /// waiting on the same set. The presence lasts until the object is dropped (or
    /// [`unwatch`](Self::unwatch)); the kernel withdraws it when the process dies
    /// (`SEM_UNDO`). Idempotent.
    pub fn watch(&self) -> Result<()> {
        if self.is_present() {
            return Ok(());
        }
        if !self.timed_op(
            "semop(watch)",
            &REQUIRE_ALIVE,
            Some(REMOVAL_GRACE),
            Access::Enter,
        )? {
            return Err(self.sem_error("semop(watch)", libc::ETIMEDOUT));
        }
        Ok(())
    }

    /// Withdraws this object's presence if it holds nothing else (no reference, not the
    /// lock), removing the set if no one else uses it. An object holding more keeps its
    /// presence. The next operation that enters the set makes the object present again.
    pub fn unwatch(&self) -> Result<()> {
        let holding = self.holding();
        if holding.present && holding.references == 0 && !holding.lock && !holding.keeper {
            self.leave(holding)?;
        }
        Ok(())
    }

    /// Removes the semaphore set if no one uses it: no references, no one else present,
    /// and the startup lock free (or held by this object). What this object holds besides
    /// references (its presence, the lock) is given up with the set. Returns whether the
    /// set was removed (or did not exist). After removal, this and every other counter for
    /// the name open a fresh set on their next operation.
    pub fn try_remove(&self) -> Result<bool> {
        let Some(id) = self.current_id(false)? else {
            return Ok(true);
        };
        let giving = Holding {
            references: 0,
            ..self.holding()
        };
        match remove_unless_used(id, giving) {
            Ok(Removal::InUse) => Ok(false),
            Ok(Removal::Removed) => {
                self.forget(Some(id), giving);
                Ok(true)
            }
            // Removed from outside, and whatever this object held with it.
            Ok(Removal::Gone) => {
                self.forget(Some(id), self.holding());
                Ok(true)
            }
            Err((call, e)) => Err(self.sem_error(call, e)),
        }
    }

    /// Takes this object's keeper slot (for the keeper process, see `keeper.rs`).
    pub(crate) fn enter_as_keeper(&self) -> Result<()> {
        if self.keeping.load(SeqCst) {
            return Ok(());
        }
        if !self.timed_op("semop(keeper)", &KEEPER, Some(REMOVAL_GRACE), Access::Enter)? {
            return Err(self.sem_error("semop(keeper)", libc::ETIMEDOUT));
        }
        self.keeping.store(true, SeqCst);
        Ok(())
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

    /// Everything this object holds on its set.
    fn holding(&self) -> Holding {
        Holding {
            references: self.held(),
            lock: self.is_locked(),
            present: self.is_present(),
            keeper: self.keeping.load(SeqCst),
        }
    }

    /// Gives up `giving`, which must be everything this object holds, and removes the set
    /// if that leaves it unused (see the module documentation).
    fn leave(&self, giving: Holding) -> Result<()> {
        let id = self.id.load(SeqCst);
        if id < 0 || giving.is_empty() {
            return Ok(());
        }
        for round in 1..=LEAVE_ROUNDS {
            match remove_unless_used(id, giving) {
                Ok(Removal::InUse) => {}
                Ok(Removal::Removed | Removal::Gone) => {
                    self.forget(Some(id), giving);
                    return Ok(());
                }
                Err((call, e)) => return Err(self.sem_error(call, e)),
            }
            let require_another = round < LEAVE_ROUNDS;
            match sys::op(id, give_back(giving, require_another).ops(), None) {
                Ok(()) => {
                    self.forget(None, giving);
                    return Ok(());
                }
                // Everyone else left since the tombstone failed: try removing again.
                Err(libc::EAGAIN) if require_another => {}
                Err(libc::EIDRM | libc::EINVAL) => {
                    self.forget(Some(id), giving);
                    return Ok(());
                }
                Err(e) => return Err(self.sem_error("semop(leave)", e)),
            }
        }
        unreachable!("the last round gives back unconditionally")
    }

    /// This object no longer holds `giving`; with `removed`, set `removed` is gone.
    fn forget(&self, removed: Option<i32>, giving: Holding) {
        if let Some(id) = removed {
            let _ = self.id.compare_exchange(id, -1, SeqCst, SeqCst);
        }
        if giving.references > 0 {
            self.held.fetch_sub(giving.references, SeqCst);
        }
        if giving.lock {
            self.locked.store(false, SeqCst);
        }
        if giving.present {
            self.present.store(false, SeqCst);
        }
        if giving.keeper {
            self.keeping.store(false, SeqCst);
        }
    }

    /// `ops` (which require `ALIVE` themselves) plus this object's presence if it is not
    /// present yet; the flag says whether the presence is in the group.
    fn entering(&self, ops: &[Op]) -> (Group, bool) {
        let mut g = Group::of(ops);
        let add = !self.is_present();
        if add {
            g.push(Op::new(PRESENT, 1, UNDO));
        }
        (g, add)
    }

    /// A group from [`entering`](Self::entering) succeeded on set `id`.
    fn entered(&self, id: i32, added_presence: bool) {
        if added_presence && self.present.swap(true, SeqCst) {
            // Another thread entered for this object at the same time: keep one presence.
            let _ = sys::op(id, &[Op::new(PRESENT, -1, UNDO | NOWAIT)], None);
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

    /// The set id, opened or created as `mode` says; the flag tells whether this call
    /// created the set (then this object is present on it, and with
    /// [`Open::CreateReferenced`] holds the new reference in it).
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
        if let Some((id, created)) = opened {
            if created {
                self.present.store(true, SeqCst);
            }
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
                            Ok(()) => return Ok(Some((id, true))),
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
    /// this object's presence, and with `referenced`, its reference.
    fn initialiser(&self, referenced: bool) -> Group {
        let mut g = Group::new();
        g.push(Op::new(LOCK, 1, 0));
        g.push(Op::new(ALIVE, 1, 0));
        for (i, &v) in self.identity.fingerprint.iter().enumerate() {
            g.push(Op::new(FP0 + i as u16, v as i16, 0));
        }
        g.push(Op::new(MAGIC, self.identity.magic as i16, 0));
        g.push(Op::new(PRESENT, 1, UNDO));
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

    /// After `EIDRM` on set `old` (removed from outside, e.g. by `ipcrm`, while this object
    /// may have held something on it): forget the old id, and if this object held anything,
    /// open a fresh set and restore its presence, references and keeper slot there (the
    /// kernel dropped them with the old set). The lock is not restored: whatever it guarded
    /// was interrupted.
    fn reopen_after_removal(&self, old: i32) -> Result<()> {
        if self.id.compare_exchange(old, -1, SeqCst, SeqCst).is_err() {
            return Ok(()); // another thread of this object got here first
        }
        if self.locked.swap(false, SeqCst) {
            tracing::warn!(name = %self.name, "semaphore set removed while this process held its lock");
        }
        let held = self.held.swap(0, SeqCst);
        let keeper = self.keeping.swap(false, SeqCst);
        if self.present.swap(false, SeqCst) || held > 0 || keeper {
            self.watch()?;
        }
        for _ in 0..held {
            self.acquire()?;
        }
        if keeper {
            self.enter_as_keeper()?;
        }
        Ok(())
    }

    /// Runs a (possibly blocking) op with the given access; `Ok(false)` on timeout.
    fn timed_op(
        &self,
        call: &'static str,
        ops: &[Op],
        timeout: Option<Duration>,
        access: Access,
    ) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let Some(id) = self.current_id(access != Access::Observe)? else {
                return Ok(true);
            };
            let (group, added) = match access {
                Access::Enter => self.entering(ops),
                Access::Observe | Access::Wait => (Group::of(ops), false),
            };
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match sys::op(id, group.ops(), left) {
                Ok(()) => {
                    self.entered(id, added);
                    return Ok(true);
                }
                Err(libc::EAGAIN) => return Ok(false),
                Err(libc::EIDRM | libc::EINVAL) => self.reopen_after_removal(id)?,
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
                Err(libc::EIDRM | libc::EINVAL) => self.reopen_after_removal(id)?,
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
            return Ok(1);
        }
        let (fast, added) = self.entering(&ACQUIRE_NOWAIT);
        let taken = match sys::op(id, fast.ops(), None) {
            Ok(()) => {
                self.entered(id, added);
                true
            }
            Err(libc::EAGAIN | libc::EIDRM | libc::EINVAL) => false,
            Err(e) => return Err(self.sem_error("semop(acquire)", e)),
        };
        // Slow path: the set is being removed (or already was): wait for that, re-open.
        if !taken
            && !self.timed_op(
                "semop(acquire)",
                &ACQUIRE,
                Some(REMOVAL_GRACE),
                Access::Enter,
            )?
        {
            return Err(self.sem_error("semop(acquire)", libc::ETIMEDOUT));
        }
        self.held.fetch_add(1, SeqCst);
        self.count()
    }

    fn release(&self) -> Result<u32> {
        if self.held() == 0 {
            return Err(self.not_held());
        }
        // This object stays present, so the set stays: the removal is the last present
        // object's, when it is dropped.
        let Some(id) = self.current_id(false)? else {
            // Removed from outside (ipcrm), and our reference with it.
            self.held.fetch_sub(1, SeqCst);
            return Ok(0);
        };
        match sys::op(id, &RELEASE, None) {
            Ok(()) => {
                self.held.fetch_sub(1, SeqCst);
                self.count()
            }
            Err(libc::EIDRM | libc::EINVAL) => {
                self.reopen_after_removal(id)?;
                self.release()
            }
            Err(e) => Err(self.sem_error("semop(release)", e)),
        }
    }

    fn count(&self) -> Result<u32> {
        self.value(COUNT, "semctl(GETVAL)")
    }

    fn try_lock(&self) -> Result<bool> {
        if self.is_locked() {
            return Ok(true);
        }
        let got = self.timed_op("semop(try_lock)", &TRY_LOCK, None, Access::Enter)?;
        self.locked.store(got, SeqCst);
        Ok(got)
    }

    fn unlock(&self) -> Result<()> {
        if !self.locked.swap(false, SeqCst) {
            return Ok(());
        }
        let Some(id) = self.current_id(false)? else {
            return Ok(());
        };
        match sys::op(id, &[Op::new(LOCK, 1, UNDO)], None) {
            Ok(()) => Ok(()),
            // Removed from outside: the lock went with the set.
            Err(libc::EIDRM | libc::EINVAL) => self.reopen_after_removal(id),
            Err(e) => Err(self.sem_error("semop(unlock)", e)),
        }
    }

    fn lock_timeout(&self, timeout: Duration) -> Result<bool> {
        if self.is_locked() {
            return Ok(true);
        }
        let got = self.timed_op("semop(lock)", &LOCK_OPS, Some(timeout), Access::Enter)?;
        self.locked.store(got, SeqCst);
        Ok(got)
    }

    fn wait_zero(&self, timeout: Option<Duration>) -> Result<bool> {
        let ops = [Op::new(COUNT, 0, 0)];
        self.timed_op("semop(wait_zero)", &ops, timeout, Access::Observe)
    }
}

impl Drop for SysvRefCounter {
    /// Gives back everything this object holds in one `semop`, removing the set if no one
    /// else uses it.
    fn drop(&mut self) {
        let _ = self.leave(self.holding());
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
    match remove_unless_used(id, Holding::default()) {
        Ok(removal) => Ok(removal == Removal::Removed),
        Err((_, e)) => Err(e),
    }
}
