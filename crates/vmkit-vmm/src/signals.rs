//! SIGINT, SIGTERM and SIGHUP end the VM cleanly, as QEMU's termination signals: the
//! handler only sets a flag that the main loop (and the waits for a `wait=on` client before
//! the guest starts) check; epoll waits are interrupted by the signal or time out within
//! 100 ms.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_termination(signal: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    RECEIVED.store(signal, Ordering::SeqCst);
}

/// How often a blocking wait before the guest starts looks for a termination signal.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The signals that end vmkit cleanly (QEMU's `termsig_handler` set).
pub const TERMINATION_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Installs the handler for [`TERMINATION_SIGNALS`].
pub fn install_termination_handler() -> std::io::Result<()> {
    for signal in TERMINATION_SIGNALS {
        vmm_sys_util::signal::register_signal_handler(signal, on_termination)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(())
}

/// The termination signal received, if any.
pub fn termination_requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}
