//! # procref: crash-safe reference counting of a shared service across processes
//!
//! Several processes need one service (a database, a language server, a build daemon).
//! The first starts it, the others reuse it, and when the last one is gone (even killed
//! with SIGKILL) it stops. The count lives in the kernel: a System V semaphore whose
//! increments carry `SEM_UNDO`, so the kernel takes a dead client's reference back.
//!
//! - [`counter`]: the [`RefCounter`] trait and [`PlatformRefCounter`] (System V), and
//!   [`sweep_abandoned`] for sets whose users were all killed.
//! - [`SharedService`]: the lifecycle (start, reuse, health check, recovery, stop) and
//!   the keeper process that stops the service when the last client died (and that a
//!   client replaces if the keeper itself was killed).
//! - [`discovery`]: the discovery file and the private-file rules it follows.
//! - [`process`]: pidfd-based process utilities.
//!
//! ```no_run
//! use procref::{ServiceInfo, SharedService};
//!
//! # async fn demo() -> procref::Result<()> {
//! let service = SharedService::builder("my-database")
//!     .on_first_acquire(|| async {
//!         let child = std::process::Command::new("sleep").arg("3600").spawn()?;
//!         Ok(ServiceInfo::new(child.id(), 5432))
//!     })
//!     .build()?;
//! let handle = service.acquire().await?; // starts it, or reuses the running one
//! println!("database on port {}", handle.port());
//! drop(handle); // the last one out: the keeper stops it
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod counter;
pub mod discovery;
mod error;
mod info;
mod keeper;
mod keeper_watch;
pub mod process;
mod service;

pub use counter::{PlatformRefCounter, RefCounter, SysvRefCounter, sweep_abandoned};
pub use error::{Error, Result};
pub use info::ServiceInfo;
pub use service::{
    DEFAULT_STARTUP_TIMEOUT, DEFAULT_STOP_TIMEOUT, ServiceHandle, SharedService,
    SharedServiceBuilder,
};
