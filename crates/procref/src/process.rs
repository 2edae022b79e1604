//! Process utilities: is it alive, stop it, and never signal the wrong process.
//!
//! Everything goes through a pidfd (Linux ≥ 5.3): once a [`Process`] is opened, its
//! pidfd refers to that process and no other, so a pid reused by another program is
//! never signalled, and waiting for exit is a `poll` on the pidfd, not a sleep loop.
//! A process counts as gone as soon as it has exited, even while it is still a zombie.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use crate::{Error, Result};

/// How [`stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The process was not running.
    AlreadyExited,
    /// It exited after SIGTERM, within the timeout.
    Terminated,
    /// It ignored SIGTERM for the whole timeout and was killed with SIGKILL.
    Killed,
}

/// Whether `pid` names a running process (not a zombie). `false` for pid 0.
pub fn is_alive(pid: u32) -> bool {
    Process::open(pid).is_ok_and(|p| p.is_alive())
}

/// Sends SIGTERM to `pid`. Fine if it has already exited.
pub fn terminate(pid: u32) -> Result<()> {
    signal_pid(pid, Signal::TERM)
}

/// Sends SIGKILL to `pid`. Fine if it has already exited.
pub fn kill(pid: u32) -> Result<()> {
    signal_pid(pid, Signal::KILL)
}

/// SIGTERM, wait up to `timeout` for exit, then SIGKILL and wait for that too.
pub fn stop(pid: u32, timeout: Duration) -> Result<Stopped> {
    match Process::open(pid) {
        Ok(p) => p.stop(timeout),
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
            Ok(Stopped::AlreadyExited)
        }
        Err(e) => Err(e),
    }
}

/// When `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
/// Together with the pid it identifies a process across pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

fn signal_pid(pid: u32, signal: Signal) -> Result<()> {
    match Process::open(pid) {
        Ok(p) => p.signal(signal),
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A process pinned by a pidfd.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    pidfd: OwnedFd,
}

impl Process {
    /// Opens a pidfd for `pid`. Refuses pid 0 and 1 and pids out of range, which no
    /// caller of this crate means to signal.
    pub fn open(pid: u32) -> Result<Process> {
        let raw = i32::try_from(pid)
            .ok()
            .filter(|&p| p > 1)
            .ok_or(Error::InvalidPid(pid))?;
        let rpid = Pid::from_raw(raw).ok_or(Error::InvalidPid(pid))?;
        let pidfd = pidfd_open(rpid, PidfdFlags::empty())
            .map_err(|e| Error::io(format!("pidfd_open({pid})"), e.into()))?;
        Ok(Process { pid, pidfd })
    }

    /// Opens `pid` only if it is the same process that had `start_time` (see
    /// [`start_time`]); `None` if it is gone or the pid now belongs to another process.
    pub fn open_verified(pid: u32, start: u64) -> Option<Process> {
        let p = Process::open(pid).ok()?;
        // Checked after opening: from here on the pidfd pins whichever process we verified.
        (start_time(pid) == Some(start) && p.is_alive()).then_some(p)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running (exited zombies are not).
    pub fn is_alive(&self) -> bool {
        !self.wait_exit(Some(Duration::ZERO))
    }

    /// Sends `signal`. Fine if the process has already exited.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        match pidfd_send_signal(self.pidfd.as_fd(), signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::io(format!("signalling pid {}", self.pid), e.into())),
        }
    }

    /// Waits (in `poll`) until the process exits; `None` waits without limit. Returns
    /// whether it has exited.
    pub fn wait_exit(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ts = left.map(|l| Timespec {
                tv_sec: l.as_secs() as _,
                tv_nsec: l.subsec_nanos() as _,
            });
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match poll(&mut fds, ts.as_ref()) {
                Ok(n) => return n > 0,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return true,
            }
        }
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL and wait for the exit.
    pub fn stop(&self, timeout: Duration) -> Result<Stopped> {
        if !self.is_alive() {
            return Ok(Stopped::AlreadyExited);
        }
        self.signal(Signal::TERM)?;
        if self.wait_exit(Some(timeout)) {
            return Ok(Stopped::Terminated);
        }
        self.signal(Signal::KILL)?;
        self.wait_exit(Some(Duration::from_secs(5)));
        Ok(Stopped::Killed)
    }
}

/// The pidfd, readable once the process has exited: for `poll` or `epoll` beside other
/// descriptors.
impl AsFd for Process {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn start_time_identifies_a_process() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(t));
        assert!(Process::open_verified(me, t).is_some());
        assert!(Process::open_verified(me, t + 1).is_none());
    }

    #[test]
    fn refuses_pid_zero_and_one() {
        assert!(matches!(terminate(0), Err(Error::InvalidPid(0))));
        assert!(matches!(kill(1), Err(Error::InvalidPid(1))));
        assert!(!is_alive(0));
    }

    #[test]
    fn stop_terminates_then_kills() {
        let mut polite = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(is_alive(polite.id()));
        assert_eq!(
            stop(polite.id(), Duration::from_secs(5)).unwrap(),
            Stopped::Terminated
        );
        polite.wait().unwrap();

        let mut stubborn = Command::new("bash")
            .args(["-c", "trap '' TERM; echo ready; exec sleep 30"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(stubborn.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let began = Instant::now();
        assert_eq!(
            stop(stubborn.id(), Duration::from_millis(300)).unwrap(),
            Stopped::Killed
        );
        assert!(began.elapsed() >= Duration::from_millis(300));
        stubborn.wait().unwrap();
        assert_eq!(
            stop(stubborn.id(), Duration::from_secs(1)).unwrap(),
            Stopped::AlreadyExited
        );
    }

    #[test]
    fn zombies_are_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let p = Process::open(child.id()).unwrap();
        assert!(p.wait_exit(Some(Duration::from_secs(5))));
        // Not reaped yet: a zombie, which must not count as alive.
        assert!(!is_alive(child.id()));
        child.wait().unwrap();
    }
}
