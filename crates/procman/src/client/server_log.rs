//! The output of a server that `attach` (or the TUI) started: a private file beside its
//! runtime files, and what a client reads from it when that server fails to start.
//!
//! The client keeps its own descriptor on the file: the server removes the file when it
//! leaves, and the lines that say why it left are read after that.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

/// Lines of the server's output a start failure shows.
pub(super) const SHOWN_LINES: usize = 20;
/// Bytes read from the end of the output to find them.
const READ_AT_MOST: u64 = 64 * 1024;
/// How the supervisor's own lines are named in its output.
const SUPERVISOR_PREFIX: &str = crate::output::SUPERVISOR;
/// How the supervisor announces why it stops (see the state machine's `shutdown`).
const SHUTTING_DOWN: &str = "shutting down: ";

/// A server's output file, read from where this client began to care about it.
#[derive(Debug)]
pub(super) struct ServerLog {
    path: PathBuf,
    file: File,
    /// Length of the file when this client started or joined the server: what comes
    /// after is this server's, since this client arrived.
    start: u64,
}

impl ServerLog {
    /// Opens (creating it, mode 0600) the output file for a server about to be started,
    /// appending to the previous servers' output; returns the file to give the server and
    /// the client's view of it. Never through a symlink, never a file that is not a plain
    /// file of ours private to us: such a file is refused, untouched.
    pub(super) fn create(path: &Path) -> Result<(File, ServerLog)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            // No symlink; no blocking on a planted FIFO.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => refuse(path, "it is a symbolic link".into()),
                _ => anyhow::Error::new(e)
                    .context(format!("opening the server log {}", path.display())),
            })?;
        let start = verify(path, &file)?;
        let log = ServerLog {
            path: path.to_owned(),
            file: file.try_clone()?,
            start,
        };
        Ok((file, log))
    }

    /// Opens the output file of a running server this client joins, if there is one that
    /// passes the same checks.
    pub(super) fn join(path: &Path) -> Option<ServerLog> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        let start = verify(path, &file).ok()?;
        Some(ServerLog {
            path: path.to_owned(),
            file,
            start,
        })
    }

    /// Where the file is (it may be gone by now).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The last `n` lines written since this client arrived (at most the last 64 KiB).
    pub(super) fn last_lines(&self, n: usize) -> Vec<String> {
        let end = self.file.metadata().map_or(self.start, |m| m.len());
        let from = self.start.max(end.saturating_sub(READ_AT_MOST));
        let mut buf = vec![0; (end.saturating_sub(from)) as usize];
        let read = self.file.read_at(&mut buf, from).unwrap_or(0);
        buf.truncate(read);
        let text = String::from_utf8_lossy(&buf);
        let mut lines: Vec<&str> = text.lines().collect();
        if from > self.start && !lines.is_empty() {
            // Cut in the middle of a line.
            lines.remove(0);
        }
        let skip = lines.len().saturating_sub(n);
        lines[skip..].iter().map(|l| (*l).to_owned()).collect()
    }
}

/// Why the supervisor said it stops, from its output lines (`procman | shutting down: …`).
pub(super) fn shutdown_reason(lines: &[String]) -> Option<&str> {
    lines.iter().rev().find_map(|line| {
        let (name, text) = line.split_once(" | ")?;
        (name.trim() == SUPERVISOR_PREFIX)
            .then(|| text.strip_prefix(SHUTTING_DOWN))
            .flatten()
    })
}

/// Checks that the open file is a regular file of ours that nobody else can read or
/// write, with no other name; returns its length.
fn verify(path: &Path, file: &File) -> Result<u64> {
    let meta = file
        .metadata()
        .with_context(|| format!("checking the server log {}", path.display()))?;
    let euid = rustix::process::geteuid().as_raw();
    if !meta.file_type().is_file() {
        return Err(refuse(path, "it is not a regular file".into()));
    }
    if meta.uid() != euid {
        return Err(refuse(
            path,
            format!(
                "it is owned by uid {}, not by this user (uid {euid})",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(
            path,
            format!(
                "its mode {:o} lets other users read or write it",
                meta.mode() & 0o7777
            ),
        ));
    }
    if meta.nlink() != 1 {
        return Err(refuse(path, format!("it has {} hard links", meta.nlink())));
    }
    Ok(meta.len())
}

fn refuse(path: &Path, why: String) -> anyhow::Error {
    anyhow!(
        "refusing the server log {}: {why}; remove it (`rm {}`) if it is a leftover",
        path.display(),
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_supervisors_last_shutdown_reason() {
        let lines: Vec<String> = [
            "    web | Port 5055 is in use",
            "procman | web [12] exited with code 1 after running 0.0s",
            "procman | shutting down: web exited with code 1",
            "    api | shutting down: not the supervisor",
            "procman | exiting with code 1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(shutdown_reason(&lines), Some("web exited with code 1"));
        assert_eq!(shutdown_reason(&lines[..2]), None);
    }

    #[test]
    fn reads_only_what_came_after_the_client_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        std::fs::write(&path, "old server\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let (mut file, log) = ServerLog::create(&path).unwrap();
        let lines: String = (0..30).map(|i| format!("line {i}\n")).collect();
        std::io::Write::write_all(&mut file, lines.as_bytes()).unwrap();
        // The server removes its log when it leaves; the client still reads it.
        std::fs::remove_file(&path).unwrap();
        let last = log.last_lines(SHOWN_LINES);
        assert_eq!(last.len(), SHOWN_LINES);
        assert_eq!(last[0], "line 10");
        assert_eq!(last[SHOWN_LINES - 1], "line 29");
        assert!(log.last_lines(100).iter().all(|l| l != "old server"));
    }

    #[test]
    fn refuses_a_symlink_or_a_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = ServerLog::create(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(ServerLog::join(&link).is_none());
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let err = ServerLog::create(&target).unwrap_err().to_string();
        assert!(err.contains("lets other users"), "{err}");
    }
}
