//! The crate's error type.

/// Everything that can go wrong while describing the guest CPU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `-cpu` model is not one this crate knows.
    #[error(
        "unknown CPU model `{0}`: only `host` (alias `max`: everything KVM supports) is available"
    )]
    UnknownModel(String),
    /// One or more `-cpu` feature names are unknown.
    #[error("unknown CPU feature name(s): {}", .0.join(", "))]
    UnknownFeatures(Vec<String>),
    /// A `-cpu` item is malformed (for example `xsave=maybe`).
    #[error("malformed -cpu item `{0}`: expected +feature, -feature, feature=on or feature=off")]
    BadItem(String),
    /// `+feature` asks for a feature KVM cannot give the guest.
    #[error("CPU feature(s) {} requested with `+` but not supported by this host's KVM", .0.join(", "))]
    NotSupported(Vec<String>),
    /// `+feature` on a bit the guest OS owns.
    #[error("CPU feature `{0}` cannot be set: the guest OS controls it (it mirrors a CR4 bit)")]
    NotSettable(&'static str),
    /// The vCPU index is not below the vCPU count, or the count is 0.
    #[error("vCPU index {index} is out of range for {count} vCPUs")]
    BadVcpuIndex {
        /// The vCPU index given.
        index: u32,
        /// The vCPU count given.
        count: u32,
    },
    /// A CPUID or MSR table grew beyond what KVM accepts.
    #[error("{what} table has more than {max} entries")]
    TooManyEntries {
        /// "CPUID" or "MSR".
        what: &'static str,
        /// KVM's limit.
        max: usize,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
