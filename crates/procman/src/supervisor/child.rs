//! Spawning one child: the shell, its process group (and cgroup), its output pipe, its exit.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};
use tokio::io::unix::AsyncFd;

/// The shell that runs `run` scripts.
///
/// procman 0.12 ran `sh -e -u -o pipefail -c`, which dash (Debian's and Ubuntu's `sh`)
/// rejects, so nothing ran there. We use bash with `pipefail` when it exists and fall
/// back to a POSIX `sh -e -u` otherwise.
#[derive(Debug, Clone)]
pub struct Shell {
    program: PathBuf,
    flags: &'static [&'static str],
}

impl Shell {
    /// bash from `PATH` if present, else `/bin/sh`.
    pub fn detect() -> Shell {
        match find_in_path("bash") {
            Some(bash) => Shell {
                program: bash,
                flags: &["-e", "-u", "-o", "pipefail", "-c"],
            },
            None => Shell {
                program: PathBuf::from("/bin/sh"),
                flags: &["-e", "-u", "-c"],
            },
        }
    }

    /// The shell binary.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What to start.
pub struct Launch<'a> {
    /// Script for the shell's `-c`.
    pub script: &'a str,
    /// The complete environment (nothing else is inherited).
    pub env: &'a BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<&'a Path>,
    /// The directory of its cgroup: the child starts in it (`CLONE_INTO_CGROUP`), so
    /// nothing it runs is ever outside.
    pub cgroup: Option<BorrowedFd<'a>>,
}

/// A running child: the leader of its own process group.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    exited: Arc<AsyncFd<OwnedFd>>,
}

impl Child {
    /// Spawns `launch` in a new process group (and its cgroup) with stdin on `/dev/null`
    /// and stdout and stderr on one pipe, whose read end is returned for the output capture.
    pub fn spawn(shell: &Shell, launch: &Launch<'_>) -> io::Result<(Child, OwnedFd)> {
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let spawned = match launch.cgroup {
            Some(cgroup) => match clone_into_cgroup(shell, launch, cgroup, write_end) {
                // clone3 filtered out (an old seccomp profile): move in before exec,
                // which costs the kernel a grace period per spawn.
                Err((e, Some(write_end))) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    spawn_command(shell, launch, write_end)
                }
                other => other.map_err(|(e, _)| e),
            },
            None => spawn_command(shell, launch, write_end),
        };
        // Our copies of the pipe's write end are gone here, so the capture sees EOF once
        // everything the child started has closed it.
        let (pid, pidfd) = spawned.map_err(|e| {
            let hint = match launch.cwd {
                Some(cwd) if !cwd.is_dir() => format!(" (cwd {} does not exist)", cwd.display()),
                _ if launch.cgroup.is_some() && e.kind() != io::ErrorKind::NotFound => {
                    " (starting the shell in its cgroup; PROCMAN_NO_CGROUP=1 runs without cgroups)"
                        .into()
                }
                _ => String::new(),
            };
            io::Error::new(e.kind(), format!("{}: {e}{hint}", shell.program.display()))
        })?;
        let exited = super::containment::readable_fd(pidfd)?;
        Ok((
            Child {
                pid,
                exited: Arc::new(exited),
            },
            read_end,
        ))
    }

    /// Process id (and process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A handle that becomes readable when the child exits.
    pub fn exit_signal(&self) -> ExitSignal {
        ExitSignal(Arc::clone(&self.exited))
    }

    /// Reaps the child if it has exited.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        let pid = Pid::from_raw(self.pid as i32)?;
        let (_, status) = waitpid(Some(pid), WaitOptions::NOHANG).ok()??;
        Some(ExitStatus::from_raw(status.as_raw()))
    }
}

/// Spawns with `std::process::Command` (`posix_spawn` where it can). With a cgroup (only
/// when clone3 is unavailable) the child writes itself into it before exec.
fn spawn_command(
    shell: &Shell,
    launch: &Launch<'_>,
    write_end: OwnedFd,
) -> io::Result<(u32, OwnedFd)> {
    let mut command = Command::new(&shell.program);
    command
        .args(shell.flags)
        .arg(launch.script)
        .env_clear()
        .envs(launch.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end.try_clone()?))
        .stderr(Stdio::from(write_end))
        .process_group(0);
    if let Some(cwd) = launch.cwd {
        command.current_dir(cwd);
    }
    let procs = match launch.cgroup {
        Some(dir) => Some(rustix::fs::openat(
            dir,
            "cgroup.procs",
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?),
        None => None,
    };
    if let Some(procs) = procs.as_ref().map(AsRawFd::as_raw_fd) {
        // SAFETY: between fork and exec the closure makes one write(2) on a descriptor
        // the parent keeps open, and reads errno: async-signal-safe, no allocation.
        unsafe {
            command.pre_exec(move || match libc::write(procs, b"0".as_ptr().cast(), 1) {
                1 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            });
        }
    }
    let child = command.spawn()?;
    let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    // Not reaped yet (dropping `child` neither waits nor kills), so the pid is still it.
    let pidfd = pidfd_open(pid, PidfdFlags::NONBLOCK)?;
    Ok((child.id(), pidfd))
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), wider than the `c_int` libc declares it as.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3` arguments (`struct clone_args`, Linux 5.7 for `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Spawns the shell directly into the cgroup `cgroup` with `clone3(CLONE_INTO_CGROUP)`:
/// no migration afterwards, which would cost the kernel an RCU grace period per spawn.
/// Returns the pipe's write end with the error when `clone3` itself is unavailable.
fn clone_into_cgroup(
    shell: &Shell,
    launch: &Launch<'_>,
    cgroup: BorrowedFd<'_>,
    write_end: OwnedFd,
) -> Result<(u32, OwnedFd), (io::Error, Option<OwnedFd>)> {
    let no_nul = |e: std::ffi::NulError| io::Error::new(io::ErrorKind::InvalidInput, e);
    let prepared = (|| {
        let program = CString::new(shell.program.as_os_str().as_bytes()).map_err(no_nul)?;
        let mut argv = vec![program.clone()];
        for flag in shell.flags {
            argv.push(CString::new(*flag).map_err(no_nul)?);
        }
        argv.push(CString::new(launch.script).map_err(no_nul)?);
        let envp = launch
            .env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(no_nul))
            .collect::<io::Result<Vec<CString>>>()?;
        let cwd = launch
            .cwd
            .map(|cwd| CString::new(cwd.as_os_str().as_bytes()).map_err(no_nul))
            .transpose()?;
        let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let (report_read, report_write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok::<_, io::Error>((program, argv, envp, cwd, null, report_read, report_write))
    })();
    let (program, argv, envp, cwd, null, report_read, report_write) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return Err((e, None)),
    };
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP | (libc::CLONE_PIDFD as u64),
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let (null_fd, out_fd, report_fd) = (
        null.as_raw_fd(),
        write_end.as_raw_fd(),
        report_write.as_raw_fd(),
    );
    let cwd_ptr = cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: clone3 without CLONE_VM gives the child a copy of this address space, like
    // fork; `args` and `pidfd` outlive the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: the child of a multi-threaded process: only async-signal-safe calls on
        // memory prepared before the clone, then exec or _exit.
        unsafe {
            exec_child(
                null_fd,
                out_fd,
                report_fd,
                cwd_ptr,
                program.as_ptr(),
                &argv_ptrs,
                &envp_ptrs,
            )
        }
    }
    if pid < 0 {
        let e = io::Error::last_os_error();
        return Err((e, Some(write_end)));
    }
    drop((write_end, report_write, null));
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The report pipe closes on exec (EOF) or carries the errno of what failed.
    let mut errno = [0u8; 4];
    let mut report = std::fs::File::from(report_read);
    let reported = loop {
        match std::io::Read::read(&mut report, &mut errno) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break 0,
        }
    };
    if reported == 4 {
        if let Some(child) = Pid::from_raw(pid as i32) {
            let _ = waitpid(Some(child), WaitOptions::empty());
        }
        return Err((
            io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
            None,
        ));
    }
    Ok((pid as u32, pidfd))
}

/// In the cloned child: own process group, default signal handling, stdio, working
/// directory, exec; on failure the errno goes to `report` and the child exits 127.
///
/// # Safety
/// Call only in a freshly cloned child, with descriptors and pointers prepared before.
unsafe fn exec_child(
    null: RawFd,
    out: RawFd,
    report: RawFd,
    cwd: *const libc::c_char,
    program: *const libc::c_char,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: async-signal-safe system calls on integers and on memory that the parent
    // prepared and that this copy of the address space still holds.
    unsafe {
        let fail = |report: RawFd| -> ! {
            let errno = *libc::__errno_location();
            libc::write(report, (&errno as *const i32).cast(), 4);
            libc::_exit(127)
        };
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Rust ignores SIGPIPE; a child must not inherit that.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if libc::setpgid(0, 0) != 0
            || libc::dup2(null, 0) < 0
            || libc::dup2(out, 1) < 0
            || libc::dup2(out, 2) < 0
            || (!cwd.is_null() && libc::chdir(cwd) != 0)
        {
            fail(report);
        }
        libc::execve(program, argv.as_ptr(), envp.as_ptr());
        fail(report)
    }
}

/// Resolves when a child exits (a pidfd becoming readable: no SIGCHLD, no polling).
#[derive(Clone)]
pub struct ExitSignal(Arc<AsyncFd<OwnedFd>>);

impl ExitSignal {
    /// Waits for the exit.
    pub async fn wait(&self) {
        if let Ok(mut guard) = self.0.readable().await {
            guard.retain_ready();
        }
    }
}
