//! Spawning one child: the shell (or the command alone, [`command`]), its process group
//! (and cgroup), its output pipe, its exit. The process itself is created by [`spawn`].

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};
use tokio::io::unix::AsyncFd;

use super::command::{self, Decision};
use super::containment::procfs;
use super::spawn::{self, CStrings, Exec, Failure, Request, Step};

/// The shell that runs `run` scripts.
///
/// procman 0.12 ran `sh -e -u -o pipefail -c`, which dash (Debian's and Ubuntu's `sh`)
/// rejects, so nothing ran there. We use bash with `pipefail` when it exists and fall
/// back to a POSIX `sh -e -u` otherwise.
#[derive(Debug, Clone)]
pub struct Shell {
    program: PathBuf,
    flags: &'static [&'static str],
    /// [`ALWAYS_SHELL_ENV`] is set: never skip the shell.
    always: bool,
}

/// Environment variable (of procman) that sends every script through the shell, even
/// one that does not need it ([`command`]).
pub const ALWAYS_SHELL_ENV: &str = "PROCMAN_ALWAYS_SHELL";

impl Shell {
    /// bash from `PATH` if present, else `/bin/sh`.
    pub fn detect() -> Shell {
        let always = std::env::var_os(ALWAYS_SHELL_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        match find_in_path("bash") {
            Some(bash) => Shell {
                program: bash,
                flags: &["-e", "-u", "-o", "pipefail", "-c"],
                always,
            },
            None => Shell {
                program: PathBuf::from("/bin/sh"),
                flags: &["-e", "-u", "-c"],
                always,
            },
        }
    }

    /// The shell binary.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// What the shell would add to the environment of `path`, which it executes in place
    /// of itself, for a command executed without it: `PWD` naming the directory it runs
    /// in (kept if it already does), and for bash `SHLVL` (`0` when unset: bash counts
    /// itself, then uncounts the exec) and `_` (the command's path).
    fn added_env(
        &self,
        env: &BTreeMap<String, String>,
        cwd: Option<&Path>,
        path: &Path,
    ) -> Vec<(&'static str, Vec<u8>)> {
        use std::os::unix::fs::MetadataExt;
        let mut added = Vec::new();
        let dir = cwd.unwrap_or(Path::new("."));
        let same = |a: &Path, b: &Path| match (a.metadata(), b.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        let valid_pwd = env
            .get("PWD")
            .is_some_and(|pwd| Path::new(pwd).is_absolute() && same(Path::new(pwd), dir));
        if !valid_pwd && let Ok(physical) = std::fs::canonicalize(dir) {
            added.push(("PWD", physical.into_os_string().into_vec()));
        }
        if self.program.file_name() == Some(std::ffi::OsStr::new("bash")) {
            if !env.contains_key("SHLVL") {
                added.push(("SHLVL", b"0".to_vec()));
            }
            added.push(("_", path.as_os_str().as_bytes().to_vec()));
        }
        added
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
    /// The process name (for the line that says its command cannot run).
    pub name: &'a str,
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

/// Starts children: the shell, what [`spawn`] needs kept between spawns.
pub struct Spawner {
    shell: Shell,
    /// The child's stack; `None` where `clone3` cannot be used: then `std::process` runs
    /// every script through the shell (the direct path needs the child's exec errors).
    stack: Option<spawn::Stack>,
    /// `/dev/null`, every child's stdin.
    null: OwnedFd,
    /// A low descriptor that holds each child's output pipe while it is cloned (and
    /// `/dev/null` otherwise), so that the child, cloned with the supervisor's descriptor
    /// table ([`spawn::Request::keep_descriptors`]), keeps a handful of descriptors
    /// however many the supervisor has open. `None` where the kernel cannot do that.
    slot: Option<OwnedFd>,
    /// How many descriptors such a child keeps: those up to the slot, `/dev/null`, and
    /// those procman inherited to pass on (without close-on-exec), as a copied table did.
    keep: u32,
}

impl Spawner {
    /// Finds the shell and prepares what every spawn uses.
    pub fn new() -> io::Result<Spawner> {
        let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let null = above_stdio(null)?;
        let slot = rustix::io::fcntl_dupfd_cloexec(&null, 3).ok();
        let low = [Some(&null), slot.as_ref()]
            .into_iter()
            .flatten()
            .map(|fd| fd.as_raw_fd());
        let keep = low
            .chain(procfs::inheritable_descriptors())
            .max()
            .unwrap_or(2)
            .max(2) as u32
            + 1;
        Ok(Spawner {
            shell: Shell::detect(),
            stack: spawn::Stack::new().ok(),
            null,
            slot,
            keep,
        })
    }

    /// Clones the child with `output` as its stdout and stderr: from the low slot, sharing
    /// the descriptor table, where the kernel can (once it cannot, never again).
    /// `Unsupported` where `clone3` cannot be used.
    fn clone_child(
        &mut self,
        launch: &Launch<'_>,
        output: &OwnedFd,
    ) -> Result<(u32, OwnedFd), spawn::SpawnError> {
        let Some(stack) = self.stack.as_mut() else {
            return Err(spawn::SpawnError::Unsupported);
        };
        let cloexec = rustix::io::DupFlags::CLOEXEC;
        let Some(slot) = self.slot.as_mut() else {
            return clone_child(&self.shell, stack, &self.null, launch, output, None);
        };
        if rustix::io::dup3(output, slot, cloexec).is_err() {
            return clone_child(&self.shell, stack, &self.null, launch, output, None);
        }
        let keep = Some(self.keep);
        let spawned = clone_child(&self.shell, stack, &self.null, launch, slot, keep);
        // The pipe's writers are now the child and `output` (which the caller drops): a
        // slot that cannot be emptied is closed.
        if rustix::io::dup3(&self.null, slot, cloexec).is_err() {
            self.slot = None;
        }
        match spawned {
            Err(spawn::SpawnError::Child(Step::Unshare, _)) => {
                self.slot = None;
                clone_child(&self.shell, stack, &self.null, launch, output, None)
            }
            other => other,
        }
    }
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
    /// A script that needs no shell is executed directly ([`command`]).
    pub fn spawn(spawner: &mut Spawner, launch: &Launch<'_>) -> io::Result<(Child, OwnedFd)> {
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let write_end = above_stdio(write_end)?;
        let spawned = match spawner.clone_child(launch, &write_end) {
            Err(spawn::SpawnError::Unsupported) => {
                spawner.stack = None;
                spawn_command(&spawner.shell, launch, write_end)
            }
            other => {
                drop(write_end);
                other.map_err(|e| spawn_error(&spawner.shell, launch, e))
            }
        };
        // Our copies of the pipe's write end are gone here, so the capture sees EOF once
        // everything the child started has closed it.
        let (pid, pidfd) = spawned?;
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

/// `fd` itself, or a copy numbered 3 or above if it is 0, 1 or 2 (procman started with
/// closed stdio), so that setting up the child's stdio cannot overwrite it.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// Prepares argv, envp and cwd (the only allocations of a spawn) and clones the child.
fn clone_child(
    shell: &Shell,
    stack: &mut spawn::Stack,
    null: &OwnedFd,
    launch: &Launch<'_>,
    output: &OwnedFd,
    keep_descriptors: Option<u32>,
) -> Result<(u32, OwnedFd), spawn::SpawnError> {
    let invalid = spawn::SpawnError::Clone;
    let decision = if shell.always {
        Decision::Shell
    } else {
        command::decide(launch.script, launch.env, launch.cwd)
    };
    let added = match &decision {
        Decision::Exec { path, .. } => shell.added_env(launch.env, launch.cwd, path),
        _ => Vec::new(),
    };
    let mut env = CStrings::default();
    for (key, value) in launch.env {
        if !added.iter().any(|(k, _)| k == key) {
            env.push(&[key.as_bytes(), b"=", value.as_bytes()])
                .map_err(invalid)?;
        }
    }
    for (key, value) in &added {
        env.push(&[key.as_bytes(), b"=", value]).map_err(invalid)?;
    }
    let cwd = launch
        .cwd
        .map(|cwd| CString::new(cwd.as_os_str().as_bytes()))
        .transpose()
        .map_err(|e| invalid(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let failure = |command| Failure {
        name: launch.name,
        command,
    };
    let (mut argv, mut script) = (CStrings::default(), CStrings::default());
    let path;
    let exec = match decision {
        Decision::Shell => {
            argv.push(&[shell.program.as_os_str().as_bytes()])
                .map_err(invalid)?;
            for flag in shell.flags {
                argv.push(&[flag.as_bytes()]).map_err(invalid)?;
            }
            argv.push(&[launch.script.as_bytes()]).map_err(invalid)?;
            Exec::Shell { argv: &mut argv }
        }
        Decision::Exec { path: found, words } => {
            path = CString::new(found.as_os_str().as_bytes())
                .map_err(|e| invalid(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            script
                .push(&[shell.program.as_os_str().as_bytes()])
                .map_err(invalid)?;
            script.push(&[path.as_bytes()]).map_err(invalid)?;
            for (i, word) in words.iter().enumerate() {
                argv.push(&[word.as_bytes()]).map_err(invalid)?;
                if i > 0 {
                    script.push(&[word.as_bytes()]).map_err(invalid)?;
                }
            }
            Exec::Command {
                path: &path,
                argv: &mut argv,
                script: &mut script,
                failure: failure(words[0]),
            }
        }
        Decision::Fail {
            code,
            reason,
            command,
        } => Exec::Fail {
            code,
            reason,
            failure: failure(command),
        },
    };
    let mut request = Request {
        exec,
        env: &mut env,
        cwd: cwd.as_deref(),
        stdin: null.as_fd(),
        output: output.as_fd(),
        cgroup: launch.cgroup,
        keep_descriptors,
    };
    spawn::spawn(stack, &mut request)
}

/// A failed spawn as one clear error.
fn spawn_error(shell: &Shell, launch: &Launch<'_>, error: spawn::SpawnError) -> io::Error {
    let (what, e) = match error {
        spawn::SpawnError::Child(Step::Cwd, e) => {
            let cwd = launch.cwd.map(Path::display);
            (
                format!(
                    "cannot enter its cwd {}",
                    cwd.map(|c| c.to_string()).unwrap_or_default()
                ),
                e,
            )
        }
        spawn::SpawnError::Child(Step::Exec, e) => (shell.program.display().to_string(), e),
        spawn::SpawnError::Child(step, e) => (format!("setting up the process ({step:?})"), e),
        spawn::SpawnError::Clone(e) => {
            let hint = if launch.cgroup.is_some() && e.kind() != io::ErrorKind::InvalidInput {
                " (starting it in its cgroup; PROCMAN_NO_CGROUP=1 runs without cgroups)"
            } else {
                ""
            };
            return io::Error::new(e.kind(), format!("{e}{hint}"));
        }
        spawn::SpawnError::Unsupported => return io::Error::other("clone3 is unavailable"),
    };
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Spawns the shell with `std::process::Command` (`posix_spawn` where it can), where
/// `clone3` cannot be used. With a cgroup the child writes itself into it before exec.
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
    let child = command.spawn().map_err(|e| {
        let hint = match launch.cwd {
            Some(cwd) if !cwd.is_dir() => format!(" (cwd {} does not exist)", cwd.display()),
            _ => String::new(),
        };
        io::Error::new(e.kind(), format!("{}: {e}{hint}", shell.program.display()))
    })?;
    let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    // Not reaped yet (dropping `child` neither waits nor kills), so the pid is still it.
    let pidfd = pidfd_open(pid, PidfdFlags::NONBLOCK)?;
    Ok((child.id(), pidfd))
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
