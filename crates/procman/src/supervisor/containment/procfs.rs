//! The process table as `/proc` shows it: who is whose parent, in which process group,
//! since when, and which pipes a process holds.

use std::path::Path;

/// One process, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// Parent's pid (after any reparenting).
    pub ppid: u32,
    /// Process group.
    pub pgid: u32,
    /// Start time in clock ticks since boot: with `pid`, identifies the process even after
    /// its pid is reused.
    pub start: u64,
    /// `Z` for a zombie, `R`, `S`, `D`, `T`… otherwise.
    pub state: u8,
}

impl Proc {
    /// An exited process that its parent has not reaped yet.
    pub fn is_zombie(&self) -> bool {
        self.state == b'Z'
    }
}

/// Reads one process; `None` if it is gone (or `/proc` is not mounted).
pub fn stat(pid: u32) -> Option<Proc> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// This process's group, as the other entries show theirs: 0 when it lies outside our pid
/// namespace (procman as PID 1 of a container).
pub fn own_group() -> u32 {
    stat(std::process::id()).map_or(0, |p| p.pgid)
}

/// Every process, in no particular order.
pub fn all() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let name = entry.ok()?.file_name();
        let pid: u32 = name.to_str()?.parse().ok()?;
        stat(pid)
    })
    .collect()
}

/// The command name (`comm`), for log lines.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// Whether `pid` has a descriptor open on the pipe with inode `inode`.
pub fn holds_pipe(pid: u32, inode: u64) -> bool {
    let wanted = format!("pipe:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == Path::new(&wanted)))
}

/// This process's descriptors above 2 without close-on-exec: what it inherited to pass on
/// to its children (everything procman opens itself is close-on-exec).
pub fn inheritable_descriptors() -> Vec<i32> {
    /// `O_CLOEXEC` as `fdinfo` shows it, in its octal `flags:`.
    const CLOEXEC: u32 = 0o2_000_000;
    let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    fds.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
        // The listing's own descriptor is closed by the time its entry is read.
        let info = std::fs::read_to_string(entry.path()).ok()?;
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
        let flags = u32::from_str_radix(flags.trim(), 8).ok()?;
        (fd > 2 && flags & CLOEXEC == 0).then_some(fd)
    })
    .collect()
}

/// Whether `pid`'s initial environment has `entry` (`KEY=VALUE`).
pub fn has_env(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
}

/// `pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
/// stime cutime cstime priority nice threads itrealvalue starttime …`; `comm` may contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(pid: u32, text: &[u8]) -> Option<Proc> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(Proc {
        pid,
        state: *fields.first()?.as_bytes().first()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn descriptors_without_close_on_exec_are_inheritable() {
        use rustix::fs::{Mode, OFlags, open};
        let passed = open("/dev/null", OFlags::RDONLY, Mode::empty()).unwrap();
        let private = open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        let found = inheritable_descriptors();
        assert!(found.contains(&passed.as_raw_fd()), "{found:?}");
        assert!(!found.contains(&private.as_raw_fd()), "{found:?}");
        assert!(found.iter().all(|&fd| fd > 2), "{found:?}");
    }

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        let line = b"42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 9876 1 2 3\n";
        let p = parse_stat(42, line).unwrap();
        assert_eq!(
            p,
            Proc {
                pid: 42,
                ppid: 7,
                pgid: 42,
                start: 9876,
                state: b'S'
            }
        );
        assert!(parse_stat(1, b"1 (x) S 0").is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id()).unwrap();
        assert_eq!(
            me.ppid,
            rustix::process::getppid().unwrap().as_raw_pid() as u32
        );
        assert!(!me.is_zombie());
        assert!(all().iter().any(|p| p.pid == me.pid));
    }

    #[test]
    fn sees_which_process_holds_a_pipe() {
        use std::os::unix::fs::MetadataExt;
        let (read, write) = rustix::pipe::pipe().unwrap();
        let inode = std::fs::File::from(read).metadata().unwrap().ino();
        assert!(holds_pipe(std::process::id(), inode));
        drop(write);
        assert!(!holds_pipe(std::process::id(), inode));
    }
}
