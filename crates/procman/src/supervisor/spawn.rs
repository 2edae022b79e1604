//! Creating a process, cheaply: `clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, straight
//! into its cgroup (`CLONE_INTO_CGROUP`) in cgroup mode.
//!
//! A plain fork copies the supervisor's page tables, which costs more the larger the
//! supervisor grows; with `CLONE_VM` the child borrows the supervisor's memory until it
//! calls `execve` (or exits), and `CLONE_VFORK` keeps the calling thread suspended until
//! then, as `posix_spawn` does. The child runs on a stack of its own ([`Stack`], mapped once
//! and reused), and everything it touches is prepared before the clone ([`Request`]).
//!
//! The child side ([`child_main`]) is sound because it only
//! - reads memory the suspended parent prepared and does not change (argv, envp, paths,
//!   descriptors), and writes to its own stack and to [`Shared`] (atomics the parent reads
//!   after it resumes);
//! - makes async-signal-safe system calls (`sigaction`, `rt_sigprocmask`, `close_range`,
//!   `setpgid`, `dup2`, `fcntl`, `chdir`, `access`, `writev`, `execve`, `_exit`): no
//!   allocation, no lock, nothing that could panic;
//! - with [`Request::keep_descriptors`], leaves the supervisor's descriptor table before
//!   it changes any descriptor;
//! - runs with every signal blocked (the parent blocks them before the clone) until it has
//!   reset each signal the supervisor catches to its default: a handler of the supervisor
//!   must never run in the child, where it would write the supervisor's memory.
//!
//! This is the only module of the supervisor that creates processes with `unsafe` code.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// A list of NUL-terminated strings in one buffer, with the NULL-terminated pointer array
/// `execve` takes: two allocations however many strings (argv, envp).
#[derive(Default)]
pub struct CStrings {
    bytes: Vec<u8>,
    starts: Vec<usize>,
    pointers: Vec<*const c_char>,
}

impl CStrings {
    /// Appends `parts` joined, as one string. Fails on an interior NUL.
    pub fn push(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        if parts.iter().any(|p| p.contains(&0)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a NUL byte in a command, its environment or its cwd",
            ));
        }
        self.starts.push(self.bytes.len());
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
        self.bytes.push(0);
        Ok(())
    }

    /// The pointer array (NULL-terminated), valid while `self` is not changed.
    fn pointers(&mut self) -> &[*const c_char] {
        let base = self.bytes.as_ptr();
        self.pointers.clear();
        // `wrapping_add` stays in the buffer: every start is an index into `bytes`.
        self.pointers
            .extend(self.starts.iter().map(|&s| base.wrapping_add(s).cast()));
        self.pointers.push(std::ptr::null());
        &self.pointers
    }
}

/// What the child executes.
pub enum Exec<'a> {
    /// `argv[0]` is the shell: if it cannot be executed, the spawn fails.
    Shell { argv: &'a mut CStrings },
    /// The command itself, found at `path` (the shell was not needed). If exec fails, the
    /// command fails as it would have in the shell: a line on its stderr, exit 126 or 127;
    /// a file without `#!` or ELF header is run by `script` (the shell, then `path` and
    /// the arguments), as the shell does.
    Command {
        path: &'a CStr,
        argv: &'a mut CStrings,
        script: &'a mut CStrings,
        failure: Failure<'a>,
    },
    /// Nothing to execute (the command was not found): the line, then exit `code`.
    Fail {
        code: i32,
        reason: &'static str,
        failure: Failure<'a>,
    },
}

/// The words of a command's failure line, `procman: NAME: REASON: COMMAND`.
#[derive(Clone, Copy)]
pub struct Failure<'a> {
    /// The process name.
    pub name: &'a str,
    /// The command as written.
    pub command: &'a str,
}

/// Everything the child needs, prepared before the clone.
pub struct Request<'a> {
    pub exec: Exec<'a>,
    pub env: &'a mut CStrings,
    pub cwd: Option<&'a CStr>,
    pub stdin: BorrowedFd<'a>,
    /// stdout and stderr.
    pub output: BorrowedFd<'a>,
    /// The cgroup directory to start in.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// `Some(n)`: clone sharing the supervisor's descriptor table, which the child then
    /// leaves keeping only the descriptors below `n` (`close_range` with
    /// `CLOSE_RANGE_UNSHARE`, Linux 5.9); `n` must exceed `stdin`, `output` and every
    /// descriptor the child is to inherit. A plain clone copies the whole table, and exec
    /// then closes every copy: work for each descriptor the supervisor holds (several per
    /// running process), where this copies `n`.
    pub keep_descriptors: Option<u32>,
}

/// The step of the child's setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Leaving the supervisor's descriptor table ([`Request::keep_descriptors`]).
    Unshare,
    /// Its own process group.
    ProcessGroup,
    /// stdin, stdout, stderr.
    Descriptors,
    /// The working directory.
    Cwd,
    /// Executing the shell.
    Exec,
}

/// Why a spawn failed.
#[derive(Debug)]
pub enum SpawnError {
    /// `clone3` is not available here (an old kernel, a seccomp filter, or an architecture
    /// without the child trampoline): use another way.
    Unsupported,
    /// The clone itself failed.
    Clone(io::Error),
    /// The child failed at `step` (it has been reaped).
    Child(Step, io::Error),
}

/// The child's stack: mapped once, with a guard page below, reused for every spawn (a
/// spawn takes `&mut`, and the parent is suspended while the child runs on it).
pub struct Stack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; nothing refers to it between spawns.
unsafe impl Send for Stack {}

/// The child's stack size; it runs a handful of system calls.
const STACK_SIZE: usize = 64 * 1024;
const GUARD: usize = 4096;

impl Stack {
    /// Maps a new stack.
    pub fn new() -> io::Result<Stack> {
        let len = STACK_SIZE + GUARD;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // touches no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the range lies inside the mapping just made; the lowest page stays
        // PROT_NONE as a guard.
        let rc = unsafe {
            libc::mprotect(
                base.cast::<u8>().add(GUARD).cast(),
                STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made, which nothing uses any more.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// What the child reports back through the shared memory (zero: it executed).
#[derive(Default)]
struct Shared {
    step: AtomicI32,
    errno: AtomicI32,
}

/// The child's view: raw pointers and descriptors taken from the [`Request`].
struct ChildArgs<'r, 'a> {
    request: &'r Request<'a>,
    argv: *const *const c_char,
    script: *const *const c_char,
    envp: *const *const c_char,
    shared: &'r Shared,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), wider than the `c_int` libc declares it as.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (Linux 5.7 for `cgroup`).
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

/// Starts the child described by `request` on `stack`; returns its pid and a pidfd. When
/// the parent resumes, the child has executed (or, for [`Exec::Command`] and
/// [`Exec::Fail`], possibly exited as the command would have).
pub fn spawn(stack: &mut Stack, request: &mut Request<'_>) -> Result<(u32, OwnedFd), SpawnError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(SpawnError::Unsupported);
    }
    let env = request.env.pointers().as_ptr();
    let (argv, script) = match &mut request.exec {
        Exec::Shell { argv } => (argv.pointers().as_ptr(), std::ptr::null()),
        Exec::Command { argv, script, .. } => {
            (argv.pointers().as_ptr(), script.pointers().as_ptr())
        }
        Exec::Fail { .. } => (std::ptr::null(), std::ptr::null()),
    };
    let shared = Shared::default();
    let child = ChildArgs {
        request,
        argv,
        script,
        envp: env,
        shared: &shared,
    };
    let mut pidfd: c_int = -1;
    let mut flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64;
    if child.request.keep_descriptors.is_some() {
        flags |= libc::CLONE_FILES as u64;
    }
    if child.request.cgroup.is_some() {
        flags |= CLONE_INTO_CGROUP;
    }
    let args = CloneArgs {
        flags,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base as u64 + GUARD as u64,
        stack_size: STACK_SIZE as u64,
        cgroup: child.request.cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
        ..CloneArgs::default()
    };
    let blocked = block_signals();
    // SAFETY: `args` describes a valid stack that nothing else uses (we hold `&mut
    // Stack`); `child` and everything it points to live in this frame or are borrowed for
    // longer, and stay unchanged while the child runs because this thread is suspended
    // until the child executes or exits (CLONE_VFORK). The child runs `child_main`, which
    // never returns.
    let ret = unsafe {
        clone3(
            &args,
            child_main,
            std::ptr::addr_of!(child).cast_mut().cast(),
        )
    };
    restore_signals(&blocked);
    if ret < 0 {
        let errno = -ret as i32;
        return Err(match errno {
            libc::ENOSYS => SpawnError::Unsupported,
            _ => SpawnError::Clone(io::Error::from_raw_os_error(errno)),
        });
    }
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = ret as u32;
    let step = shared.step.load(Ordering::Acquire);
    if step != 0 {
        let error = io::Error::from_raw_os_error(shared.errno.load(Ordering::Acquire));
        // It exited (the parent resumed and it did not execute): reap it.
        if let Some(child) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
        }
        let step = match step {
            1 => Step::ProcessGroup,
            2 => Step::Descriptors,
            3 => Step::Cwd,
            5 => Step::Unshare,
            _ => Step::Exec,
        };
        return Err(SpawnError::Child(step, error));
    }
    Ok((pid, pidfd))
}

type SigSet = [u64; 1];

/// Blocks every signal on this thread (raw, so that libc's reserved signals are blocked
/// too); returns the previous mask.
fn block_signals() -> SigSet {
    let all: SigSet = [!0];
    let mut old: SigSet = [0];
    // SAFETY: rt_sigprocmask reads `all` and writes `old`, both of the kernel's sigset size.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            all.as_ptr(),
            old.as_mut_ptr(),
            std::mem::size_of::<SigSet>(),
        );
    }
    old
}

fn restore_signals(old: &SigSet) {
    // SAFETY: rt_sigprocmask reads `old`, of the kernel's sigset size.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            old.as_ptr(),
            std::ptr::null_mut::<SigSet>(),
            std::mem::size_of::<SigSet>(),
        );
    }
}

/// `clone3(args)`; the child starts on `args.stack` and calls `main(arg)`, which must not
/// return. Returns the child's pid, or a negated errno.
///
/// # Safety
/// `args` must be valid clone arguments with a stack for the child; `main` must never
/// return and must only do what is safe in a child sharing this address space.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(
    args: &CloneArgs,
    main: unsafe extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> isize {
    let ret: isize;
    // SAFETY: the caller's contract. In the parent this is one `syscall` instruction
    // (clobbering rcx and r11). The child starts with the same registers on its new,
    // 16-byte aligned stack top, so `call` enters `main` with the ABI's alignment; it
    // clears the frame pointer so that nothing unwinds into the parent's frames.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") main,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3(
    _args: &CloneArgs,
    _main: unsafe extern "C" fn(*mut c_void) -> !,
    _arg: *mut c_void,
) -> isize {
    -(libc::ENOSYS as isize)
}

/// The child: resets signal handling, its own process group, stdio, cwd, then exec.
///
/// # Safety
/// Only as the entry of a child cloned by [`spawn`], with `arg` its [`ChildArgs`].
unsafe extern "C" fn child_main(arg: *mut c_void) -> ! {
    // SAFETY: `spawn` passed a pointer to its `ChildArgs`, alive and unchanged while the
    // parent is suspended. Every call below is an async-signal-safe system call on
    // integers, on this stack, or on the prepared, NUL-terminated strings and arrays.
    unsafe {
        let child = &*arg.cast::<ChildArgs<'_, '_>>();
        let request = child.request;
        let fail = |step: i32| -> ! {
            child
                .shared
                .errno
                .store(*libc::__errno_location(), Ordering::Release);
            child.shared.step.store(step, Ordering::Release);
            libc::_exit(127)
        };
        reset_signal_handlers();
        let stdin = request.stdin.as_raw_fd();
        let output = request.output.as_raw_fd();
        // Until this succeeds the table is the supervisor's: nothing below may change it.
        if let Some(keep) = request.keep_descriptors {
            let (first, unshare) = (keep as libc::c_uint, libc::CLOSE_RANGE_UNSHARE);
            if libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, unshare) != 0 {
                fail(5);
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(1);
        }
        if !redirect(stdin, 0) || !redirect(output, 1) || !redirect(output, 2) {
            fail(2);
        }
        if let Some(cwd) = request.cwd
            && libc::chdir(cwd.as_ptr()) != 0
        {
            fail(3);
        }
        let empty: SigSet = [0];
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            empty.as_ptr(),
            std::ptr::null_mut::<SigSet>(),
            std::mem::size_of::<SigSet>(),
        );
        match &request.exec {
            Exec::Shell { .. } => {
                libc::execve(*child.argv, child.argv, child.envp);
                fail(4)
            }
            Exec::Command { path, failure, .. } => {
                libc::execve(path.as_ptr(), child.argv, child.envp);
                let errno = *libc::__errno_location();
                let (code, reason) = match errno {
                    libc::ENOEXEC => {
                        libc::execve(*child.script, child.script, child.envp);
                        (126, "cannot execute")
                    }
                    libc::ENOENT if libc::access(path.as_ptr(), libc::F_OK) == 0 => {
                        (126, "bad interpreter")
                    }
                    libc::ENOENT | libc::ENOTDIR => (127, "no such file or directory"),
                    libc::EACCES | libc::EPERM => (126, "permission denied"),
                    _ => (126, "cannot execute"),
                };
                report(failure, reason, errno);
                libc::_exit(code)
            }
            Exec::Fail {
                code,
                reason,
                failure,
            } => {
                report(failure, reason, 0);
                libc::_exit(*code)
            }
        }
    }
}

/// Resets every caught signal to its default action, and SIGPIPE (which Rust ignores)
/// too; other ignored signals stay ignored across exec, as the shell would leave them.
///
/// # Safety
/// Only in the cloned child, with every signal blocked.
unsafe fn reset_signal_handlers() {
    // SAFETY: sigaction on a zeroed struct on this stack; async-signal-safe.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        // The kernel's signals are 1 to 64; libc refuses its own reserved ones.
        for signal in 1..=64 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if caught || (signal == libc::SIGPIPE && old.sa_sigaction == libc::SIG_IGN) {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}

/// `dup2(from, to)`, clearing close-on-exec when they are the same descriptor.
///
/// # Safety
/// Only in the cloned child.
unsafe fn redirect(from: RawFd, to: RawFd) -> bool {
    // SAFETY: descriptor operations on integers.
    unsafe {
        if from == to {
            libc::fcntl(to, libc::F_SETFD, 0) == 0
        } else {
            libc::dup2(from, to) == to
        }
    }
}

/// Writes `procman: NAME: REASON: COMMAND` (and the errno, when it is not the usual one)
/// on stderr in one `writev`.
///
/// # Safety
/// Only in the cloned child.
unsafe fn report(failure: &Failure<'_>, reason: &str, errno: i32) {
    // Room for ` (errno 4294967295)`.
    let mut digits = [0u8; 32];
    let mut at = digits.len();
    let mut n = errno.unsigned_abs();
    let usual = matches!(errno, 0 | libc::ENOENT | libc::ENOTDIR | libc::EACCES);
    if !usual {
        // ` (errno N)` written backwards into `digits`.
        at -= 1;
        digits[at] = b')';
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &b in b" (errno ".iter().rev() {
            at -= 1;
            digits[at] = b;
        }
    }
    let parts: [&[u8]; 8] = [
        b"procman: ",
        failure.name.as_bytes(),
        b": ",
        reason.as_bytes(),
        b": ",
        failure.command.as_bytes(),
        &digits[at..],
        b"\n",
    ];
    let iov = parts.map(|p| libc::iovec {
        iov_base: p.as_ptr().cast_mut().cast(),
        iov_len: p.len(),
    });
    // SAFETY: each iovec points at a live slice; writev only reads them.
    unsafe { libc::writev(2, iov.as_ptr(), iov.len() as c_int) };
}
