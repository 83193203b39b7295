//! A [`RegionMapper`] over vmkit-bus: BARs become ranges on the PIO and MMIO buses.

use std::sync::Arc;

use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{DeviceMmio, DevicePio};
use vmkit_bus::{MmioBus, MmioRange, PioBus, PioRange, Space};

use crate::bus::lock_device;
use crate::{DevFn, MapError, Mapping, RegionIndex, RegionMapper, SharedPciDevice};

/// The name a region's bus entry gets: `/machine/pci/00:02.0/bar0`, `.../rom`,
/// `.../custom0`.
pub fn region_name(devfn: DevFn, region: RegionIndex) -> String {
    format!("/machine/pci/{devfn}/{region}")
}

/// Maps PCI regions as ranges on a vmkit-bus [`PioBus`] (I/O BARs) and [`MmioBus`] (memory
/// BARs, ROM), named by [`region_name`]. An access to a range locks the function's mutex
/// (recovering a poisoned one) and calls its `region_read`/`region_write` with the offset
/// in the region.
///
/// A region that would overlap a range already on the bus (a BAR moved over another device,
/// which QEMU allows with undefined priority) is not mapped: [`map`](RegionMapper::map)
/// returns a [`MapError`] naming both, which the [`PciBus`](crate::PciBus) keeps for
/// [`take_map_errors`](crate::PciBus::take_map_errors).
#[derive(Debug, Clone)]
pub struct BusRegionMapper {
    pio: PioBus,
    mmio: MmioBus,
}

impl BusRegionMapper {
    /// A mapper onto these buses (handles to the machine's buses: clones share them).
    pub fn new(pio: PioBus, mmio: MmioBus) -> Self {
        BusRegionMapper { pio, mmio }
    }

    /// The PIO bus I/O BARs go on.
    pub fn pio(&self) -> &PioBus {
        &self.pio
    }

    /// The MMIO bus memory BARs go on.
    pub fn mmio(&self) -> &MmioBus {
        &self.mmio
    }
}

/// One mapped region: the bus entry's device.
struct RegionPort {
    device: SharedPciDevice,
    region: RegionIndex,
}

impl DevicePio for RegionPort {
    fn pio_read(&self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        lock_device(&self.device).region_read(self.region, u64::from(offset), data);
    }

    fn pio_write(&self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        lock_device(&self.device).region_write(self.region, u64::from(offset), data);
    }
}

impl DeviceMmio for RegionPort {
    fn mmio_read(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        lock_device(&self.device).region_read(self.region, offset, data);
    }

    fn mmio_write(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        lock_device(&self.device).region_write(self.region, offset, data);
    }
}

impl RegionMapper for BusRegionMapper {
    fn map(
        &self,
        devfn: DevFn,
        region: RegionIndex,
        mapping: Mapping,
        device: &SharedPciDevice,
    ) -> Result<(), MapError> {
        let fail = |reason: String| MapError {
            devfn,
            region,
            mapping,
            reason,
        };
        let port = Arc::new(RegionPort {
            device: Arc::clone(device),
            region,
        });
        let name = region_name(devfn, region);
        let inserted = match mapping.space {
            Space::Pio => {
                let (Ok(base), Ok(size)) =
                    (u16::try_from(mapping.addr), u16::try_from(mapping.size))
                else {
                    return Err(fail("it does not fit in the 16-bit port space".into()));
                };
                PioRange::new(base, size).and_then(|r| self.pio.insert(r, name, port))
            }
            Space::Mmio => MmioRange::new(mapping.addr, mapping.size)
                .and_then(|r| self.mmio.insert(r, name, port)),
        };
        inserted.map_err(|e| fail(e.to_string()))
    }

    fn unmap(&self, devfn: DevFn, region: RegionIndex, mapping: Mapping) {
        let name = region_name(devfn, region);
        match mapping.space {
            Space::Pio => drop(self.pio.remove_named(&name)),
            Space::Mmio => drop(self.mmio.remove_named(&name)),
        }
    }
}
