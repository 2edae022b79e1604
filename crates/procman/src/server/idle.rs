//! Idle shutdown of an on-demand server: clients hold references, the server leaves when idle.
//!
//! A server for a config is the procref reference count named after the config
//! ([`RuntimePaths::service_name`]). Every client (`attach`, `start`, `stop`, `status`)
//! holds one reference while it runs; the kernel drops the reference of a client that
//! dies (`SEM_UNDO`). The server sleeps in the kernel on that count (see ADR-0003):
//!
//! - no-client timeout: if the count never becomes non-zero within it after the server
//!   starts listening, shut down;
//! - disconnect timeout: each time the count falls to 0, if it stays 0 that long, shut down.
//!
//! Before shutting down for idleness the server takes the startup lock and re-checks the
//! count, and it keeps the lock until it is no longer discoverable, so a client that
//! attaches at that moment either keeps the server alive or starts a fresh one: never
//! attaches to one that is leaving.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use procref::{RefCounter, SysvRefCounter};

use crate::control::RuntimePaths;
use crate::duration::format_timeout;

/// When an idle server shuts itself down. `None` means never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Shut down if no client has held a reference this long after listening began.
    pub no_client: Option<Duration>,
    /// Shut down once the count has stayed 0 this long after the last client left.
    pub disconnect: Option<Duration>,
}

impl IdlePolicy {
    /// Whether the server ever shuts down for idleness.
    pub fn is_never(&self) -> bool {
        self.no_client.is_none() && self.disconnect.is_none()
    }
}

/// Default for a server started by `attach` (ADR-0004's 30 s for both timeouts).
pub const ATTACH_DEFAULT: Duration = Duration::from_secs(30);

/// The server's side: watches the count on a dedicated thread and calls `on_idle` with
/// the reason once the server should shut down, holding the startup lock.
pub struct IdleWatch {
    counter: Arc<SysvRefCounter>,
}

impl IdleWatch {
    /// Opens the count for `paths` and stays present on it, so that the last client's
    /// release does not remove the semaphore set the server waits on.
    pub fn new(paths: &RuntimePaths) -> Result<IdleWatch> {
        let counter = SysvRefCounter::new(&paths.service_name())?;
        counter.watch()?;
        Ok(IdleWatch {
            counter: Arc::new(counter),
        })
    }

    /// Starts watching. The thread sleeps in `semtimedop`; it never polls.
    pub fn spawn(&self, policy: IdlePolicy, on_idle: impl FnOnce(String) + Send + 'static) {
        if policy.is_never() {
            return;
        }
        let counter = Arc::clone(&self.counter);
        std::thread::Builder::new()
            .name("idle-watch".into())
            .spawn(move || match wait_until_idle(&counter, policy) {
                Ok(reason) => on_idle(reason),
                Err(e) => on_idle(format!(
                    "cannot watch clients any more ({e}); shutting down"
                )),
            })
            .ok();
    }

    /// Lets clients start a new server (called once this one is no longer discoverable).
    pub fn unlock(&self) {
        let _ = self.counter.unlock();
    }

    /// Removes the semaphore set if no client holds it.
    pub fn remove_if_unused(&self) {
        let _ = self.counter.try_remove();
    }
}

fn wait_until_idle(counter: &SysvRefCounter, policy: IdlePolicy) -> procref::Result<String> {
    if !counter.wait_nonzero(policy.no_client)? {
        let d = format_timeout(policy.no_client);
        if confirm_idle(counter)? {
            return Ok(format!("idle: no client for {d}"));
        }
    }
    loop {
        counter.wait_zero(None)?;
        let Some(grace) = policy.disconnect else {
            counter.wait_nonzero(None)?;
            continue;
        };
        if !counter.wait_nonzero(Some(grace))? && confirm_idle(counter)? {
            return Ok(format!(
                "idle: no client for {} after the last one left",
                format_timeout(Some(grace))
            ));
        }
    }
}

/// Takes the startup lock and re-checks that no client arrived; keeps the lock if so.
fn confirm_idle(counter: &SysvRefCounter) -> procref::Result<bool> {
    while !counter.lock_timeout(Duration::from_secs(60))? {}
    if counter.count()? == 0 {
        return Ok(true);
    }
    counter.unlock()?;
    Ok(false)
}
