//! The log directory: `procman.log`, one `<name>.log` per process, and the previous run's
//! logs in `previous/`.
//!
//! procman moves or deletes only files it can show it created: every file it creates is
//! recorded (name, device, inode, birth time) in `.procman-manifest` beside it, and a
//! recorded file is touched only while it is still that file (a regular file of ours with
//! the same identity; the birth time tells a reused inode number apart). Files
//! are opened relative to the directory's descriptor and created with `O_EXCL` and
//! `O_NOFOLLOW`, so a planted symlink is never followed and no existing file is truncated.
//! (The server locks the directory against a second procman before it gets here.)

use std::fs::{DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Statx, StatxFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the combined log, which is also why `procman` gets no per-process log.
pub(crate) const COMBINED: &str = "procman.log";
/// The record of the files procman created in a directory, one JSON object per line.
pub(crate) const MANIFEST: &str = ".procman-manifest";
/// Where the previous run's logs go at start, replacing the run before.
pub(crate) const PREVIOUS: &str = "previous";

/// An open, locked log directory.
pub(crate) struct LogDir {
    path: PathBuf,
    /// Every file is created and moved relative to it.
    dir: OwnedFd,
    manifest: File,
}

/// A file procman created, as recorded in a manifest.
#[derive(Serialize, Deserialize)]
struct Entry {
    file: String,
    dev: u64,
    ino: u64,
    /// Birth time (seconds, nanoseconds), where the file system records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    born: Option<(i64, u32)>,
}

impl LogDir {
    /// Creates `path` (mode 0700) if needed, moves the previous run's logs to `previous/`
    /// and creates a fresh `procman.log`.
    pub(crate) fn open(path: &Path) -> io::Result<(LogDir, LogFile)> {
        DirBuilder::new().recursive(true).mode(0o700).create(path)?;
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rotate(&dir, path)?;
        let manifest =
            File::from(create(&dir, MANIFEST).map_err(|e| refusal(&dir, path, MANIFEST, e))?);
        let dir = LogDir {
            path: path.to_owned(),
            dir,
            manifest,
        };
        let combined = dir.create(COMBINED)?;
        Ok((dir, combined))
    }

    /// Creates the new file `file` in the directory and records it as procman's.
    pub(crate) fn create(&self, file: &str) -> io::Result<LogFile> {
        let fd = create(&self.dir, file).map_err(|e| refusal(&self.dir, &self.path, file, e))?;
        let stat = examine(&fd, "", AtFlags::EMPTY_PATH)?;
        record(&self.manifest, &entry(file, &stat))?;
        Ok(LogFile {
            file: File::from(fd),
            path: self.path.join(file),
            failed: false,
        })
    }
}

impl LogDir {
    /// Records `file` as procman's if it is a private regular file of this user: for a
    /// file procman created that its process replaced (by renaming another over it), so
    /// that the next start still moves it aside. Nothing else is recorded.
    pub(crate) fn adopt(&self, file: &str) -> io::Result<()> {
        match examine(&self.dir, file, AtFlags::empty()) {
            Ok(stat) if is_ours(&stat) => record(&self.manifest, &entry(file, &stat)),
            Ok(_) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(context(e, &self.path.join(file))),
        }
    }
}

/// Creates a new private file; fails on anything already there, symlinks included.
fn create(dir: &OwnedFd, file: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        file,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
}

/// Why `file` could not be created, and what to do.
fn refusal(dir: &OwnedFd, path: &Path, file: &str, error: Errno) -> io::Error {
    let shown = path.join(file);
    if error != Errno::EXIST {
        return io::Error::new(
            io::Error::from(error).kind(),
            format!("cannot create {}: {error}", shown.display()),
        );
    }
    let what = match examine(dir, file, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if file_type(&stat) == FileType::Symlink => "is a symlink",
        _ => {
            "already exists and procman has no record of creating it (a log of an older procman, or not a log at all)"
        }
    };
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} {what}; procman neither follows nor overwrites it: move it away or choose another --log-dir",
            shown.display()
        ),
    )
}

/// `statx` of `file` in `dir` (of `dir` itself with an empty name and `EMPTY_PATH`).
fn examine(dir: &OwnedFd, file: &str, flags: AtFlags) -> rustix::io::Result<Statx> {
    rustix::fs::statx(
        dir,
        file,
        flags | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
}

fn file_type(stat: &Statx) -> FileType {
    FileType::from_raw_mode(stat.stx_mode.into())
}

fn entry(file: &str, stat: &Statx) -> Entry {
    let born = StatxFlags::from_bits_retain(stat.stx_mask).contains(StatxFlags::BTIME);
    Entry {
        file: file.to_owned(),
        dev: u64::from(stat.stx_dev_major) << 32 | u64::from(stat.stx_dev_minor),
        ino: stat.stx_ino,
        born: born.then_some((stat.stx_btime.tv_sec, stat.stx_btime.tv_nsec)),
    }
}

/// Appends `entry` on a line of its own. The line also starts with `\n`, so a record cut
/// short before it (a full disk, a crash) cannot swallow this one.
fn record(manifest: &File, entry: &Entry) -> io::Result<()> {
    let mut line = vec![b'\n'];
    serde_json::to_writer(&mut line, entry)?;
    line.push(b'\n');
    (&*manifest).write_all(&line)
}

/// Moves the files of the previous run (as its manifest records them) into `previous/`,
/// after deleting the run before that one's files there.
fn rotate(dir: &OwnedFd, path: &Path) -> io::Result<()> {
    let Some(text) = read_manifest(dir, path)? else {
        return Ok(());
    };
    let entries: Vec<Entry> = parse(&text).collect();
    let prev_path = path.join(PREVIOUS);
    match rustix::fs::mkdirat(dir, PREVIOUS, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(context(e, &prev_path)),
    }
    let prev = rustix::fs::openat(
        dir,
        PREVIOUS,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match examine(dir, PREVIOUS, AtFlags::empty()) {
        Ok(stat) if file_type(&stat) != FileType::Directory => io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is {}; procman neither follows nor replaces it: move it away or choose another --log-dir",
                prev_path.display(),
                if file_type(&stat) == FileType::Symlink { "a symlink" } else { "not a directory" }
            ),
        ),
        _ => context(e, &prev_path),
    })?;
    if examine(&prev, "", AtFlags::EMPTY_PATH)?.stx_uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to another user; remove it or choose another --log-dir",
                prev_path.display()
            ),
        ));
    }
    if let Some(older) = read_manifest(&prev, &prev_path)? {
        for entry in parse(&older).filter(|e| is_recorded(&prev, e)) {
            unlink(&prev, &prev_path, &entry.file)?;
        }
        unlink(&prev, &prev_path, MANIFEST)?;
    }
    let moved =
        File::from(create(&prev, MANIFEST).map_err(|e| refusal(&prev, &prev_path, MANIFEST, e))?);
    for entry in entries.iter().filter(|e| is_recorded(dir, e)) {
        // Recorded first: after a crash the next run still knows the file is ours.
        record(&moved, entry)?;
        if !move_without_replacing(dir, &prev, &entry.file)? {
            // previous/ holds a file of that name that is not ours: it stays, ours goes.
            unlink(dir, path, &entry.file)?;
        }
    }
    unlink(dir, path, MANIFEST)
}

/// Renames `file` from `from` to `to` unless `to` already has one; false if it has.
fn move_without_replacing(from: &OwnedFd, to: &OwnedFd, file: &str) -> io::Result<bool> {
    match rustix::fs::renameat_with(from, file, to, file, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        // File systems without RENAME_NOREPLACE: link(2) never replaces either.
        Err(Errno::INVAL) => match rustix::fs::linkat(from, file, to, file, AtFlags::empty()) {
            Ok(()) => {
                rustix::fs::unlinkat(from, file, AtFlags::empty())?;
                Ok(true)
            }
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

fn unlink(dir: &OwnedFd, path: &Path, file: &str) -> io::Result<()> {
    rustix::fs::unlinkat(dir, file, AtFlags::empty()).map_err(|e| context(e, &path.join(file)))
}

/// The text of `dir`'s manifest; `None` if there is none. A manifest that procman
/// cannot have written (not a regular file of ours, or writable by others) is an error.
fn read_manifest(dir: &OwnedFd, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let shown = path.join(MANIFEST);
    let fd = match rustix::fs::openat(
        dir,
        MANIFEST,
        // NONBLOCK: a FIFO planted here must not hang the start.
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(untrusted(&shown, &e.to_string())),
    };
    let stat = examine(&fd, "", AtFlags::EMPTY_PATH)?;
    if !is_ours(&stat) {
        return Err(untrusted(&shown, "not a private regular file of this user"));
    }
    let mut text = Vec::new();
    File::from(fd).read_to_end(&mut text)?;
    Ok(Some(text))
}

/// The entries of a manifest. A line cut short by a crash is skipped (the
/// file it named stays where it is).
fn parse(text: &[u8]) -> impl Iterator<Item = Entry> + '_ {
    text.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
}

fn untrusted(shown: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} was not written by procman ({why}); remove it or choose another --log-dir",
            shown.display()
        ),
    )
}

fn is_ours(stat: &Statx) -> bool {
    file_type(stat) == FileType::RegularFile
        && stat.stx_uid == rustix::process::geteuid().as_raw()
        && stat.stx_mode & 0o022 == 0
}

/// Whether `entry` still names, in `dir`, the very file procman created.
fn is_recorded(dir: &OwnedFd, entry: &Entry) -> bool {
    let plain = !entry.file.is_empty()
        && entry.file != "."
        && entry.file != ".."
        && entry.file != MANIFEST
        && !entry.file.contains(['/', '\0']);
    plain
        && examine(dir, &entry.file, AtFlags::empty()).is_ok_and(|stat| {
            let found = self::entry(&entry.file, &stat);
            is_ours(&stat)
                && found.dev == entry.dev
                && found.ino == entry.ino
                && (found.born.is_none() || entry.born.is_none() || found.born == entry.born)
        })
}

fn context(error: Errno, path: &Path) -> io::Error {
    io::Error::new(
        io::Error::from(error).kind(),
        format!("{}: {error}", path.display()),
    )
}

/// Longest file name most file systems take, in bytes (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// File name of the log for process `name`: injective and never leaving the directory.
///
/// `%` becomes `%25`, `/` `%2F`, control characters `%XX` (NUL is `%00`, newline `%0A`),
/// and a leading `.` `%2E`, so `../x` is stored as `%2E.%2Fx.log`; the empty name is
/// stored as `%.log`. A name whose file name would pass [`NAME_MAX`] bytes (64
/// characters of four bytes each do) keeps its first 200 bytes and gets `~` and a hash
/// of the whole name.
pub(crate) fn file_name(name: &str) -> String {
    if name.is_empty() {
        return "%.log".to_owned();
    }
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        match c {
            '%' | '/' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_ascii_control() => out.push_str(&format!("%{:02X}", c as u32)),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    if out.len() + ".log".len() > NAME_MAX {
        let mut cut = 200;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        let hash = Sha256::digest(name.as_bytes());
        out.push('~');
        for byte in &hash[..8] {
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out.push_str(".log");
    out
}

/// A log file whose write errors are reported once on stderr and otherwise ignored.
pub(crate) struct LogFile {
    file: File,
    path: PathBuf,
    failed: bool,
}

impl LogFile {
    /// Writes all of `bytes`, reporting the first failure.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(bytes) {
            if !self.failed {
                self.failed = true;
                eprintln!("procman: writing {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Entry, file_name, parse, record};

    #[test]
    fn a_record_cut_short_does_not_swallow_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest");
        std::fs::write(&path, br#"{"file":"a.log","dev":1,"#).unwrap();
        let manifest = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let entry = Entry {
            file: "b.log".into(),
            dev: 1,
            ino: 2,
            born: None,
        };
        record(&manifest, &entry).unwrap();
        let text = std::fs::read(&path).unwrap();
        let files: Vec<String> = parse(&text).map(|e| e.file).collect();
        assert_eq!(files, ["b.log"]);
    }

    #[test]
    fn names_stay_inside() {
        assert_eq!(file_name("web"), "web.log");
        assert_eq!(file_name("../etc/x"), "%2E.%2Fetc%2Fx.log");
        assert_eq!(file_name(".hidden"), "%2Ehidden.log");
        assert_eq!(file_name("a%2Fb"), "a%252Fb.log");
        assert_eq!(file_name("a.b"), "a.b.log");
        assert_eq!(file_name("a\nb\0"), "a%0Ab%00.log");
        assert_eq!(file_name(""), "%.log");
    }

    #[test]
    fn long_names_fit_a_file_name() {
        let wide = "\u{1d54f}".repeat(64);
        let other = format!("{}y", "\u{1d54f}".repeat(63));
        for name in [&wide, &other, &"\n".repeat(64)] {
            let file = file_name(name);
            assert!(file.len() <= 255, "{} bytes", file.len());
            assert!(file.ends_with(".log"));
        }
        assert_ne!(file_name(&wide), file_name(&other));
    }
}
