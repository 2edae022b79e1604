//! cgroup v2: procman's own cgroup with one child cgroup per process run. The kernel
//! keeps every descendant of the process in it whatever it does (`setsid`, double forks),
//! kills them all at once (`cgroup.kill`) and reports when none is left (`populated 0` in
//! `cgroup.events`, which inotify wakes us for).
//!
//! Layout: `{mount}{own cgroup}/procman-{pid}-{start time}/{seq}-{name}`. The top
//! directory is named after the supervisor (its [`super::INSTANCE_ENV`]), so that whoever
//! finds one left behind (after the supervisor and its guardian were both SIGKILLed) knows
//! whose it was.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use crate::control::sanitize;

/// procman's cgroup: the parent of one cgroup per process run.
#[derive(Debug)]
pub struct Tree {
    /// Its directory in the cgroup filesystem.
    dir: PathBuf,
    /// That directory, open: each run's cgroup is made, read and removed relative to it,
    /// without walking the whole path each time.
    handle: Arc<OwnedFd>,
    /// Its path as `/proc/PID/cgroup` shows it.
    name: String,
    next: AtomicU64,
}

impl Tree {
    /// Creates procman's cgroup below the one this process runs in; fails (saying why)
    /// where cgroup v2 is missing, not writable, or lacks `cgroup.kill` (Linux < 5.14).
    pub fn create(instance: &str) -> io::Result<Tree> {
        let mount = mount_point()?;
        let own = own_cgroup()?;
        let parent = mount.join(own.trim_start_matches('/'));
        // Placing a process needs write access to the cgroup it leaves as well.
        rustix::fs::access(parent.join("cgroup.procs"), rustix::fs::Access::WRITE_OK)?;
        // The name is taken only by another PID 1 started in the same clock tick.
        let mut attempt = 0;
        let (leaf, dir) = loop {
            let leaf = match attempt {
                0 => format!("procman-{instance}"),
                n => format!("procman-{instance}-{n}"),
            };
            let dir = parent.join(&leaf);
            match std::fs::create_dir(&dir) {
                Ok(()) => break (leaf, dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        let usable = std::fs::metadata(dir.join("cgroup.kill"))
            .map_err(|_| io::Error::other("cgroup.kill is missing (Linux 5.14 or later needed)"))
            .and_then(|_| {
                rustix::fs::access(dir.join("cgroup.procs"), rustix::fs::Access::WRITE_OK)
                    .map_err(io::Error::from)
            });
        if let Err(e) = usable {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        let handle = match open_dir(rustix::fs::CWD, &dir) {
            Ok(handle) => Arc::new(handle),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e.into());
            }
        };
        let name = format!("{}/{leaf}", own.trim_end_matches('/'));
        Ok(Tree {
            dir,
            handle,
            name,
            next: AtomicU64::new(1),
        })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty cgroup for one run of process `name`.
    pub fn leaf(&self, name: &str) -> io::Result<Leaf> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let base = format!("{seq}-{}", sanitize(name));
        rustix::fs::mkdirat(&*self.handle, &base, Mode::from_raw_mode(0o755))?;
        let leaf = Leaf {
            parent: Arc::clone(&self.handle),
            dir: self.dir.join(&base),
            name: format!("{}/{base}", self.name),
            handle: None,
            base,
        };
        match open_dir(&*self.handle, &leaf.base) {
            Ok(handle) => Ok(Leaf {
                handle: Some(handle),
                ..leaf
            }),
            Err(e) => {
                leaf.remove();
                Err(e.into())
            }
        }
    }
}

/// Opens directory `path` (relative to `at`) without following a symlink.
fn open_dir(at: impl AsFd, path: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The cgroup of one process run.
#[derive(Debug)]
pub struct Leaf {
    /// procman's cgroup, open.
    parent: Arc<OwnedFd>,
    /// Its directory name in there.
    base: String,
    dir: PathBuf,
    /// Its path as `/proc/PID/cgroup` shows it.
    name: String,
    /// The directory, open until the process is placed (`CLONE_INTO_CGROUP` takes it).
    handle: Option<OwnedFd>,
}

impl Leaf {
    /// The directory to start the process in.
    pub fn handle(&self) -> Option<BorrowedFd<'_>> {
        self.handle.as_ref().map(AsFd::as_fd)
    }

    /// The process is placed (or failed to start): the descriptor is no longer needed.
    pub fn placed(&mut self) {
        self.handle = None;
    }

    /// `cgroup.events`, for inotify.
    pub fn events(&self) -> PathBuf {
        self.dir.join("cgroup.events")
    }

    /// Whether any process is left in it.
    pub fn populated(&self) -> bool {
        let events = rustix::fs::openat(
            &*self.parent,
            format!("{}/cgroup.events", self.base),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let mut text = String::new();
        events.is_ok_and(|fd| {
            std::fs::File::from(fd).read_to_string(&mut text).is_ok() && is_populated(&text)
        })
    }

    /// Sends `signal` to every process in it. Each is addressed by a pidfd and checked to
    /// still be in this cgroup, so a pid reused meanwhile is never signalled.
    pub fn signal(&self, signal: Signal) {
        let Ok(list) = std::fs::read_to_string(self.dir.join("cgroup.procs")) else {
            return;
        };
        for pid in list.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let Some(pid) = Pid::from_raw(pid) else {
                continue;
            };
            let Ok(fd) = pidfd_open(pid, PidfdFlags::empty()) else {
                continue;
            };
            if self.contains(pid) {
                let _ = pidfd_send_signal(&fd, signal);
            }
        }
    }

    /// SIGKILL to every process in it, in one step.
    pub fn kill(&self) {
        kill(&self.dir);
    }

    /// Removes it (once empty): one `rmdir`, unless its processes made cgroups below it.
    pub fn remove(&self) {
        if rustix::fs::unlinkat(&*self.parent, &self.base, AtFlags::REMOVEDIR).is_err() {
            remove_tree(&self.dir);
        }
    }

    fn contains(&self, pid: Pid) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.as_raw_pid())) else {
            return false;
        };
        text.lines()
            .filter_map(|l| l.strip_prefix("0::"))
            .any(|path| path == self.name || path.starts_with(&format!("{}/", self.name)))
    }
}

/// `populated 1` in `dir/cgroup.events`: a process is left in it or below it.
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|text| is_populated(&text))
}

/// Whether `text` (of a `cgroup.events`) says `populated 1`.
fn is_populated(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "populated 1")
}

/// Waits (up to `timeout`) until no process is left in `dir` or below; woken by inotify
/// on `cgroup.events`, not by polling. Returns whether it is empty.
pub fn wait_empty(dir: &Path, timeout: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::fs::inotify;
    let deadline = Instant::now() + timeout;
    let Ok(fd) = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
    else {
        return !populated(dir);
    };
    // Watch first, then look: a change in between still wakes us.
    if inotify::add_watch(&fd, dir.join("cgroup.events"), inotify::WatchFlags::MODIFY).is_err() {
        return !populated(dir);
    }
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
    loop {
        if !populated(dir) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(left) = Timespec::try_from(left) else {
            return false;
        };
        if left.tv_sec == 0 && left.tv_nsec == 0 {
            return false;
        }
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        if poll(&mut fds, Some(&left)).is_err() {
            return !populated(dir);
        }
        let mut events = inotify::Reader::new(&fd, &mut buf);
        while events.next().is_ok() {}
    }
}

/// SIGKILL to every process in `dir` and below (`cgroup.kill`).
pub fn kill(dir: &Path) {
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(dir.join("cgroup.kill"))
    {
        let _ = file.write_all(b"1");
    }
}

/// Removes the cgroup `dir` and every cgroup below it, deepest first; a cgroup that
/// still holds a process stays.
pub fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid systems).
fn mount_point() -> io::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    mounts
        .lines()
        .find_map(|line| {
            // `id parent major:minor root mountpoint options… - fstype source superoptions`
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(unescape)
        })
        .ok_or_else(|| io::Error::other("no cgroup v2 hierarchy is mounted"))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(value)) => {
                out.push(value);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// This process's cgroup v2 path (`0::/…` in `/proc/self/cgroup`).
fn own_cgroup() -> io::Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("this process is in no cgroup v2 hierarchy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape(r"/sys/fs/cgroup/a\040b\134c"),
            PathBuf::from(r"/sys/fs/cgroup/a b\c")
        );
        assert_eq!(unescape(r"/x\04"), PathBuf::from(r"/x\04"));
    }
}
