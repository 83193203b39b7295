//! PCI for KVM VMMs, shaped after QEMU's `hw/pci`: configuration space, a bus that maps
//! BARs, and the PC's configuration mechanism #1.
//!
//! - [`ConfigSpace`]: the 256-byte type-0 header of one function with write and
//!   write-1-to-clear masks, BARs (I/O, 32-bit and 64-bit memory, prefetchable) that size as
//!   hardware does, the expansion ROM BAR, a capability list, and decoding of where each
//!   region sits now ([`ConfigSpace::bar_mapping`]).
//! - [`PciDevice`]: the trait a function implements; only the config-space accessors are
//!   required.
//! - [`PciBus`]: functions by [`DevFn`], configuration reads and writes, and region
//!   bookkeeping: after every write (and on reset) it diffs what each function decodes with
//!   what it had mapped and calls a [`RegionMapper`].
//! - [`PciHost`]: the 0xCF8/0xCFC configuration mechanism #1 as a vm-device PIO device, with
//!   PIIX3's reset control register at 0xCF9.
//! - [`BusRegionMapper`]: a [`RegionMapper`] that maps regions on vmkit-bus
//!   [`PioBus`](vmkit_bus::PioBus)/[`MmioBus`](vmkit_bus::MmioBus).
//! - [`RegionTreeMapper`]: the mapper a machine with vmkit-memory uses, as QEMU's
//!   `pci_update_mappings`: each region becomes an I/O region in the memory or port
//!   [`AddressSpace`](vmkit_memory::AddressSpace) (below RAM, at [`PCI_BAR_PRIORITY`]), and
//!   the bus entries follow the flat views through a listener, so KVM slots and ioeventfds
//!   on the region follow a BAR the guest moves.
//! - [`intx_swizzle`]: which PIRQ line a slot's INTx pin reaches.
//!
//! No KVM, no threads: a VMM puts the host on its PIO bus and hands the mapper its buses
//! (or its address spaces and buses).
//!
//! # Behaviour, after QEMU's `hw/pci/pci.c` and `hw/pci-host/i440fx.c`
//!
//! - Writable: the command register's I/O, memory, bus-master and INTx-disable bits, cache
//!   line size, interrupt line, BAR and ROM address bits above the size; status error bits
//!   are write-1-to-clear; everything else in the header is read-only, and bytes 0x40..=0xff
//!   are read-only until the device opens them.
//! - A BAR decodes only while its space's command bit is set, its address is not 0 and its
//!   range neither wraps nor leaves the space (I/O past port 0xffff; 32-bit memory and the
//!   ROM reaching 0xffff_ffff, which is where an all-ones sizing write leaves them; 64-bit
//!   memory reaching `u64::MAX`). The ROM also needs its enable bit.
//! - The bus remaps after every configuration write and on reset, unmapping before mapping.
//!   A region that cannot be mapped (it overlaps another bus entry) stays unmapped and is
//!   reported through [`PciBus::take_map_errors`]; later configuration writes retry it.
//! - Function 1..=7 of a device whose function 0 is absent is absent; absent functions read
//!   all ones and drop writes.
//!
//! # Example: a machine's PCI wiring
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vmkit_bus::{Dispatch, MmioBus, PioBus, PioRange};
//! use vmkit_pci::{BarDef, BarKind, BusRegionMapper, ConfigSpace, DevFn, PciBus, PciDevice, PciHost, RegionIndex};
//!
//! /// A function with one 16-port I/O BAR that reads back its offset.
//! struct Echo(ConfigSpace);
//! impl PciDevice for Echo {
//!     fn config(&self) -> &ConfigSpace { &self.0 }
//!     fn config_mut(&mut self) -> &mut ConfigSpace { &mut self.0 }
//!     fn region_read(&mut self, _region: RegionIndex, offset: u64, data: &mut [u8]) {
//!         data.fill(offset as u8);
//!     }
//! }
//!
//! let (pio, mmio) = (PioBus::new(), MmioBus::new());
//! let pci = PciBus::with_mapper(Arc::new(BusRegionMapper::new(pio.clone(), mmio.clone())));
//! let mut cfg = ConfigSpace::new(0x1b36, 0x0005, 0xff, 0x00, 0x00, 0x00);
//! cfg.add_bar(0, BarDef { kind: BarKind::Io, size: 16, prefetchable: false })?;
//! pci.add(DevFn::new(3, 0), Arc::new(Mutex::new(Echo(cfg))))?;
//!
//! // Mechanism #1 at 0xCF8..=0xCFF; 0xCF9 writes with bit 2 set request a reset.
//! let host = PciHost::with_reset(pci.clone(), Box::new(|hard| println!("reset, hard={hard}")));
//! pio.insert(PioRange::new(PciHost::BASE, PciHost::LEN)?, "/machine/i440fx/pci-conf", Arc::new(Mutex::new(host)))?;
//!
//! // The guest programs BAR0 of 00:03.0 and turns on I/O decode.
//! let select = |reg: u32| pio.write(0xcf8, &(0x8000_0000 | 3 << 11 | reg).to_le_bytes());
//! select(0x10);
//! pio.write(0xcfc, &0xc000u32.to_le_bytes());
//! select(0x04);
//! pio.write(0xcfc, &1u16.to_le_bytes());
//!
//! let mut byte = [0u8];
//! assert_eq!(pio.read(0xc00a, &mut byte), Dispatch::Handled);
//! assert_eq!(byte, [0x0a]);
//! assert_eq!(&*pio.lookup(0xc000).unwrap().1, "/machine/pci/00:03.0/bar0");
//!
//! // Machine reset: functions back to power-on, BARs unmapped.
//! pci.reset();
//! assert_eq!(pio.read(0xc00a, &mut byte), Dispatch::Unassigned);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod bus;
pub mod config;
mod device;
mod host;
mod mapper;
mod msix;
mod state;
mod tree;

use std::fmt;

pub use bus::{MapError, PciBus, RegionMapper, SharedPciDevice};
pub use config::ConfigSpace;
pub use device::PciDevice;
pub use host::{
    PciHost, ResetCallback, CONFIG_ADDRESS_MASK, CONFIG_ENABLE, RCR_RESET_CPU, RCR_SYSTEM_RESET,
};
pub use mapper::{region_name, BusRegionMapper};
pub use msix::{
    MsiMessage, MsiSignal, Msix, MsixDelivery, MsixError, NullMsiSignal, CAP_ID_MSIX, MSIX_CAP_LEN,
    MSIX_CONTROL_ENABLE, MSIX_CONTROL_FUNCTION_MASK, MSIX_CONTROL_TABLE_SIZE, MSIX_ENTRY_MASKED,
    MSIX_ENTRY_SIZE, MSIX_MAX_VECTORS,
};
pub use state::{ConfigSpaceState, HostState, MsixState, PCI_STATE_VERSION};
pub use tree::{RegionTreeMapper, PCI_BAR_PRIORITY};

/// Which of the four PIRQ lines (0 = PIRQA .. 3 = PIRQD) interrupt pin `pin` (1 = INTA# ..
/// 4 = INTD#, the interrupt pin register's value) of the function at `devfn` drives, or
/// `None` for pin 0 (no interrupt) or an invalid pin.
///
/// This is the rotation of the PCI-to-PCI bridge specification as the PC's PIIX routing
/// applies it and QEMU's `pc` machine and SeaBIOS compute it: `(slot - 1 + pin - 1) mod 4`,
/// so slot 1 INTA# is PIRQA, slot 2 INTA# is PIRQB and slot 0 INTA# is PIRQD.
pub fn intx_swizzle(devfn: DevFn, pin: u8) -> Option<u8> {
    if !(1..=4).contains(&pin) {
        return None;
    }
    // slot + 3 is slot - 1 modulo 4, without underflow for slot 0.
    Some((devfn.device() + 3 + (pin - 1)) & 3)
}

/// A device and function number on bus 0: `device << 3 | function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevFn(pub u8);

impl DevFn {
    /// Device `dev` (0..=31), function `func` (0..=7); higher bits are dropped.
    pub const fn new(dev: u8, func: u8) -> Self {
        DevFn(((dev & 0x1f) << 3) | (func & 0x7))
    }

    /// The device (slot) number, 0..=31.
    pub const fn device(self) -> u8 {
        self.0 >> 3
    }

    /// The function number, 0..=7.
    pub const fn function(self) -> u8 {
        self.0 & 0x7
    }
}

impl fmt::Display for DevFn {
    /// `bus:device.function` as lspci prints it, e.g. `00:01.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00:{:02x}.{}", self.device(), self.function())
    }
}

/// The kind of a base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// I/O space (BAR bit 0 = 1).
    Io,
    /// 32-bit memory space.
    Mem32,
    /// 64-bit memory space (takes two BAR slots).
    Mem64,
}

impl fmt::Display for BarKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BarKind::Io => "I/O",
            BarKind::Mem32 => "32-bit memory",
            BarKind::Mem64 => "64-bit memory",
        })
    }
}

/// A BAR a device declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarDef {
    /// I/O, 32-bit or 64-bit memory.
    pub kind: BarKind,
    /// Size in bytes, a power of two.
    pub size: u64,
    /// Prefetchable memory (BAR bit 3); memory BARs only.
    pub prefetchable: bool,
}

/// A region a PCI function decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionIndex {
    /// BAR 0..=5.
    Bar(u8),
    /// The expansion ROM.
    Rom,
    /// A device-defined window outside the BARs (chipset registers such as PIIX4's PMBA).
    Custom(u8),
}

impl fmt::Display for RegionIndex {
    /// `bar0`..`bar5`, `rom`, `custom0`...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionIndex::Bar(i) => write!(f, "bar{i}"),
            RegionIndex::Rom => f.write_str("rom"),
            RegionIndex::Custom(i) => write!(f, "custom{i}"),
        }
    }
}

/// Where a region is decoded: address space, base and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Port I/O or memory.
    pub space: vmkit_bus::Space,
    /// First address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Errors of PCI configuration (guest accesses never fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// BAR index past 5 (or a 64-bit BAR at 5, which needs slot 6 for its upper dword).
    #[error("BAR index {index} cannot hold a {kind} BAR: BARs are 0..=5 and a 64-bit BAR takes two slots (0..=4)")]
    BarIndexOutOfRange {
        /// Requested index.
        index: u8,
        /// Requested kind.
        kind: BarKind,
    },
    /// A BAR slot already holds a BAR (or the upper half of a 64-bit one).
    #[error("BAR {index} cannot be declared: slot {slot} is already taken by another BAR")]
    BarSlotInUse {
        /// Requested index.
        index: u8,
        /// The taken slot.
        slot: u8,
    },
    /// BAR size not a power of two or outside the kind's limits.
    #[error("BAR {index}: {kind} size {size:#x} must be a power of two in {min:#x}..={max:#x}")]
    InvalidBarSize {
        /// Requested index.
        index: u8,
        /// Requested kind.
        kind: BarKind,
        /// Requested size.
        size: u64,
        /// Smallest allowed size.
        min: u64,
        /// Largest allowed size.
        max: u64,
    },
    /// An I/O BAR was declared prefetchable.
    #[error("BAR {index}: an I/O BAR cannot be prefetchable (bit 3 is an address bit there)")]
    PrefetchableIoBar {
        /// Requested index.
        index: u8,
    },
    /// The expansion ROM BAR was declared twice.
    #[error("the expansion ROM BAR (0x30) is already declared")]
    RomBarInUse,
    /// ROM size not a power of two or outside the limits.
    #[error("expansion ROM size {size:#x} must be a power of two in {min:#x}..={max:#x}")]
    InvalidRomSize {
        /// Requested size.
        size: u64,
        /// Smallest allowed size.
        min: u64,
        /// Largest allowed size.
        max: u64,
    },
    /// A capability does not fit in the 256-byte configuration space.
    #[error("capability {id:#04x} of {len} bytes does not fit at offset {offset:#x}: configuration space ends at 0x100")]
    NoRoomForCapability {
        /// Capability ID.
        id: u8,
        /// Its length including the ID and next-pointer bytes.
        len: usize,
        /// Where it would have gone.
        offset: u16,
    },
    /// A function is already plugged in at that device/function number.
    #[error("PCI slot {devfn} is already occupied: pick a free device/function number")]
    DevFnInUse {
        /// The occupied slot.
        devfn: DevFn,
    },
    /// A saved state this build or this function cannot take (another layout version,
    /// another function's identity, a table of another size); the text names the field.
    #[error("PCI state: {0}")]
    InvalidState(String),
}

/// Result of this crate's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;
