//! One procman per config and per log directory: an exclusive, non-blocking `flock` on
//! the config file (as procman 0.12 does) and on the log directory, taken before anything
//! is created, truncated or spawned. The kernel drops them when the server dies, however
//! it dies, so nothing stale can block the next run.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use rustix::fs::{FlockOperation, flock};

/// Held for the server's life.
#[derive(Debug)]
pub struct InstanceLock {
    _config: File,
    _log_dir: Option<File>,
}

impl InstanceLock {
    /// Locks `config`, or fails with `another procman (pid N) is running CONFIG`.
    pub fn config(config: &Path) -> Result<InstanceLock> {
        let file = open(config, false).with_context(|| format!("opening {}", config.display()))?;
        if let Err(holder) = try_lock(&file) {
            bail!(
                "another procman{} is running {}",
                pid_text(holder),
                config.display()
            );
        }
        Ok(InstanceLock {
            _config: file,
            _log_dir: None,
        })
    }

    /// Also locks the log directory `dir` (creating it, mode 0700, if missing), so that a
    /// procman for another config writing its logs there is refused before it clears them.
    pub fn log_dir(mut self, dir: &Path) -> Result<InstanceLock> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the log directory {}", dir.display()))?;
        let file = open(dir, true)
            .with_context(|| format!("opening the log directory {}", dir.display()))?;
        if let Err(holder) = try_lock(&file) {
            bail!(
                "another procman{} writes its logs to {}; stop it, or give this one its own --log-dir",
                pid_text(holder),
                dir.display()
            );
        }
        self._log_dir = Some(file);
        Ok(self)
    }
}

/// The pid of the procman holding `config`'s lock, if any, without touching the lock
/// (a lookup in `/proc/locks`).
pub fn holder_of(config: &Path) -> Option<u32> {
    holder(&open(config, false).ok()?)
}

fn open(path: &Path, directory: bool) -> std::io::Result<File> {
    let mut flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

/// Takes the lock; if another process holds it, fails with that process's pid when
/// `/proc/locks` names it.
fn try_lock(file: &File) -> Result<(), Option<u32>> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(_) => Err(holder(file)),
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
}

/// The pid holding a `flock` on `file`: `/proc/locks` lines look like
/// `1: FLOCK  ADVISORY  WRITE 4242 fe:00:5341447 0 EOF` (major:minor in hex, inode).
fn holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let device = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(meta.dev()),
        rustix::fs::minor(meta.dev()),
        meta.ino()
    );
    let me = std::process::id();
    std::fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .filter(|line| line.contains("FLOCK") && !line.contains("->"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == device)?;
            let pid: u32 = fields.get(at.checked_sub(1)?)?.parse().ok()?;
            (pid != me).then_some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("procman.yaml");
        std::fs::write(&config, "a:\n  run: true\n").unwrap();
        // A child process holds the lock, as another procman would.
        let mut holder = std::process::Command::new("flock")
            .args([
                "--exclusive",
                "--no-fork",
                config.to_str().unwrap(),
                "sleep",
                "30",
            ])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            match InstanceLock::config(&config) {
                Err(e) => break e.to_string(),
                Ok(lock) => {
                    drop(lock);
                    assert!(std::time::Instant::now() < deadline, "flock never locked");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        };
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(err.starts_with("another procman (pid "), "{err}");
        assert!(
            err.ends_with(&format!("is running {}", config.display())),
            "{err}"
        );
        // Released with its holder.
        let lock = InstanceLock::config(&config).unwrap();
        let logs = dir.path().join("logs");
        let lock = lock.log_dir(&logs).unwrap();
        let other = dir.path().join("other.yaml");
        std::fs::write(&other, "a:\n  run: true\n").unwrap();
        let err = InstanceLock::config(&other)
            .unwrap()
            .log_dir(&logs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("writes its logs to"), "{err}");
        drop(lock);
    }
}
