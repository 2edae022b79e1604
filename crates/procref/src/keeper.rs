//! The keeper: the process that stops a service when its last client is gone, even
//! when that client was killed (see `docs/adr/0001-keeper.md`).
//!
//! One keeper guards one started instance of a service. It holds no reference but a keeper
//! slot of the set (`SEM_UNDO`: the kernel frees it when the keeper dies, however it dies,
//! which is how clients learn that an instance needs a new keeper), sleeps in
//! `wait_zero` until the count falls to 0, optionally waits `linger` for a client to come
//! back (an event-driven wait for the count to become non-zero), then takes the startup
//! lock, re-checks the count and the discovery file, and stops the service only if the
//! file still names *its* instance (or names none: a start that never got published).
//!
//! The keeper must not share the fate or the memory of the client that started it. It
//! is the client's own executable re-executed through `/proc/self/exe` (so it costs a
//! fresh, small process, not a copy of the client's heap), detached into its own session
//! by a double fork, with its stdio on `/dev/null` and no other inherited descriptors.
//! The re-executed program never reaches `main`: a hook in `.init_array`, which every
//! program linking procref carries, recognises `PROCREF_KEEPER` in the environment and
//! runs [`run`] instead.

use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::discovery::{self, ProcessId, Record};
use crate::process::Process;
use crate::{Error, RefCounter, Result, SysvRefCounter};

/// Environment variable carrying the keeper's [`Spec`] (JSON) across `exec`.
const SPEC_VAR: &str = "PROCREF_KEEPER";
/// Descriptor number on which the keeper reports its pid to the spawner.
const READY_FD: i32 = 3;

/// Set by the hook in every normal process start: proof that re-executing this program
/// reaches the hook rather than `main`.
static HOOK_RAN: AtomicBool = AtomicBool::new(false);

#[used]
#[unsafe(link_section = ".init_array")]
static KEEPER_HOOK: extern "C" fn() = keeper_hook;

extern "C" fn keeper_hook() {
    match std::env::var_os(SPEC_VAR) {
        None => HOOK_RAN.store(true, Ordering::SeqCst),
        Some(spec) => {
            // SAFETY: runs before main, single-threaded; nothing else reads the environment.
            unsafe { std::env::remove_var(SPEC_VAR) };
            let code = match serde_json::from_slice::<Spec>(&spec.into_vec()) {
                Ok(spec) => match run(&spec) {
                    Ok(()) => 0,
                    Err(_) => 1,
                },
                Err(_) => 2,
            };
            std::process::exit(code);
        }
    }
}

/// What a keeper guards and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) discovery: PathBuf,
    pub(crate) instance: String,
    pub(crate) service: ProcessId,
    /// How long the count must stay 0 before the service is stopped.
    pub(crate) linger: Duration,
    /// SIGTERM → SIGKILL grace when stopping the service.
    pub(crate) stop_timeout: Duration,
}

/// The keeper's life: wait for the last client to go, then stop the service.
fn run(spec: &Spec) -> Result<()> {
    // The spawner may be gone by the time we report; a closed pipe must not kill us.
    // SAFETY: setting a signal disposition to SIG_IGN has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let counter = SysvRefCounter::new(&spec.name)?;
    // Present before reporting ready, so the spawner returns only once clients can see a
    // keeper; the kernel takes the slot back however this process ends.
    counter.enter_as_keeper()?;
    report_ready();
    loop {
        counter.wait_zero(None)?;
        if !spec.linger.is_zero() && counter.wait_nonzero(Some(spec.linger))? {
            continue; // a client came back within the linger window
        }
        while !counter.lock_timeout(Duration::from_secs(3600))? {}
        if counter.count()? > 0 {
            counter.unlock()?;
            continue;
        }
        let record = Record::read_unchecked(&spec.discovery).ok().flatten();
        match record {
            Some(r) if r.instance != spec.instance => {
                // Superseded by a restart or recovery, which has its own keeper.
                counter.unlock()?;
                return Ok(());
            }
            Some(_) => {
                stop_service(spec);
                discovery::remove(&spec.discovery)?;
            }
            // No file: the last client already ran on_last_release and removed it, or the
            // starter died before publishing. Either way no one can reach this instance.
            None => stop_service(spec),
        }
        counter.try_remove()?;
        counter.unlock()?;
        return Ok(());
    }
}

fn stop_service(spec: &Spec) {
    if let Some(p) = Process::open_verified(spec.service.pid, spec.service.start_time) {
        let _ = p.stop(spec.stop_timeout);
    }
}

fn report_ready() {
    // SAFETY: READY_FD was set up by the spawner for us alone; we take ownership once.
    let fd = unsafe { OwnedFd::from_raw_fd(READY_FD) };
    let pid = std::process::id().to_string();
    // SAFETY: writes from a valid buffer to a descriptor we own.
    unsafe { libc::write(fd.as_raw_fd(), pid.as_ptr().cast(), pid.len()) };
}

/// Starts a keeper for `spec` and returns its identity once it is running.
pub(crate) fn spawn(spec: &Spec) -> Result<ProcessId> {
    let fail = |reason: String| Error::Keeper {
        name: spec.name.clone(),
        reason,
    };
    if !HOOK_RAN.load(Ordering::SeqCst) {
        return Err(fail(
            "the procref startup hook did not run in this program, so it cannot re-execute \
             itself as a keeper (is procref linked into a Linux executable?)"
                .into(),
        ));
    }
    let json = serde_json::to_string(spec).map_err(|e| fail(e.to_string()))?;
    // Everything the child needs is allocated before fork: after fork only
    // async-signal-safe calls are allowed.
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    let dev_null = CString::new("/dev/null").expect("no NUL");
    let argv0 =
        CString::new(format!("procref-keeper: {}", spec.name)).map_err(|e| fail(e.to_string()))?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != SPEC_VAR)
        .filter_map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.into_vec()).ok()
        })
        .collect();
    env.push(CString::new(format!("{SPEC_VAR}={json}")).map_err(|e| fail(e.to_string()))?);
    let argv_ptrs = [argv0.as_ptr(), std::ptr::null()];
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());

    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| fail(format!("pipe: {e}")))?;
    let write_fd = ready_write.as_raw_fd();

    // SAFETY: fork in a possibly multi-threaded process. The child only makes
    // async-signal-safe calls (setsid, fork, dup2, open, close_range, sigprocmask,
    // execve, _exit) on memory prepared above, then execs or exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(fail(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if child == 0 {
        // SAFETY: see above; every pointer passed refers to memory allocated before fork.
        unsafe {
            libc::setsid();
            match libc::fork() {
                0 => {}
                -1 => libc::_exit(1),
                _ => libc::_exit(0),
            }
            // dup2 onto itself would keep FD_CLOEXEC: clear it explicitly in that case.
            let ok = if write_fd == READY_FD {
                libc::fcntl(READY_FD, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(write_fd, READY_FD) == READY_FD
            };
            if !ok {
                libc::_exit(1);
            }
            let null = libc::open(dev_null.as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
            libc::syscall(libc::SYS_close_range, READY_FD as u32 + 1, u32::MAX, 0);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(exe.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    drop(ready_write);
    // Reap the intermediate child (it exits at once); the keeper is now init's child.
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(child, &mut status, 0) };

    let mut reply = String::new();
    let mut ready = std::fs::File::from(ready_read);
    if !poll_readable(&ready, Duration::from_secs(10)) {
        return Err(fail("the keeper did not report ready within 10s".into()));
    }
    ready
        .read_to_string(&mut reply)
        .map_err(|e| fail(format!("reading keeper pid: {e}")))?;
    let pid: u32 = reply
        .trim()
        .parse()
        .map_err(|_| fail("the keeper exited before reporting ready".into()))?;
    ProcessId::of(pid).ok_or_else(|| fail("the keeper exited right after starting".into()))
}

fn poll_readable(file: &std::fs::File, timeout: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let mut fds = [PollFd::new(file, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

/// Stops an old keeper (after a restart or recovery made it obsolete) and waits, briefly,
/// until it is gone, so that its keeper slot no longer counts.
pub(crate) fn dismiss(keeper: &ProcessId) {
    if let Some(p) = Process::open_verified(keeper.pid, keeper.start_time) {
        let _ = p.signal(rustix::process::Signal::TERM);
        p.wait_exit(Some(Duration::from_secs(2)));
    }
}
