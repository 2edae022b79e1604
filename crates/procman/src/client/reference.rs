//! A client's reference on a server's count (ADR-0003, ADR-0004).

use anyhow::{Context, Result};
use procref::{RefCounter, SysvRefCounter};

use crate::control::{RuntimePaths, ServerInfo};

/// A client's reference on a server's count, held while the client runs (`attach` for
/// its command, `start`/`status` for themselves), so a sequence of CLI commands keeps a
/// warm server (ADR-0004). Dropping it releases the reference and, when no live server is
/// left to own the semaphore set, removes the set: clients never leave one behind.
pub struct ClientReference {
    counter: SysvRefCounter,
    discovery: std::path::PathBuf,
}

impl ClientReference {
    /// Takes one reference on the count of `paths`' server.
    pub fn acquire(paths: &RuntimePaths) -> Result<ClientReference> {
        let counter = SysvRefCounter::new(&paths.service_name())?;
        counter
            .acquire()
            .context("taking a reference on the server")?;
        Ok(ClientReference {
            counter,
            discovery: paths.discovery.clone(),
        })
    }

    pub(super) fn counter(&self) -> &SysvRefCounter {
        &self.counter
    }
}

impl Drop for ClientReference {
    fn drop(&mut self) {
        let _ = self.counter.release();
        if ServerInfo::read(&self.discovery)
            .filter(ServerInfo::is_live)
            .is_none()
        {
            let _ = self.counter.try_remove();
        }
    }
}

/// [`ClientReference::acquire`], for clients that work without one (best effort).
pub fn client_reference(paths: &RuntimePaths) -> Option<ClientReference> {
    ClientReference::acquire(paths).ok()
}
