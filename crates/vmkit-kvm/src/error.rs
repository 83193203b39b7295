//! The crate's error type.

use kvm_ioctls::Cap;

/// Errors from the KVM handle layers. Each names the operation that failed and, where the
/// kernel gave one, its errno, so a user can tell a missing permission from a missing feature.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// /dev/kvm could not be opened.
    #[error("cannot open {path}: {source} (is the kvm module loaded and do you have read/write access to it?)")]
    Open {
        /// The device path tried.
        path: String,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// The kernel speaks a KVM API version other than 12.
    #[error("KVM API version {found} is not supported (vmkit needs {expected})")]
    ApiVersion {
        /// What the kernel reported.
        found: i32,
        /// What vmkit needs.
        expected: i32,
    },
    /// Capabilities the caller required are not offered by this kernel.
    #[error("KVM lacks required capabilities: {}", .0.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "))]
    MissingCapabilities(Vec<Cap>),
    /// A KVM ioctl failed.
    #[error("{op} failed: {source}")]
    Ioctl {
        /// What was being done.
        op: &'static str,
        /// The kernel's error.
        source: vmm_sys_util::errno::Error,
    },
    /// A memory slot request is malformed.
    #[error("invalid memory slot {slot}: {reason}")]
    InvalidSlot {
        /// The slot number.
        slot: u32,
        /// Why it was refused.
        reason: String,
    },
    /// An ioeventfd request KVM cannot take.
    #[error("invalid ioeventfd: {0}")]
    InvalidIoeventfd(String),
    /// A GSI route request is malformed (unknown GSI, table full).
    #[error("invalid GSI route: {0}")]
    InvalidRoute(String),
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler for signal {signal}: {source}")]
    KickSignal {
        /// The signal number.
        signal: i32,
        /// The kernel's error.
        source: vmm_sys_util::errno::Error,
    },
    /// KVM_SET_MSRS stopped at an MSR it does not accept.
    #[error("KVM rejected MSR {index:#x} (unknown to this host, or a value it does not allow)")]
    MsrRejected {
        /// The first MSR index KVM refused.
        index: u32,
    },
    /// The kvm_run mapping holds exit data the crate cannot trust.
    #[error("malformed KVM exit data: {0}")]
    MalformedExit(&'static str),
    /// A saved vCPU or VM state does not fit this VM; the text says why.
    #[error("invalid KVM state: {0}")]
    InvalidState(String),
}

impl Error {
    pub(crate) fn ioctl(op: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> Error {
        move |source| Error::Ioctl { op, source }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
