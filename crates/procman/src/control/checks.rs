//! Safety checks on runtime paths: right file type, no symlink, owned by us, not writable
//! by others — applied both before opening (lstat) and to what was opened (fstat).

use std::fs::{FileType, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The kind of file a runtime path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Fifo,
    Socket,
}

/// Why a path was refused or could not be inspected.
#[derive(Debug)]
pub(crate) enum Refusal {
    Insecure(String),
    Io(io::Error),
}

/// Inspects `path` without following symlinks: `None` if it does not exist.
pub(crate) fn inspect(path: &Path, kind: Kind) -> Result<Option<Metadata>, Refusal> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check(&meta, kind).map(|()| Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Refusal::Io(e)),
    }
}

/// Checks metadata from lstat or fstat. FIFOs must also not be group/other-writable;
/// sockets are only connected to, and the peer is verified with `SO_PEERCRED`.
pub(crate) fn check(meta: &Metadata, kind: Kind) -> Result<(), Refusal> {
    let ft = meta.file_type();
    let (ok, want) = match kind {
        Kind::Fifo => (ft.is_fifo(), "a FIFO"),
        Kind::Socket => (ft.is_socket(), "a Unix socket"),
    };
    if !ok {
        return Err(Refusal::Insecure(format!(
            "it is {}, not {want}",
            describe(ft)
        )));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(Refusal::Insecure(format!(
            "it is owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        )));
    }
    if kind == Kind::Fifo && meta.mode() & 0o022 != 0 {
        return Err(Refusal::Insecure(format!(
            "its mode {:o} lets other users write to it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// `(device, inode)`: identifies the file we created so we only ever remove that one.
pub(crate) fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn describe(ft: FileType) -> &'static str {
    if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}
