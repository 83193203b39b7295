//! Kicking a vCPU out of `KVM_RUN` from another thread.
//!
//! A kick sets the vCPU's `kvm_run.immediate_exit` and then sends the vCPU's thread a signal
//! whose handler does nothing. Together they cover every moment the kick can land:
//! - the vCPU thread is inside `KVM_RUN` (running guest code, or halted in the kernel with the
//!   in-kernel irqchip): the signal makes `KVM_RUN` return `EINTR`;
//! - the vCPU thread is in userspace handling an exit: `immediate_exit` makes its next
//!   `KVM_RUN` return `EINTR` at once, before entering the guest;
//! - the vCPU thread is between checking its requests and entering `KVM_RUN`: same as above.
//!
//! Either way [`crate::Vcpu::run`] returns [`crate::VcpuExit::Interrupted`] and clears
//! `immediate_exit`. Callers set their own request flag *before* kicking and read it *after*
//! `Interrupted`, so no request is lost.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use vmm_sys_util::errno;

use crate::error::{Error, Result};

/// The signal used for kicks unless [`set_kick_signal`] chose another before the first kick
/// handler was installed: `SIGRTMIN()`, as Firecracker uses.
pub fn default_kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

static CHOSEN_SIGNAL: AtomicI32 = AtomicI32::new(0);
static INSTALLED: OnceLock<std::result::Result<i32, i32>> = OnceLock::new();

/// Chooses the kick signal. Must be called before the first [`crate::Vcpu::kicker`]; returns
/// false if the handler is already installed (with another signal).
pub fn set_kick_signal(signal: i32) -> bool {
    if INSTALLED.get().is_some() {
        return false;
    }
    CHOSEN_SIGNAL.store(signal, Ordering::SeqCst);
    true
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only job is to make KVM_RUN return.
}

/// Installs the do-nothing handler for the kick signal (once per process).
pub(crate) fn ensure_kick_handler() -> Result<i32> {
    let installed = INSTALLED.get_or_init(|| {
        let chosen = CHOSEN_SIGNAL.load(Ordering::SeqCst);
        let signal = if chosen == 0 {
            default_kick_signal()
        } else {
            chosen
        };
        // SAFETY: sigaction with a zeroed struct filled with a valid handler and flags;
        // SA_RESTART keeps other threads' syscalls from failing if a stale kick reaches them
        // (KVM_RUN is not restarted: it returns EINTR itself).
        let ret = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = kick_handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if ret == 0 {
            Ok(signal)
        } else {
            Err(signal)
        }
    });
    match *installed {
        Ok(signal) => Ok(signal),
        Err(signal) => Err(Error::KickSignal {
            signal,
            source: errno::Error::new(libc::EINVAL),
        }),
    }
}

thread_local! {
    static THREAD_ID: Cell<i32> = const { Cell::new(0) };
}

/// The calling thread's kernel thread id, cached per thread.
pub fn current_thread_id() -> i32 {
    THREAD_ID.with(|cached| {
        let tid = cached.get();
        if tid != 0 {
            return tid;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        cached.set(tid);
        tid
    })
}

/// What a kicker shares with its vCPU.
#[derive(Debug)]
pub(crate) struct KickTarget {
    /// `&kvm_run.immediate_exit`; valid while `attached` is true.
    immediate_exit: *mut u8,
    /// Held while another thread writes through `immediate_exit`; set false (under the lock)
    /// before the vCPU's kvm_run mapping goes away.
    attached: Mutex<bool>,
    /// The thread that last entered `KVM_RUN` for this vCPU (0: none yet).
    thread: AtomicI32,
}

// SAFETY: the raw pointer is only dereferenced by the owning vCPU (which owns the mapping) or
// by a kicker while holding `attached == true` under its mutex, which `detach` takes before
// the mapping is dropped; the byte is accessed atomically on both sides.
unsafe impl Send for KickTarget {}
// SAFETY: as above; all shared access goes through atomics or the mutex.
unsafe impl Sync for KickTarget {}

impl KickTarget {
    pub(crate) fn new(immediate_exit: *mut u8) -> Self {
        Self {
            immediate_exit,
            attached: Mutex::new(true),
            thread: AtomicI32::new(0),
        }
    }

    pub(crate) fn set_running_thread(&self, tid: i32) {
        if self.thread.load(Ordering::Relaxed) != tid {
            self.thread.store(tid, Ordering::SeqCst);
        }
    }

    fn immediate_exit(&self) -> &AtomicU8 {
        // SAFETY: callers guarantee the mapping is alive (the owning vCPU, or a kicker under
        // the `attached` lock); the byte is only ever accessed atomically.
        unsafe { AtomicU8::from_ptr(self.immediate_exit) }
    }

    /// Called by the owning vCPU only.
    pub(crate) fn clear_immediate_exit(&self) {
        self.immediate_exit().store(0, Ordering::SeqCst);
    }

    pub(crate) fn detach(&self) {
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        *attached = false;
    }
}

/// A cloneable, thread-safe handle that forces one vCPU out of `KVM_RUN`.
///
/// Kicking a vCPU whose `Vcpu` was dropped does nothing and is not an error.
#[derive(Debug, Clone)]
pub struct VcpuKicker {
    target: Arc<KickTarget>,
    signal: i32,
}

impl VcpuKicker {
    pub(crate) fn new(target: Arc<KickTarget>, signal: i32) -> Self {
        Self { target, signal }
    }

    /// Forces the vCPU out of `KVM_RUN` now, or makes its next `KVM_RUN` return at once.
    pub fn kick(&self) -> Result<()> {
        {
            let attached = self
                .target
                .attached
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !*attached {
                return Ok(());
            }
            self.target.immediate_exit().store(1, Ordering::SeqCst);
        }
        let tid = self.target.thread.load(Ordering::SeqCst);
        if tid > 0 {
            // SAFETY: tgkill with our own pid and a thread id of ours; the handler is a no-op.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    libc::pid_t::from(tid),
                    self.signal,
                )
            };
            // ESRCH: the thread has exited; immediate_exit still covers a later run.
            if ret != 0 && errno::Error::last().errno() != libc::ESRCH {
                return Err(Error::KickSignal {
                    signal: self.signal,
                    source: errno::Error::last(),
                });
            }
        }
        Ok(())
    }
}
