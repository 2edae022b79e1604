//! No orphans: children die with the supervisor, even when it is SIGKILLed.
//!
//! A guardian process holds the read end of a pipe whose write end only the supervisor
//! has. The supervisor tells it what to kill: each process group it spawns and each stray
//! process it learns of (by pid and start time, so a reused pid is never hit), and, in
//! cgroup mode, procman's cgroup. When the supervisor dies, however it dies, the kernel
//! closes the write end; the guardian's blocked `read` returns EOF, and it kills all of it
//! with everything those processes started ([`tree`]) and every process carrying this
//! procman's [`INSTANCE_ENV`], `cgroup.kill`s procman's cgroup, waits for it to empty and
//! removes it. Nothing polls: the guardian sleeps in `read` for the supervisor's whole life.
//!
//! The supervisor watches the guardian through a pidfd. If the guardian dies, a new one is
//! started and told everything again ([`Lifeline::replace`]); the first one is forked
//! before any thread exists, later ones are procman itself run with [`GUARDIAN_ARG`]
//! (a multi-threaded process may only exec after fork).

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};

use super::containment::{INSTANCE_ENV, cgroup, procfs, tree};

/// The argument that makes `procman` a guardian (reading its lifeline on stdin).
pub const GUARDIAN_ARG: &str = "--lifeline-guardian";

/// How long the guardian waits for what it killed to disappear.
const GUARDIAN_WAIT: Duration = Duration::from_secs(5);

/// What the guardian kills when the supervisor dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// A process group.
    Group(u32),
    /// One process, identified by pid and start time.
    Stray { pid: u32, start: u64 },
}

/// One message on the lifeline: 16 bytes (atomic on a pipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Watch(Target),
    ForgetGroup(u32),
    ForgetStray(u32),
}

impl Record {
    const SIZE: usize = 16;

    fn encode(self) -> [u8; Self::SIZE] {
        let (op, pid, start): (u32, u32, u64) = match self {
            Record::Watch(Target::Group(pgid)) => (1, pgid, 0),
            Record::ForgetGroup(pgid) => (2, pgid, 0),
            Record::Watch(Target::Stray { pid, start }) => (3, pid, start),
            Record::ForgetStray(pid) => (4, pid, 0),
        };
        let mut bytes = [0u8; Self::SIZE];
        bytes[..4].copy_from_slice(&op.to_le_bytes());
        bytes[4..8].copy_from_slice(&pid.to_le_bytes());
        bytes[8..].copy_from_slice(&start.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8; Self::SIZE]) -> Option<Record> {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (op, pid) = (word(0), word(4));
        let start = u64::from_le_bytes(bytes[8..].try_into().ok()?);
        if pid == 0 || pid > i32::MAX as u32 {
            return None;
        }
        Some(match op {
            1 => Record::Watch(Target::Group(pid)),
            2 => Record::ForgetGroup(pid),
            3 => Record::Watch(Target::Stray { pid, start }),
            4 => Record::ForgetStray(pid),
            _ => return None,
        })
    }
}

/// The supervisor's end of the lifeline.
#[derive(Debug)]
pub struct Lifeline {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    pipe: std::fs::File,
    guardian: u32,
    instance: String,
    cgroup: Option<PathBuf>,
    /// Everything the guardian was told to kill, to tell a new guardian again.
    targets: BTreeSet<Target>,
}

impl Lifeline {
    /// Forks the guardian for procman `instance` ([`INSTANCE_ENV`]); `cgroup` is procman's
    /// cgroup in cgroup mode. Must be called before any thread is started.
    pub fn start(instance: &str, cgroup: Option<&Path>) -> io::Result<Lifeline> {
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // SAFETY: called at the top of main, before the runtime or any other thread
        // exists, so the child may run ordinary Rust code after fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(write_end);
            guardian_after_fork(read_end, instance, cgroup);
        }
        drop(read_end);
        Ok(Lifeline {
            inner: Mutex::new(Inner {
                pipe: std::fs::File::from(write_end),
                guardian: pid as u32,
                instance: instance.to_owned(),
                cgroup: cgroup.map(Path::to_owned),
                targets: BTreeSet::new(),
            }),
        })
    }

    /// The guardian's pid.
    pub fn guardian(&self) -> u32 {
        self.lock().guardian
    }

    /// A pidfd of the guardian, readable once it exited.
    pub fn guardian_pidfd(&self) -> io::Result<OwnedFd> {
        let pid = self.guardian();
        let pid = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("no guardian"))?;
        // Our child and not reaped before `replace`, so the pid cannot have been reused.
        Ok(pidfd_open(pid, PidfdFlags::NONBLOCK)?)
    }

    /// Asks the guardian to SIGKILL process group `pgid` if the supervisor dies.
    pub fn watch(&self, pgid: u32) {
        self.send(Record::Watch(Target::Group(pgid)));
    }

    /// The group is gone (or was stopped): the guardian can forget it, so that a reused
    /// id is never killed.
    pub fn forget(&self, pgid: u32) {
        self.send(Record::ForgetGroup(pgid));
    }

    /// Asks the guardian to SIGKILL process `pid` (started at `start`) and what it started.
    pub fn watch_stray(&self, pid: u32, start: u64) {
        self.send(Record::Watch(Target::Stray { pid, start }));
    }

    /// Process `pid` is gone.
    pub fn forget_stray(&self, pid: u32) {
        self.send(Record::ForgetStray(pid));
    }

    /// The guardian exited: reaps it, starts a new one and tells it everything again.
    /// Returns the new guardian's pid.
    pub fn replace(&self) -> io::Result<u32> {
        let mut inner = self.lock();
        if let Some(old) = Pid::from_raw(inner.guardian as i32) {
            let _ = waitpid(Some(old), WaitOptions::NOHANG);
        }
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0("procman")
            .arg(GUARDIAN_ARG)
            .arg(&inner.instance)
            .args(inner.cgroup.iter())
            .env_clear()
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = command.spawn()?;
        inner.guardian = child.id();
        inner.pipe = std::fs::File::from(write_end);
        let targets: Vec<Target> = inner.targets.iter().copied().collect();
        for target in targets {
            inner.write(Record::Watch(target))?;
        }
        Ok(inner.guardian)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the guardian, unless it knows already.
    fn send(&self, record: Record) {
        let mut inner = self.lock();
        if apply(&mut inner.targets, record) {
            // A dead guardian is replaced, and told everything again, by the runner.
            let _ = inner.write(record);
        }
    }
}

/// Updates `targets`; returns whether it changed.
fn apply(targets: &mut BTreeSet<Target>, record: Record) -> bool {
    match record {
        Record::Watch(target) => targets.insert(target),
        Record::ForgetGroup(pgid) => targets.remove(&Target::Group(pgid)),
        Record::ForgetStray(pid) => {
            let before = targets.len();
            targets.retain(|t| !matches!(t, Target::Stray { pid: p, .. } if *p == pid));
            targets.len() != before
        }
    }
}

impl Inner {
    fn write(&mut self, record: Record) -> io::Result<()> {
        // 16 bytes < PIPE_BUF: atomic; the guardian drains continuously.
        self.pipe.write_all(&record.encode())
    }
}

/// The guardian started by [`Lifeline::replace`]: `procman --lifeline-guardian INSTANCE
/// [CGROUP]`, its lifeline on stdin. Returns only if this process was not started that way.
pub fn guardian_main() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(GUARDIAN_ARG)) {
        return;
    }
    let instance = args
        .next()
        .map(|i| i.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup = args.next().map(PathBuf::from);
    // SAFETY: fd 0 is the lifeline's read end, given to us alone by the supervisor.
    let pipe = unsafe { OwnedFd::from_raw_fd(0) };
    let is_pipe = rustix::fs::fstat(&pipe).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
    });
    if !is_pipe {
        eprintln!("procman: {GUARDIAN_ARG} is internal: it is started by the supervisor");
        std::process::exit(2);
    }
    guardian(pipe, &instance, cgroup)
}

/// The forked guardian: out of the terminal's process group, stdio on `/dev/null`, the
/// lifeline on fd 0, no other descriptor (so no reader waits on us for EOF).
fn guardian_after_fork(pipe: OwnedFd, instance: &str, cgroup: Option<&Path>) -> ! {
    let cgroup = cgroup.map(Path::to_owned);
    let raw = pipe.into_raw_fd();
    // SAFETY: plain system calls on descriptors this forked child owns and a static path.
    let ok = unsafe {
        libc::setpgid(0, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(raw, 0) == 0 && null >= 0 && libc::dup2(null, 1) == 1 && libc::dup2(null, 2) == 2
    };
    if !ok {
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: fd 0 now holds the pipe's read end and nothing else owns it.
    guardian(unsafe { OwnedFd::from_raw_fd(0) }, instance, cgroup)
}

fn guardian(pipe: OwnedFd, instance: &str, cgroup: Option<PathBuf>) -> ! {
    // SAFETY: plain system calls on integers; no memory involved.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0);
    }
    debug_assert_eq!(pipe.as_raw_fd(), 0);
    let mut pipe = std::fs::File::from(pipe);
    let mut targets: BTreeSet<Target> = BTreeSet::new();
    let mut buf = [0u8; Record::SIZE];
    while pipe.read_exact(&mut buf).is_ok() {
        if let Some(record) = Record::decode(&buf) {
            apply(&mut targets, record);
        }
    }
    // The supervisor is gone.
    if let Some(dir) = &cgroup {
        cgroup::kill(dir);
    }
    // Processes that left the tree while their parent ran, and (cgroup mode) those that
    // moved themselves out of the cgroup (root or a delegated user may), are still found
    // by what they inherited.
    let marked = (!instance.is_empty()).then(|| format!("{INSTANCE_ENV}={instance}"));
    // A process that started before the supervisor cannot have inherited its mark: only
    // younger ones have their environment read (`instance` is `PID-STARTTIME`).
    let born = instance
        .rsplit_once('-')
        .and_then(|(_, start)| start.parse::<u64>().ok())
        .unwrap_or(0);
    let chosen = |p: &procfs::Proc| {
        targets.contains(&Target::Group(p.pgid))
            || targets.contains(&Target::Stray {
                pid: p.pid,
                start: p.start,
            })
            || (p.start >= born && marked.as_ref().is_some_and(|m| procfs::has_env(p.pid, m)))
    };
    tree::kill(chosen, &[std::process::id()], GUARDIAN_WAIT);
    if let Some(dir) = &cgroup {
        cgroup::wait_empty(dir, GUARDIAN_WAIT);
        cgroup::remove_tree(dir);
    }
    // SAFETY: ends the guardian without running the parent's atexit handlers.
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_ignored() {
        for record in [
            Record::Watch(Target::Group(42)),
            Record::ForgetGroup(42),
            Record::Watch(Target::Stray {
                pid: 7,
                start: u64::MAX,
            }),
            Record::ForgetStray(7),
        ] {
            assert_eq!(Record::decode(&record.encode()), Some(record));
        }
        assert_eq!(Record::decode(&[0xff; Record::SIZE]), None);
        assert_eq!(Record::decode(&[0; Record::SIZE]), None);
    }
}
