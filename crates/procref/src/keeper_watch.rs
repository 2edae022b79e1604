//! Clients watch the keeper of the service they use.
//!
//! A keeper's death is visible in the kernel (its keeper slot in the set drops to 0, its
//! pidfd becomes readable), but only a living process can act on it. So each
//! [`SharedService`](crate::SharedService) that has acquired its service runs one thread
//! that sleeps in `poll` on the keeper's pidfd; when the keeper dies, the thread asks the
//! service to adopt the instance, which starts a new keeper under the startup lock (so of
//! all the clients watching, exactly one does). The thread ends when the service object is
//! dropped (a pipe whose write end the object owns hangs up) or when there is no live
//! instance left to guard.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use rustix::event::{PollFd, PollFlags, poll};

use crate::discovery::Record;
use crate::process::Process;
use crate::{Error, Result};

/// A running watch; dropping it ends the thread.
pub(crate) struct KeeperWatch {
    thread: JoinHandle<()>,
    /// Write end of the stop pipe: closing it wakes the thread, which then exits.
    _stop: OwnedFd,
}

impl KeeperWatch {
    /// Watches the keeper named in the discovery file `discovery`. Each time it is gone
    /// (or none is named), calls `on_keeper_gone`, which returns whether a keeper now
    /// guards a live instance (keep watching) or not (stop).
    pub(crate) fn start(
        discovery: PathBuf,
        on_keeper_gone: impl FnMut() -> bool + Send + 'static,
    ) -> Result<KeeperWatch> {
        let (stop_read, stop_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| Error::io("creating the keeper-watch pipe", e.into()))?;
        let thread = std::thread::Builder::new()
            .name("procref-watch".into())
            .spawn(move || watch(&discovery, &stop_read, on_keeper_gone))
            .map_err(|e| Error::io("starting the keeper-watch thread", e))?;
        Ok(KeeperWatch {
            thread,
            _stop: stop_write,
        })
    }

    /// Whether the thread is still watching.
    pub(crate) fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

fn watch(discovery: &Path, stop: &OwnedFd, mut on_keeper_gone: impl FnMut() -> bool) {
    // Set after a round without a keeper to wait on: if the next round has none either, a
    // keeper we cannot identify guards the instance, and there is nothing left to watch.
    let mut unwatchable = false;
    loop {
        let keeper = Record::read_unchecked(discovery)
            .ok()
            .flatten()
            .and_then(|record| record.keeper)
            .and_then(|k| Process::open_verified(k.pid, k.start_time));
        match keeper {
            Some(keeper) => {
                if !exited_before_stop(&keeper, stop) {
                    return;
                }
                unwatchable = false;
            }
            None if unwatchable => return,
            None => unwatchable = true,
        }
        if !on_keeper_gone() {
            return;
        }
    }
}

/// Sleeps until `keeper` exits (true) or the stop pipe hangs up (false).
fn exited_before_stop(keeper: &Process, stop: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            PollFd::new(keeper, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) if !fds[1].revents().is_empty() => return false,
            Ok(_) if !fds[0].revents().is_empty() => return true,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}
