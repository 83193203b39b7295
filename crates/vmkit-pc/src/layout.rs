//! The pc machine's guest-physical memory map: where RAM goes for a given RAM size, the
//! e820 map that describes it, and [`build_memory`], which creates the RAM regions.
//!
//! ```text
//! 0x0000_0000 ┬ RAM ("ram-low")              usable up to the EBDA
//! 0x0009_fc00 ┼   EBDA (RAM, e820 reserved)
//! 0x000a_0000 ┼ legacy hole: VGA window, option ROMs, BIOS (no RAM mapped)
//! 0x0010_0000 ┼ RAM ("ram-below-4g")         up to min(RAM size, 3 GiB)
//! 0xc000_0000 ┼ PCI hole: MMIO, IOAPIC, LAPIC, KVM's TSS, firmware (no RAM)
//! 0x1_0000_0000 ┼ RAM ("ram-above-4g")       the rest of the RAM, if any
//! ```
//!
//! All RAM is one backing region, `pc.ram` (`ram_size` bytes), shown through aliases, as in
//! QEMU: guest-physical `[0, 640 KiB)` is `pc.ram[0, 640 KiB)`, `[1 MiB, low end)` is the same
//! offsets of `pc.ram`, and `[4 GiB, ..)` continues with `pc.ram[low end, ..)`. The 384 KiB
//! of `pc.ram` behind the legacy hole are not mapped (QEMU reaches them through the chipset's
//! PAM registers; a later layer may alias them the same way). The split point is fixed at
//! [`PCI_HOLE_START`] (3 GiB): QEMU's pc machine uses 3 GiB for RAM sizes of 3.5 GiB and
//! more, and keeps up to 3.5 GiB below 4 GiB for smaller sizes; vmkit always uses 3 GiB.

use std::fmt;

use vmkit_memory::{AddressSpace, RegionId};

use crate::e820::{E820Map, E820Type};
use crate::error::{Error, Result};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// 4 GiB: the start of RAM above the PCI hole.
pub const FOUR_GIB: u64 = 1 << 32;
/// Where the PCI hole starts: RAM below 4 GiB ends here at the latest (3 GiB).
pub const PCI_HOLE_START: u64 = 0xc000_0000;
/// Start of the extended BIOS data area: the last KiB of conventional memory, reported as
/// reserved.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of the legacy hole (VGA window at 0xa0000, option ROMs from 0xc0000, BIOS from
/// 0xe0000/0xf0000): no RAM is mapped from here to [`HIGH_MEMORY_START`].
pub const LEGACY_HOLE_START: u64 = 0xa_0000;
/// Start of the system BIOS area, reported as reserved in the e820 map.
pub const BIOS_AREA_START: u64 = 0xf_0000;
/// 1 MiB: the end of the legacy hole and the start of "high" memory.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Smallest RAM size accepted: 1 MiB.
pub const MIN_RAM_SIZE: u64 = MIB;
/// Largest RAM size accepted: 1 TiB.
pub const MAX_RAM_SIZE: u64 = 1 << 40;
/// The page KVM's EPT identity map should use on this machine (`Vm::set_identity_map_address`),
/// as QEMU's pc machine: just below a 16 MiB firmware, inside the PCI hole.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = vmkit_kvm::DEFAULT_IDENTITY_MAP_ADDRESS;
/// The three pages of KVM's real-mode TSS on this machine (`Vm::set_tss_address`), right after
/// the identity-map page.
pub const KVM_TSS_ADDRESS: u64 = vmkit_kvm::DEFAULT_TSS_ADDRESS;
/// Bytes reserved in the e820 map for the identity map and the TSS (4 pages).
pub const KVM_RESERVED_SIZE: u64 = 0x4000;
/// Name of the RAM backing region.
pub const RAM_REGION_NAME: &str = "pc.ram";

/// One guest-physical range where RAM is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RamRange {
    /// Name of the alias region that maps it.
    pub name: &'static str,
    /// First guest-physical address.
    pub guest_addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Offset of `guest_addr`'s byte inside the `pc.ram` backing region.
    pub ram_offset: u64,
}

impl RamRange {
    /// One past the last guest-physical address.
    pub fn end(&self) -> u64 {
        self.guest_addr.saturating_add(self.size)
    }
}

/// The regions [`MemoryLayout::map_into`] created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegions {
    /// The `pc.ram` backing region (`ram_size` bytes, not itself mapped).
    pub ram: RegionId,
    /// Alias `ram-low`: guest `[0, 640 KiB)`.
    pub low: RegionId,
    /// Alias `ram-below-4g`: guest `[1 MiB, low end)`; `None` with exactly 1 MiB of RAM.
    pub below_4g: Option<RegionId>,
    /// Alias `ram-above-4g`: guest `[4 GiB, ..)`; `None` with 3 GiB of RAM or less.
    pub above_4g: Option<RegionId>,
}

/// Where the RAM of a pc machine goes, computed from its size alone (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryLayout {
    ram_size: u64,
    below_4g: u64,
    above_4g: u64,
}

impl MemoryLayout {
    /// The layout for `ram_size` bytes of RAM: a multiple of 4 KiB between 1 MiB and 1 TiB.
    pub fn new(ram_size: u64) -> Result<Self> {
        if ram_size == 0 {
            return Err(Error::RamSizeZero);
        }
        if ram_size % (4 * KIB) != 0 {
            return Err(Error::RamSizeUnaligned { size: ram_size });
        }
        if ram_size < MIN_RAM_SIZE {
            return Err(Error::RamSizeTooSmall {
                size: ram_size,
                min: MIN_RAM_SIZE,
            });
        }
        if ram_size > MAX_RAM_SIZE {
            return Err(Error::RamSizeTooLarge {
                size: ram_size,
                max: MAX_RAM_SIZE,
            });
        }
        let below_4g = ram_size.min(PCI_HOLE_START);
        Ok(Self {
            ram_size,
            below_4g,
            above_4g: ram_size - below_4g,
        })
    }

    /// The RAM size this layout was computed for.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// Bytes of `pc.ram` placed below 4 GiB (including the 384 KiB hidden by the legacy
    /// hole); also the end address of low RAM.
    pub fn below_4g_size(&self) -> u64 {
        self.below_4g
    }

    /// Bytes of `pc.ram` placed from 4 GiB up.
    pub fn above_4g_size(&self) -> u64 {
        self.above_4g
    }

    /// One past the highest guest-physical RAM address.
    pub fn ram_end(&self) -> u64 {
        if self.above_4g == 0 {
            self.below_4g
        } else {
            FOUR_GIB + self.above_4g
        }
    }

    /// Guest `[0, 640 KiB)`: conventional memory, always present.
    pub fn low_range(&self) -> RamRange {
        RamRange {
            name: "ram-low",
            guest_addr: 0,
            size: LEGACY_HOLE_START,
            ram_offset: 0,
        }
    }

    /// Guest `[1 MiB, low end)`, unless the RAM is exactly 1 MiB.
    pub fn below_4g_range(&self) -> Option<RamRange> {
        (self.below_4g > HIGH_MEMORY_START).then(|| RamRange {
            name: "ram-below-4g",
            guest_addr: HIGH_MEMORY_START,
            size: self.below_4g - HIGH_MEMORY_START,
            ram_offset: HIGH_MEMORY_START,
        })
    }

    /// Guest `[4 GiB, ..)`, for RAM sizes above 3 GiB.
    pub fn above_4g_range(&self) -> Option<RamRange> {
        (self.above_4g > 0).then_some(RamRange {
            name: "ram-above-4g",
            guest_addr: FOUR_GIB,
            size: self.above_4g,
            ram_offset: self.below_4g,
        })
    }

    /// The guest-physical ranges where RAM is mapped, in address order; what
    /// [`map_into`](Self::map_into) maps and what the e820 map reports (as usable RAM, except
    /// the EBDA's last KiB below 640 KiB, reported as reserved).
    pub fn ram_ranges(&self) -> Vec<RamRange> {
        std::iter::once(self.low_range())
            .chain(self.below_4g_range())
            .chain(self.above_4g_range())
            .collect()
    }

    /// Bytes of RAM the guest OS may use (the e820 "usable" total): the RAM size minus the
    /// legacy hole and the EBDA.
    pub fn usable_ram(&self) -> u64 {
        self.ram_size - (HIGH_MEMORY_START - EBDA_START)
    }

    /// The e820 map for this layout:
    /// - usable `[0, EBDA)`, reserved `[EBDA, 640 KiB)` (EBDA) and `[0xf0000, 1 MiB)` (BIOS);
    /// - usable `[1 MiB, low end)`;
    /// - reserved [`KVM_IDENTITY_MAP_ADDRESS`] + [`KVM_RESERVED_SIZE`];
    /// - usable `[4 GiB, ..)` for RAM above 4 GiB.
    ///
    /// Firmware, ACPI tables and MMIO are added by whoever places them.
    pub fn e820(&self) -> E820Map {
        let entries = self
            .ram_ranges()
            .into_iter()
            .flat_map(|range| {
                if range.guest_addr == 0 {
                    vec![
                        (0, EBDA_START, E820Type::Ram),
                        (
                            EBDA_START,
                            LEGACY_HOLE_START - EBDA_START,
                            E820Type::Reserved,
                        ),
                    ]
                } else {
                    vec![(range.guest_addr, range.size, E820Type::Ram)]
                }
            })
            .chain([
                (
                    BIOS_AREA_START,
                    HIGH_MEMORY_START - BIOS_AREA_START,
                    E820Type::Reserved,
                ),
                (
                    KVM_IDENTITY_MAP_ADDRESS,
                    KVM_RESERVED_SIZE,
                    E820Type::Reserved,
                ),
            ]);
        let mut map = E820Map::new();
        for (addr, size, kind) in entries {
            // Disjoint by construction (RAM below 4 GiB ends by 3 GiB), so this cannot fail.
            let added = map.add(addr, size, kind);
            debug_assert!(added.is_ok(), "{added:?}");
        }
        map
    }

    /// Creates `pc.ram` and maps it at [`ram_ranges`](Self::ram_ranges) in `space`'s root, all
    /// in one transaction (listeners see one update; on error nothing changed).
    pub fn map_into(&self, space: &mut AddressSpace) -> Result<RamRegions> {
        let regions = space.transaction(|space| {
            let ram = space.new_ram(RAM_REGION_NAME, self.ram_size)?;
            let place = |space: &mut AddressSpace, range: RamRange| {
                let alias = space.new_alias(range.name, ram, range.ram_offset, range.size)?;
                space.add_subregion(space.root(), range.guest_addr, alias)?;
                Ok::<_, vmkit_memory::Error>(alias)
            };
            Ok(RamRegions {
                ram,
                low: place(space, self.low_range())?,
                below_4g: self
                    .below_4g_range()
                    .map(|range| place(space, range))
                    .transpose()?,
                above_4g: self
                    .above_4g_range()
                    .map(|range| place(space, range))
                    .transpose()?,
            })
        })?;
        Ok(regions)
    }
}

impl fmt::Display for MemoryLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pc memory: {:#x} bytes of RAM", self.ram_size)?;
        for range in self.ram_ranges() {
            write!(
                f,
                "; {} [{:#x}, {:#x})",
                range.name,
                range.guest_addr,
                range.end()
            )?;
        }
        Ok(())
    }
}

/// Points KVM's EPT identity-map page and real-mode TSS at [`KVM_IDENTITY_MAP_ADDRESS`] and
/// [`KVM_TSS_ADDRESS`], inside the PCI hole and below any firmware image (Intel hosts need
/// them for real mode; elsewhere they are harmless). Call it before creating vCPUs.
pub fn configure_kvm_pages(vm: &vmkit_kvm::Vm) -> Result<()> {
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)?;
    vm.set_tss_address(KVM_TSS_ADDRESS)?;
    Ok(())
}

/// Creates the pc machine's RAM for `ram_size` bytes in `space` (see the [module
/// docs](self)) in one transaction, and returns the layout. Use
/// [`MemoryLayout::new`] + [`MemoryLayout::map_into`] to also get the region ids.
pub fn build_memory(space: &mut AddressSpace, ram_size: u64) -> Result<MemoryLayout> {
    let layout = MemoryLayout::new(ram_size)?;
    layout.map_into(space)?;
    Ok(layout)
}
