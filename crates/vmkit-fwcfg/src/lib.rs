//! QEMU's fw_cfg firmware configuration device, as SeaBIOS, OVMF and Linux's
//! `qemu_fw_cfg` driver read it on x86, and a builder for the `etc/table-loader` file.
//!
//! [`FwCfg`] holds numbered items (signature, ID, CPU counts, RAM size, direct Linux boot
//! blobs, ...) and named files listed in the file directory (item 0x19), and models the
//! x86 I/O interface: the selector at 0x510, the data port at 0x511 and the DMA address
//! register at 0x514..0x51B (see [`device`] for the register table and DMA rules). Behaviour
//! follows QEMU's `docs/specs/fw_cfg.rst` and `hw/nvram/fw_cfg.c`; [`TableLoader`] follows
//! `hw/acpi/bios-linker-loader.c`.
//!
//! Like the other vmkit device crates this knows only its registers: no KVM, no bus. The
//! machine forwards port accesses to [`FwCfg::read`] / [`FwCfg::write`] (offset from the base
//! port) or registers the device on a rust-vmm PIO bus through [`vm_device::MutDevicePio`].
//! DMA goes through the [`vm_memory::GuestAddressSpace`] given to [`FwCfg::new`]; every
//! guest access is range-checked first and a bad descriptor only sets the ERROR bit, so no
//! guest access sequence can panic the device or touch memory outside guest RAM.
//!
//! ```
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//! use vmkit_fwcfg::{
//!     FwCfg, FW_CFG_DATA_PORT, FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SELECT, FW_CFG_DMA_PORT,
//!     FW_CFG_SELECTOR_PORT, FW_CFG_SIGNATURE,
//! };
//!
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
//! let mut fw_cfg = FwCfg::new(&ram);
//! fw_cfg.set_cpus(2, 2);
//! let e820 = fw_cfg.add_e820(&[(0, 0x9fc00, 1), (0x100000, 0x7f00000, 1)]).unwrap();
//!
//! // Traditional interface: select the signature, read it through the data port.
//! let data = u64::from(FW_CFG_DATA_PORT - FW_CFG_SELECTOR_PORT);
//! fw_cfg.write(0, &FW_CFG_SIGNATURE.to_le_bytes());
//! let mut signature = [0u8; 4];
//! for byte in signature.iter_mut() {
//!     fw_cfg.read(data, std::slice::from_mut(byte));
//! }
//! assert_eq!(&signature, b"QEMU");
//!
//! // DMA: a descriptor at 0x1000 selects etc/e820 and reads its 40 bytes to 0x2000.
//! let control = (u32::from(e820) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
//! let mut desc = Vec::new();
//! desc.extend_from_slice(&control.to_be_bytes());
//! desc.extend_from_slice(&40u32.to_be_bytes());
//! desc.extend_from_slice(&0x2000u64.to_be_bytes());
//! ram.write_slice(&desc, GuestAddress(0x1000)).unwrap();
//! let dma = u64::from(FW_CFG_DMA_PORT - FW_CFG_SELECTOR_PORT);
//! fw_cfg.write(dma, &0u32.to_be_bytes()); // high half
//! fw_cfg.write(dma + 4, &0x1000u32.to_be_bytes()); // low half: runs the transfer
//! assert_eq!(ram.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0, "control 0: done");
//! let first: u64 = ram.read_obj(GuestAddress(0x2000 + 8)).unwrap();
//! assert_eq!(first, 0x9fc00, "length of the first e820 entry, little-endian");
//! ```
#![forbid(unsafe_code)]

pub mod device;
pub mod loader;

pub use device::{E820Entry, FwCfg, FwCfgState, LinuxBoot, FW_CFG_STATE_VERSION};
pub use loader::{AllocZone, TableLoader};

/// Selector port on x86 (16-bit little-endian writes).
pub const FW_CFG_SELECTOR_PORT: u16 = 0x510;
/// Width of the selector register.
pub const FW_CFG_SELECTOR_LEN: u16 = 2;
/// Data port on x86 (byte reads).
pub const FW_CFG_DATA_PORT: u16 = 0x511;
/// Width of the data register.
pub const FW_CFG_DATA_LEN: u16 = 1;
/// DMA address register on x86 (64-bit big-endian, 0x514..0x51B).
pub const FW_CFG_DMA_PORT: u16 = 0x514;
/// Width of the DMA address register.
pub const FW_CFG_DMA_LEN: u16 = 8;
/// Base port of the device (the selector), which [`FwCfg::read`] offsets are relative to.
pub const FW_CFG_IO_BASE: u16 = FW_CFG_SELECTOR_PORT;
/// Span from the base port to the end of the DMA register (0x510..0x51C), for a machine
/// that registers the whole device as one range.
pub const FW_CFG_IO_LEN: u16 = FW_CFG_DMA_PORT + FW_CFG_DMA_LEN - FW_CFG_SELECTOR_PORT;

/// Item: the signature `"QEMU"`.
pub const FW_CFG_SIGNATURE: u16 = 0x00;
/// Item: interface ID, `u32` LE feature bits ([`FW_CFG_VERSION`] | [`FW_CFG_VERSION_DMA`]).
pub const FW_CFG_ID: u16 = 0x01;
/// Item: machine UUID (16 bytes).
pub const FW_CFG_UUID: u16 = 0x02;
/// Item: RAM size in bytes, `u64` LE.
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
/// Item: no display, `u16` LE.
pub const FW_CFG_NOGRAPHIC: u16 = 0x04;
/// Item: CPUs at boot, `u16` LE.
pub const FW_CFG_NB_CPUS: u16 = 0x05;
/// Item: machine ID (unused on x86).
pub const FW_CFG_MACHINE_ID: u16 = 0x06;
/// Item: protected-mode kernel load address, `u32` LE.
pub const FW_CFG_KERNEL_ADDR: u16 = 0x07;
/// Item: protected-mode kernel size, `u32` LE.
pub const FW_CFG_KERNEL_SIZE: u16 = 0x08;
/// Item: legacy command-line address (not set by QEMU on x86, which uses 0x13..0x15).
pub const FW_CFG_KERNEL_CMDLINE: u16 = 0x09;
/// Item: initrd load address, `u32` LE.
pub const FW_CFG_INITRD_ADDR: u16 = 0x0a;
/// Item: initrd size, `u32` LE.
pub const FW_CFG_INITRD_SIZE: u16 = 0x0b;
/// Item: boot device (legacy).
pub const FW_CFG_BOOT_DEVICE: u16 = 0x0c;
/// Item: NUMA information.
pub const FW_CFG_NUMA: u16 = 0x0d;
/// Item: boot menu enabled, `u16` LE.
pub const FW_CFG_BOOT_MENU: u16 = 0x0e;
/// Item: maximum CPUs (QEMU x86: the APIC ID limit), `u16` LE.
pub const FW_CFG_MAX_CPUS: u16 = 0x0f;
/// Item: kernel entry point (PVH / multiboot), `u32` LE.
pub const FW_CFG_KERNEL_ENTRY: u16 = 0x10;
/// Item: protected-mode kernel bytes.
pub const FW_CFG_KERNEL_DATA: u16 = 0x11;
/// Item: initrd bytes.
pub const FW_CFG_INITRD_DATA: u16 = 0x12;
/// Item: command-line load address, `u32` LE.
pub const FW_CFG_CMDLINE_ADDR: u16 = 0x13;
/// Item: command-line size including its NUL, `u32` LE.
pub const FW_CFG_CMDLINE_SIZE: u16 = 0x14;
/// Item: NUL-terminated command line.
pub const FW_CFG_CMDLINE_DATA: u16 = 0x15;
/// Item: real-mode setup load address, `u32` LE.
pub const FW_CFG_SETUP_ADDR: u16 = 0x16;
/// Item: real-mode setup size, `u32` LE.
pub const FW_CFG_SETUP_SIZE: u16 = 0x17;
/// Item: real-mode setup bytes.
pub const FW_CFG_SETUP_DATA: u16 = 0x18;
/// Item: the file directory: BE `u32` count, then 64-byte entries
/// `{ BE u32 size, BE u16 select, u16 reserved, char name[56] }` sorted by name.
pub const FW_CFG_FILE_DIR: u16 = 0x19;
/// Selector of the first file.
pub const FW_CFG_FILE_FIRST: u16 = 0x20;
/// Selector bit for the (deprecated) write channel; ignored when reading.
pub const FW_CFG_WRITE_CHANNEL: u16 = 0x4000;
/// Selector bit for architecture-specific items (x86: 0x8000 ACPI tables, 0x8003 E820, ...).
pub const FW_CFG_ARCH_LOCAL: u16 = 0x8000;
/// Most files the directory holds: every selector from [`FW_CFG_FILE_FIRST`] to 0x3FFF.
pub const FW_CFG_MAX_FILES: u16 = 0x4000 - FW_CFG_FILE_FIRST;
/// Longest file name in bytes; the directory's 56-byte field also holds the NUL.
pub const FW_CFG_MAX_FILE_NAME: usize = 55;

/// ID bit: the traditional selector/data interface.
pub const FW_CFG_VERSION: u32 = 0x01;
/// ID bit: the DMA interface.
pub const FW_CFG_VERSION_DMA: u32 = 0x02;
/// What the DMA address register reads as.
pub const FW_CFG_DMA_SIGNATURE: &[u8; 8] = b"QEMU CFG";

/// DMA control bit: the transfer failed (set by the device).
pub const FW_CFG_DMA_CTL_ERROR: u32 = 0x01;
/// DMA control bit: copy item bytes to the guest buffer.
pub const FW_CFG_DMA_CTL_READ: u32 = 0x02;
/// DMA control bit: advance the offset without copying.
pub const FW_CFG_DMA_CTL_SKIP: u32 = 0x04;
/// DMA control bit: select the item in bits 31..16 first.
pub const FW_CFG_DMA_CTL_SELECT: u32 = 0x08;
/// DMA control bit: write the guest buffer to the item (refused: no item is writable).
pub const FW_CFG_DMA_CTL_WRITE: u32 = 0x10;

/// Errors from building fw_cfg contents (the guest side never fails, see [`device`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A saved state of a layout version this build does not read.
    #[error(
        "fw_cfg state version {found} is not supported (this build reads version {supported})"
    )]
    StateVersion {
        /// The version in the state.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A file name does not fit the 56-byte name field.
    #[error(
        "fw_cfg file name {name:?} is {len} bytes, the limit is {max} (56-byte field with NUL)"
    )]
    FileNameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// [`FW_CFG_MAX_FILE_NAME`].
        max: usize,
    },
    /// A file name is empty or contains a NUL byte.
    #[error("fw_cfg file name {name:?} is empty or contains a NUL byte")]
    InvalidFileName {
        /// The name.
        name: String,
    },
    /// A file of that name is already in the directory.
    #[error("fw_cfg file {name:?} already exists")]
    DuplicateFile {
        /// The name.
        name: String,
    },
    /// No file of that name.
    #[error("fw_cfg file {name:?} does not exist")]
    NoSuchFile {
        /// The name.
        name: String,
    },
    /// The directory is full.
    #[error("cannot add fw_cfg file {name:?}: the directory holds at most {max} files")]
    TooManyFiles {
        /// The file that did not fit.
        name: String,
        /// [`FW_CFG_MAX_FILES`].
        max: u16,
    },
    /// The item key is already set.
    #[error("fw_cfg item {key:#06x} is already set")]
    DuplicateItem {
        /// The key.
        key: u16,
    },
    /// The key is the directory, a file selector or has the write-channel bit.
    #[error(
        "fw_cfg key {key:#06x} is reserved: items use 0x0000..0x0019 or arch-local 0x8000 | n, \
         without the write bit 0x4000 (0x0019 is the directory, 0x0020.. are files)"
    )]
    ReservedKey {
        /// The key.
        key: u16,
    },
    /// Data longer than the 32-bit size fields allow.
    #[error("fw_cfg {item} is {len} bytes, the limit is {max}")]
    ItemTooLarge {
        /// Which item or file.
        item: String,
        /// Its length.
        len: usize,
        /// `u32::MAX - 1` (QEMU asserts `len < UINT32_MAX`).
        max: u32,
    },
    /// ALLOCATE with an alignment that is not a power of two.
    #[error("table-loader ALLOCATE of {name:?}: alignment {align} is not a power of two")]
    LoaderAlignment {
        /// The file.
        name: String,
        /// The alignment.
        align: u32,
    },
    /// ALLOCATE of a file twice.
    #[error("table-loader: file {name:?} is already allocated")]
    LoaderDuplicateAllocation {
        /// The file.
        name: String,
    },
    /// A command names a file no ALLOCATE came before.
    #[error("table-loader: file {name:?} is not allocated (ALLOCATE it first)")]
    LoaderUnknownFile {
        /// The file.
        name: String,
    },
    /// ADD_POINTER with a size other than 1, 2, 4 or 8.
    #[error("table-loader ADD_POINTER into {name:?}: size {size} is not 1, 2, 4 or 8")]
    LoaderPointerSize {
        /// The destination file.
        name: String,
        /// The size.
        size: u8,
    },
    /// A pointer or checksum range reaches past the end of its file.
    #[error("table-loader: {field} {start:#x}+{len:#x} is outside {name:?} ({size:#x} bytes)")]
    LoaderOutOfFile {
        /// The file.
        name: String,
        /// Which range.
        field: &'static str,
        /// Start offset.
        start: u64,
        /// Length.
        len: u64,
        /// The file's size.
        size: u32,
    },
}

pub(crate) fn check_file_name(name: &str) -> Result<(), Error> {
    if name.len() > FW_CFG_MAX_FILE_NAME {
        return Err(Error::FileNameTooLong {
            name: name.to_string(),
            len: name.len(),
            max: FW_CFG_MAX_FILE_NAME,
        });
    }
    if name.is_empty() || name.contains('\0') {
        return Err(Error::InvalidFileName {
            name: name.to_string(),
        });
    }
    Ok(())
}
