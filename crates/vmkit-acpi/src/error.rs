//! The crate's error type.

/// Everything that can go wrong while building or placing the tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A machine needs at least one CPU.
    #[error("the tables need at least one CPU, 0 given")]
    NoCpus,
    /// More CPUs than one-byte APIC ids can name (0xff is broadcast).
    #[error("at most {max} CPUs can be described, {requested} requested")]
    TooManyCpus {
        /// CPUs requested.
        requested: u32,
        /// Largest supported count.
        max: u32,
    },
    /// A CPU's APIC id is the broadcast id 0xff, or the same as another CPU's.
    #[error("CPU {cpu} has APIC id {apic_id:#x}, which is {reason}")]
    BadApicId {
        /// Index of the CPU in the configuration.
        cpu: usize,
        /// Its APIC id.
        apic_id: u8,
        /// "the broadcast id" or "already taken by another CPU".
        reason: &'static str,
    },
    /// The 32-bit PCI hole is empty or reaches into the IOAPIC/HPET/LAPIC/BIOS range.
    #[error("32-bit PCI hole {start:#x}..={end:#x} is invalid: {reason}")]
    BadPciHole {
        /// First byte of the hole.
        start: u64,
        /// Last byte of the hole.
        end: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An address given for the tables is not aligned as the specification requires.
    #[error("{what} at guest address {addr:#x} must be {align}-byte aligned")]
    Misaligned {
        /// "RSDP" or "tables".
        what: &'static str,
        /// The address given.
        addr: u64,
        /// Required alignment.
        align: u64,
    },
    /// The RSDP must lie where Linux's legacy scan finds it.
    #[error("the RSDP at {addr:#x} is outside the BIOS area 0xe0000..0x100000 Linux scans")]
    RsdpOutsideBiosArea {
        /// The address given.
        addr: u64,
    },
    /// The RSDP and table blobs would overlap in guest memory.
    #[error("the RSDP ({rsdp:#x}, {rsdp_len} bytes) overlaps the tables ({tables:#x}, {tables_len} bytes)")]
    Overlap {
        /// RSDP address.
        rsdp: u64,
        /// RSDP length.
        rsdp_len: usize,
        /// Tables address.
        tables: u64,
        /// Tables length.
        tables_len: usize,
    },
    /// A patched pointer does not fit its field (for example a table above 4 GiB behind a
    /// 32-bit pointer).
    #[error("pointer in {file} at offset {offset} ({size} bytes) cannot hold {value:#x}")]
    PointerOverflow {
        /// File holding the pointer.
        file: &'static str,
        /// Offset of the pointer in it.
        offset: u32,
        /// Size of the pointer field.
        size: u8,
        /// The address that does not fit.
        value: u64,
    },
    /// A fix-up names bytes outside its file (an internal inconsistency).
    #[error("fix-up in {file} at offset {offset} (+{len}) is outside the file's {file_len} bytes")]
    FixupOutOfRange {
        /// The file.
        file: &'static str,
        /// Offset of the fix-up.
        offset: u32,
        /// Bytes it touches.
        len: u32,
        /// The file's length.
        file_len: usize,
    },
    /// The MP table does not fit in the area given for it.
    #[error(
        "MP table for {cpus} vCPUs needs {needed} bytes but only {available} are available at {start:#x}"
    )]
    MpTableNoRoom {
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
    #[error("cannot write the {what} at guest address {addr:#x}: {reason} (the VMM must back it with memory)")]
    GuestMemory {
        /// "ACPI tables", "RSDP" or "MP table".
        what: &'static str,
        /// Guest physical address of the write.
        addr: u64,
        /// What guest memory reported.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
