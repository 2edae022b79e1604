//! Kernel-backed reference counting: the [`RefCounter`] trait, its System V
//! implementation, and the sweep of abandoned sets.

mod key;
mod sweep;
mod sys;
mod sysv;

use std::time::Duration;

pub use key::{MAX_NAME_LEN, validate_name};
pub use sweep::sweep_abandoned;
pub use sysv::SysvRefCounter;

use crate::Result;

/// A count of processes using a named service, kept by the kernel.
///
/// Implementations guarantee that a reference (and the startup lock) held by a process
/// is given back by the kernel when that process dies, however it dies.
pub trait RefCounter: Send + Sync {
    /// Adds one reference held by this process; returns the count after the increment.
    /// The kernel removes the reference if the process dies (`SEM_UNDO`).
    fn acquire(&self) -> Result<u32>;
    /// Gives back one reference taken with [`acquire`](Self::acquire); returns the count
    /// after the decrement. The kernel object behind the name stays while this counter
    /// object exists; dropping the last object that uses it, with the count at 0 and the
    /// lock free, removes it.
    fn release(&self) -> Result<u32>;
    /// The current count (a snapshot: other processes may change it at any time).
    fn count(&self) -> Result<u32>;
    /// Takes the startup lock if it is free, without blocking. The kernel frees it if
    /// the holder dies. Re-entrant for the same counter object.
    fn try_lock(&self) -> Result<bool>;
    /// Frees the startup lock (no-op if this object does not hold it).
    fn unlock(&self) -> Result<()>;
    /// Takes the startup lock, waiting in the kernel up to `timeout`; false on timeout.
    fn lock_timeout(&self, timeout: Duration) -> Result<bool>;
    /// Blocks in the kernel until the count is 0 (`semtimedop` with a zero op), or until
    /// `timeout` passes (`None`: no limit). Returns whether the count reached 0.
    fn wait_zero(&self, timeout: Option<Duration>) -> Result<bool>;
}

/// The reference counter for this platform.
#[cfg(target_os = "linux")]
pub type PlatformRefCounter = SysvRefCounter;
