//! Spawning one child: the shell, its process group (and cgroup), its output pipe, its exit.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
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
    /// The `cgroup.procs` of its cgroup, which the child writes itself into before exec
    /// (so that nothing it runs is ever outside).
    pub cgroup_procs: Option<RawFd>,
}

/// A running child: the leader of its own process group.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    exited: Arc<AsyncFd<OwnedFd>>,
}

impl Child {
    /// Spawns `launch` in a new process group (and its cgroup) with stdin on `/dev/null`
    /// and stdout and stderr on one pipe, whose read end is returned for the output capture.
    pub fn spawn(shell: &Shell, launch: &Launch<'_>) -> io::Result<(Child, OwnedFd)> {
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
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
        if let Some(procs) = launch.cgroup_procs {
            // SAFETY: between fork and exec the closure makes one write(2) on a descriptor
            // the parent keeps open, and reads errno: async-signal-safe, no allocation.
            unsafe {
                command.pre_exec(move || match libc::write(procs, b"0".as_ptr().cast(), 1) {
                    1 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                });
            }
        }
        let child = command.spawn().map_err(|e| {
            let hint = match launch.cwd {
                Some(cwd) if !cwd.is_dir() => format!(" (cwd {} does not exist)", cwd.display()),
                _ if launch.cgroup_procs.is_some() && e.kind() != io::ErrorKind::NotFound => {
                    " (starting the shell or moving it into its cgroup; PROCMAN_NO_CGROUP=1 runs without cgroups)".into()
                }
                _ => String::new(),
            };
            io::Error::new(e.kind(), format!("{}: {e}{hint}", shell.program.display()))
        })?;
        // The command (and with it our copies of the pipe's write end) is gone here, so the
        // capture sees EOF once the child's whole group has closed it.
        drop(command);
        let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| io::Error::other("pid 0"))?;
        // Not reaped yet, so the pid cannot have been reused.
        let pidfd = pidfd_open(pid, PidfdFlags::NONBLOCK)?;
        let exited = super::containment::readable_fd(pidfd)?;
        Ok((
            Child {
                child,
                exited: Arc::new(exited),
            },
            read_end,
        ))
    }

    /// Process id (and process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A handle that becomes readable when the child exits.
    pub fn exit_signal(&self) -> ExitSignal {
        ExitSignal(Arc::clone(&self.exited))
    }

    /// Reaps the child if it has exited.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
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
