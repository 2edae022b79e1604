//! The discovery file: which process serves a config, so clients and a second `serve`
//! can name it. A hint only: it is trusted when the process it names is alive with the
//! recorded start time.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use procref::discovery::{ProcessId, read_private, replace_atomic};
use serde::{Deserialize, Serialize};

use super::RuntimePaths;
use crate::protocol::PROTOCOL_VERSION;

/// Largest discovery file we read.
const MAX_BYTES: u64 = 64 * 1024;

/// What a running server records in [`RuntimePaths::discovery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Server pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot, to tell it from a reused pid.
    pub start_time: u64,
    /// procman version that wrote the file.
    pub version: String,
    /// Wire protocol version ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Canonical config path.
    pub config: PathBuf,
    /// FIFO path.
    pub fifo: PathBuf,
    /// Socket path.
    pub socket: PathBuf,
    /// Unix time (seconds) when the server started.
    pub started_at: u64,
}

impl ServerInfo {
    /// The record for this process serving `paths`.
    pub fn current(paths: &RuntimePaths) -> ServerInfo {
        let pid = std::process::id();
        ServerInfo {
            pid,
            start_time: ProcessId::of(pid).map_or(0, |id| id.start_time),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
            config: paths.config.clone(),
            fifo: paths.fifo.clone(),
            socket: paths.socket.clone(),
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Writes the record atomically with mode 0600; not synced to disk (it describes this
    /// process, and readers check that it still runs), as that would delay the first spawn.
    pub fn write(&self, path: &Path) -> Result<(), procref::Error> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| procref::Error::Other(format!("encoding server info: {e}")))?;
        bytes.push(b'\n');
        replace_atomic(path, &bytes)
    }

    /// Reads a record; `None` if it is missing, unsafe (symlink, foreign, writable by
    /// others) or not a valid record.
    pub fn read(path: &Path) -> Option<ServerInfo> {
        let bytes = read_private(path, MAX_BYTES).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether the recorded process is still the one running under that pid.
    pub fn is_live(&self) -> bool {
        ProcessId {
            pid: self.pid,
            start_time: self.start_time,
        }
        .is_alive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_live() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("procman.yaml");
        std::fs::write(&config, "a: true\n").unwrap();
        let paths = RuntimePaths::in_dir(&config, tmp.path()).unwrap();
        let info = ServerInfo::current(&paths);
        info.write(&paths.discovery).unwrap();
        let back = ServerInfo::read(&paths.discovery).unwrap();
        assert_eq!(back, info);
        assert!(back.is_live());
        let stale = ServerInfo {
            start_time: info.start_time + 1,
            ..info
        };
        assert!(!stale.is_live());
        std::fs::write(&paths.discovery, "garbage").unwrap();
        assert!(ServerInfo::read(&paths.discovery).is_none());
        assert!(ServerInfo::read(&tmp.path().join("missing.json")).is_none());
    }
}
