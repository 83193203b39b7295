//! The crate's error type.

use std::path::PathBuf;

/// Errors of the pc machine builder. Each says what was wrong and, where it helps, what the
/// accepted values are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The RAM size is zero.
    #[error("RAM size is zero: the pc machine needs at least 1 MiB of RAM")]
    RamSizeZero,
    /// The RAM size is not a whole number of 4 KiB pages.
    #[error("RAM size {size:#x} bytes is not a multiple of 4 KiB")]
    RamSizeUnaligned {
        /// The requested size.
        size: u64,
    },
    /// The RAM size is below the minimum.
    #[error("RAM size {size:#x} bytes is too small: the pc machine needs at least {min:#x} bytes (1 MiB)")]
    RamSizeTooSmall {
        /// The requested size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// The RAM size is above the maximum.
    #[error("RAM size {size:#x} bytes is too large: the pc machine supports at most {max:#x} bytes (1 TiB)")]
    RamSizeTooLarge {
        /// The requested size.
        size: u64,
        /// The maximum.
        max: u64,
    },
    /// A firmware image has no bytes.
    #[error("firmware image{} is empty", describe(path))]
    FirmwareEmpty {
        /// The file it came from, if any.
        path: Option<PathBuf>,
    },
    /// A firmware image's size is not a multiple of 4 KiB.
    #[error(
        "firmware image{} is {size:#x} bytes, not a multiple of 4 KiB",
        describe(path)
    )]
    FirmwareUnaligned {
        /// The file it came from, if any.
        path: Option<PathBuf>,
        /// Its size.
        size: u64,
    },
    /// A firmware image is larger than the pc machine can map below 4 GiB.
    #[error(
        "firmware image{} is {size:#x} bytes, larger than the {max:#x}-byte (16 MiB) maximum",
        describe(path)
    )]
    FirmwareTooLarge {
        /// The file it came from, if any.
        path: Option<PathBuf>,
        /// Its size.
        size: u64,
        /// The maximum.
        max: u64,
    },
    /// The firmware file could not be read.
    #[error("cannot read firmware image {}: {source}", path.display())]
    FirmwareFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Two e820 entries would overlap.
    #[error("e820 entry [{addr:#x}, +{size:#x}) overlaps the existing entry [{other_addr:#x}, +{other_size:#x})")]
    E820Overlap {
        /// Start of the new entry.
        addr: u64,
        /// Size of the new entry.
        size: u64,
        /// Start of the entry it overlaps.
        other_addr: u64,
        /// Size of the entry it overlaps.
        other_size: u64,
    },
    /// An e820 entry is empty or runs past the end of the 64-bit address space.
    #[error(
        "invalid e820 entry [{addr:#x}, +{size:#x}): it must be non-empty and end at or below 2^64"
    )]
    E820Invalid {
        /// Start of the entry.
        addr: u64,
        /// Size of the entry.
        size: u64,
    },
    /// A real-mode entry point cannot be reached from real mode.
    #[error("real-mode entry point {addr:#x} is not below 1 MiB")]
    RealModeAddress {
        /// The requested address.
        addr: u64,
    },
    /// The long-mode page-table configuration is unusable.
    #[error("invalid page-table setup: {0}")]
    PageTables(String),
    /// The boot tables could not be written to guest memory (no RAM there?).
    #[error("cannot write the {what} to guest memory at {addr:#x}: {source}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// Where.
        addr: u64,
        /// vm-memory's error.
        source: vm_memory::GuestMemoryError,
    },
    /// A region operation of the address space failed.
    #[error(transparent)]
    Memory(#[from] vmkit_memory::Error),
    /// Mapping a device on the port or MMIO bus failed (an overlap names both devices).
    #[error(transparent)]
    Bus(#[from] vmkit_bus::Error),
    /// Building the fw_cfg contents failed (a file name or size past fw_cfg's limits).
    #[error(transparent)]
    FwCfg(#[from] vmkit_fwcfg::Error),
    /// Placing a PCI function failed (an occupied slot names it).
    #[error(transparent)]
    Pci(#[from] vmkit_pci::Error),
    /// A KVM operation failed.
    #[error(transparent)]
    Kvm(#[from] vmkit_kvm::Error),
    /// Wiring an ISA device failed.
    #[error(transparent)]
    Isa(#[from] vmkit_isa::Error),
    /// Creating or configuring an object failed (e.g. a bad `-device` option).
    #[error(transparent)]
    Object(#[from] vmkit_object::Error),
    /// A boot image (kernel, initrd, flat binary) could not be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    ImageFile {
        /// "kernel", "initrd" or "flat binary".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A boot image is larger than what can be loaded (the guest's RAM); refused before it
    /// is read.
    #[error(
        "the {what} {} is {}larger than the {limit} bytes that can be loaded (the guest's RAM{}); \
         give a smaller image or more -m",
        path.display(),
        match size { Some(size) => format!("{size} bytes, "), None => format!("more than {limit} bytes, ") },
        if *limit == crate::image_file::MAX_IMAGE_BYTES { ", at most 4 GiB" } else { "" }
    )]
    ImageTooLarge {
        /// "kernel", "initrd" or "flat binary".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its length when it is a regular file; `None` when reading hit the limit.
        size: Option<u64>,
        /// The most bytes accepted.
        limit: u64,
    },
    /// The kernel image is corrupt, truncated or of a kind vmkit cannot boot.
    #[error("kernel {}: {reason}", path.display())]
    KernelImage {
        /// The file (or a name for an image given in memory).
        path: PathBuf,
        /// What is wrong, with the offsets and sizes involved.
        reason: String,
    },
    /// `-kernel` with `-bios`: QEMU's option ROM that boots the kernel from fw_cfg is missing.
    #[error(
        "-kernel with -bios needs QEMU's option ROM {name} (Debian package qemu-system-data); \
         looked in {searched}"
    )]
    OptionRomMissing {
        /// The ROM's file name.
        name: &'static str,
        /// The directories searched, comma-separated.
        searched: String,
    },
    /// The kernel command line is longer than the kernel accepts.
    #[error(
        "-append: the kernel command line is {len} bytes, over the limit of {limit} bytes ({origin})"
    )]
    CmdlineTooLong {
        /// Length of the command line in bytes (without the terminating NUL).
        len: usize,
        /// The most bytes accepted.
        limit: u64,
        /// Where the limit comes from (e.g. the kernel's `cmdline_size` field).
        origin: String,
    },
    /// The kernel does not fit in the machine's RAM.
    #[error(
        "kernel {}: needs RAM up to {needed_end:#x} ({what}) but RAM below the PCI hole ends at \
         {ram_end:#x}: give the machine at least -m {min_mib}M",
        path.display()
    )]
    KernelTooLarge {
        /// The kernel file.
        path: PathBuf,
        /// One past the highest address the kernel needs.
        needed_end: u64,
        /// Why it needs that much (load address and size).
        what: String,
        /// One past the last RAM address below 4 GiB.
        ram_end: u64,
        /// The smallest `-m` (MiB) that fits.
        min_mib: u64,
    },
    /// The initrd does not fit between the kernel and the highest address it may use.
    #[error(
        "initrd {}: {size:#x} bytes do not fit between the kernel's end at {kernel_end:#x} and \
         {limit:#x}, the lower of the kernel's initrd_addr_max and the end of RAM below 4 GiB \
         ({room:#x} bytes free): use a smaller initrd or more RAM (-m)",
        path.display()
    )]
    InitrdTooLarge {
        /// The initrd file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// One past the kernel's last byte (page-aligned).
        kernel_end: u64,
        /// One past the highest address the initrd may occupy.
        limit: u64,
        /// Bytes available between the two.
        room: u64,
    },
    /// The guest CPU (CPUID, `-cpu` features, boot MSRs) could not be set up.
    #[error(transparent)]
    Cpu(#[from] vmkit_cpu::Error),
    /// The MP table or the ACPI tables could not be built or written.
    #[error(transparent)]
    Acpi(#[from] vmkit_acpi::Error),
    /// The machine configuration is inconsistent.
    #[error("{0}")]
    Config(String),
}

fn describe(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
