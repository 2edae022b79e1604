//! Thin wrappers over the System V semaphore system calls.
//!
//! This is the only place in the counter that talks to the kernel directly; everything
//! above it deals in `Result<_, Errno>` and plain Rust values.

use std::io;
use std::time::Duration;

/// An `errno` value from a failed call.
pub(crate) type Errno = i32;

/// One operation of an atomic `semop` group (`struct sembuf`).
#[derive(Clone, Copy)]
pub(crate) struct Op {
    pub(crate) sem: u16,
    pub(crate) delta: i16,
    pub(crate) flags: i16,
}

impl Op {
    pub(crate) const fn new(sem: u16, delta: i16, flags: i16) -> Op {
        Op { sem, delta, flags }
    }
}

/// Reverse this operation when the process exits (`SEM_UNDO`).
pub(crate) const UNDO: i16 = libc::SEM_UNDO as i16;
/// Fail with `EAGAIN` instead of blocking (`IPC_NOWAIT`).
pub(crate) const NOWAIT: i16 = libc::IPC_NOWAIT as i16;

/// The parts of `semid_ds` the counter checks.
pub(crate) struct SetStat {
    pub(crate) key: i32,
    pub(crate) uid: u32,
    pub(crate) cuid: u32,
    pub(crate) mode: u32,
    pub(crate) nsems: u64,
    /// Time of the last `semop`; 0 means the creator never initialised the set.
    pub(crate) otime: i64,
}

unsafe extern "C" {
    // glibc exports semtimedop(2), but the libc crate does not declare it for gnu targets.
    fn semtimedop(
        semid: libc::c_int,
        sops: *mut libc::sembuf,
        nsops: libc::size_t,
        timeout: *const libc::timespec,
    ) -> libc::c_int;
}

fn errno() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `semget(key, nsems, flags)`.
pub(crate) fn get(key: i32, nsems: i32, flags: i32) -> Result<i32, Errno> {
    // SAFETY: semget takes plain integers and has no memory-safety preconditions.
    let id = unsafe { libc::semget(key, nsems, flags) };
    if id < 0 { Err(errno()) } else { Ok(id) }
}

/// Most operations in one atomic group.
pub(crate) const MAX_OPS: usize = 10;

/// Applies `ops` (at most [`MAX_OPS`]) atomically; blocks (unless an op has `NOWAIT`) up
/// to `timeout` (`None`: indefinitely). A timeout is reported as `EAGAIN`; `EINTR` is
/// retried with the remaining time.
pub(crate) fn op(id: i32, ops: &[Op], timeout: Option<Duration>) -> Result<(), Errno> {
    // Groups are small and built by this crate: keep them on the stack, off the heap.
    assert!(ops.len() <= MAX_OPS, "semop group of {} ops", ops.len());
    let mut bufs = [libc::sembuf {
        sem_num: 0,
        sem_op: 0,
        sem_flg: 0,
    }; MAX_OPS];
    let n = ops.len();
    for (buf, o) in bufs.iter_mut().zip(ops) {
        *buf = libc::sembuf {
            sem_num: o.sem,
            sem_op: o.delta,
            sem_flg: o.flags,
        };
    }
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as _,
            }
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `bufs[..n]` is a live, initialised array of sembuf for the whole call, and
        // `ts_ptr` is null or points to `ts`, which outlives the call.
        let rc = unsafe { semtimedop(id, bufs.as_mut_ptr(), n, ts_ptr) };
        if rc == 0 {
            return Ok(());
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// `semctl(id, sem, GETVAL)`.
pub(crate) fn value(id: i32, sem: u16) -> Result<i32, Errno> {
    // SAFETY: GETVAL takes no fourth argument.
    let v = unsafe { libc::semctl(id, i32::from(sem), libc::GETVAL) };
    if v < 0 { Err(errno()) } else { Ok(v) }
}

/// `semctl(id, 0, IPC_STAT)`.
pub(crate) fn stat(id: i32) -> Result<SetStat, Errno> {
    // SAFETY: semid_ds is plain old data; all-zero is a valid value.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one semid_ds through the pointer, which is valid and
    // exclusively borrowed for the call.
    let rc = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
    if rc < 0 {
        return Err(errno());
    }
    Ok(SetStat {
        key: ds.sem_perm.__key,
        uid: ds.sem_perm.uid,
        cuid: ds.sem_perm.cuid,
        mode: u32::from(ds.sem_perm.mode),
        nsems: ds.sem_nsems as u64,
        otime: ds.sem_otime as i64,
    })
}

/// `semctl(id, 0, IPC_RMID)`.
pub(crate) fn remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID takes no fourth argument.
    let rc = unsafe { libc::semctl(id, 0, libc::IPC_RMID) };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

/// The effective user id (owner of every set we create or trust).
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}
