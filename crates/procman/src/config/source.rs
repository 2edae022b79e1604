//! Opening what the user named: a regular file, read as UTF-8 without ever blocking on a
//! FIFO or opening a device, and which format it is.

use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest config or environment file procman reads.
pub const MAX_SIZE: u64 = 64 * 1024 * 1024;

/// The two formats a CONFIG may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `procman.yaml`: a mapping of process names to definitions.
    Yaml,
    /// A foreman-style Procfile: `name: command` lines.
    Procfile,
}

impl Format {
    /// A file named `Procfile` or `*.procfile` is a Procfile; anything else is YAML.
    pub fn of(path: &Path) -> Format {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let procfile = name == "Procfile"
            || Path::new(name)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("procfile"));
        if procfile {
            Format::Procfile
        } else {
            Format::Yaml
        }
    }
}

/// The config a command uses when none is named: `procman.yaml`, or `Procfile` when there is
/// no `procman.yaml` but a `Procfile` in the working directory.
pub fn default_path() -> PathBuf {
    let yaml = PathBuf::from("procman.yaml");
    let procfile = PathBuf::from("Procfile");
    if yaml.symlink_metadata().is_err() && procfile.symlink_metadata().is_ok() {
        procfile
    } else {
        yaml
    }
}

/// Why a file could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    NotFound,
    /// Not a regular file; what it is, with its article.
    NotAFile(&'static str),
    TooLarge,
    Unreadable(std::io::Error),
    /// Byte offset of the first invalid byte.
    NotUtf8(usize),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotFound => write!(f, "no such file"),
            ReadError::NotAFile(kind) => write!(f, "it is {kind}, not a regular file"),
            ReadError::TooLarge => write!(f, "it is larger than {MAX_SIZE} bytes"),
            ReadError::Unreadable(e) => write!(f, "cannot read it: {e}"),
            ReadError::NotUtf8(offset) => {
                write!(
                    f,
                    "it is not valid UTF-8 (first bad byte at offset {offset})"
                )
            }
        }
    }
}

/// What a non-regular file is, for messages.
fn kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("not a regular file")
    }
}

/// Reads the regular file at `path` (symlinks followed) as UTF-8, without the byte order
/// mark some editors put first (YAML allows it there; it is not part of the text).
///
/// Its type is checked before it is opened, so a device is never opened; it is opened
/// non-blocking and checked again, so a FIFO swapped in between cannot block the read.
pub(crate) fn read_text(path: &Path) -> Result<String, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Unreadable(e),
    })?;
    if let Some(kind) = kind(&meta) {
        return Err(ReadError::NotAFile(kind));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Unreadable)?;
    let meta = file.metadata().map_err(ReadError::Unreadable)?;
    if let Some(kind) = kind(&meta) {
        return Err(ReadError::NotAFile(kind));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Unreadable)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(ReadError::TooLarge);
    }
    let mut text =
        String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}
