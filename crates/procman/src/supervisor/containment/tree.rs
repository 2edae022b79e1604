//! Killing a set of processes together with everything they started, without a race
//! against their forks: every member is stopped (SIGSTOP, which cannot be caught) before
//! the table is read again for new children, until no new one appears; then all get
//! SIGKILL. Each process is addressed through a pidfd opened and checked against its start
//! time, so a reused pid is never signalled.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::procfs::{self, Proc};

/// How many times the table is read again for children forked meanwhile.
const MAX_ROUNDS: usize = 32;

/// A process that was killed.
#[derive(Debug)]
pub struct Killed {
    /// Its pid.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
}

/// SIGKILLs every live process that `seed` selects, and all their descendants, then
/// waits up to `wait` until they are gone. Processes in `spare` (and their descendants)
/// are left alone.
pub fn kill(seed: impl Fn(&Proc) -> bool, spare: &[u32], wait: Duration) -> Vec<Killed> {
    let mut held: HashMap<u32, (OwnedFd, Killed)> = HashMap::new();
    let mut refused: HashSet<u32> = spare.iter().copied().collect();
    for _ in 0..MAX_ROUNDS {
        let table = procfs::all();
        let mut chosen: HashSet<u32> = held.keys().copied().collect();
        let mut found = Vec::new();
        // Seeds first, then children of anything chosen, until the set stops growing.
        loop {
            let before = found.len();
            for p in &table {
                if p.is_zombie() || chosen.contains(&p.pid) || refused.contains(&p.pid) {
                    continue;
                }
                if chosen.contains(&p.ppid) || seed(p) {
                    chosen.insert(p.pid);
                    found.push(*p);
                }
            }
            if found.len() == before {
                break;
            }
        }
        if found.is_empty() {
            break;
        }
        for p in found {
            match hold(&p) {
                Some(fd) => {
                    let _ = pidfd_send_signal(&fd, Signal::STOP);
                    let killed = Killed {
                        pid: p.pid,
                        comm: procfs::comm(p.pid),
                    };
                    held.insert(p.pid, (fd, killed));
                }
                None => {
                    refused.insert(p.pid);
                }
            }
        }
    }
    for (fd, _) in held.values() {
        let _ = pidfd_send_signal(fd, Signal::KILL);
    }
    let fds: Vec<&OwnedFd> = held.values().map(|(fd, _)| fd).collect();
    wait_gone(&fds, wait);
    let mut killed: Vec<Killed> = held.into_values().map(|(_, k)| k).collect();
    killed.sort_by_key(|k| k.pid);
    killed
}

/// A pidfd for `p`, if it is still the process that was read (same start time).
fn hold(p: &Proc) -> Option<OwnedFd> {
    let pid = Pid::from_raw(p.pid as i32)?;
    let fd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    // The pidfd pins the process; the table read after it tells whether it is the one seen.
    (procfs::stat(p.pid)?.start == p.start).then_some(fd)
}

/// Waits until every pidfd is readable (its process exited) or `wait` has passed.
pub fn wait_gone(fds: &[&OwnedFd], wait: Duration) {
    let deadline = Instant::now() + wait;
    let mut pending: Vec<&OwnedFd> = fds.to_vec();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut polled: Vec<PollFd<'_>> = pending
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::IN))
            .collect();
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        if poll(&mut polled, Some(&timeout)).is_err() {
            return;
        }
        let still: Vec<bool> = polled.iter().map(|p| p.revents().is_empty()).collect();
        pending = pending
            .into_iter()
            .zip(still)
            .filter_map(|(fd, waiting)| waiting.then_some(fd))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn kills_a_tree_including_a_new_session_and_spares_what_it_is_told() {
        let marker = format!("1000.{}{}", std::process::id(), 4242);
        // A shell whose child escapes into a new session and forks again.
        let mut shell = Command::new("bash")
            .args([
                "-c",
                &format!("setsid bash -c 'sleep {marker} & wait' & sleep {marker} & wait"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let spared = Command::new("sleep").arg(&marker).spawn().unwrap();
        let matching = |m: &str| -> Vec<u32> {
            procfs::all()
                .into_iter()
                .filter(|p| {
                    std::fs::read(format!("/proc/{}/cmdline", p.pid))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(m))
                })
                .filter(|p| !p.is_zombie())
                .map(|p| p.pid)
                .collect()
        };
        // Both sleeps of the tree have exec'd (a fork not yet exec'd shows its parent's
        // command line, so counting every match would proceed too early).
        let sleeping = |m: &str| {
            procfs::all()
                .into_iter()
                .filter(|p| p.pid != spared.id() && !p.is_zombie())
                .filter(|p| {
                    std::fs::read(format!("/proc/{}/cmdline", p.pid))
                        .is_ok_and(|c| c.starts_with(format!("sleep\0{m}").as_bytes()))
                })
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sleeping(&marker) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let root = shell.id();
        let killed = kill(|p| p.pid == root, &[spared.id()], Duration::from_secs(5));
        assert!(killed.iter().any(|k| k.pid == root), "{killed:?}");
        assert!(killed.len() >= 4, "{killed:?}");
        let _ = shell.wait();
        let left = matching(&marker);
        assert_eq!(left, vec![spared.id()], "left behind: {left:?}");
        let mut spared = spared;
        let _ = spared.kill();
        let _ = spared.wait();
    }
}
