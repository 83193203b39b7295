//! Per-thread seccomp filters (QEMU's `-sandbox`), built with rust-vmm's `seccompiler`.
//!
//! Allow-lists in the shape of Firecracker's and Cloud Hypervisor's filters: one filter per
//! [`ThreadKind`], each listing the syscalls that kind of thread makes and, for `ioctl`,
//! the exact request numbers (KVM's per vCPU; the tun/terminal ones for the threads that
//! own a tap or a terminal). `tgkill` may only signal this process's own threads,
//! `socket` only make UNIX and IP sockets, `prctl` only name a thread (and set
//! `NO_NEW_PRIVS` where a filter is still to be installed), `mmap`/`mprotect` not make
//! executable memory (but in the process and migration filters, which load programs).
//!
//! How the filters reach the threads:
//! - [`enable`] (the `vmkit` binary calls it before it builds the machine) installs the
//!   [`ThreadKind::Process`] filter on the calling thread. It is the union of every other
//!   kind's list plus what building a machine needs; every thread of the process inherits
//!   it, so no thread ever runs unfiltered.
//! - It then starts a spawner thread. Every vmkit thread is started through [`spawn`] (and
//!   device crates' threads through [`vmkit_hw::thread::spawn`], which `enable` routes
//!   here): the spawner creates the thread, and the thread's first act is to stack its own
//!   kind's filter ([`thread_start`]), before it touches guest- or user-controlled input.
//!   Because children inherit their parent's filters, creating every thread from the
//!   spawner (which holds only the Process filter) keeps each kind's filter narrow: a
//!   vCPU that starts a virtio worker on `DRIVER_OK` needs neither `clone` nor the
//!   worker's syscalls itself.
//! - The gdb stub's threads are created from the thread that builds the machine and stack
//!   the [`ThreadKind::Gdb`] filter through [`vmkit_gdb::GdbListener::serve_with`]'s
//!   thread-start callback.
//!
//! QMP is served by the main loop ([`ThreadKind::MainLoop`]); a migration runs on its own
//! thread ([`ThreadKind::Migration`]), whose filter also covers `exec:` URIs: the command
//! (`sh -c CMD`) runs under that thread's filter too.
//!
//! On by default in the `vmkit` binary; `-sandbox off` turns it off. A violation kills the
//! process (`SECCOMP_RET_KILL_PROCESS`); with `-sandbox on,action=trap` (or
//! `VMKIT_SANDBOX_ACTION=trap`, what the tests set) it raises SIGSYS and a handler prints
//! `vmkit: seccomp: thread NAME made forbidden syscall N (name)` and exits with status
//! 159.

mod names;

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use vmkit_hw::thread::{SpawnJob, ThreadRole};

/// What a forbidden syscall does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `SECCOMP_RET_KILL_PROCESS` (production).
    Kill,
    /// SIGSYS to a handler that names the syscall and exits nonzero (tests).
    Trap,
}

/// The kinds of vmkit thread, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The process's first thread (it builds the machine, then waits for it) and the
    /// spawner thread; the union of all the others, inherited by every thread.
    Process,
    /// A vCPU thread: `KVM_RUN` and the device register accesses it dispatches.
    Vcpu,
    /// The main loop: event-manager epoll, device timers, console input, chardevs, QMP.
    MainLoop,
    /// A virtio device's queue worker (virtio-rng, virtio-console, ...).
    Worker,
    /// The virtio-blk queue thread and the block request pool.
    Block,
    /// The virtio-net loop (queues and the tap).
    Net,
    /// The gdb stub's acceptor and session threads.
    Gdb,
    /// An outgoing or incoming migration (`migrate`, `-incoming`, `migrate-incoming`).
    Migration,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 8] = [
        ThreadKind::Process,
        ThreadKind::Vcpu,
        ThreadKind::MainLoop,
        ThreadKind::Worker,
        ThreadKind::Block,
        ThreadKind::Net,
        ThreadKind::Gdb,
        ThreadKind::Migration,
    ];

    /// The kind's name (as `VMKIT_SECCOMP_SELFTEST` takes it).
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Process => "process",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::MainLoop => "main-loop",
            ThreadKind::Worker => "worker",
            ThreadKind::Block => "block",
            ThreadKind::Net => "net",
            ThreadKind::Gdb => "gdb",
            ThreadKind::Migration => "migration",
        }
    }

    fn from_role(role: ThreadRole) -> Self {
        match role {
            ThreadRole::Block => ThreadKind::Block,
            ThreadRole::Net => ThreadKind::Net,
            _ => ThreadKind::Worker,
        }
    }
}

static CONFIG: OnceLock<Action> = OnceLock::new();

type SpawnRequest = Box<dyn FnOnce() + Send>;

static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

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
/// [`ThreadKind::Process`] filter on the calling thread, and starts the spawner thread
/// that [`spawn`] and [`vmkit_hw::thread::spawn`] use from then on. Call it once, before
/// any other vmkit thread exists.
pub fn enable(action: Action) -> Result<(), String> {
    if CONFIG.set(action).is_err() {
        return Err("the sandbox is already on".into());
    }
    if action == Action::Trap {
        install_sigsys_handler();
    }
    install(ThreadKind::Process, action)?;
    let (sender, receiver) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("vmkit-spawner".into())
        .spawn(move || {
            selftest(ThreadKind::Process);
            while let Ok(request) = receiver.recv() {
                request();
            }
        })
        .map_err(|e| format!("starting the spawner thread: {e}"))?;
    let _ = SPAWNER.set(sender);
    let _ = vmkit_hw::thread::set_spawner(Box::new(DeviceThreads));
    Ok(())
}

/// Device crates' threads ([`vmkit_hw::thread::spawn`]): created by the spawner thread,
/// confined by their role's kind first.
struct DeviceThreads;

impl vmkit_hw::thread::Spawner for DeviceThreads {
    fn run_spawn(&self, job: SpawnJob) {
        let Some(spawner) = SPAWNER.get() else {
            return job();
        };
        let (done, is_done) = mpsc::sync_channel::<()>(1);
        let request: SpawnRequest = Box::new(move || {
            job();
            let _ = done.send(());
        });
        if spawner.send(request).is_ok() {
            let _ = is_done.recv();
        }
    }

    fn thread_start(&self, role: ThreadRole) {
        thread_start(ThreadKind::from_role(role));
    }
}

/// Starts `body` on a new thread `name` of `kind`. With the sandbox on, the spawner thread
/// creates it and it installs `kind`'s filter before `body` runs, and this returns once the
/// filter is in place; otherwise it is a plain named thread.
pub fn spawn<T, F>(kind: ThreadKind, name: &str, body: F) -> io::Result<JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let builder = std::thread::Builder::new().name(name.to_string());
    let Some(spawner) = SPAWNER.get() else {
        return builder.spawn(body);
    };
    let (reply, answer) = mpsc::sync_channel(1);
    let (confined, is_confined) = mpsc::sync_channel::<()>(1);
    let request: SpawnRequest = Box::new(move || {
        let _ = reply.send(builder.spawn(move || {
            thread_start(kind);
            let _ = confined.send(());
            body()
        }));
    });
    let gone = || io::Error::other("the seccomp spawner thread has ended");
    spawner.send(request).map_err(|_| gone())?;
    let handle = answer.recv().map_err(|_| gone())??;
    // Return once the thread is under its filter (a failed install ends the process).
    let _ = is_confined.recv();
    Ok(handle)
}

/// Installs `kind`'s filter on the calling thread if the sandbox is on (a no-op
/// otherwise, and for library users that never called [`enable`]). A failure ends the
/// process: a thread must not run unconfined.
pub fn thread_start(kind: ThreadKind) {
    if let Some(&action) = CONFIG.get() {
        if let Err(e) = install(kind, action) {
            eprintln!("vmkit: seccomp: {e}");
            std::process::exit(1);
        }
        selftest(kind);
    }
}

/// Debug builds: `VMKIT_SECCOMP_SELFTEST=KIND` (a [`ThreadKind::name`]; `1` is the main
/// loop) makes the first thread of that kind call a syscall no filter allows.
fn selftest(kind: ThreadKind) {
    if !cfg!(debug_assertions) {
        return;
    }
    if let Some(wanted) = std::env::var_os("VMKIT_SECCOMP_SELFTEST") {
        let wanted = if wanted == "1" {
            ThreadKind::MainLoop.name()
        } else {
            wanted.to_str().unwrap_or_default()
        };
        if wanted == kind.name() {
            forbidden_syscall();
        }
    }
}

/// Whether [`enable`] ran in this process.
pub fn enabled() -> bool {
    CONFIG.get().is_some()
}

fn install(kind: ThreadKind, action: Action) -> Result<(), String> {
    let program = build(kind, action)?;
    seccompiler::apply_filter(&program)
        .map_err(|e| format!("installing the {} filter: {e}", kind.name()))
}

type Nr = libc::c_long;

/// What every thread does: memory, locks, signals (the kick, SIGSYS's report), its own
/// start and end, time, stderr.
const THREAD: &[Nr] = &[
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// A vCPU: device registers write to chardevs and eventfds (irqfd, the main loop's
/// events), arm the host timer, and read console input a device buffered.
const VCPU: &[Nr] = &[
    libc::SYS_read,
    libc::SYS_writev,
    libc::SYS_pwrite64,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_timerfd_settime,
    // A virtio device started at DRIVER_OK: its eventfds and worker epoll are made here.
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
];

/// The main loop: epoll over eventfds, the timerfd, stdin, chardev and QMP sockets.
const MAIN_LOOP: &[Nr] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_accept4,
    libc::SYS_accept,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_openat,
    libc::SYS_lseek,
    libc::SYS_pwrite64,
];

/// A virtio queue worker: epoll over its queue eventfds, irqfds, getrandom for
/// virtio-rng, chardev reads and writes for virtio-console.
const WORKER: &[Nr] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_fcntl,
];

/// Block I/O: file reads and writes, flushes, discards (fallocate), and the queue
/// thread's epoll.
const BLOCK: &[Nr] = &[
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_fstat,
    libc::SYS_fcntl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
];

/// virtio-net: the tap's reads and writes and the epoll over it and the queues.
const NET: &[Nr] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_fcntl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
];

/// The gdb stub: accepts one client at a time and talks to it.
const GDB: &[Nr] = &[
    libc::SYS_accept4,
    libc::SYS_accept,
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_poll,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_eventfd2,
];

/// A migration: files, sockets, and `exec:` commands (`sh -c`, run under this filter).
const MIGRATION: &[Nr] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_accept,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_shutdown,
    libc::SYS_openat,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_ftruncate,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_poll,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_timerfd_settime,
    libc::SYS_mincore,
    libc::SYS_wait4,
    libc::SYS_kill,
    // Pausing virtio-blk flushes its drive.
    libc::SYS_fsync,
    libc::SYS_fdatasync,
];

/// What `exec:` commands (`sh -c 'cat ...'`) need after `execve`, on the migration
/// thread's filter.
const EXEC: &[Nr] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_vfork,
    libc::SYS_execve,
    libc::SYS_arch_prctl,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prlimit64,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getppid,
    libc::SYS_getpgrp,
    libc::SYS_uname,
    libc::SYS_getcwd,
    libc::SYS_stat,
    libc::SYS_fadvise64,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    // What shells and filters (gzip, dd, ssh) commonly add.
    libc::SYS_umask,
    libc::SYS_lstat,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_readlink,
    libc::SYS_utimensat,
    libc::SYS_fchown,
    libc::SYS_fchmod,
    libc::SYS_getpgid,
    libc::SYS_setpgid,
    libc::SYS_getsid,
    libc::SYS_sysinfo,
    libc::SYS_times,
    libc::SYS_getrusage,
    libc::SYS_setitimer,
    libc::SYS_alarm,
];

/// Building the machine and starting threads (the Process filter's own part).
const PROCESS: &[Nr] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_seccomp,
    libc::SYS_rt_sigaction,
    libc::SYS_openat,
    libc::SYS_readlink,
    libc::SYS_getcwd,
    libc::SYS_pipe2,
    libc::SYS_dup3,
    libc::SYS_timerfd_create,
    libc::SYS_ftruncate,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_socket,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_connect,
    libc::SYS_prlimit64,
    libc::SYS_sched_setaffinity,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_pselect6,
    libc::SYS_getdents64,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_fdatasync,
];

/// KVM's vCPU ioctls a vCPU thread makes (run, state get/set for reset, gdb, migration).
const VCPU_IOCTLS: &[u64] = &[
    0xae80,     // KVM_RUN
    0x8090ae81, // KVM_GET_REGS
    0x4090ae82, // KVM_SET_REGS
    0x8138ae83, // KVM_GET_SREGS
    0x4138ae84, // KVM_SET_SREGS
    0xc018ae85, // KVM_TRANSLATE
    0x4004ae86, // KVM_INTERRUPT
    0xc008ae88, // KVM_GET_MSRS
    0x4008ae89, // KVM_SET_MSRS
    0x81a0ae8c, // KVM_GET_FPU
    0x41a0ae8d, // KVM_SET_FPU
    0x8400ae8e, // KVM_GET_LAPIC
    0x4400ae8f, // KVM_SET_LAPIC
    0x8004ae98, // KVM_GET_MP_STATE
    0x4004ae99, // KVM_SET_MP_STATE
    0x4048ae9b, // KVM_SET_GUEST_DEBUG
    0x8040ae9f, // KVM_GET_VCPU_EVENTS
    0x4040aea0, // KVM_SET_VCPU_EVENTS
    0x8080aea1, // KVM_GET_DEBUGREGS
    0x4080aea2, // KVM_SET_DEBUGREGS
    0x9000aea4, // KVM_GET_XSAVE
    0x5000aea5, // KVM_SET_XSAVE
    0x8188aea6, // KVM_GET_XCRS
    0x4188aea7, // KVM_SET_XCRS
    0xaead,     // KVM_KVMCLOCK_CTRL
    0x9000aecf, // KVM_GET_XSAVE2
];

/// KVM's VM ioctls a device access can make from a vCPU or the main loop (line levels,
/// MSI, PIT/irqchip state, ioeventfd/irqfd registration when a device is set up).
const VM_IOCTLS: &[u64] = &[
    0x4008ae61, // KVM_IRQ_LINE
    0xc008ae67, // KVM_IRQ_LINE_STATUS
    0x4020aea5, // KVM_SIGNAL_MSI
    0x4008ae6a, // KVM_SET_GSI_ROUTING
    0x4020ae76, // KVM_IRQFD
    0x4040ae79, // KVM_IOEVENTFD
    0x4010ae67, // KVM_REGISTER_COALESCED_MMIO
    0x4010ae68, // KVM_UNREGISTER_COALESCED_MMIO
    0x4020ae46, // KVM_SET_USER_MEMORY_REGION
    0x4010ae42, // KVM_GET_DIRTY_LOG
    0xc208ae62, // KVM_GET_IRQCHIP
    0x8208ae63, // KVM_SET_IRQCHIP
    0x8070ae9f, // KVM_GET_PIT2
    0x4070aea0, // KVM_SET_PIT2
    0x8030ae7c, // KVM_GET_CLOCK
    0x4030ae7b, // KVM_SET_CLOCK
];

/// tun and terminal ioctls: `TCGETS`/`TCSETS*` (stdin's raw mode, ptys), `FIONBIO`,
/// `FIONREAD`, `TIOCGPTN`/`TIOCSPTLCK` (pty), `TUNSETIFF`/`TUNGETIFF`/`TUNSETOFFLOAD`/
/// `TUNSETVNETHDRSZ`.
const TTY_TUN_IOCTLS: &[u64] = &[
    0x5401,     // TCGETS
    0x5402,     // TCSETS
    0x5403,     // TCSETSW
    0x5404,     // TCSETSF
    0x5421,     // FIONBIO
    0x541b,     // FIONREAD
    0x80045430, // TIOCGPTN
    0x40045431, // TIOCSPTLCK
    0x400454ca, // TUNSETIFF
    0x800454d2, // TUNGETIFF
    0x400454d0, // TUNSETOFFLOAD
    0x400454d8, // TUNSETVNETHDRSZ
    0x800454cf, // TUNGETFEATURES
];

/// The kinds' lists: (syscalls, exact ioctl requests).
fn lists(kind: ThreadKind) -> (Vec<Nr>, Vec<u64>) {
    let mut calls: Vec<Nr> = THREAD.to_vec();
    let mut ioctls: Vec<u64> = Vec::new();
    match kind {
        ThreadKind::Process => {
            for other in ThreadKind::ALL {
                if other != ThreadKind::Process {
                    let (c, i) = lists(other);
                    calls.extend(c);
                    ioctls.extend(i);
                }
            }
            calls.extend_from_slice(PROCESS);
        }
        ThreadKind::Vcpu => {
            calls.extend_from_slice(VCPU);
            ioctls.extend_from_slice(VCPU_IOCTLS);
            ioctls.extend_from_slice(VM_IOCTLS);
            // virtio-net's offloads, set when the driver starts the device.
            ioctls.extend_from_slice(&[0x400454d0, 0x400454d8]);
        }
        ThreadKind::MainLoop => {
            calls.extend_from_slice(MAIN_LOOP);
            ioctls.extend_from_slice(VM_IOCTLS);
            ioctls.extend_from_slice(TTY_TUN_IOCTLS);
        }
        ThreadKind::Worker => {
            calls.extend_from_slice(WORKER);
            ioctls.extend_from_slice(VM_IOCTLS);
            ioctls.extend_from_slice(TTY_TUN_IOCTLS);
        }
        ThreadKind::Block => {
            calls.extend_from_slice(BLOCK);
            ioctls.extend_from_slice(VM_IOCTLS);
        }
        ThreadKind::Net => {
            calls.extend_from_slice(NET);
            ioctls.extend_from_slice(VM_IOCTLS);
            ioctls.extend_from_slice(TTY_TUN_IOCTLS);
        }
        ThreadKind::Gdb => {
            calls.extend_from_slice(GDB);
            ioctls.push(0x5421); // FIONBIO
        }
        ThreadKind::Migration => {
            calls.extend_from_slice(MIGRATION);
            calls.extend_from_slice(EXEC);
            ioctls.extend_from_slice(VCPU_IOCTLS);
            ioctls.extend_from_slice(VM_IOCTLS);
            ioctls.extend_from_slice(TTY_TUN_IOCTLS);
        }
    }
    calls.sort_unstable();
    calls.dedup();
    ioctls.sort_unstable();
    ioctls.dedup();
    (calls, ioctls)
}

/// Whether the kind's thread makes sockets (the Process filter's union has them too).
fn makes_sockets(kind: ThreadKind) -> bool {
    matches!(kind, ThreadKind::Process | ThreadKind::Migration)
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

fn one_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, String> {
    values
        .iter()
        .map(|&v| {
            SeccompRule::new(vec![cond(arg, SeccompCmpOp::Eq, v)?]).map_err(|e| e.to_string())
        })
        .collect()
}

/// Builds the BPF program of one thread kind.
pub fn build(kind: ThreadKind, action: Action) -> Result<BpfProgram, String> {
    let (calls, ioctls) = lists(kind);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in calls {
        rules.insert(nr, Vec::new());
    }
    // ioctl: the exact requests (the Process filter, which creates the VM and the vCPUs,
    // every KVM request, type 0xAE).
    let mut ioctl_rules = one_of(1, &ioctls)?;
    if kind == ThreadKind::Process {
        ioctl_rules.push(
            SeccompRule::new(vec![cond(1, SeccompCmpOp::MaskedEq(0xff00), 0xae00)?])
                .map_err(|e| e.to_string())?,
        );
    }
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    // mmap/mprotect: no executable memory, except where a program is loaded (the process
    // filter, and a migration's exec: command).
    if !matches!(kind, ThreadKind::Process | ThreadKind::Migration) {
        let no_exec = || -> Result<Vec<SeccompRule>, String> {
            Ok(vec![SeccompRule::new(vec![cond(
                2,
                SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
                0,
            )?])
            .map_err(|e| e.to_string())?])
        };
        rules.insert(libc::SYS_mmap, no_exec()?);
        rules.insert(libc::SYS_mprotect, no_exec()?);
    }
    // tgkill: only this process's threads.
    rules.insert(
        libc::SYS_tgkill,
        one_of(0, &[u64::from(std::process::id())])?,
    );
    // prctl: name a thread (SIGSYS's report reads it); NO_NEW_PRIVS before a filter.
    let mut prctl = vec![libc::PR_SET_NAME as u64, libc::PR_GET_NAME as u64];
    if kind == ThreadKind::Process {
        prctl.push(libc::PR_SET_NO_NEW_PRIVS as u64);
    }
    rules.insert(libc::SYS_prctl, one_of(0, &prctl)?);
    if makes_sockets(kind) {
        rules.insert(
            libc::SYS_socket,
            one_of(
                0,
                &[
                    libc::AF_UNIX as u64,
                    libc::AF_INET as u64,
                    libc::AF_INET6 as u64,
                ],
            )?,
        );
    }
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
    .map_err(|e| format!("building the {} filter: {e}", kind.name()))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| {
        format!("compiling the {} filter: {e}", kind.name())
    })
}

/// A syscall's name (x86-64 numbering), `"unknown"` for a number with none.
pub fn syscall_name(nr: i64) -> &'static str {
    let name = match usize::try_from(nr) {
        Ok(n) if n < names::X86_64.len() => names::X86_64[n],
        Ok(n) if n >= 424 => names::X86_64_FROM_424
            .get(n - 424)
            .copied()
            .unwrap_or_default(),
        _ => "",
    };
    if name.is_empty() {
        "unknown"
    } else {
        name
    }
}

/// Raises a syscall no vmkit filter allows, on the calling thread (used by the hidden
/// `VMKIT_SECCOMP_SELFTEST` switch of debug builds).
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
        for kind in ThreadKind::ALL {
            let program = build(kind, Action::Trap).unwrap();
            assert!(program.len() > THREAD.len(), "{kind:?}: {}", program.len());
        }
    }

    #[test]
    fn the_process_filter_covers_every_kind() {
        let (process, process_ioctls) = lists(ThreadKind::Process);
        for kind in ThreadKind::ALL {
            let (calls, ioctls) = lists(kind);
            for nr in calls {
                assert!(process.contains(&nr), "{kind:?}: {}", syscall_name(nr));
            }
            for request in ioctls {
                assert!(
                    process_ioctls.contains(&request),
                    "{kind:?}: ioctl {request:#x}"
                );
            }
        }
    }

    #[test]
    fn only_the_process_and_migrations_create_threads_or_processes() {
        for kind in ThreadKind::ALL {
            let (calls, _) = lists(kind);
            let spawns = calls.contains(&libc::SYS_clone) || calls.contains(&libc::SYS_clone3);
            assert_eq!(
                spawns,
                matches!(kind, ThreadKind::Process | ThreadKind::Migration),
                "{kind:?}"
            );
            assert_eq!(
                calls.contains(&libc::SYS_execve),
                matches!(kind, ThreadKind::Process | ThreadKind::Migration),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn syscall_names() {
        assert_eq!(syscall_name(0), "read");
        assert_eq!(syscall_name(135), "personality");
        assert_eq!(syscall_name(16), "ioctl");
        assert_eq!(syscall_name(435), "clone3");
        assert_eq!(syscall_name(400), "unknown");
        assert_eq!(syscall_name(-1), "unknown");
        assert_eq!(syscall_name(100_000), "unknown");
    }
}
