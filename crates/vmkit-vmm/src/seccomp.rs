//! Per-thread seccomp filters (QEMU's `-sandbox`), built with rust-vmm's `seccompiler`.
//!
//! Allow-lists in the shape of Firecracker's and Cloud Hypervisor's filters. The `vmkit`
//! binary installs the main filter ([`ThreadKind::Main`]) on its own thread before it
//! builds the machine, so every thread created later (vCPUs, the main loop, device
//! workers, the block pool, the gdb stub) inherits it; a vCPU thread then stacks the
//! stricter [`ThreadKind::Vcpu`] filter on itself at its start, before it enters `KVM_RUN`
//! (stacked filters intersect: the most restrictive answer wins). Device workers that a
//! vCPU thread starts (on `DRIVER_OK`) inherit both.
//!
//! `ioctl` is argument-filtered: only KVM's (type 0xAE) and the terminal/tun ones (type
//! `'T'`, which includes `FIONBIO`, `TCGETS`, `TUNSETIFF`) pass.
//!
//! Off unless `-sandbox on` is given (QEMU's default too). A violation then kills the
//! process (`SECCOMP_RET_KILL_PROCESS`); with
//! `-sandbox on,action=trap` (or `VMKIT_SANDBOX_ACTION=trap`) it raises SIGSYS and a
//! handler prints `vmkit: seccomp: thread NAME made forbidden syscall N (name)` and exits
//! with status 159.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// What a forbidden syscall does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `SECCOMP_RET_KILL_PROCESS` (production).
    Kill,
    /// SIGSYS to a handler that names the syscall and exits nonzero (tests).
    Trap,
}

/// The kinds of vmkit thread that get their own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The process's main thread, the main loop (QMP, chardevs, timers), the gdb stub and
    /// the I/O workers it starts.
    Main,
    /// A vCPU thread (and the device workers it starts).
    Vcpu,
}

static CONFIG: OnceLock<Action> = OnceLock::new();

/// Exit status of the SIGSYS handler (128 + SIGSYS).
pub const TRAP_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// Parses `-sandbox` text: `on|off[,action=trap|kill]`. `Ok(None)` is off.
pub fn parse_sandbox(text: &str) -> Result<Option<Action>, String> {
    let mut parts = text.split(',');
    let on = match parts.next().unwrap_or_default() {
        "on" => true,
        "off" => false,
        other => return Err(format!("-sandbox: expected 'on' or 'off', got '{other}'")),
    };
    let mut action = default_action();
    for part in parts {
        match part {
            "action=trap" => action = Action::Trap,
            "action=kill" => action = Action::Kill,
            other => {
                return Err(format!(
                    "-sandbox: '{other}' is not supported by vmkit (only 'action=trap|kill'; \
                     QEMU's obsolete=, elevateprivileges=, spawn=, resourcecontrol= are not)"
                ))
            }
        }
    }
    Ok(on.then_some(action))
}

/// The action without `action=`: `VMKIT_SANDBOX_ACTION=trap|kill`, else kill.
pub fn default_action() -> Action {
    match std::env::var("VMKIT_SANDBOX_ACTION").as_deref() {
        Ok("trap") => Action::Trap,
        _ => Action::Kill,
    }
}

/// Turns the sandbox on for this process: installs the SIGSYS handler (trap) and the
/// [`ThreadKind::Main`] filter on the calling thread. Threads call [`thread_start`] later.
pub fn enable(action: Action) -> Result<(), String> {
    let _ = CONFIG.set(action);
    if action == Action::Trap {
        install_sigsys_handler();
    }
    install(ThreadKind::Main, action)
}

/// Called by each vmkit thread at its start: installs that kind's filter if the sandbox
/// is on (a no-op otherwise, and for library users that never called [`enable`]).
pub fn thread_start(kind: ThreadKind) {
    if let Some(&action) = CONFIG.get() {
        if let Err(e) = install(kind, action) {
            eprintln!("vmkit: seccomp: {e}");
            std::process::exit(1);
        }
    }
}

/// Whether [`enable`] ran in this process.
pub fn enabled() -> bool {
    CONFIG.get().is_some()
}

fn install(kind: ThreadKind, action: Action) -> Result<(), String> {
    let program = build(kind, action)?;
    seccompiler::apply_filter(&program).map_err(|e| format!("installing the {kind:?} filter: {e}"))
}

/// Syscalls every vmkit thread may make.
const BASE: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_openat,
    libc::SYS_readlink,
    libc::SYS_getcwd,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_futex,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
];

/// Syscalls only the main-loop side may make (sockets it serves, files it renames).
const MAIN_ONLY: &[libc::c_long] = &[
    libc::SYS_socket,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_sched_setaffinity,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_kill,
    libc::SYS_wait4,
    libc::SYS_pselect6,
];

fn ioctl_rules() -> Result<Vec<SeccompRule>, String> {
    // The ioctl "type" byte (bits 8..16 of the request): KVMIO and 'T'.
    [0xAE00u64, 0x5400]
        .iter()
        .map(|&ty| {
            let cond = SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(0xff00),
                ty,
            )
            .map_err(|e| e.to_string())?;
            SeccompRule::new(vec![cond]).map_err(|e| e.to_string())
        })
        .collect()
}

/// Builds the BPF program of one thread kind.
pub fn build(kind: ThreadKind, action: Action) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let extra: &[libc::c_long] = match kind {
        ThreadKind::Main => MAIN_ONLY,
        ThreadKind::Vcpu => &[],
    };
    for &nr in BASE.iter().chain(extra) {
        rules.insert(nr, Vec::new());
    }
    rules.insert(libc::SYS_ioctl, ioctl_rules()?);
    let mismatch = match action {
        Action::Kill => SeccompAction::KillProcess,
        Action::Trap => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(
        rules,
        mismatch,
        SeccompAction::Allow,
        std::env::consts::ARCH
            .try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())?,
    )
    .map_err(|e| format!("building the {kind:?} filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compiling the {kind:?} filter: {e}"))
}

/// A syscall's name for the report (the ones vmkit could plausibly reach).
pub fn syscall_name(nr: i64) -> &'static str {
    const NAMES: &[(libc::c_long, &str)] = &[
        (libc::SYS_personality, "personality"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_fork, "fork"),
        (libc::SYS_vfork, "vfork"),
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_mount, "mount"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_bind, "bind"),
        (libc::SYS_listen, "listen"),
        (libc::SYS_accept, "accept"),
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_unlink, "unlink"),
        (libc::SYS_unlinkat, "unlinkat"),
        (libc::SYS_rename, "rename"),
        (libc::SYS_renameat2, "renameat2"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_open, "open"),
        (libc::SYS_stat, "stat"),
        (libc::SYS_lstat, "lstat"),
        (libc::SYS_access, "access"),
        (libc::SYS_faccessat, "faccessat"),
        (libc::SYS_faccessat2, "faccessat2"),
        (libc::SYS_select, "select"),
        (libc::SYS_pselect6, "pselect6"),
        (libc::SYS_kill, "kill"),
        (libc::SYS_wait4, "wait4"),
        (libc::SYS_sched_setaffinity, "sched_setaffinity"),
        (libc::SYS_sysinfo, "sysinfo"),
        (libc::SYS_uname, "uname"),
        (libc::SYS_getuid, "getuid"),
        (libc::SYS_mkdir, "mkdir"),
        (libc::SYS_chmod, "chmod"),
        (libc::SYS_membarrier, "membarrier"),
        (libc::SYS_io_uring_setup, "io_uring_setup"),
        (libc::SYS_statfs, "statfs"),
        (libc::SYS_fstatfs, "fstatfs"),
        (libc::SYS_getdents64, "getdents64"),
        (libc::SYS_prlimit64, "prlimit64"),
        (libc::SYS_getrlimit, "getrlimit"),
        (libc::SYS_socketpair, "socketpair"),
        (libc::SYS_tkill, "tkill"),
        (libc::SYS_sched_getparam, "sched_getparam"),
        (libc::SYS_getppid, "getppid"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == nr)
        .map_or("unknown", |(_, name)| name)
}

/// Raises a syscall no vmkit filter allows, on the calling thread (used by the hidden
/// `VMKIT_SECCOMP_SELFTEST` switch in the main loop).
pub fn forbidden_syscall() {
    // SAFETY: personality(0xffffffff) only queries the persona; it changes nothing.
    unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
}

fn install_sigsys_handler() {
    // SAFETY: a zeroed sigaction is valid; we fill the handler and flags before use.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = sigsys_handler as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: installs a handler for SIGSYS with a valid sigaction; the old one is unused.
    unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) };
}

struct Buf {
    bytes: [u8; 160],
    len: usize,
}

impl Buf {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.bytes.len() {
                self.bytes[self.len] = b;
                self.len += 1;
            }
        }
    }
    fn push_num(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

extern "C" fn sigsys_handler(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // siginfo_t for SIGSYS: si_signo, si_errno, si_code, pad (16 bytes), then
    // _call_addr (8 bytes) and _syscall (int) at offset 24.
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let nr = unsafe { *(info as *const u8).add(24).cast::<libc::c_int>() };
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes plus NUL into a 17-byte buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(16);
    let mut buf = Buf {
        bytes: [0; 160],
        len: 0,
    };
    buf.push(b"vmkit: seccomp: thread ");
    buf.push(&name[..name_len]);
    buf.push(b" made forbidden syscall ");
    buf.push_num(nr as u64);
    buf.push(b" (");
    buf.push(syscall_name(i64::from(nr)).as_bytes());
    buf.push(b")\n");
    // SAFETY: write and _exit are async-signal-safe; buf holds len initialized bytes.
    unsafe {
        libc::write(2, buf.bytes.as_ptr().cast(), buf.len);
        libc::_exit(TRAP_EXIT_STATUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_option_text() {
        assert_eq!(parse_sandbox("off"), Ok(None));
        assert_eq!(parse_sandbox("on,action=trap"), Ok(Some(Action::Trap)));
        assert_eq!(parse_sandbox("on,action=kill"), Ok(Some(Action::Kill)));
        let e = parse_sandbox("on,obsolete=deny").unwrap_err();
        assert!(e.contains("obsolete=deny"), "{e}");
        assert!(parse_sandbox("maybe").unwrap_err().contains("'maybe'"));
    }

    #[test]
    fn filters_compile() {
        for kind in [ThreadKind::Main, ThreadKind::Vcpu] {
            let program = build(kind, Action::Trap).unwrap();
            assert!(program.len() > BASE.len(), "{kind:?}: {}", program.len());
        }
    }
}
