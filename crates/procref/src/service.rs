//! [`SharedService`]: the first client starts the service, others reuse it, the last one
//! out stops it, and a keeper stops it when the last client was killed.
//!
//! Protocol (every step that looks at or changes the service holds the startup lock):
//!
//! - **acquire**: take a reference, take the lock, read the discovery file. A live,
//!   healthy service is reused. An unhealthy one is recovered (`on_recover`, or stop and
//!   `on_first_acquire`) by whichever client sees it first; the next client checks the new
//!   instance. No live service: `on_first_acquire`, then a keeper is started for the new
//!   instance and the discovery file is written. Because the reference is taken before
//!   the lock, no one can decide "count is 0, stop it" while a client is attaching.
//! - **release** with `on_last_release` (and no `linger`): a release that would drop the
//!   count to 0 takes the lock *first*, decrements, re-checks that the count is still 0,
//!   then runs `on_last_release` and removes the discovery file and the semaphore set.
//!   Other releases are one lock-free `semop`.
//! - **keeper**: see [`crate::keeper`]. Without `on_last_release` (or with `linger`), the
//!   keeper alone stops the service, after the count has stayed 0 for `linger` (default 0).
//! - **adoption**: a keeper holds a `SEM_UNDO` keeper slot in the set, so its death, however
//!   it dies, is visible. A live instance without a keeper gets a new one, under the lock
//!   (so exactly one), from whichever client notices first: an `acquire` that finds it, a
//!   release (before giving back its reference), or the thread with which every service
//!   object that acquired watches the keeper ([`crate::keeper_watch`]).
//! - **presence**: a service object's counter is present on the semaphore set while the
//!   object holds references; when its last handle goes, it leaves the set, so a service
//!   object without handles keeps nothing in the kernel. The keeper is present while it
//!   runs and removes the set when it is done, unless a client is present by then.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::discovery::{self, Lookup, ProcessId, Record};
use crate::keeper;
use crate::keeper_watch::KeeperWatch;
use crate::process::Process;
use crate::{Error, RefCounter, Result, ServiceInfo, SysvRefCounter};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type StartFn = Box<dyn Fn() -> BoxFuture<Result<ServiceInfo>> + Send + Sync>;
type StopFn = Box<dyn Fn(ServiceInfo) -> BoxFuture<Result<()>> + Send + Sync>;
type HealthFn = Box<dyn Fn(ServiceInfo) -> BoxFuture<bool> + Send + Sync>;
type LocalGuard = tokio::sync::OwnedMutexGuard<()>;
type RecoverFn = Box<dyn Fn(ServiceInfo) -> BoxFuture<Result<ServiceInfo>> + Send + Sync>;

/// Default bound on waiting for another process to start or stop the service.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default SIGTERM → SIGKILL grace when procref itself stops a service.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A service shared by many processes and reference-counted by the kernel.
pub struct SharedService {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    counter: Arc<SysvRefCounter>,
    discovery: PathBuf,
    /// Serialises this process's own acquires and releases: the kernel lock is per process.
    local: Arc<tokio::sync::Mutex<()>>,
    settings: Settings,
    /// This object's watch on the instance's keeper, started by the first acquire.
    keeper_watch: Mutex<Option<KeeperWatch>>,
}

/// The callbacks and settings a builder collects and a service keeps.
struct Settings {
    on_first_acquire: Option<StartFn>,
    on_last_release: Option<StopFn>,
    on_health_check: Option<HealthFn>,
    on_recover: Option<RecoverFn>,
    startup_timeout: Duration,
    linger: Option<Duration>,
    stop_timeout: Duration,
}

impl SharedService {
    /// Starts building a shared service called `name` (letters, digits, `.`, `_`, `-`).
    pub fn builder(name: impl Into<String>) -> SharedServiceBuilder {
        SharedServiceBuilder::new(name)
    }

    /// Takes a reference to the service, starting (or recovering) it if needed, or giving
    /// it a new keeper if its keeper was killed. The first acquire also starts one thread,
    /// sleeping in `poll` until this object is dropped, that does the same as soon as the
    /// keeper dies.
    pub async fn acquire(&self) -> Result<ServiceHandle> {
        let inner = &self.inner;
        let local = Arc::clone(&inner.local).lock_owned().await;
        inner.counter.acquire()?;
        let reference = ReferenceGuard(Some(inner.as_ref()));
        let _local = inner.lock(local).await?;
        let locked = LockGuard(inner.as_ref());
        let record = inner.ensure_running().await?;
        drop(locked);
        std::mem::forget(reference);
        inner.watch_keeper();
        Ok(ServiceHandle {
            inner: Arc::clone(inner),
            info: record.info,
            released: false,
        })
    }

    /// The number of references held right now, by all processes.
    pub fn count(&self) -> Result<u32> {
        self.inner.counter.count()
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The discovery file of this service.
    pub fn discovery_path(&self) -> &Path {
        &self.inner.discovery
    }

    /// The running service, if the discovery file names a live one (without taking a
    /// reference; the answer may be outdated by the time it is used).
    pub fn running(&self) -> Result<Option<ServiceInfo>> {
        Ok(
            match Record::lookup(&self.inner.discovery, &self.inner.name)? {
                Lookup::Live(r) => Some(r.info),
                Lookup::Stale => None,
            },
        )
    }
}

impl Inner {
    /// Takes the kernel startup lock, waiting at most `startup_timeout` in the kernel on a
    /// blocking thread. That thread owns `local` while it waits, so no other task of this
    /// process can slip in; if the caller is cancelled meanwhile, it unlocks again.
    async fn lock(&self, local: LocalGuard) -> Result<LocalGuard> {
        if self.counter.try_lock()? {
            return Ok(local);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let counter = Arc::clone(&self.counter);
        let timeout = self.settings.startup_timeout;
        tokio::task::spawn_blocking(move || {
            let result = counter.lock_timeout(timeout);
            if let Err((Ok(true), _local)) = tx.send((result, local)) {
                // The caller is gone: give the lock back, and the presence that taking it
                // gave an object without references (see `leave_when_idle`).
                let _ = counter.unlock();
                if counter.held() == 0 {
                    let _ = counter.unwatch();
                }
            }
        });
        let (result, local) = rx
            .await
            .map_err(|_| Error::Other("the startup-lock waiter thread vanished".into()))?;
        if result? {
            Ok(local)
        } else {
            Err(Error::StartupTimeout {
                name: self.name.clone(),
                timeout,
            })
        }
    }

    async fn ensure_running(&self) -> Result<Record> {
        match Record::lookup(&self.discovery, &self.name)? {
            Lookup::Live(record) => {
                let healthy = match &self.settings.on_health_check {
                    Some(check) => check(record.info.clone()).await,
                    None => true,
                };
                if healthy {
                    self.adopt_if_orphaned(record)
                } else {
                    self.recover(record).await
                }
            }
            Lookup::Stale => {
                if let Ok(Some(old)) = Record::read_unchecked(&self.discovery) {
                    old.keeper.iter().for_each(keeper::dismiss);
                }
                let info = self.start().await?;
                self.publish(info).await
            }
        }
    }

    async fn start(&self) -> Result<ServiceInfo> {
        let start = self
            .settings
            .on_first_acquire
            .as_ref()
            .ok_or_else(|| Error::NoStarter {
                name: self.name.clone(),
            })?;
        start().await.map_err(|e| match e {
            e @ Error::ServiceStart { .. } => e,
            e => Error::ServiceStart {
                name: self.name.clone(),
                reason: e.to_string(),
            },
        })
    }

    async fn recover(&self, old: Record) -> Result<Record> {
        tracing::warn!(service = %self.name, pid = old.service.pid, "health check failed; recovering");
        old.keeper.iter().for_each(keeper::dismiss);
        let info = match &self.settings.on_recover {
            Some(recover) => {
                recover(old.info.clone())
                    .await
                    .map_err(|e| Error::ServiceRecovery {
                        name: self.name.clone(),
                        reason: e.to_string(),
                    })?
            }
            None => {
                if let Some(p) = Process::open_verified(old.service.pid, old.service.start_time) {
                    p.stop(self.settings.stop_timeout)?;
                }
                self.start().await?
            }
        };
        self.publish(info).await
    }

    /// Hands a freshly started instance to a keeper and writes the discovery file.
    async fn publish(&self, info: ServiceInfo) -> Result<Record> {
        let service = ProcessId::of(info.pid()).ok_or_else(|| Error::ServiceStart {
            name: self.name.clone(),
            reason: format!("the returned pid {} is not a running process", info.pid()),
        })?;
        let spec = self.keeper_spec(discovery::new_instance_id()?, service);
        let keeper = match keeper::spawn(&spec) {
            Ok(k) => k,
            Err(e) => {
                // Nobody would ever stop it: do not leave it running.
                if let Some(p) = Process::open_verified(service.pid, service.start_time) {
                    let _ = p.stop(self.settings.stop_timeout);
                }
                return Err(e);
            }
        };
        let record = Record {
            format: discovery::RECORD_FORMAT,
            name: self.name.clone(),
            instance: spec.instance,
            service,
            info,
            keeper: Some(keeper),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            written_at: discovery::unix_now(),
        };
        if let Err(e) = record.store(&self.discovery) {
            // No client could find it: stop it rather than leave it to the keeper.
            keeper::dismiss(&keeper);
            if let Some(p) = Process::open_verified(service.pid, service.start_time) {
                let _ = p.stop(self.settings.stop_timeout);
            }
            return Err(e);
        }
        Ok(record)
    }

    fn keeper_spec(&self, instance: String, service: ProcessId) -> keeper::Spec {
        keeper::Spec {
            name: self.name.clone(),
            discovery: self.discovery.clone(),
            instance,
            service,
            linger: self.settings.linger.unwrap_or(Duration::ZERO),
            stop_timeout: self.settings.stop_timeout,
        }
    }

    /// Under the startup lock: if no keeper guards the live instance `record` (its keeper
    /// was killed), starts one for it and records it in the discovery file.
    fn adopt_if_orphaned(&self, record: Record) -> Result<Record> {
        if self.counter.keepers()? > 0 {
            return Ok(record);
        }
        tracing::warn!(service = %self.name, pid = record.service.pid, "the service's keeper is gone; starting a new one");
        let keeper = keeper::spawn(&self.keeper_spec(record.instance.clone(), record.service))?;
        let record = Record {
            keeper: Some(keeper),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            written_at: discovery::unix_now(),
            ..record
        };
        if let Err(e) = record.store(&self.discovery) {
            // The new keeper recognises the instance by its id, which the file still holds.
            tracing::warn!(service = %self.name, error = %e, "could not record the new keeper");
        }
        Ok(record)
    }

    /// Takes the startup lock (waiting up to `wait`; `None`: only if it is free now) and
    /// adopts the live instance if it has no keeper.
    fn adopt_orphan(&self, wait: Option<Duration>) -> Result<Adoption> {
        // A counter object of its own: the lock belongs to an object, and this can run on
        // another thread beside an acquire or release of this process.
        let lock = SysvRefCounter::new(&self.name)?;
        let got = match wait {
            Some(timeout) => lock.lock_timeout(timeout)?,
            None => lock.try_lock()?,
        };
        if !got {
            return Ok(Adoption::LockBusy);
        }
        let outcome = match Record::lookup(&self.discovery, &self.name) {
            Ok(Lookup::Live(record)) => self.adopt_if_orphaned(record).map(|_| Adoption::Guarded),
            Ok(Lookup::Stale) => Ok(Adoption::NoInstance),
            Err(e) => Err(e),
        };
        lock.unlock()?;
        outcome
    }

    /// Before a reference is given back: a keeper-less instance gets its keeper now, while
    /// this reference still holds the set and the service. Best effort: if the lock is
    /// busy, its holder or a watching client adopts the instance.
    fn adopt_before_release(&self) {
        if matches!(self.counter.keepers(), Ok(0)) {
            if let Err(e) = self.adopt_orphan(None) {
                tracing::warn!(service = %self.name, error = %e, "could not start a new keeper");
            }
        }
    }

    /// Starts this object's keeper watch unless it is running.
    fn watch_keeper(self: &Arc<Self>) {
        let mut watch = self.keeper_watch.lock().unwrap_or_else(|p| p.into_inner());
        if watch.as_ref().is_some_and(KeeperWatch::is_running) {
            return;
        }
        let weak = Arc::downgrade(self);
        // Keeps trying while the lock is busy (its holder is alive: the kernel frees it
        // otherwise), for as long as this service object exists.
        let on_keeper_gone = move || loop {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            match inner.adopt_orphan(Some(inner.settings.startup_timeout)) {
                Ok(Adoption::Guarded) => return true,
                Ok(Adoption::NoInstance) => return false,
                Ok(Adoption::LockBusy) => continue,
                Err(e) => {
                    tracing::warn!(service = %inner.name, error = %e, "could not start a new keeper");
                    return false;
                }
            }
        };
        match KeeperWatch::start(self.discovery.clone(), on_keeper_gone) {
            Ok(started) => *watch = Some(started),
            Err(e) => {
                tracing::warn!(service = %self.name, error = %e, "cannot watch the keeper");
            }
        }
    }

    /// Gives back one reference.
    async fn release(&self) -> Result<()> {
        let local = Arc::clone(&self.local).lock_owned().await;
        let result = self.give_back(local).await;
        self.leave_when_idle();
        result
    }

    /// Once this object holds no reference, its counter leaves the semaphore set: a service
    /// object without handles does not use the name, so it keeps nothing in the kernel (and
    /// leaves nothing behind if its process ends without dropping it). The keeper, or the
    /// last counter object present, removes the set. Skipped while an acquire or release
    /// of this object is under way: that one checks again when it is done.
    fn leave_when_idle(&self) {
        if let Ok(_local) = self.local.try_lock() {
            if self.counter.held() == 0 {
                let _ = self.counter.unwatch();
            }
        }
    }

    /// [`release`](Self::release) under `local`, which it gives up before returning.
    async fn give_back(&self, local: LocalGuard) -> Result<()> {
        self.adopt_before_release();
        if self.settings.on_last_release.is_none() || self.counter.release_unless_last()? {
            if self.settings.on_last_release.is_none() {
                self.counter.release()?;
            }
            return Ok(());
        }
        // Possibly the last reference: decide under the lock, so the keeper (which also
        // needs the lock) cannot stop the service behind on_last_release's back.
        let Ok(_local) = self.lock(local).await else {
            self.counter.release()?;
            tracing::warn!(service = %self.name, "startup lock busy; leaving the stop to the keeper");
            return Ok(());
        };
        let _locked = LockGuard(self);
        if self.counter.release()? == 0 && self.counter.count()? == 0 {
            if let Ok(Lookup::Live(record)) = Record::lookup(&self.discovery, &self.name) {
                if let Some(stop) = &self.settings.on_last_release {
                    if let Err(e) = stop(record.info.clone()).await {
                        tracing::warn!(service = %self.name, error = %e, "on_last_release failed");
                    }
                }
                discovery::remove(&self.discovery)?;
            }
            self.counter.try_remove()?;
        }
        Ok(())
    }
}

/// What [`Inner::adopt_orphan`] found.
enum Adoption {
    /// A keeper guards the live instance (it had one, or now has a new one).
    Guarded,
    /// There is no live instance to guard.
    NoInstance,
    /// The startup lock stayed busy.
    LockBusy,
}

/// Releases the reference if `acquire` fails or is cancelled half-way.
struct ReferenceGuard<'a>(Option<&'a Inner>);

impl Drop for ReferenceGuard<'_> {
    fn drop(&mut self) {
        if let Some(inner) = self.0 {
            let _ = inner.counter.release();
            inner.leave_when_idle();
        }
    }
}

/// Frees the startup lock on every exit path.
struct LockGuard<'a>(&'a Inner);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.counter.unlock();
    }
}

/// A reference to a running shared service. Dropping it releases the reference.
pub struct ServiceHandle {
    inner: Arc<Inner>,
    info: ServiceInfo,
    released: bool,
}

impl ServiceHandle {
    /// Where the service is.
    pub fn info(&self) -> &ServiceInfo {
        &self.info
    }

    /// The service's pid.
    pub fn pid(&self) -> u32 {
        self.info.pid()
    }

    /// The service's port.
    pub fn port(&self) -> u16 {
        self.info.port()
    }

    /// Releases the reference; if it was the last one and `on_last_release` is set, runs
    /// it (under the startup lock) before returning.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.inner.release().await
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let inner = &self.inner;
        if inner.settings.on_last_release.is_none() {
            inner.adopt_before_release();
            let _ = inner.counter.release();
            inner.leave_when_idle();
            return;
        }
        // on_last_release is async and Drop is not: run the release on a helper thread with
        // its own small runtime, so this works inside or outside a tokio runtime.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    let _ = runtime.block_on(inner.release());
                } else {
                    let _ = inner.counter.release();
                    inner.leave_when_idle();
                }
            });
        });
    }
}

/// Configures a [`SharedService`].
pub struct SharedServiceBuilder {
    name: String,
    base_dir: Option<PathBuf>,
    settings: Settings,
}

impl SharedServiceBuilder {
    /// A builder for the service `name` (procref 0.1 name; same as [`SharedService::builder`]).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_dir: None,
            settings: Settings {
                on_first_acquire: None,
                on_last_release: None,
                on_health_check: None,
                on_recover: None,
                startup_timeout: DEFAULT_STARTUP_TIMEOUT,
                linger: None,
                stop_timeout: DEFAULT_STOP_TIMEOUT,
            },
        }
    }

    /// Directory for the discovery file (default: [`discovery::default_base_dir`]). It is
    /// created mode 0700 if missing, and must be owned by this user and not writable by others.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Starts the service when no live instance exists; returns where it is.
    pub fn on_first_acquire<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ServiceInfo>> + Send + 'static,
    {
        self.settings.on_first_acquire = Some(Box::new(move || Box::pin(f())));
        self
    }

    /// Stops the service when the last client releases gracefully. (If the last client
    /// dies instead, the keeper stops the service's process.) Not combinable with `linger`.
    pub fn on_last_release<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ServiceInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.settings.on_last_release = Some(Box::new(move |info| Box::pin(f(info))));
        self
    }

    /// Checks a running service on every acquire except the one that started it.
    /// Default: the process is alive (always checked first).
    pub fn on_health_check<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ServiceInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.settings.on_health_check = Some(Box::new(move |info| Box::pin(f(info))));
        self
    }

    /// Recovers a service whose health check failed; returns where it is now. Without
    /// it, procref stops the old process and calls `on_first_acquire`.
    pub fn on_recover<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ServiceInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ServiceInfo>> + Send + 'static,
    {
        self.settings.on_recover = Some(Box::new(move |info| Box::pin(f(info))));
        self
    }

    /// Bound on waiting for another process that is starting or stopping the service
    /// (default 30 s). The wait ends early if that process dies.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.settings.startup_timeout = timeout;
        self
    }

    /// Keep the service running until the count has stayed 0 for `linger` (the ADR-0004
    /// disconnect timeout); a client acquiring within that window reuses it.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.settings.linger = Some(linger);
        self
    }

    /// SIGTERM → SIGKILL grace when procref stops the service itself (default 5 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.settings.stop_timeout = timeout;
        self
    }

    /// Validates the settings and prepares the discovery directory.
    pub fn build(self) -> Result<SharedService> {
        let counter = SysvRefCounter::new(&self.name)?;
        if self.settings.linger.is_some() && self.settings.on_last_release.is_some() {
            return Err(Error::Config {
                name: self.name,
                reason: "linger and on_last_release cannot both be set: with linger the keeper \
                         stops the service after the count has stayed 0; drop one of them"
                    .into(),
            });
        }
        let base_dir = self.base_dir.unwrap_or_else(discovery::default_base_dir);
        discovery::ensure_private_dir(&base_dir)?;
        let discovery = base_dir.join(format!("{}.json", self.name));
        Ok(SharedService {
            inner: Arc::new(Inner {
                name: self.name,
                counter: Arc::new(counter),
                discovery,
                local: Arc::new(tokio::sync::Mutex::new(())),
                settings: self.settings,
                keeper_watch: Mutex::new(None),
            }),
        })
    }
}
