//! The discovery file: where clients learn which process is the service.
//!
//! Files are hints, the kernel is the truth: a record is trusted only if the process it
//! names is alive *and* started at the recorded time (so a reused pid is not mistaken for
//! the service). Files live in a directory owned by the user and not writable by others,
//! are written atomically (temporary file, fsync, rename, fsync of the directory) with mode
//! 0600, and are opened without following symlinks. The helpers here are public so that
//! other tools (procman) apply the same rules to their own runtime files.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::process;
use crate::{Error, Result, ServiceInfo};

/// Largest discovery file procref reads; anything bigger is not ours.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// Format version of [`Record`].
pub const RECORD_FORMAT: u32 = 1;

/// The default directory for discovery files: `$XDG_RUNTIME_DIR/procref` when set,
/// else `procref-{uid}` in the system temp dir.
pub fn default_base_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("procref"),
        None => {
            std::env::temp_dir().join(format!("procref-{}", rustix::process::geteuid().as_raw()))
        }
    }
}

/// Creates `dir` (mode 0700) if missing and checks that it is a real directory (not a
/// symlink), owned by this user, and not writable by group or others.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Parents are ordinary directories; only the last component must be private.
            fs::create_dir_all(dir.parent().unwrap_or(dir))
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            return ensure_private_dir(dir);
        }
        Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
    }
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("checking {}", dir.display()), e))?;
    let insecure = |reason: String| Error::InsecurePath {
        path: dir.to_owned(),
        reason,
    };
    if meta.file_type().is_symlink() {
        return Err(insecure("it is a symlink; use a real directory".into()));
    }
    if !meta.is_dir() {
        return Err(insecure("it is not a directory".into()));
    }
    check_owner_and_mode(&meta, dir)
}

fn check_owner_and_mode(meta: &fs::Metadata, path: &Path) -> Result<()> {
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(Error::InsecurePath {
            path: path.to_owned(),
            reason: format!(
                "it is owned by uid {}, not by this user (uid {euid})",
                meta.uid()
            ),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::InsecurePath {
            path: path.to_owned(),
            reason: format!(
                "its mode {:o} lets other users write to it; chmod go-w it or choose a private directory",
                meta.mode() & 0o7777
            ),
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically with mode 0600: readers see the old file or the
/// new one, never a mix, even across a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_replacing(path, bytes, true)
}

/// [`write_atomic`] without the two `fsync`s (milliseconds each on a busy disk): readers
/// still see the old file or the new one, never a mix, but a power loss may leave either.
/// For a file that describes a running process, which a power loss ends too, and which
/// readers validate before trusting it.
pub fn replace_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_replacing(path, bytes, false)
}

fn write_replacing(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| Error::Other(format!("getrandom: {e}")))?;
    let tmp = dir.join(format!(
        ".{file_name}.{:016x}.tmp",
        u64::from_le_bytes(suffix)
    ));
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io(ctx("creating"), e))?;
        file.write_all(bytes)
            .map_err(|e| Error::io(ctx("writing"), e))?;
        if durable {
            file.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
        }
        fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("renaming into {}", path.display()), e))?;
        if durable {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a private file: `Ok(None)` if it does not exist; an error if it is a symlink,
/// not a regular file, not owned by this user, writable by others, or larger than `max`.
pub fn read_private(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::InsecurePath {
                path: path.to_owned(),
                reason: "it is a symlink".into(),
            });
        }
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("checking {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::InsecurePath {
            path: path.to_owned(),
            reason: "it is not a regular file".into(),
        });
    }
    check_owner_and_mode(&meta, path)?;
    if meta.len() > max {
        return Err(Error::InsecurePath {
            path: path.to_owned(),
            reason: format!("it is {} bytes; at most {max} expected", meta.len()),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(Some(bytes))
}

/// Removes `path` if it exists.
pub fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// A process identified across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot ([`process::start_time`]).
    pub start_time: u64,
}

impl ProcessId {
    /// The identity of the running process `pid`, if it is running.
    pub fn of(pid: u32) -> Option<ProcessId> {
        process::start_time(pid).map(|start_time| ProcessId { pid, start_time })
    }

    /// Whether that very process is still running.
    pub fn is_alive(&self) -> bool {
        process::Process::open_verified(self.pid, self.start_time).is_some()
    }
}

/// What a discovery file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// Service name.
    pub name: String,
    /// Random id of this start of the service; a keeper acts only on its own instance.
    pub instance: String,
    /// The service process.
    pub service: ProcessId,
    /// Port and metadata, as returned by `on_first_acquire` / `on_recover`.
    pub info: ServiceInfo,
    /// The keeper guarding this instance.
    pub keeper: Option<ProcessId>,
    /// procref version that wrote the file.
    pub version: String,
    /// Unix time (seconds) the file was written.
    pub written_at: u64,
}

/// What is at a discovery path.
#[derive(Debug)]
pub enum Lookup {
    /// A record whose service is running.
    Live(Record),
    /// Nothing, garbage, a dead pid, or a pid now used by another process.
    Stale,
}

impl Record {
    /// Reads and validates the record at `path` for service `name`. Only files that fail
    /// the privacy checks are errors; anything else untrustworthy is [`Lookup::Stale`].
    pub fn lookup(path: &Path, name: &str) -> Result<Lookup> {
        let Some(bytes) = read_private(path, MAX_RECORD_BYTES)? else {
            return Ok(Lookup::Stale);
        };
        let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
            return Ok(Lookup::Stale);
        };
        let trusted = record.format == RECORD_FORMAT
            && record.name == name
            && record.info.pid() == record.service.pid
            && record.service.is_alive();
        Ok(if trusted {
            Lookup::Live(record)
        } else {
            Lookup::Stale
        })
    }

    /// Writes the record atomically to `path`.
    pub fn store(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Other(format!("serialising discovery record: {e}")))?;
        write_atomic(path, &json)
    }

    /// Reads whatever record is at `path` without checking that its service is alive
    /// (for the keeper, which compares instances).
    pub fn read_unchecked(path: &Path) -> Result<Option<Record>> {
        Ok(read_private(path, MAX_RECORD_BYTES)?.and_then(|b| serde_json::from_slice(&b).ok()))
    }
}

/// A fresh random instance id (128 bits, hex).
pub(crate) fn new_instance_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Other(format!("getrandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sets `path`'s mode to 0600 (for files created by other means, e.g. sockets).
pub fn make_private(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod 600 {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_is_private_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.json");
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_private(&path, 10).unwrap().unwrap(), b"{}");
        assert!(
            read_private(&dir.path().join("none"), 10)
                .unwrap()
                .is_none()
        );
        // Replacing without syncing gives the same file.
        replace_atomic(&path, b"[]").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_private(&path, 10).unwrap().unwrap(), b"[]");
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlinks_and_shared_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.json");
        write_atomic(&target, b"{}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = read_private(&link, 100).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");

        fs::set_permissions(&target, fs::Permissions::from_mode(0o666)).unwrap();
        let err = read_private(&target, 100).unwrap_err().to_string();
        assert!(err.contains("other users"), "{err}");

        let big = dir.path().join("big.json");
        write_atomic(&big, &[b' '; 200]).unwrap();
        assert!(read_private(&big, 100).is_err());
    }

    #[test]
    fn private_dir_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b/private");
        ensure_private_dir(&sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);

        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            ensure_private_dir(&open)
                .unwrap_err()
                .to_string()
                .contains("other users")
        );

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&sub, &link).unwrap();
        assert!(
            ensure_private_dir(&link)
                .unwrap_err()
                .to_string()
                .contains("symlink")
        );
    }

    #[test]
    fn stale_records_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.json");
        assert!(matches!(
            Record::lookup(&path, "svc").unwrap(),
            Lookup::Stale
        ));
        write_atomic(&path, b"garbage").unwrap();
        assert!(matches!(
            Record::lookup(&path, "svc").unwrap(),
            Lookup::Stale
        ));

        let me = ProcessId::of(std::process::id()).unwrap();
        let mut record = Record {
            format: RECORD_FORMAT,
            name: "svc".into(),
            instance: new_instance_id().unwrap(),
            service: me,
            info: ServiceInfo::new(me.pid, 80),
            keeper: None,
            version: "test".into(),
            written_at: unix_now(),
        };
        record.store(&path).unwrap();
        assert!(matches!(
            Record::lookup(&path, "svc").unwrap(),
            Lookup::Live(_)
        ));
        assert!(matches!(
            Record::lookup(&path, "other").unwrap(),
            Lookup::Stale
        ));
        // Same pid, different start time: a reused pid.
        record.service.start_time += 1;
        record.store(&path).unwrap();
        assert!(matches!(
            Record::lookup(&path, "svc").unwrap(),
            Lookup::Stale
        ));
        // Truncated file.
        let full = serde_json::to_vec(&record).unwrap();
        write_atomic(&path, &full[..full.len() / 2]).unwrap();
        assert!(matches!(
            Record::lookup(&path, "svc").unwrap(),
            Lookup::Stale
        ));
    }
}
