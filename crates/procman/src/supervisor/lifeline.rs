//! No orphans: children die with the supervisor, even when it is SIGKILLed.
//!
//! Before anything else starts (while the supervisor is still single-threaded), it forks
//! a small guardian that holds the read end of a pipe. The supervisor tells it each
//! child's process group as it spawns it. When the supervisor dies, however it dies, the
//! kernel closes the write end; the guardian's blocked `read` returns EOF and it sends
//! SIGKILL to every process group it was told about, then exits. Nothing polls: the
//! guardian sleeps in `read` for the supervisor's whole life.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

/// The supervisor's end of the lifeline.
#[derive(Debug)]
pub struct Lifeline {
    pipe: Mutex<std::fs::File>,
}

impl Lifeline {
    /// Forks the guardian. Must be called before any thread is started.
    pub fn start() -> io::Result<Lifeline> {
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // SAFETY: called at the top of main, before the runtime or any other thread
        // exists, so the child may run ordinary Rust code after fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(write_end);
            guardian(read_end);
        }
        drop(read_end);
        Ok(Lifeline {
            pipe: Mutex::new(std::fs::File::from(write_end)),
        })
    }

    /// Asks the guardian to SIGKILL process group `pgid` if the supervisor dies.
    pub fn watch(&self, pgid: u32) {
        self.send(pgid as i32);
    }

    /// The group is gone (or was stopped): the guardian can forget it, so that a reused
    /// id is never killed.
    pub fn forget(&self, pgid: u32) {
        self.send(-(pgid as i32));
    }

    fn send(&self, value: i32) {
        // 4 bytes < PIPE_BUF: atomic; the guardian drains continuously so this never blocks long.
        let mut pipe = self.pipe.lock().unwrap_or_else(|p| p.into_inner());
        let _ = pipe.write_all(&value.to_le_bytes());
    }
}

fn guardian(pipe: OwnedFd) -> ! {
    // Out of the terminal's process group (Ctrl-C is the supervisor's to handle) and with
    // no inherited descriptors but the pipe, so no reader waits on us for EOF.
    // SAFETY: plain system calls on integers and a static path.
    unsafe {
        libc::setpgid(0, 0);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
        }
    }
    let keep = std::os::fd::IntoRawFd::into_raw_fd(pipe);
    // SAFETY: moves the pipe to fd 3 (it is above stdio, so dup2 cannot clobber it) and
    // closes every other descriptor; we own all of them in this forked child.
    let fd = unsafe {
        let fd = if keep == 3 { 3 } else { libc::dup2(keep, 3) };
        if fd == 3 {
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0);
        }
        fd
    };
    if fd != 3 {
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: fd 3 holds the pipe's read end and nothing else owns it.
    let mut pipe =
        std::fs::File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(3) });
    let mut groups: Vec<i32> = Vec::new();
    let mut buf = [0u8; 4];
    while pipe.read_exact(&mut buf).is_ok() {
        let value = i32::from_le_bytes(buf);
        if value > 0 {
            groups.push(value);
        } else {
            groups.retain(|&g| g != -value);
        }
    }
    for pgid in groups {
        // SAFETY: kill with a negative pid signals a process group; no memory involved.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    // SAFETY: ends the guardian without running the parent's atexit handlers.
    unsafe { libc::_exit(0) }
}
