//! The crate's error type.

use crate::control::RunState;

/// Errors of building and controlling a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A KVM operation failed.
    #[error(transparent)]
    Kvm(#[from] vmkit_kvm::Error),
    /// An eventfd could not be created or used.
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    /// A request that the current run state does not allow.
    #[error("cannot {action} a machine that is {}", .state.name())]
    InvalidState {
        /// What was asked.
        action: &'static str,
        /// The state it was in.
        state: RunState,
    },
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The machine could not be built.
    #[error("{0}")]
    Machine(String),
    /// A termination signal arrived before the guest started (while waiting for a
    /// `wait=on` client): vmkit ends cleanly, as on a signal while the guest runs.
    #[error("terminated by signal {0}")]
    Terminated(i32),
    /// A host I/O facility (timerfd, terminal, epoll) failed.
    #[error("{what}: {source}")]
    Host {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
