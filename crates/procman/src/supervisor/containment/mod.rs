//! Containment: what holds each process together with everything it starts, so that
//! stopping it stops all of it, its end is seen only when the last of it is gone, and
//! nothing outlives procman.
//!
//! Two modes, chosen once at start:
//! - **cgroup** (cgroup v2 writable: root, or a delegated slice): each process run gets its
//!   own cgroup under procman's ([`cgroup`]). The kernel keeps every descendant in it,
//!   `setsid` or not; SIGTERM goes to each of its processes, SIGKILL is `cgroup.kill`, and
//!   "all gone" is `populated 0` in `cgroup.events`, an inotify event.
//! - **process groups** (elsewhere, or with `PROCMAN_NO_CGROUP=1`): each process leads its
//!   own group; signals go to the group, plus to *strays*: descendants outside the group
//!   still holding the process's output pipe after it exited (a `setsid` child). "All
//!   gone" is checked when a child of ours exits (SIGCHLD) or a stray's pidfd fires.
//!
//! In both, procman is a child subreaper ([`reaper`]): orphans are reparented to it and
//! reaped by it (also as PID 1), and at the end every descendant still alive is killed
//! ([`tree`]).

pub mod cgroup;
pub mod procfs;
pub mod reaper;
pub mod tree;

use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::inotify;
use rustix::process::{Pid, PidfdFlags, Signal, kill_process_group, pidfd_open};
use tokio::io::unix::AsyncFd;

/// Environment variable that turns cgroup mode off (process groups + subreaper only).
pub const NO_CGROUP_ENV: &str = "PROCMAN_NO_CGROUP";

/// Environment variable every process inherits, naming this procman (`PID-STARTTIME`):
/// the guardian also kills processes that carry it, which finds those that left
/// procman's process tree while their parent was still running, or its cgroup.
pub const INSTANCE_ENV: &str = "PROCMAN_INSTANCE";

/// How long the end of the run waits for killed leftovers to disappear.
const END_WAIT: Duration = Duration::from_secs(5);

/// The containment mode and what it owns.
#[derive(Debug)]
pub struct Containment {
    /// This procman, as [`INSTANCE_ENV`] names it.
    instance: String,
    cgroups: Option<cgroup::Tree>,
    /// Why there are no cgroups (for the log).
    without: Option<String>,
    subreaper: io::Result<()>,
    /// Wakes the runner when a watched `cgroup.events` changes.
    watcher: Option<Arc<Watcher>>,
}

impl Containment {
    /// Becomes a child subreaper and, unless [`NO_CGROUP_ENV`] is set, creates procman's
    /// cgroup. Call before any thread exists.
    pub fn init() -> Containment {
        let subreaper = reaper::become_subreaper();
        let me = std::process::id();
        let instance = format!("{me}-{}", procfs::stat(me).map_or(0, |p| p.start));
        let (cgroups, without) = if std::env::var_os(NO_CGROUP_ENV).is_some_and(|v| !v.is_empty()) {
            (None, Some(format!("{NO_CGROUP_ENV} is set")))
        } else {
            match cgroup::Tree::create(&instance) {
                Ok(tree) => (Some(tree), None),
                Err(e) => (None, Some(format!("cgroup v2 is not usable: {e}"))),
            }
        };
        Containment {
            instance,
            cgroups,
            without,
            subreaper,
            watcher: None,
        }
    }

    /// One line for the log: the mode, and why.
    pub fn describe(&self) -> String {
        let mode = match (&self.cgroups, &self.without) {
            (Some(tree), _) => format!("one cgroup per process under {}", tree.dir().display()),
            (None, Some(why)) => format!("process groups ({why})"),
            (None, None) => "process groups".into(),
        };
        let reaper = match &self.subreaper {
            Ok(()) if std::process::id() == 1 => "reaping orphans as PID 1".to_owned(),
            Ok(()) => "reaping orphans as a child subreaper".to_owned(),
            Err(e) => format!("not a child subreaper ({e})"),
        };
        format!("containment: {mode}; {reaper}")
    }

    /// The value of [`INSTANCE_ENV`] for this procman's processes.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// procman's cgroup, for the guardian to kill and remove if the supervisor dies.
    pub fn cgroup_dir(&self) -> Option<&Path> {
        self.cgroups.as_ref().map(cgroup::Tree::dir)
    }

    /// Starts watching `cgroup.events` files (cgroup mode); needs the async runtime.
    pub fn start_watching(&mut self) -> io::Result<Option<Arc<Watcher>>> {
        if self.cgroups.is_some() && self.watcher.is_none() {
            self.watcher = Some(Arc::new(Watcher::new()?));
        }
        Ok(self.watcher.clone())
    }

    /// The cgroup for a new run of `name` (cgroup mode).
    pub fn prepare(&self, name: &str) -> io::Result<Option<cgroup::Leaf>> {
        self.cgroups
            .as_ref()
            .map(|tree| tree.leaf(name))
            .transpose()
    }

    /// After a leader exited, in process-group mode: the descendants outside its group
    /// (`pgid`) that still hold its output pipe (`pipe_inode`), to be stopped with it
    /// ([`Unit::add_stray`]); `spare` says which are children it spawned.
    pub fn strays(
        &self,
        pgid: u32,
        pipe_inode: u64,
        spare: impl Fn(u32) -> bool,
    ) -> Vec<procfs::Proc> {
        if self.cgroups.is_some() {
            return Vec::new();
        }
        descendants(spare)
            .into_iter()
            .filter(|p| p.pgid != pgid && procfs::holds_pipe(p.pid, pipe_inode))
            .collect()
    }

    /// Orphans procman adopted (children it did not spawn), so that the guardian can kill
    /// them too; `spare` says which are children it spawned.
    pub fn adopted(&self, spare: impl Fn(u32) -> bool) -> Vec<procfs::Proc> {
        let me = std::process::id();
        let own_group = procfs::own_group();
        procfs::all()
            .into_iter()
            .filter(|p| p.ppid == me && !p.is_zombie() && p.pgid != own_group && !spare(p.pid))
            .collect()
    }

    /// The end of the run: SIGKILL to everything still left (in procman's cgroup and among
    /// its descendants, except `spare`), waits until it is gone, and removes the cgroups.
    /// Returns the descendants that were killed.
    pub fn end(&mut self, spare: &[u32]) -> Vec<tree::Killed> {
        if let Some(tree) = &self.cgroups {
            cgroup::kill(tree.dir());
        }
        let me = std::process::id();
        let killed = tree::kill(|p| p.ppid == me, spare, END_WAIT);
        if let Some(tree) = &self.cgroups {
            cgroup::wait_empty(tree.dir(), END_WAIT);
        }
        self.remove_cgroups();
        killed
    }

    fn remove_cgroups(&mut self) {
        if let Some(tree) = self.cgroups.take() {
            cgroup::remove_tree(tree.dir());
        }
    }
}

impl Drop for Containment {
    fn drop(&mut self) {
        self.remove_cgroups();
    }
}

/// Every descendant of procman (through parent links), except `spare` and theirs.
fn descendants(spare: impl Fn(u32) -> bool) -> Vec<procfs::Proc> {
    let table = procfs::all();
    let mut inside: HashSet<u32> = HashSet::from([std::process::id()]);
    let mut found = Vec::new();
    loop {
        let before = found.len();
        for p in &table {
            if inside.contains(&p.ppid) && !inside.contains(&p.pid) && !spare(p.pid) {
                inside.insert(p.pid);
                found.push(*p);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// One process run and everything it started.
#[derive(Debug)]
pub struct Unit {
    /// The leader's pid, which is also its process group.
    pgid: u32,
    leaf: Option<cgroup::Leaf>,
    strays: Vec<Stray>,
}

/// A descendant that left the group but still holds the output pipe.
#[derive(Debug)]
pub struct Stray {
    /// Its pid.
    pub pid: u32,
    /// Its start time (with the pid, its identity).
    pub start: u64,
    /// Readable once it exited.
    pub exited: Arc<AsyncFd<OwnedFd>>,
}

impl Unit {
    /// The unit of a spawned leader, with its cgroup if it has one.
    pub fn new(pid: u32, leaf: Option<cgroup::Leaf>) -> Unit {
        Unit {
            pgid: pid,
            leaf,
            strays: Vec::new(),
        }
    }

    /// Whether anything of it is left (the leader included, until it is reaped).
    pub fn alive(&self) -> bool {
        match &self.leaf {
            Some(leaf) => leaf.populated(),
            None => group_alive(self.pgid) || self.strays.iter().any(Stray::alive),
        }
    }

    /// Sends `signal` to all of it.
    pub fn signal(&self, signal: Signal) {
        match &self.leaf {
            Some(leaf) if signal == Signal::KILL => leaf.kill(),
            Some(leaf) => leaf.signal(signal),
            None => {
                if let Some(pgid) = Pid::from_raw(self.pgid as i32) {
                    let _ = kill_process_group(pgid, signal);
                }
                for stray in &self.strays {
                    let _ = rustix::process::pidfd_send_signal(stray.exited.get_ref(), signal);
                }
            }
        }
    }

    /// The `cgroup.events` file to watch while it outlives its leader (cgroup mode).
    pub fn events(&self) -> Option<std::path::PathBuf> {
        self.leaf.as_ref().map(cgroup::Leaf::events)
    }

    /// Its strays (process-group mode).
    pub fn strays(&self) -> &[Stray] {
        &self.strays
    }

    /// The leader's pid.
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Removes its cgroup (once empty).
    pub fn remove(self) {
        if let Some(leaf) = &self.leaf {
            leaf.remove();
        }
    }

    /// Adds `p` (from [`Containment::strays`]) if it is still that process.
    pub fn add_stray(&mut self, p: procfs::Proc) {
        let Some(pid) = Pid::from_raw(p.pid as i32) else {
            return;
        };
        let Ok(fd) = pidfd_open(pid, PidfdFlags::NONBLOCK) else {
            return;
        };
        if procfs::stat(p.pid).is_none_or(|now| now.start != p.start) {
            return;
        }
        if let Ok(exited) = readable_fd(fd) {
            self.strays.push(Stray {
                pid: p.pid,
                start: p.start,
                exited: Arc::new(exited),
            });
        }
    }
}

impl Stray {
    fn alive(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(self.exited.get_ref(), PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).is_ok_and(|_| fds[0].revents().is_empty())
    }
}

/// Registers `fd` (a pidfd or an inotify descriptor) with the async runtime for
/// readability.
pub fn readable_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, so it stays open and unchanged while
    // registered, and is deregistered before it is closed.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Whether anything is left in process group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    Pid::from_raw(pgid as i32)
        .is_some_and(|pgid| rustix::process::test_kill_process_group(pgid).is_ok())
}

/// One inotify instance for the `cgroup.events` files of the units that outlive their
/// leader; readable when any of them changes.
#[derive(Debug)]
pub struct Watcher {
    fd: AsyncFd<OwnedFd>,
}

impl Watcher {
    fn new() -> io::Result<Watcher> {
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)?;
        Ok(Watcher {
            fd: readable_fd(fd)?,
        })
    }

    /// Wakes [`Watcher::changed`] whenever `events` (a `cgroup.events` file) changes. The
    /// watch ends by itself when the cgroup is removed.
    pub fn watch(&self, events: &Path) -> io::Result<()> {
        inotify::add_watch(self.fd.get_ref(), events, inotify::WatchFlags::MODIFY)?;
        Ok(())
    }

    /// Waits until a watched file changed.
    pub async fn changed(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buf);
            let mut any = false;
            loop {
                match reader.next() {
                    Ok(_) => any = true,
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            guard.clear_ready();
            if any {
                return Ok(());
            }
        }
    }
}
