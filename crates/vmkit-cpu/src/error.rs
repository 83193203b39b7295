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
    /// The MP table cannot describe that many CPUs (APIC ids are one byte and one id goes to
    /// the IOAPIC).
    #[error("the MP table supports at most {max} vCPUs, {requested} requested")]
    TooManyCpus {
        /// vCPUs requested.
        requested: u32,
        /// Largest supported count.
        max: u32,
    },
    /// The MP table does not fit in the area given for it.
    #[error(
        "MP table for {cpus} vCPUs needs {needed} bytes but only {available} are available at {start:#x}"
    )]
    NoRoom {
        /// vCPUs requested.
        cpus: u32,
        /// Bytes the table needs.
        needed: u64,
        /// Bytes in the area.
        available: u64,
        /// Start of the area.
        start: u64,
    },
    /// Writing into guest memory failed.
    #[error("cannot write the MP table at guest address {addr:#x}: {reason}")]
    GuestMemory {
        /// Guest physical address of the write.
        addr: u64,
        /// What guest memory reported.
        reason: String,
    },
    /// The ACPI tables do not fit in the area given for them.
    #[error(
        "ACPI tables for {cpus} vCPUs need {needed} bytes but only {available} are available at {start:#x}"
    )]
    AcpiNoRoom {
        /// vCPUs requested.
        cpus: u32,
        /// Bytes the tables need.
        needed: u64,
        /// Bytes in the area.
        available: u64,
        /// Start of the area.
        start: u64,
    },
    /// The ACPI area does not start on a 16-byte boundary (the RSDP must).
    #[error("the ACPI area must start on a 16-byte boundary, {start:#x} does not")]
    AcpiMisaligned {
        /// Start of the area.
        start: u64,
    },
    /// Writing the ACPI tables into guest memory failed.
    #[error(
        "cannot write the ACPI tables at guest address {addr:#x}: {reason} (the VMM must back the area with memory)"
    )]
    AcpiGuestMemory {
        /// Guest physical address of the write.
        addr: u64,
        /// What guest memory reported.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
