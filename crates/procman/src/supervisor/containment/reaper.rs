//! procman as a child subreaper (`PR_SET_CHILD_SUBREAPER`), or as PID 1 in a container:
//! orphaned descendants are reparented to us rather than to init, so nothing a process
//! starts leaves procman's process tree, and we reap them when they exit.
//!
//! Reaping must not take the exit status of a child someone else waits for: the group
//! leaders (the runner reaps each through its pidfd), the guardian, and helpers that the
//! async runtime spawned (dependency checks), which stay in procman's own process group.
//! So we look at the next exited child without reaping it (`WNOWAIT`) and reap it only if
//! it is an orphan we adopted.

use std::io;

use rustix::process::{Pid, WaitOptions, waitpid};

use super::procfs;

/// Makes this process the reaper of its orphaned descendants.
pub fn become_subreaper() -> io::Result<()> {
    if std::process::id() == 1 {
        return Ok(());
    }
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(Into::into)
}

/// What [`reap_orphans`] reaped.
#[derive(Debug, Default)]
pub struct Reaped {
    /// The orphans reaped.
    pub orphans: Vec<u32>,
}

/// Reaps every exited orphan among our children. `owned` says which children are waited
/// for elsewhere; when one of those is the next exited child, reaping stops there (the
/// caller calls again once it has reaped that one). An exited helper of the async
/// runtime is passed over by looking at the rest of the table.
pub fn reap_orphans(owned: impl Fn(u32) -> bool) -> Reaped {
    let mut reaped = Reaped::default();
    loop {
        let Some(pid) = next_exited() else {
            return reaped;
        };
        if owned(pid) {
            return reaped;
        }
        if is_helper(pid) {
            reap_orphans_by_table(&owned, &mut reaped);
            return reaped;
        }
        if reap(pid) {
            reaped.orphans.push(pid);
        } else {
            return reaped;
        }
    }
}

/// The pid of an exited child, left unreaped.
fn next_exited() -> Option<u32> {
    // SAFETY: `info` is a plain C struct that waitid fills in; zeroed is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes only into `info`, which outlives the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful waitid with WEXITED, si_pid is set (0 if none exited).
    let pid = unsafe { info.si_pid() };
    (pid > 0).then_some(pid as u32)
}

/// A child in procman's own process group: spawned by the runtime, not adopted.
fn is_helper(pid: u32) -> bool {
    procfs::stat(pid).is_some_and(|p| p.pgid == procfs::own_group())
}

fn reap(pid: u32) -> bool {
    Pid::from_raw(pid as i32).is_some_and(|pid| {
        waitpid(Some(pid), WaitOptions::NOHANG).is_ok_and(|status| status.is_some())
    })
}

/// Finds exited orphans in the process table when the next exited child is a helper.
fn reap_orphans_by_table(owned: &impl Fn(u32) -> bool, reaped: &mut Reaped) {
    let me = std::process::id();
    let own_group = procfs::own_group();
    for p in procfs::all() {
        if p.ppid == me && p.is_zombie() && p.pgid != own_group && !owned(p.pid) && reap(p.pid) {
            reaped.orphans.push(p.pid);
        }
    }
}
