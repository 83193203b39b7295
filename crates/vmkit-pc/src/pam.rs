//! The i440FX's PAM (Programmable Attribute Map) windows over 0xC0000-0xFFFFF, in the region
//! tree, as QEMU builds them: each segment can show the RAM behind it or leave the access to
//! PCI (the `isa-bios` ROM alias, or nothing), separately for reads and writes.
//!
//! | reads | writes | how vmkit maps it |
//! |---|---|---|
//! | PCI | PCI | the segment's RAM alias hidden: the ROM (or nothing) shows |
//! | RAM | RAM | the RAM alias shown, writable (a plain KVM slot) |
//! | RAM | PCI | the RAM alias shown read-only: KVM turns writes into MMIO exits, dropped |
//! | PCI | RAM | the RAM alias hidden; an MMIO bus entry takes the writes into RAM and answers reads from the ROM |
//!
//! The last mode lets firmware copy a ROM into the RAM behind it while still executing
//! from the ROM (SeaBIOS instead switches PAM0 to read/write, `0x30`, and runs the copy from
//! the high flash alias at 0xFFFE0000).

use std::sync::Arc;

use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::DeviceMmio;
use vmkit_bus::{MmioBus, MmioRange};
use vmkit_memory::{AddressSpace, RegionAccess, RegionId};

use crate::error::Result;

/// Priority of the PAM RAM aliases in the root container: above the `isa-bios` alias (1).
pub const PAM_PRIORITY: i32 = 2;

/// Where an access to one PAM segment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PamRoute {
    /// Reads see the RAM (otherwise PCI: the ROM or nothing).
    pub read_ram: bool,
    /// Writes go to the RAM (otherwise PCI: dropped).
    pub write_ram: bool,
}

/// One segment's regions.
#[derive(Debug)]
struct Segment {
    base: u64,
    size: u64,
    alias: RegionId,
    route: PamRoute,
}

/// The ROM that shows through below 1 MiB (the `isa-bios` alias): where, and its bytes.
#[derive(Debug, Clone)]
pub struct IsaRom {
    /// Guest-physical address of the alias's first byte.
    pub base: u64,
    /// Bytes the alias shows.
    pub size: u64,
    /// The ROM region behind it.
    pub rom: RegionAccess,
    /// Offset in the ROM of the alias's first byte.
    pub rom_offset: u64,
}

/// The PAM windows of a pc machine.
#[derive(Debug)]
pub struct PamWindows {
    segments: Vec<Segment>,
    ram: RegionAccess,
    rom: Option<IsaRom>,
    mmio: MmioBus,
}

impl PamWindows {
    /// Creates one hidden RAM alias of `ram` (the RAM backing, whose offsets equal guest
    /// addresses below 1 MiB) per segment, so every segment starts routed to PCI.
    pub fn new(
        space: &mut AddressSpace,
        ram: RegionId,
        segments: impl IntoIterator<Item = (u64, u64)>,
        rom: Option<IsaRom>,
        mmio: MmioBus,
    ) -> Result<Self> {
        let ram_access = space.region_access(ram)?;
        let segments = space.transaction(|space| {
            let root = space.root();
            let mut out = Vec::new();
            for (base, size) in segments {
                let alias = space.new_alias(&format!("pam-ram-{base:#x}"), ram, base, size)?;
                space.add_subregion_overlap(root, base, alias, PAM_PRIORITY)?;
                space.set_enabled(alias, false)?;
                out.push(Segment {
                    base,
                    size,
                    alias,
                    route: PamRoute::default(),
                });
            }
            Ok(out)
        })?;
        Ok(Self {
            segments,
            ram: ram_access,
            rom,
            mmio,
        })
    }

    /// The route of the segment starting at `base`, if there is one.
    pub fn route(&self, base: u64) -> Option<PamRoute> {
        self.segments
            .iter()
            .find(|s| s.base == base)
            .map(|s| s.route)
    }

    /// Routes the segment starting at `base`; unknown bases are ignored.
    pub fn set_route(
        &mut self,
        space: &mut AddressSpace,
        base: u64,
        route: PamRoute,
    ) -> Result<()> {
        let Some(segment) = self.segments.iter_mut().find(|s| s.base == base) else {
            return Ok(());
        };
        if segment.route == route {
            return Ok(());
        }
        let name = format!("pam-write-{:#x}", segment.base);
        if segment.route.write_ram && !segment.route.read_ram {
            self.mmio.remove_named(&name);
        }
        space.transaction(|space| {
            space.set_enabled(segment.alias, route.read_ram)?;
            if route.read_ram {
                space.set_readonly(segment.alias, !route.write_ram)?;
            }
            Ok(())
        })?;
        if route.write_ram && !route.read_ram {
            let device = WriteThrough {
                base: segment.base,
                ram: self.ram.clone(),
                rom: self.rom.clone(),
            };
            let range = MmioRange::new(segment.base, segment.size)?;
            self.mmio.insert(range, name, Arc::new(device))?;
        }
        segment.route = route;
        Ok(())
    }
}

/// A write-only segment: writes land in RAM, reads come from the ROM where it shows (else
/// they float high, as an unclaimed PCI read).
struct WriteThrough {
    base: u64,
    ram: RegionAccess,
    rom: Option<IsaRom>,
}

impl DeviceMmio for WriteThrough {
    fn mmio_read(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        data.fill(0xff);
        let addr = self.base.saturating_add(offset);
        if let Some(rom) = &self.rom {
            if addr >= rom.base && addr.saturating_add(data.len() as u64) <= rom.base + rom.size {
                let _ = rom.rom.read(rom.rom_offset + (addr - rom.base), data);
            }
        }
    }

    fn mmio_write(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        // Out-of-range pieces cannot happen for a range the bus matched; ignore them anyway.
        let _ = self.ram.write(self.base.saturating_add(offset), data);
    }
}
